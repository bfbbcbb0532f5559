"""Learners over several training seeds, aggregated with rliable.

Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical Precipice", NeurIPS
2021: with a handful of training runs, report the interquartile mean (IQM, the mean of the middle
50% of run scores) with a stratified bootstrap 95% confidence interval, and the probability of
improvement ``P(X > Y)`` that a run of one learner beats a run of another on a condition, averaged
over conditions. The `rliable <https://github.com/google-research/rliable>`_ library computes all
three.

The scores form a ``(runs, conditions)`` matrix per learner: a run is a training seed, a condition
an evaluated channel or trace (rliable's "tasks"). Two scores are aggregated: the mean reward per
request, and the gain over the condition's best causal baseline (the run's reward minus the
baseline's on the same episodes), which puts conditions of different difficulty on one scale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

#: bootstrap resamples of every interval (rliable's default of 50 000 costs seconds per interval
#: and moves the bounds by less than the third decimal at these sample sizes)
BOOTSTRAP_REPS = 2_000
#: resamples of a probability of improvement (each one runs a Mann-Whitney U test per condition)
IMPROVEMENT_BOOTSTRAP_REPS = 500
#: seed of the bootstrap resampling, so that a report can be reproduced exactly
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class IntervalEstimate:
    """A point estimate with its 95% confidence interval.

    :param value: the point estimate
    :param low: lower end of the interval
    :param high: upper end of the interval
    """

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"


@contextmanager
def _seeded_global_numpy(seed: int) -> Iterator[None]:
    # rliable's bootstrap draws its indices from numpy's global generator: seed it for
    # reproducible intervals and give the caller its own state back.
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


def _check_scores(scores: np.ndarray) -> np.ndarray:
    matrix = np.asarray(scores, dtype=np.float64)
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(
            f"scores must be a non-empty (runs, conditions) matrix, got {matrix.shape}"
        )
    return matrix


def interval_estimate(scores: np.ndarray, aggregate: str = "iqm") -> IntervalEstimate:
    """The IQM (or mean) of a ``(runs, conditions)`` score matrix, with its stratified bootstrap
    95% interval (runs resampled within each condition).

    :param scores: one score per run and condition
    :param aggregate: ``"iqm"`` or ``"mean"``
    """
    from rliable import library, metrics

    functions: dict[str, Callable[[np.ndarray], float]] = {
        "iqm": metrics.aggregate_iqm,
        "mean": metrics.aggregate_mean,
    }
    if aggregate not in functions:
        raise ValueError(f"aggregate must be one of {sorted(functions)}, got {aggregate!r}")
    matrix = _check_scores(scores)
    function = functions[aggregate]
    with _seeded_global_numpy(BOOTSTRAP_SEED):
        points, intervals = library.get_interval_estimates(
            {"scores": matrix}, lambda x: np.array([function(x)]), reps=BOOTSTRAP_REPS
        )
    low, high = (float(bound) for bound in intervals["scores"][:, 0])
    return IntervalEstimate(float(points["scores"][0]), low, high)


def mann_whitney_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """rliable's ``metrics.probability_of_improvement`` point estimate, vectorized: per condition,
    the Mann-Whitney U of X over Y divided by the number of run pairs (a tie counts half),
    averaged over conditions.

    rliable computes it with one ``scipy.stats.mannwhitneyu`` call per condition, which makes
    its bootstrap (hundreds of resamples per pair of learners) take seconds per pair; a sweep
    report compares every pair of its learners.
    """
    difference = scores_x[:, None, :] - scores_y[None, :, :]
    return float(np.mean((difference > 0) + 0.5 * (difference == 0)))


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> IntervalEstimate:
    """``P(X > Y)``: the probability that a run of X scores above a run of Y on a condition,
    averaged over conditions, with its stratified bootstrap 95% interval.

    :param scores_x: ``(runs of X, conditions)``
    :param scores_y: ``(runs of Y, conditions)``, the same conditions
    """
    from rliable import library

    x, y = _check_scores(scores_x), _check_scores(scores_y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"X and Y must cover the same conditions, got {x.shape} and {y.shape}")
    with _seeded_global_numpy(BOOTSTRAP_SEED):
        points, intervals = library.get_interval_estimates(
            {"pair": [x, y]},
            lambda a, b: np.array([mann_whitney_improvement(a, b)]),
            reps=IMPROVEMENT_BOOTSTRAP_REPS,
        )
    low, high = (float(bound) for bound in intervals["pair"][:, 0])
    return IntervalEstimate(float(points["pair"][0]), low, high)


@dataclass(frozen=True)
class LearnerAggregate:
    """One learner's runs (training seeds) over the evaluated conditions.

    :param name: row name, e.g. ``"sacd (3 seeds)"``
    :param seeds: the runs' training seeds
    :param conditions: the conditions aggregated over
    :param reward: IQM of the runs' mean reward per request
    :param gain: IQM of the runs' gain over each condition's best causal baseline
    :param gain_mean: mean of that gain
    :param beats_best_causal: probability that a run beats the best causal baseline (``None``
        unless asked for: it is the slow one)
    """

    name: str
    seeds: list[int]
    conditions: list[str]
    reward: IntervalEstimate
    gain: IntervalEstimate
    gain_mean: IntervalEstimate
    beats_best_causal: IntervalEstimate | None = None


def aggregate_learner(
    name: str,
    seeds: Sequence[int],
    conditions: Sequence[str],
    rewards: np.ndarray,
    best_causal_rewards: Sequence[float] | np.ndarray,
    *,
    with_improvement: bool = True,
) -> LearnerAggregate:
    """Aggregate one learner's runs with rliable.

    :param name: the row name
    :param seeds: the runs' training seeds, one per row of ``rewards``
    :param conditions: the conditions, one per column of ``rewards``
    :param rewards: ``(runs, conditions)`` mean reward per request
    :param best_causal_rewards: the best causal baseline's mean reward per condition
    :param with_improvement: also estimate the probability of beating the best causal baseline
    """
    matrix = _check_scores(rewards)
    reference = np.asarray(best_causal_rewards, dtype=np.float64).reshape(1, -1)
    if matrix.shape != (len(seeds), len(conditions)) or reference.shape[1] != len(conditions):
        raise ValueError(
            f"rewards of shape {matrix.shape} do not match {len(seeds)} seeds x "
            f"{len(conditions)} conditions and {reference.shape[1]} reference rewards"
        )
    gains = matrix - reference
    return LearnerAggregate(
        name=name,
        seeds=[int(seed) for seed in seeds],
        conditions=list(conditions),
        reward=interval_estimate(matrix),
        gain=interval_estimate(gains),
        gain_mean=interval_estimate(gains, "mean"),
        beats_best_causal=(
            probability_of_improvement(matrix, reference) if with_improvement else None
        ),
    )


@dataclass(frozen=True)
class Improvement:
    """``P(learner > other)`` over the evaluated conditions.

    :param learner: the first learner's row name
    :param other: the second learner's row name
    :param probability: the probability of improvement with its 95% interval
    """

    learner: str
    other: str
    probability: IntervalEstimate


def pairwise_improvements(rewards: Mapping[str, np.ndarray]) -> list[Improvement]:
    """The probability of improvement of every learner over every other one.

    :param rewards: ``(runs, conditions)`` mean rewards per learner row name, same conditions
    """
    names = list(rewards)
    return [
        Improvement(x, y, probability_of_improvement(rewards[x], rewards[y]))
        for i, x in enumerate(names)
        for y in names[i + 1 :]
    ]


@dataclass
class SeedsReport:
    """The aggregation over training seeds of an evaluation.

    :param per_condition: per condition name, one aggregate per learner
    :param overall: one aggregate per learner over every condition
    :param improvements: probability of improvement between learners, over every condition
    """

    per_condition: dict[str, list[LearnerAggregate]] = field(default_factory=dict)
    overall: list[LearnerAggregate] = field(default_factory=list)
    improvements: list[Improvement] = field(default_factory=list)
