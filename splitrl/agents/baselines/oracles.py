"""References that know what no device can: the channel now or over the next moments, the channel
over the transfer and every draw (or every draw but the RTT's and the queueing's), or the request's
own exit confidences.

None of them is realizable in splitrl's decision model; they measure what knowing more is worth.
They read the env's internals through :meth:`~splitrl.envs.SplitComputingEnv.evaluate_actions`
(``clairvoyant``, ``clairvoyant-lookahead``, ``clairvoyant-link``), the true channel
(``oracle-now``, ``oracle-ahead``) or the request's own exit confidences
(``mpc-geometric-gated``).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from splitrl.agents.baselines.backlog import (
    DEFAULT_BACKLOG_HORIZON,
    backlog_cost,
    best_with_backlog,
    check_horizon,
)
from splitrl.agents.baselines.robust_mpc import GeometricMPCPolicy
from splitrl.agents.baselines.spread import DEFAULT_SPREAD_DRAWS, LatencySpread
from splitrl.envs.actions import exits_passed_on_device
from splitrl.envs.split_computing import SplitComputingEnv

#: the capacity ``oracle-now`` assumes in an outage (bit/s): the forecast needs a positive rate, and
#: at this one every offload misses its deadline, so the rule stays local, as it should
OUTAGE_CAPACITY_BPS = 1.0


class OracleNowPolicy:
    """The device's predictor, told the true capacity at decision time, with the backlog priced.

    Everything else is ``mpc``'s rule (``robust-mpc`` without its discount): ``env.predict_actions``
    at the true capacity of the uplink when the request starts
    (``env.channel.capacity(env.request_start_s)``, :data:`OUTAGE_CAPACITY_BPS` in an outage), averaged over the
    RTT and queueing spread (:class:`~splitrl.agents.baselines.spread.LatencySpread`), minus
    :func:`~splitrl.agents.baselines.backlog.backlog_cost`. It does not know how the capacity moves
    during the transfer, the payload of this very request, nor its RTT and queueing draws. The gap
    between it and ``mpc`` is what a perfect link estimate is worth.

    :param horizon: next requests the backlog cost counts
    :param spread_draws: draws of the RTT and queueing spread per prediction
    """

    name = "oracle-now"
    causal = False
    knows = "the true capacity at decision time; otherwise the device's own estimates"

    def __init__(
        self, horizon: int = DEFAULT_BACKLOG_HORIZON, spread_draws: int = DEFAULT_SPREAD_DRAWS
    ) -> None:
        self.horizon = check_horizon(horizon)
        self.spread = LatencySpread(spread_draws)

    def reset(self, env: SplitComputingEnv) -> None:
        """Draw the RTT and queueing spread for ``env``."""
        self.spread.reset(env)

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """The best action at the capacity the rule is told (:meth:`capacity_bps`), backlog
        priced."""
        predicted = env.predict_actions(max(self.capacity_bps(env), OUTAGE_CAPACITY_BPS))
        rewards = self.spread.expected_rewards(predicted, env)
        return best_with_backlog(
            predicted, env, self.horizon, rewards, latency_spread=self.spread.offsets(env)
        )

    def capacity_bps(self, env: SplitComputingEnv) -> float:
        """The capacity the rule is told: the uplink's when the request starts."""
        return env.channel.capacity(env.request_start_s)


def _is_real(value: object) -> bool:
    """Whether ``value`` is an int or a float, and not a bool (which Python counts as an int)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


#: ``oracle-ahead``'s default window: the mean capacity over the next 50 ms
DEFAULT_AHEAD_WINDOW_S = 0.05


class OracleAheadPolicy(OracleNowPolicy):
    """``oracle-now`` told the true mean capacity over the next ``window_s`` instead.

    A perfect short-term forecast, as a constant: ``mpc``'s rule at
    ``env.channel.mean_throughput(start, start + window_s)``, where ``start`` is when the request
    starts. It knows where the link goes during the next transfers on average (a fade that ends, an
    outage that begins), but not how the capacity moves within a transfer, the payload, nor the
    request's RTT and queueing draws. Between ``oracle-now`` and ``clairvoyant-link``, it says what a
    predictor of the link's near future could be worth to the device's rule.

    :param window_s: seconds ahead whose mean capacity the rule is told (finite, positive)
    :param horizon: next requests the backlog cost counts
    :param spread_draws: draws of the RTT and queueing spread per prediction
    """

    knows = "the true mean capacity over the next window; otherwise the device's own estimates"

    def __init__(
        self,
        window_s: float = DEFAULT_AHEAD_WINDOW_S,
        horizon: int = DEFAULT_BACKLOG_HORIZON,
        spread_draws: int = DEFAULT_SPREAD_DRAWS,
    ) -> None:
        if not _is_real(window_s) or not math.isfinite(window_s) or window_s <= 0.0:
            raise ValueError(f"window_s must be a finite number of seconds > 0, got {window_s!r}")
        super().__init__(horizon, spread_draws)
        self.window_s = float(window_s)
        self.name = (
            "oracle-ahead"
            if self.window_s == DEFAULT_AHEAD_WINDOW_S
            else f"oracle-ahead-{self.window_s * 1e3:g}ms"
        )

    def capacity_bps(self, env: SplitComputingEnv) -> float:
        """The uplink's mean capacity over the ``window_s`` after the request starts."""
        start = env.request_start_s
        return env.channel.mean_throughput(start, start + self.window_s)


class ClairvoyantPolicy:
    """The action of highest true reward for this request, myopic.

    It calls ``env.evaluate_actions()``, which knows, for this request: the channel capacity over
    the actual transfer of each action, its payload in bytes, its RTT draw, the server's true load
    when it arrives and its queueing draw. Correctness is the action's accuracy in the profile, not
    this sample's label. It is myopic: it does not weigh what its choice does to the backlog of the
    next requests, so it is not an upper bound (``clairvoyant-lookahead`` is the upper reference).
    """

    name = "clairvoyant"
    causal = False
    knows = (
        "the capacity over the actual transfer, this request's payload, RTT, server load and "
        "queueing draws"
    )

    def reset(self, env: SplitComputingEnv) -> None:
        """Nothing to reset."""

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """The action of highest true reward."""
        return env.evaluate_actions().best()


def clairvoyant_parts(
    env: SplitComputingEnv,
    spread: LatencySpread,
    horizon: int = DEFAULT_BACKLOG_HORIZON,
    draws: Literal["exact", "mean"] = "exact",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every canonical action's true reward and the cost of the backlog it leaves, apart.

    The reward is ``env.evaluate_actions()``: this request's exact outcome. The backlog's cost
    (:func:`~splitrl.agents.baselines.backlog.backlog_cost`) forecasts the next requests from the
    same channel, payloads and load, but not from this request's RTT and queueing draws, which say
    nothing about theirs: at the mean draws (``evaluate_actions(draws="mean")``) with ``spread``'s
    offsets around them.

    :param env: the env, at the request to value
    :param spread: the RTT and queueing spread, reset for ``env``
    :param horizon: next requests the backlog cost counts
    :param draws: ``"exact"``: the reward at this request's RTT and queueing draws; ``"mean"``:
        its expectation over ``spread`` around their means, as for the next requests (what
        ``clairvoyant-link`` knows)
    :return: the canonical actions ``(n, 3)``, their rewards ``(n,)`` and backlog costs ``(n,)``
    """
    at_mean_draws = env.evaluate_actions(draws="mean")
    offsets = spread.offsets(env)
    if draws == "exact":
        reward = env.evaluate_actions().reward
    elif draws == "mean":
        reward = spread.expected_rewards(at_mean_draws, env)
    else:
        raise ValueError(f"draws must be 'exact' or 'mean', got {draws!r}")
    cost = backlog_cost(at_mean_draws, env.frame_interval_s, env.reward_spec, horizon, offsets)
    return at_mean_draws.actions, reward, cost


def clairvoyant_values(
    env: SplitComputingEnv,
    spread: LatencySpread,
    horizon: int = DEFAULT_BACKLOG_HORIZON,
    draws: Literal["exact", "mean"] = "exact",
) -> tuple[np.ndarray, np.ndarray]:
    """Every canonical action's true reward minus the cost of the backlog it leaves
    (:func:`clairvoyant_parts`): the value ``clairvoyant-lookahead`` maximizes, and the hindsight
    values ``sacd-hindsight`` learns from.

    :param env: the env, at the request to value
    :param spread: the RTT and queueing spread, reset for ``env``
    :param horizon: next requests the backlog cost counts
    :param draws: this request's own RTT and queueing draws (``"exact"``) or their spread
        (``"mean"``), as in :func:`clairvoyant_parts`
    :return: the canonical actions ``(n, 3)`` and their values ``(n,)``
    """
    actions, reward, cost = clairvoyant_parts(env, spread, horizon, draws)
    return actions, reward - cost


class ClairvoyantLookaheadPolicy:
    """``clairvoyant``, plus the cost its backlog puts on the next requests: the upper reference.

    The action maximizes :func:`clairvoyant_values`: the true reward of this request
    (``env.evaluate_actions()``) minus :func:`~splitrl.agents.baselines.backlog.backlog_cost` over
    the next ``horizon`` requests, which are forecast to meet the capacity, payloads and load this
    request meets, with the RTT's and the queueing's spread instead of this request's draws. Not
    realizable.

    :param horizon: next requests the backlog cost counts
    :param spread_draws: draws of the RTT and queueing spread of the next requests
    """

    name = "clairvoyant-lookahead"
    causal = False
    knows = "what clairvoyant knows, and the backlog's cost on the next requests forecast from it"
    #: whether this request's reward is read at its own RTT and queueing draws or over their spread
    draws: Literal["exact", "mean"] = "exact"

    def __init__(
        self, horizon: int = DEFAULT_BACKLOG_HORIZON, spread_draws: int = DEFAULT_SPREAD_DRAWS
    ) -> None:
        self.horizon = check_horizon(horizon)
        self.spread = LatencySpread(spread_draws)

    def reset(self, env: SplitComputingEnv) -> None:
        """Draw the RTT and queueing spread for ``env``."""
        self.spread.reset(env)

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """The action of highest true reward minus backlog cost."""
        actions, values = clairvoyant_values(env, self.spread, self.horizon, self.draws)
        return actions[int(np.argmax(values))].copy()


class ClairvoyantLinkPolicy(ClairvoyantLookaheadPolicy):
    """``clairvoyant-lookahead`` without this request's own RTT and queueing draws.

    It knows the uplink's capacity over the actual transfer of every action, this request's
    payload sizes and the server's true load when it arrives, and prices the backlog as
    ``clairvoyant-lookahead`` does; this request's reward is its expectation over the RTT's and
    the queueing's spread around their means (``clairvoyant_values(draws="mean")``), as a device's
    prediction is. The RTT jitter and the queueing of a request are independent draws that nothing
    observed before the request predicts, so the gap between the two references is room no policy
    that decides before its request is served can take; the gap between this one and the best
    causal baseline bounds what any better reading of the link, the payload or the load can add.
    Not realizable.

    :param horizon: next requests the backlog cost counts
    :param spread_draws: draws of the RTT and queueing spread, for this request and the next
    """

    name = "clairvoyant-link"
    knows = (
        "the capacity over the actual transfer, this request's payload and the server's true "
        "load; the RTT and queueing only as their spread"
    )
    draws: Literal["exact", "mean"] = "mean"


#: ``mpc-geometric-gated``'s default confidence threshold: at exit 0 of the default profile, the
#: quarter of the samples above it are answered at 98% accuracy
DEFAULT_GATE_THRESHOLD = 0.8


class ConfidenceGatePolicy:
    """``mpc-geometric``, then a confidence gate at the early exits its action computes anyway.

    Early-exit networks are usually run with a gate: the device stops at an exit when the exit's
    softmax confidence clears a threshold. This reference chooses ``mpc-geometric``'s action; when
    that action computes an earlier exit's stages on the device (an offload split at or after the
    exit, or a later exit on the device) and this request's confidence at that exit is above
    ``threshold``, the request stops there and is answered on the device (at the first such exit).
    It never computes a stage the action did not.

    Not causal in splitrl's decision model, where the action is chosen before the device computes
    anything: it reads the confidence the profile measured for the request's own sample
    (:meth:`~splitrl.envs.SplitComputingEnv.request_exit_confidences`). A device that decided in
    two steps (compute to an exit, then stop or go on) could realize it, paying the exit heads'
    compute on the requests that go on: an env built with ``gate_heads=True`` charges it, a plain
    one leaves it out. Its gain over ``mpc-geometric`` (run in the plain env, on the same seeds)
    is what such a gate would be worth (``docs/evaluation.md``, Room outside the decision model).

    :param threshold: the confidence above which a request stops at an exit, in ``[0, 1)``
    :param horizon: next requests ``mpc-geometric``'s backlog cost counts
    :param spread_draws: draws of its RTT and queueing spread per prediction
    """

    causal = False
    knows = "this request's confidence at each early exit; otherwise mpc-geometric's estimates"

    def __init__(
        self,
        threshold: float = DEFAULT_GATE_THRESHOLD,
        horizon: int = DEFAULT_BACKLOG_HORIZON,
        spread_draws: int = DEFAULT_SPREAD_DRAWS,
    ) -> None:
        if not _is_real(threshold) or not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be a confidence in [0, 1), got {threshold!r}")
        self.threshold = float(threshold)
        self.rule = GeometricMPCPolicy(horizon=horizon, spread_draws=spread_draws)
        self.name = (
            "mpc-geometric-gated"
            if self.threshold == DEFAULT_GATE_THRESHOLD
            else f"mpc-geometric-gated{self.threshold:g}"
        )
        #: requests answered at a gate since the last :meth:`reset`
        self.gated = 0

    def reset(self, env: SplitComputingEnv) -> None:
        """Reset ``mpc-geometric`` for ``env`` and the gate's count."""
        self.rule.reset(env)
        self.gated = 0

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """``mpc-geometric``'s action, or the first early exit it computes whose confidence clears the gate."""
        action = self.rule.act(env, observation)
        e, s, _ = env.actions.canonical(*env.actions.validate(action))
        stages = env.actions.exit_stages
        confidences = env.request_exit_confidences()
        for gate in exits_passed_on_device(stages, e, s):
            if confidences[gate] > self.threshold:
                self.gated += 1
                return np.array([gate, stages[gate], 0], dtype=np.int64)
        return action
