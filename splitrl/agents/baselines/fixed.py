"""Baselines that take the same action for every request, or a random one: they know nothing of the state."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

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


def as_action(e: int, s: int, b: int) -> np.ndarray:
    """``(e, s, b)`` as the int array a policy returns."""
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

    causal = True
    knows = "nothing: one fixed local action"

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
        return as_action(e, env.actions.exit_stages[e], 0)


class EdgeOnlyPolicy:
    """Send the input losslessly and run the full model on the server (split 0, final exit).

    The "cloud only" baseline of Kang et al., Neurosurgeon, ASPLOS 2017.
    """

    name = "edge-only"
    causal = True
    knows = "nothing: one fixed offloading action"

    def reset(self, env: SplitComputingEnv) -> None:
        """Nothing to reset."""

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """``(final exit, 0, lossless)``."""
        final = len(env.actions.exit_stages) - 1
        return as_action(final, 0, lossless_bit_index(env.actions.bit_options))


class BestStaticPolicy:
    """The single canonical action with the best mean reward on training channels.

    Found by enumeration (:meth:`fit`): every canonical action is rolled out on its own for the same
    seeded episodes (one rollout per action, since an action's latency shapes the backlog of the
    requests after it) and the action with the highest mean reward per request is kept; ties go to
    the lowest flat index. The best configuration an offline tuning would pick once and never change.

    :param action: a known best action; ``None`` until :meth:`fit` runs
    """

    name = "best-static"
    causal = True
    knows = "nothing at decision time: one action fitted on training episodes"

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
        seeds = list(range(seed, seed + episodes))
        self.mean_rewards = np.array(
            [
                run_episodes(BestStaticPolicy(action), env, seeds).reward.mean()
                for action in self.candidates
            ]
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
        return as_action(*self.best_action)


class RandomPolicy:
    """Uniform over the canonical actions, from its own seeded generator.

    :param seed: seed of the generator (created once; episodes continue its stream)
    """

    name = "random"
    causal = True
    knows = "nothing"

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
