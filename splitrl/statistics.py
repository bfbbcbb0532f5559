"""Paired statistics of rewards: the Student-t interval of a mean and a paired difference.

Two policies that played the same seeded episodes (common random numbers) are compared through
the per-episode differences of their rewards; the evaluation reports these, and the training's
validation keeps a new best model only when its paired gain lies above zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


def t_interval(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval of the mean of ``values``.

    :param values: independent observations (at least one; one gives a half-width of ``nan``)
    :param confidence: coverage of the interval, in ``(0, 1)``
    :return: ``(mean, half_width)``
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    data = np.asarray(values, dtype=np.float64).reshape(-1)
    if data.size == 0:
        raise ValueError("t_interval needs at least one value")
    mean = float(data.mean())
    if data.size == 1:
        return mean, math.nan
    quantile = float(stats.t.ppf(0.5 + confidence / 2.0, data.size - 1))
    return mean, quantile * float(stats.sem(data))


@dataclass(frozen=True)
class PairedDifference:
    """A policy's reward minus a reference's on the same episodes, with its paired 95% t-interval.

    :param reference: the reference policy's name
    :param mean: mean over episodes of the difference of the episodes' mean rewards per request
    :param ci95: half-width of the 95% t-interval of ``mean`` (``nan`` for one episode)
    """

    reference: str
    mean: float
    ci95: float

    @property
    def low(self) -> float:
        """Lower end of the interval."""
        return self.mean - self.ci95

    @property
    def high(self) -> float:
        """Upper end of the interval."""
        return self.mean + self.ci95

    def is_positive(self) -> bool:
        """Whether the whole interval lies above zero."""
        return math.isfinite(self.ci95) and self.low > 0.0
