"""Heuristic baselines and the oracle: every one a :class:`~splitrl.agents.policy.Policy`.

Each baseline states what it knows. The device heuristics (Neurosurgeon, Edgent, the greedy dynamic
split) decide from the device's own knowledge through
:meth:`~splitrl.envs.SplitComputingEnv.predict_actions`: the profile's accuracy and mean payload of
each action, the mean RTT, the last reported server load, the device's backlog and its last measured
throughput. Only the oracle calls :meth:`~splitrl.envs.SplitComputingEnv.evaluate_actions`, which
knows the request's true outcome and the channel over the actual transfer: it is an upper bound of
per-request decisions, not a realizable policy.

"Lossless" means the profile's ``"lossless"`` bit option; a profile without one uses ``"float32"``,
then ``"float16"``, then its highest bit-width (see :func:`lossless_bit_index`).

Build one by name with :func:`make_baseline`; :data:`BASELINES` lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from splitrl.agents.policy import Policy
from splitrl.agents.rollout import run_episodes
from splitrl.envs.actions import ActionTable
from splitrl.envs.split_computing import SplitComputingEnv

Action = tuple[int, int, int]

#: lossless bit options, most preferred first
_LOSSLESS_OPTIONS = ("lossless", "float32", "float16")


def lossless_bit_index(bit_options: Sequence[int | str]) -> int:
    """Index of the bit option that sends a tensor without loss, or as close to it as possible.

    :param bit_options: a profile's bit options, e.g. ``(1, 2, 4, 8, "lossless")``
    :return: the index of ``"lossless"``, else ``"float32"``, else ``"float16"``, else the highest
        integer bit-width
    """
    for option in _LOSSLESS_OPTIONS:
        if option in bit_options:
            return list(bit_options).index(option)
    widths = [(option, i) for i, option in enumerate(bit_options) if isinstance(option, int)]
    if not widths:
        raise ValueError(f"no usable bit option in {tuple(bit_options)}")
    return max(widths)[1]


def _action(e: int, s: int, b: int) -> np.ndarray:
    return np.array((e, s, b), dtype=np.int64)


class DeviceOnlyPolicy:
    """Run the whole request on the device: nothing is sent.

    The classic lower reference of split computing (the "mobile only" baseline of Kang et al.,
    Neurosurgeon, ASPLOS 2017). With ``exit_point="final"`` it runs the full model; with
    ``exit_point="first"`` it stops at the first early exit, the fastest and least accurate local
    answer (the early-exit reference of Teerapittayanon, McDanel, Kung, "BranchyNet: Fast Inference
    via Early Exiting from Deep Neural Networks", ICPR 2016).

    :param exit_point: ``"final"`` or ``"first"``
    """

    def __init__(self, exit_point: str = "final") -> None:
        if exit_point not in ("final", "first"):
            raise ValueError(f"exit_point must be 'final' or 'first', got {exit_point!r}")
        self.exit_point = exit_point
        self.name = "device-only" if exit_point == "final" else "device-only-first-exit"

    def reset(self, env: SplitComputingEnv) -> None:
        """Nothing to reset."""

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """``(e, k_e, 0)`` for the chosen exit ``e``."""
        e = len(env.actions.exit_stages) - 1 if self.exit_point == "final" else 0
        return _action(e, env.actions.exit_stages[e], 0)


class EdgeOnlyPolicy:
    """Send the input losslessly and run the full model on the server (split 0, final exit).

    The "cloud only" baseline of Kang et al., Neurosurgeon, ASPLOS 2017.
    """

    name = "edge-only"

    def reset(self, env: SplitComputingEnv) -> None:
        """Nothing to reset."""

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """``(final exit, 0, lossless)``."""
        final = len(env.actions.exit_stages) - 1
        return _action(final, 0, lossless_bit_index(env.actions.bit_options))


class BestStaticPolicy:
    """The single canonical action with the best mean reward on training channels.

    Found by enumeration (:meth:`fit`): every canonical action is rolled out on its own for the same
    seeded episodes (one rollout per action, since an action's latency shapes the backlog of the
    requests after it) and the action with the highest mean reward per request is kept; ties go to
    the lowest flat index. The best configuration an offline tuning would pick once and never change.

    :param action: a known best action; ``None`` until :meth:`fit` runs
    """

    name = "best-static"

    def __init__(self, action: Action | None = None) -> None:
        self.best_action: Action | None = None
        if action is not None:
            e, s, b = (int(v) for v in action)
            self.best_action = (e, s, b)
        #: the enumerated canonical actions and their mean reward per request, from :meth:`fit`
        self.candidates: list[Action] = []
        self.mean_rewards: np.ndarray = np.zeros(0)

    def fit(
        self,
        env_factory: Callable[[], SplitComputingEnv],
        episodes: int = 3,
        seed: int = 0,
    ) -> BestStaticPolicy:
        """Enumerate every canonical action and keep the best.

        :param env_factory: builds the training env (training channels, not the evaluation seeds)
        :param episodes: seeded episodes per action (seeds ``seed .. seed + episodes - 1``)
        :param seed: the first episode seed
        :return: ``self``
        """
        if episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {episodes}")
        env = env_factory()
        self.candidates = env.actions.canonical_actions()
        seeds = range(seed, seed + episodes)
        self.mean_rewards = np.array(
            [_mean_reward_of_fixed_action(env, action, seeds) for action in self.candidates]
        )
        self.best_action = self.candidates[int(np.argmax(self.mean_rewards))]
        env.close()
        return self

    def reset(self, env: SplitComputingEnv) -> None:
        """Check that the policy was fitted and that its action exists in ``env``."""
        if self.best_action is None:
            raise RuntimeError("BestStaticPolicy has no action yet: call fit() first")
        env.actions.validate(self.best_action)

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """The fitted action."""
        if self.best_action is None:
            raise RuntimeError("BestStaticPolicy has no action yet: call fit() first")
        return _action(*self.best_action)


def _mean_reward_of_fixed_action(
    env: SplitComputingEnv, action: Action, seeds: Sequence[int] | range
) -> float:
    """Mean reward per request of always taking ``action`` over the episodes of ``seeds``."""
    return float(run_episodes(BestStaticPolicy(action), env, list(seeds)).reward.mean())


class _PredictedActionsPolicy:
    """Shared by the device heuristics: the canonical actions and the lossless bit of an env."""

    def __init__(self) -> None:
        self._table: ActionTable | None = None
        self._actions = np.zeros((0, 3), dtype=np.int64)
        self._lossless = 0

    def reset(self, env: SplitComputingEnv) -> None:
        """Index the env's canonical actions."""
        if self._table != env.actions:
            self._table = env.actions
            self._actions = np.array(env.actions.canonical_actions(), dtype=np.int64)
            self._lossless = lossless_bit_index(env.actions.bit_options)

    def _lossless_candidates(self, exit_index: int, table: ActionTable) -> np.ndarray:
        """Indices (into the canonical actions) of exit ``exit_index`` sent losslessly or kept local."""
        e, s, b = self._actions.T
        device_only = s >= table.exit_stages[exit_index]
        return np.flatnonzero((e == exit_index) & (device_only | (b == self._lossless)))


class NeurosurgeonPolicy(_PredictedActionsPolicy):
    """The split that minimizes the predicted latency of the full model, sent losslessly.

    Kang et al., "Neurosurgeon: Collaborative Intelligence Between the Cloud and Mobile Edge",
    ASPLOS 2017. Per request it predicts the latency of every partition point of the full DNN (no
    early exit, no quantization) from per-layer performance models and the current wireless
    bandwidth, and picks the fastest. Here the prediction is ``env.predict_actions()`` at the
    device's last measured throughput, restricted to the final exit with lossless transfer (or
    device-only).
    """

    name = "neurosurgeon"

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """The fastest predicted split of the final exit."""
        self.reset(env)
        predicted = env.predict_actions()
        candidates = self._lossless_candidates(len(env.actions.exit_stages) - 1, env.actions)
        best = candidates[int(np.argmin(predicted.latency_s[candidates]))]
        return self._actions[best].copy()


class EdgentPolicy(_PredictedActionsPolicy):
    """The most accurate exit whose fastest split meets the deadline, sent losslessly.

    Li, Zhou, Chen, "Edge Intelligence: On-Demand Deep Learning Model Co-Inference with
    Device-Edge Synergy", MECOMM 2018, and "Edge AI: On-Demand Accelerating Deep Neural Network
    Inference via Edge Computing", IEEE Trans. Wireless Commun. 2019 (Edgent). Edgent jointly
    right-sizes the DNN (early exit) and partitions it: from the most accurate exit down, it takes
    the first exit whose lowest predicted latency over the partition points meets the latency
    requirement, at that partition point. Edgent does not quantize the transmitted tensor, so the
    transfer is lossless as in the paper. Exits are ranked by their unquantized accuracy in the
    profile; latencies are ``env.predict_actions()`` at the device's last measured throughput; the
    requirement is the reward's deadline. If no exit meets it, the fastest candidate is taken.
    """

    name = "edgent"

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """The most accurate exit that meets the deadline, at its fastest split."""
        self.reset(env)
        predicted = env.predict_actions()
        deadline = env.reward_spec.deadline_s
        accuracy = env.profile.clean_accuracy()
        # Most accurate first; a later exit wins a tie (more computation for the same accuracy is
        # what Edgent's branch order assumes).
        exits = sorted(range(len(accuracy)), key=lambda e: (-accuracy[e], -e))
        fastest_overall: tuple[float, int] | None = None
        for exit_index in exits:
            candidates = self._lossless_candidates(exit_index, env.actions)
            best = candidates[int(np.argmin(predicted.latency_s[candidates]))]
            latency = float(predicted.latency_s[best])
            if latency <= deadline:
                return self._actions[best].copy()
            if fastest_overall is None or latency < fastest_overall[0]:
                fastest_overall = (latency, int(best))
        assert fastest_overall is not None
        return self._actions[fastest_overall[1]].copy()


class GreedyPolicy:
    """Dynamic split computing with our codec: the action of highest predicted reward, per request.

    Bakhtiarnia et al., "Dynamic Split Computing for Efficient Deep Edge Intelligence", ICASSP 2023,
    and Matsubara, Levorato, Restuccia, "Split Computing and Early Exiting for Deep Learning
    Applications: Survey and Research Challenges", ACM Computing Surveys 2022: choose the split (here
    also the exit and the bit-width) per request from the current network condition. This myopic
    controller takes the argmax of ``env.predict_actions().reward`` over all canonical actions at
    the device's last measured throughput: it knows the reward but not how the channel will change
    nor what its choice does to the next requests.
    """

    name = "greedy"

    def reset(self, env: SplitComputingEnv) -> None:
        """Nothing to reset."""

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """The action of highest predicted reward."""
        return env.predict_actions().best()


class OraclePolicy:
    """The action of highest true reward for this request: an upper bound, not a realizable policy.

    It calls ``env.evaluate_actions()``, which knows the request's own correctness and payload, the
    true channel capacity over the actual transfer, its RTT and queueing. It is myopic (it does not
    weigh what its choice does to the backlog of the next requests).
    """

    name = "oracle"

    def reset(self, env: SplitComputingEnv) -> None:
        """Nothing to reset."""

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """The action of highest true reward."""
        return env.evaluate_actions().best()


class RandomPolicy:
    """Uniform over the canonical actions, from its own seeded generator.

    :param seed: seed of the generator (created once; episodes continue its stream)
    """

    name = "random"

    def __init__(self, seed: int | None = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self._actions = np.zeros((0, 3), dtype=np.int64)
        self._table: ActionTable | None = None

    def reset(self, env: SplitComputingEnv) -> None:
        """Index the env's canonical actions."""
        if self._table != env.actions:
            self._table = env.actions
            self._actions = np.array(env.actions.canonical_actions(), dtype=np.int64)

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """A uniformly drawn canonical action."""
        self.reset(env)
        return self._actions[int(self.rng.integers(len(self._actions)))].copy()


#: baseline name -> factory; keyword arguments of :func:`make_baseline` go to the factory
BASELINES: dict[str, Callable[..., Policy]] = {
    "device-only": lambda: DeviceOnlyPolicy("final"),
    "device-only-first-exit": lambda: DeviceOnlyPolicy("first"),
    "edge-only": EdgeOnlyPolicy,
    "best-static": BestStaticPolicy,
    "neurosurgeon": NeurosurgeonPolicy,
    "edgent": EdgentPolicy,
    "greedy": GreedyPolicy,
    "oracle": OraclePolicy,
    "random": RandomPolicy,
}


def make_baseline(name: str, **kwargs: Any) -> Policy:
    """Build the baseline called ``name``.

    :param name: a key of :data:`BASELINES`
    :param kwargs: passed to its factory: ``seed`` for ``"random"``; for ``"best-static"`` either
        ``action`` or ``env_factory`` (with optional ``episodes`` and ``seed``) to fit it right away
    :return: the policy
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    if name == "best-static" and "env_factory" in kwargs:
        fit_kwargs = {
            key: kwargs.pop(key) for key in ("env_factory", "episodes", "seed") if key in kwargs
        }
        return BestStaticPolicy(**kwargs).fit(**fit_kwargs)
    try:
        return BASELINES[name](**kwargs)
    except TypeError as error:
        raise ValueError(f"baseline {name!r}: {error}") from error
