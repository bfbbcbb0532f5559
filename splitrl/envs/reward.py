"""Reward specifications: how accuracy, latency, deadline misses and energy trade off.

The reward of one request is::

    r = correct - w_latency * min(latency / deadline, latency_cap) - w_miss * [latency > deadline]
        - w_energy * energy / energy_ref

The latency term stops growing at ``latency_cap`` deadlines: an answer that late is worthless either
way, and a bounded reward keeps value estimates finite when a bad policy lets the backlog run away.

``correct`` is 1 or 0 from the profile's per-sample outcome (``correctness="sample"``, exact replay) or the
profile's accuracy of that exit, split and bit option (``correctness="expected"``, lower variance).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

Correctness = Literal["sample", "expected"]


@dataclass(frozen=True)
class RewardSpec:
    """Weights of the reward terms.

    :param deadline_s: the latency a request should meet, in seconds
    :param w_latency: weight of latency in units of the deadline
    :param w_miss: penalty for missing the deadline
    :param w_energy: weight of device energy in units of ``energy_ref_j``
    :param energy_ref_j: reference energy per request, in joules
    :param latency_cap: the latency term's ceiling, in deadlines
    :param correctness: ``"sample"`` (per-sample outcome) or ``"expected"`` (accuracy)
    """

    deadline_s: float = 0.2
    w_latency: float = 0.5
    w_miss: float = 0.5
    w_energy: float = 0.0
    energy_ref_j: float = 0.1
    latency_cap: float = 10.0
    correctness: Correctness = "sample"

    def __post_init__(self) -> None:
        if not self.deadline_s > 0:
            raise ValueError(f"deadline_s must be positive, got {self.deadline_s}")
        if not self.latency_cap > 0:
            raise ValueError(f"latency_cap must be positive, got {self.latency_cap}")
        if not self.energy_ref_j > 0:
            raise ValueError(f"energy_ref_j must be positive, got {self.energy_ref_j}")
        for name in ("w_latency", "w_miss", "w_energy"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if self.correctness not in ("sample", "expected"):
            raise ValueError(
                f"correctness must be 'sample' or 'expected', got {self.correctness!r}"
            )

    def __call__(self, correct: float, latency_s: float, energy_j: float) -> float:
        """The reward of one request."""
        return (
            correct
            - self.w_latency * min(latency_s / self.deadline_s, self.latency_cap)
            - (self.w_miss if latency_s > self.deadline_s else 0.0)
            - self.w_energy * energy_j / self.energy_ref_j
        )

    def rewards(
        self, correct: np.ndarray, latency_s: np.ndarray, energy_j: np.ndarray
    ) -> np.ndarray:
        """The rewards of many requests at once, elementwise; equal to calling the spec on each.

        :param correct: correctness of each request (broadcast against the other arguments)
        :param latency_s: latency of each request, in seconds
        :param energy_j: device energy of each request, in joules
        """
        return (
            correct
            - self.w_latency * np.minimum(latency_s / self.deadline_s, self.latency_cap)
            - np.where(latency_s > self.deadline_s, self.w_miss, 0.0)
            - self.w_energy * energy_j / self.energy_ref_j
        )

    def expected_rewards(
        self,
        correct: np.ndarray,
        latency_s: np.ndarray,
        energy_j: np.ndarray,
        latency_offsets_s: np.ndarray,
    ) -> np.ndarray:
        """The mean of :meth:`rewards` over ``latency_offsets_s`` added to every latency.

        Equal to ``rewards(correct, latency_s[..., None] + latency_offsets_s, energy_j).mean(-1)``
        (up to rounding at the deadline and the latency cap), computed from the sorted offsets
        without the extra axis: the miss probability is the share of offsets above
        ``deadline - latency``, and the capped latency term sums the offsets below
        ``cap x deadline - latency``.

        :param latency_offsets_s: offsets in seconds (e.g. draws of the RTT's jitter); at least one
        """
        offsets = np.sort(np.asarray(latency_offsets_s, dtype=np.float64).ravel())
        if offsets.size == 0:
            raise ValueError("latency_offsets_s needs at least one offset")
        n = offsets.size
        partial = np.concatenate(([0.0], np.cumsum(offsets)))
        latency_s = np.asarray(latency_s, dtype=np.float64)
        missed = (n - np.searchsorted(offsets, self.deadline_s - latency_s, side="right")) / n
        cap_s = self.latency_cap * self.deadline_s
        below = np.searchsorted(offsets, cap_s - latency_s, side="left")
        capped_mean_s = (below * latency_s + partial[below] + (n - below) * cap_s) / n
        return (
            correct
            - self.w_latency * capped_mean_s / self.deadline_s
            - self.w_miss * missed
            - self.w_energy * energy_j / self.energy_ref_j
        )

    def with_overrides(self, **overrides: Any) -> RewardSpec:
        """A copy with some fields changed (unknown names raise ``ValueError``)."""
        unknown = set(overrides) - set(self.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown reward fields {sorted(unknown)}; known: {sorted(self.__dataclass_fields__)}"
            )
        return replace(self, **overrides)


#: named reward presets
REWARD_PRESETS: dict[str, RewardSpec] = {
    # accuracy against mean latency, with a mild deadline penalty
    "latency-accuracy": RewardSpec(w_latency=0.5, w_miss=0.25, w_energy=0.0),
    # Edgent-style: be as accurate as possible while meeting the deadline
    "deadline": RewardSpec(w_latency=0.0, w_miss=1.0, w_energy=0.0),
    # battery-powered devices: energy counts as much as latency
    "energy-aware": RewardSpec(w_latency=0.25, w_miss=0.5, w_energy=0.5),
}


def get_reward_spec(name: str, **overrides: Any) -> RewardSpec:
    """The reward preset ``name``, optionally with fields overridden."""
    if name not in REWARD_PRESETS:
        raise ValueError(f"unknown reward preset {name!r}; known: {sorted(REWARD_PRESETS)}")
    return REWARD_PRESETS[name].with_overrides(**overrides) if overrides else REWARD_PRESETS[name]
