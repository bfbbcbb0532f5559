"""The device's confidence gate at the early exits (``SplitComputingEnv(exit_gate=...)``).

Early-exit networks are usually run with a gate: the device computes up to an exit, reads the
exit's softmax confidence and stops there when it is above a threshold. In splitrl the action is
still chosen before the device computes anything; the gate acts inside the request. When the
chosen action ``(e, s, b)`` computes an earlier exit ``g < e`` on the device
(:func:`~splitrl.envs.actions.exits_passed_on_device`) and the request's own confidence there is
above the threshold, the device answers at ``g`` (the first such exit): the request is served as
the device-only action ``(g, k_g, 0)``. The device computes the head of every exit it passes to
read its confidence, so an env with a gate charges those heads
(:class:`~splitrl.envs.time_model.CostTables` with ``gate_heads``).

Where the reward counts the profile's accuracy instead of the sample's own correctness (the
expected outcome, as every prediction and every hindsight value does), a gated world must count
it given what the gate saw: the requests that stop at ``g`` are the confident ones, answered far
more accurately than ``g``'s average, and the requests that go on are the harder rest.
:class:`ExitGate` holds those conditional accuracies, measured on the profile's samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from splitrl.envs.actions import ActionTable, exits_passed_on_device
from splitrl.profiles.schema import Profile

#: where a request was not stopped by the gate
NOT_STOPPED = -1


def exit_gate_of(value: object) -> float | None:
    """A confidence threshold of the gate, or ``None`` for no gate (a scenario's, an env's, a
    policy file's or the device runtime's ``exit_gate``).

    :raises ValueError: a value that is not a confidence in ``(0, 1)`` or ``None``
    """
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and 0.0 < value < 1.0)
    ):
        raise ValueError(f"exit_gate must be a confidence in (0, 1) or null, got {value!r}")
    return float(value)


class ExitGate:
    """A confidence threshold at the early exits, and what it does to every canonical action.

    :param profile: the profile whose samples' confidences and correctness the gate reads
    :param actions: the env's action table
    :param canonical: the canonical actions ``[n_actions, 3]``, in the env's order
    :param threshold: the confidence above which a request stops at an exit, in ``(0, 1)``
    """

    def __init__(
        self,
        profile: Profile,
        actions: ActionTable,
        canonical: np.ndarray,
        threshold: float,
    ) -> None:
        gate = exit_gate_of(threshold)
        if gate is None:
            raise ValueError("an ExitGate needs a threshold; exit_gate=None means no gate")
        self.threshold = gate
        stages: Sequence[int] = profile.exit_stages
        n_exits = len(stages)
        index = {tuple(int(v) for v in action): i for i, action in enumerate(canonical)}
        #: the canonical index of answering at each exit on the device
        self.local_index = np.array(
            [index[actions.canonical(g, stages[g], 0)] for g in range(n_exits)], dtype=np.int64
        )
        #: how many early exits each canonical action computes on the device (always the first ones)
        self.passed = np.array(
            [len(exits_passed_on_device(stages, int(e), int(s))) for e, s, _ in canonical],
            dtype=np.int64,
        )
        # confidence and correctness at each exit from the device's own tensor
        confidence = np.stack(
            [profile.confidence[:, stages[g], 0, g] for g in range(n_exits)], axis=1
        )
        on_device = np.stack([profile.correct[:, stages[g], 0, g] for g in range(n_exits)], axis=1)
        confident = confidence > self.threshold
        #: per sample, the first exit whose confidence clears the gate (``n_exits`` if none)
        self.first_confident = np.where(
            confident.any(axis=1), confident.argmax(axis=1), n_exits
        ).astype(np.int64)
        first = self.first_confident
        #: accuracy of the requests that stop at each exit (``nan`` where none would)
        self.stop_accuracy = np.array(
            [_mean(on_device[first == g, g]) for g in range(n_exits)], dtype=float
        )
        e, s, b = canonical.T
        go_on = first[:, None] >= self.passed[None, :]  # [n_samples, n_actions]
        served = profile.correct[:, s, b, e].astype(float)
        fallback = on_device[:, e].astype(float)
        counts = go_on.sum(axis=0)
        #: accuracy of each action over the requests the gate lets go on
        self.go_accuracy = _masked_mean(served, go_on, counts)
        #: accuracy at each action's own exit on the device over those requests (a transfer given up)
        self.go_fallback_accuracy = _masked_mean(fallback, go_on, counts)
        #: the share of the samples that stop at each exit under an action that computes it
        self.stop_share = np.array([np.mean(first == g) for g in range(n_exits)], dtype=float)
        #: the share of the samples each action lets go on
        self.go_share = counts / len(first)

    def route(self, sample: int, action_index: int) -> tuple[int, int]:
        """The canonical index ``sample`` is served as under the canonical action ``action_index``,
        and the exit it stopped at (:data:`NOT_STOPPED` where it went on)."""
        first = int(self.first_confident[sample])
        if first < self.passed[action_index]:
            return int(self.local_index[first]), first
        return action_index, NOT_STOPPED

    def route_all(self, sample: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`route` for every canonical action at once (arrays over the actions)."""
        first = int(self.first_confident[sample])
        stopped = first < self.passed
        if not stopped.any():
            return np.arange(len(self.passed)), np.full(len(self.passed), NOT_STOPPED)
        served = np.where(stopped, self.local_index[first], np.arange(len(self.passed)))
        return served, np.where(stopped, first, NOT_STOPPED)

    def expected_correct(self, action_index: int, stopped_at: int) -> float:
        """The profile's accuracy given what the gate saw: of the exit the request stopped at, or
        of the action over the requests that go on."""
        if stopped_at == NOT_STOPPED:
            return float(self.go_accuracy[action_index])
        return float(self.stop_accuracy[stopped_at])

    def expected_correct_all(self, stopped_at: np.ndarray) -> np.ndarray:
        """:meth:`expected_correct` for every canonical action (``stopped_at`` from :meth:`route_all`)."""
        went_on = stopped_at == NOT_STOPPED
        stops = self.stop_accuracy[np.where(went_on, 0, stopped_at)]
        return np.where(went_on, self.go_accuracy, stops)

    def expected_values(self, values: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
        """Values of every canonical action priced without the gate, priced with it.

        A request under action ``a`` stops at exit ``g`` with the share of the profile's samples
        whose first confident exit is ``g`` (for each early exit ``a`` computes on the device),
        and is then worth what answering at ``g`` on the device is worth; otherwise it goes on and
        is worth ``a``'s value. Each branch counts the accuracy given the gate instead of the
        plain one (the reward is linear in the correctness).

        :param values: every canonical action's value without the gate (its predicted reward, or
            that reward minus a backlog cost), in the env's order
        :param accuracy: the accuracy those values counted for every canonical action
        """
        go = np.where(self.go_share > 0, values + np.nan_to_num(self.go_accuracy) - accuracy, 0.0)
        gated = self.go_share * go
        for g, local in enumerate(self.local_index):
            if self.stop_share[g] == 0.0:
                continue
            answered = values[local] + self.stop_accuracy[g] - accuracy[local]
            gated = gated + np.where(g < self.passed, self.stop_share[g] * answered, 0.0)
        return gated


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def _masked_mean(values: np.ndarray, mask: np.ndarray, counts: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, (values * mask).sum(axis=0) / counts, np.nan)
