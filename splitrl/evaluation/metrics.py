"""Metrics of evaluated policies: per-episode rewards with a t-interval, latency, accuracy, actions.

Every number refers to the requests of the evaluation episodes:

* ``reward``: mean reward per request; the 95% confidence interval is a Student-t interval over the
  episodes' mean rewards (episodes are independent draws of channel and requests).
* ``latency_ms`` / ``latency_p95_ms``: mean and 95th percentile end-to-end latency.
* ``accuracy``: mean of the env's ``correct`` (per sample, or the profile's accuracy of the action
  under ``correctness="expected"`` rewards).
* ``deadline_miss_rate``, ``energy_mj`` (device energy per request), ``payload_bytes`` (bytes sent
  per request, 0 for device-only requests).
* ``exits``, ``splits``, ``bits``: fractions of requests per chosen exit, split and bit option of
  the canonical action; device-only requests send nothing and count under the bit option
  ``"local"``.
* ``normalized_score``: ``(R - R_static) / (R_oracle - R_static)``: 0 is the best static
  configuration, 1 the oracle.
* ``gain_vs_static``: the mean over episodes of ``R_episode - R_static_episode`` with its paired
  t-interval. Both policies faced the same channel and requests in each episode (common random
  numbers), so this interval is far narrower than the two rewards' own intervals.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from splitrl.evaluation.runner import LOCAL_BITS, Rollout

#: the bit-option label of device-only requests in the action distribution
LOCAL_LABEL = "local"


def student_t_two_sided(t: float, dof: int) -> float:
    """``P(|T| < t)`` for Student's t with ``dof`` degrees of freedom (exact finite sums).

    Abramowitz and Stegun, Handbook of Mathematical Functions, 26.7.3 and 26.7.4.
    """
    if dof < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {dof}")
    if t <= 0:
        return 0.0
    theta = math.atan(t / math.sqrt(dof))
    cos2 = math.cos(theta) ** 2
    if dof % 2 == 1:
        total, term = (1.0, 1.0) if dof > 1 else (0.0, 0.0)
        for k in range(2, dof - 1, 2):
            term *= cos2 * k / (k + 1)
            total += term
        return 2.0 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    total, term = 1.0, 1.0
    for k in range(1, dof - 2, 2):
        term *= cos2 * k / (k + 1)
        total += term
    return math.sin(theta) * total


def student_t_quantile(confidence: float, dof: int) -> float:
    """The ``t`` with ``P(|T| < t) = confidence``: the half-width factor of a two-sided interval.

    :param confidence: coverage of the interval, in ``(0, 1)``
    :param dof: degrees of freedom
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    low, high = 0.0, 1.0
    while student_t_two_sided(high, dof) < confidence:
        high *= 2.0
    for _ in range(100):
        middle = 0.5 * (low + high)
        if student_t_two_sided(middle, dof) < confidence:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def t_interval(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval of the mean of ``values``.

    :param values: independent observations (at least one; one gives a half-width of ``nan``)
    :param confidence: coverage of the interval
    :return: ``(mean, half_width)``
    """
    data = np.asarray(values, dtype=np.float64).reshape(-1)
    if data.size == 0:
        raise ValueError("t_interval needs at least one value")
    mean = float(data.mean())
    if data.size == 1:
        return mean, math.nan
    standard_error = float(data.std(ddof=1)) / math.sqrt(data.size)
    return mean, student_t_quantile(confidence, data.size - 1) * standard_error


def normalized_score(reward: float, static_reward: float, oracle_reward: float) -> float:
    """``(R - R_static) / (R_oracle - R_static)``: 0 is the best static configuration, 1 the oracle.

    ``nan`` when the oracle does not beat the best static configuration (nothing to normalize by).
    """
    gap = oracle_reward - static_reward
    if not gap > 0:
        return math.nan
    return (reward - static_reward) / gap


@dataclass
class PolicyMetrics:
    """The summary of one policy (or of several training seeds of one learner) in one condition.

    :param name: row name (``"sacd"``, ``"sacd (seed 1)"``, ``"sacd (3 seeds)"``, ``"greedy"``)
    :param condition: the evaluation condition (channel model or trace file)
    :param kind: ``"learned"``, ``"baseline"`` or ``"seeds"`` (an aggregate over training seeds)
    :param episodes: evaluation episodes
    :param requests: requests served
    :param reward: mean reward per request
    :param reward_ci95: half-width of the 95% t-interval (over episodes; over training seeds for
        ``kind="seeds"``)
    :param latency_ms: mean end-to-end latency
    :param latency_p95_ms: 95th percentile latency
    :param accuracy: mean correctness
    :param deadline_miss_rate: fraction of requests over the deadline
    :param energy_mj: mean device energy per request
    :param payload_bytes: mean bytes sent per request
    :param exits: fraction of requests per exit index
    :param splits: fraction of requests per split index
    :param bits: fraction of requests per bit option label (``"local"``: nothing sent)
    :param normalized_score: ``(R - R_static) / (R_oracle - R_static)``
    :param gain_vs_static: mean per-episode reward minus the best static configuration's
    :param gain_vs_static_ci95: half-width of its paired 95% t-interval (over episodes; over
        training seeds for ``kind="seeds"``)
    :param seeds: training seeds behind an aggregate row
    :param reward_seed_std: standard deviation of the mean reward across training seeds
    :param normalized_score_seed_std: the same for the normalized score
    """

    name: str
    condition: str
    kind: str
    episodes: int
    requests: int
    reward: float
    reward_ci95: float
    latency_ms: float
    latency_p95_ms: float
    accuracy: float
    deadline_miss_rate: float
    energy_mj: float
    payload_bytes: float
    exits: dict[str, float]
    splits: dict[str, float]
    bits: dict[str, float]
    normalized_score: float = math.nan
    gain_vs_static: float = math.nan
    gain_vs_static_ci95: float = math.nan
    seeds: list[int] = field(default_factory=list)
    reward_seed_std: float = math.nan
    normalized_score_seed_std: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (``nan`` becomes ``None``)."""
        return _json_safe(dataclasses.asdict(self))


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fractions(values: np.ndarray, labels: Sequence[str], codes: Sequence[int]) -> dict[str, float]:
    counts = {
        label: float(np.mean(values == code)) for label, code in zip(labels, codes, strict=True)
    }
    return counts


def summarize(
    rollout: Rollout,
    bit_options: Sequence[int | str],
    *,
    condition: str = "",
    kind: str = "baseline",
) -> PolicyMetrics:
    """The metrics of one policy's rollout (the normalized score is set by :func:`score`).

    :param rollout: the per-request records of the policy
    :param bit_options: the profile's bit options (labels of the bits distribution)
    :param condition: the evaluation condition's name
    :param kind: ``"learned"`` or ``"baseline"``
    """
    episode_rewards = rollout.reward.mean(axis=1)
    reward, half_width = t_interval(episode_rewards)
    n_exits = int(rollout.n_exits)
    n_splits = int(rollout.n_splits)
    bit_labels = [*(str(option) for option in bit_options), LOCAL_LABEL]
    bit_codes = [*range(len(bit_options)), LOCAL_BITS]
    return PolicyMetrics(
        name=rollout.name,
        condition=condition,
        kind=kind,
        episodes=rollout.episodes,
        requests=int(rollout.reward.size),
        reward=reward,
        reward_ci95=half_width,
        latency_ms=float(rollout.latency_s.mean() * 1e3),
        latency_p95_ms=float(np.percentile(rollout.latency_s, 95) * 1e3),
        accuracy=float(rollout.correct.mean()),
        deadline_miss_rate=float(rollout.deadline_missed.mean()),
        energy_mj=float(rollout.energy_j.mean() * 1e3),
        payload_bytes=float(rollout.payload_bytes.mean()),
        exits=_fractions(rollout.exit, [str(e) for e in range(n_exits)], range(n_exits)),
        splits=_fractions(rollout.split, [str(s) for s in range(n_splits)], range(n_splits)),
        bits=_fractions(rollout.bits, bit_labels, bit_codes),
    )


def score(
    rows: Sequence[PolicyMetrics],
    rollouts: Sequence[Rollout],
    static: Rollout,
    oracle_reward: float,
) -> None:
    """Set the normalized score and the paired gain over the best static configuration, in place.

    :param rows: the summaries of ``rollouts``, in the same order
    :param rollouts: the policies' rollouts on the same seeds as ``static``
    :param static: the best static configuration's rollout
    :param oracle_reward: the oracle's mean reward
    """
    static_rewards = static.reward.mean(axis=1)
    static_reward = float(static_rewards.mean())
    for row, rollout in zip(rows, rollouts, strict=True):
        if rollout.seeds != static.seeds:
            raise ValueError(f"{rollout.name} ran on other seeds than {static.name}")
        row.normalized_score = normalized_score(row.reward, static_reward, oracle_reward)
        row.gain_vs_static, row.gain_vs_static_ci95 = t_interval(
            rollout.reward.mean(axis=1) - static_rewards
        )


def aggregate_seeds(name: str, rows: Sequence[PolicyMetrics]) -> PolicyMetrics:
    """One row for several training seeds of a learner: the mean of their metrics and the spread.

    ``reward_ci95`` is the t-interval over the seeds' mean rewards (the spread that matters when
    comparing learners), ``reward_seed_std`` their standard deviation.

    :param name: the row's name, e.g. ``"sacd (3 seeds)"``
    :param rows: one row per training seed, all of the same condition
    """
    if not rows:
        raise ValueError("aggregate_seeds needs at least one row")
    rewards = np.array([row.reward for row in rows])
    scores = np.array([row.normalized_score for row in rows])
    reward, half_width = t_interval(rewards)
    gain, gain_half_width = t_interval([row.gain_vs_static for row in rows])

    def mean_of(attribute: str) -> float:
        return float(np.mean([getattr(row, attribute) for row in rows]))

    def mean_distribution(attribute: str) -> dict[str, float]:
        keys = getattr(rows[0], attribute).keys()
        return {key: float(np.mean([getattr(row, attribute)[key] for row in rows])) for key in keys}

    return PolicyMetrics(
        name=name,
        condition=rows[0].condition,
        kind="seeds",
        episodes=rows[0].episodes,
        requests=sum(row.requests for row in rows),
        reward=reward,
        reward_ci95=half_width,
        latency_ms=mean_of("latency_ms"),
        latency_p95_ms=mean_of("latency_p95_ms"),
        accuracy=mean_of("accuracy"),
        deadline_miss_rate=mean_of("deadline_miss_rate"),
        energy_mj=mean_of("energy_mj"),
        payload_bytes=mean_of("payload_bytes"),
        exits=mean_distribution("exits"),
        splits=mean_distribution("splits"),
        bits=mean_distribution("bits"),
        normalized_score=float(np.mean(scores)),
        gain_vs_static=gain,
        gain_vs_static_ci95=gain_half_width,
        seeds=[seed for row in rows for seed in row.seeds],
        reward_seed_std=float(rewards.std(ddof=1)) if len(rows) > 1 else math.nan,
        normalized_score_seed_std=float(scores.std(ddof=1)) if len(rows) > 1 else math.nan,
    )
