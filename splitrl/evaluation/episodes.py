"""How many paired episodes an evaluation needs to tell two policies apart.

The 95% interval of a paired difference shrinks as ``t(n-1) * sd / sqrt(n)`` with the number of
episodes ``n``, where ``sd`` is the spread of the per-episode differences. :class:`EpisodeStudy`
measures that spread on the episodes of two rollouts, gives the half-width the first ``n`` of them
reach, and the smallest ``n`` whose expected half-width meets a target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from splitrl.agents.rollout import Rollout
from splitrl.evaluation.metrics import episode_rewards
from splitrl.statistics import t_interval


@dataclass(frozen=True)
class EpisodeStudy:
    """The per-episode paired differences of a policy and a reference.

    :param policy: the policy's name
    :param reference: the reference's name
    :param differences: per episode, the policy's mean reward per request minus the reference's
    """

    policy: str
    reference: str
    differences: np.ndarray

    @classmethod
    def from_rollouts(cls, rollout: Rollout, reference: Rollout) -> EpisodeStudy:
        """The study of two rollouts on the same seeds (at least two episodes)."""
        if rollout.seeds != reference.seeds:
            raise ValueError(f"{rollout.name} ran on other seeds than {reference.name}")
        if rollout.episodes < 2:
            raise ValueError("an episode study needs at least two episodes")
        differences = episode_rewards(rollout) - episode_rewards(reference)
        return cls(rollout.name, reference.name, differences)

    @property
    def episodes(self) -> int:
        """The episodes measured."""
        return int(self.differences.size)

    @property
    def spread(self) -> float:
        """Standard deviation of the per-episode differences."""
        return float(np.std(self.differences, ddof=1))

    def half_width(self, episodes: int) -> float:
        """The 95% half-width measured on the first ``episodes`` episodes."""
        if not 2 <= episodes <= self.episodes:
            raise ValueError(f"episodes must be in 2..{self.episodes}, got {episodes}")
        return t_interval(self.differences[:episodes])[1]

    def curve(self, counts: Sequence[int]) -> list[tuple[int, float]]:
        """``(episodes, measured half-width)`` for each count."""
        return [(int(count), self.half_width(int(count))) for count in counts]

    def episodes_needed(self, target: float, confidence: float = 0.95) -> int:
        """The smallest episode count whose expected half-width, with the measured spread, is at
        most ``target``.

        :param target: the half-width wanted (reward per request)
        :param confidence: coverage of the interval
        """
        if not target > 0:
            raise ValueError(f"target half-width must be positive, got {target}")
        spread = self.spread
        if spread == 0.0:
            return 2
        level = 0.5 + confidence / 2.0
        # The normal quantile gives a lower bound; the t quantile of small counts is larger.
        episodes = max(2, math.ceil((stats.norm.ppf(level) * spread / target) ** 2))
        while stats.t.ppf(level, episodes - 1) * spread / math.sqrt(episodes) > target:
            episodes += 1
        return episodes
