"""The best backlog-aware rule that never looks at the channel."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from splitrl.agents.baselines.fixed import as_action
from splitrl.agents.rollout import run_episodes
from splitrl.envs.split_computing import SplitComputingEnv

#: the family's members: budgets as fractions of the deadline
DEFAULT_DEADLINE_FRACTIONS = tuple(round(0.05 * k, 2) for k in range(1, 21))


class ChannelBlindPolicy:
    """The most accurate local exit that still answers within a budget, else the fastest one.

    A request that waited ``w`` for the device and runs exit ``e`` on the device answers after
    ``w + compute_e``, which the device knows exactly. The rule takes the most accurate exit (by the
    profile's unquantized accuracy) with ``w + compute_e <= fraction x deadline``, and the fastest
    local exit when none fits. Small fractions favour fast exits that keep the backlog short, large
    ones accurate exits. :meth:`fit` picks the fraction of the best mean reward on training
    episodes, like ``best-static``; with the default scenario's timing the fitted member is "exit 1
    when the device is idle, exit 0 when a frame is already waiting".

    It never offloads and never reads the channel, the throughput measurements or the link-quality
    report: only its backlog (the observation's ``backlog`` feature, which saturates at 10 frames)
    and the profile. It is what a device gets without adapting to the link.

    :param deadline_fraction: the budget, as a fraction of the deadline; ``None`` until :meth:`fit`
    """

    name = "channel-blind"
    causal = True
    knows = "its own backlog and the profile's local compute times and accuracies; no channel"

    def __init__(self, deadline_fraction: float | None = None) -> None:
        if deadline_fraction is not None and not deadline_fraction > 0:
            raise ValueError(f"deadline_fraction must be positive, got {deadline_fraction}")
        self.deadline_fraction = deadline_fraction
        #: the fractions tried by :meth:`fit` and their mean reward per request
        self.candidates: tuple[float, ...] = ()
        self.mean_rewards: np.ndarray = np.zeros(0)
        self._local: list[tuple[np.ndarray, float]] = []
        self._fastest = np.zeros(3, dtype=np.int64)
        self._backlog_index = 0

    def fit(
        self,
        env_factory: Callable[[], SplitComputingEnv],
        episodes: int = 3,
        seed: int = 0,
        fractions: Sequence[float] = DEFAULT_DEADLINE_FRACTIONS,
    ) -> ChannelBlindPolicy:
        """Try every fraction on the same seeded episodes and keep the best (ties: the smallest).

        :param env_factory: builds the training env (training channels, not the evaluation seeds)
        :param episodes: seeded episodes per fraction (seeds ``seed .. seed + episodes - 1``)
        :param seed: the first episode seed
        :param fractions: the family's members
        :return: ``self``
        """
        if episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {episodes}")
        if not fractions or min(fractions) <= 0:
            raise ValueError(f"fractions must be positive and not empty, got {tuple(fractions)}")
        env = env_factory()
        seeds = list(range(seed, seed + episodes))
        self.candidates = tuple(sorted(fractions))
        self.mean_rewards = np.array(
            [
                run_episodes(ChannelBlindPolicy(fraction), env, seeds).reward.mean()
                for fraction in self.candidates
            ]
        )
        self.deadline_fraction = self.candidates[int(np.argmax(self.mean_rewards))]
        env.close()
        return self

    def reset(self, env: SplitComputingEnv) -> None:
        """Rank the env's local exits by accuracy, with their compute times."""
        if self.deadline_fraction is None:
            raise RuntimeError("ChannelBlindPolicy has no budget yet: call fit() first")
        exit_stages = env.actions.exit_stages
        accuracy = env.profile.clean_accuracy()
        compute_s = [float(env.costs.device_compute_s[e, k]) for e, k in enumerate(exit_stages)]
        by_accuracy = sorted(range(len(exit_stages)), key=lambda e: (-accuracy[e], compute_s[e]))
        self._local = [(as_action(e, exit_stages[e], 0), compute_s[e]) for e in by_accuracy]
        fastest = int(np.argmin(compute_s))
        self._fastest = as_action(fastest, exit_stages[fastest], 0)
        self._backlog_index = env.layout.names.index("backlog")

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """The most accurate local exit within the budget, else the fastest."""
        assert self.deadline_fraction is not None, "call reset() first"
        waited_s = float(observation[self._backlog_index]) * env.frame_interval_s
        budget_s = self.deadline_fraction * env.reward_spec.deadline_s
        for action, compute_s in self._local:
            if waited_s + compute_s <= budget_s:
                return action.copy()
        return self._fastest.copy()
