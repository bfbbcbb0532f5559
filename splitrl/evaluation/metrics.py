"""Metrics of evaluated policies: rewards with t-intervals, paired gains, latency, accuracy, actions.

Every number refers to the requests of the evaluation episodes:

* ``reward``: mean reward per request; the 95% confidence interval is a Student-t interval over the
  episodes' mean rewards (episodes are independent draws of channel and requests).
* ``gains``: against every evaluated baseline, the mean over episodes of ``R_episode -
  R_baseline_episode`` with its paired 95% t-interval. Both policies faced the same channel and
  requests in each episode (common random numbers), so this interval is far narrower than the two
  rewards' own intervals.
* ``normalized_score``: ``(R - R_low) / (R_high - R_low)``: 0 is the best causal baseline, 1 the
  upper reference ``clairvoyant-lookahead`` (see :mod:`splitrl.evaluation.references`).
* ``latency_ms`` / ``latency_p95_ms``: mean and 95th percentile end-to-end latency.
* ``accuracy``: mean of the env's ``correct`` (per sample, or the profile's accuracy of the action
  under ``correctness="expected"`` rewards).
* ``deadline_miss_rate``, ``energy_mj`` (device energy per request), ``payload_bytes`` (bytes sent
  per request, 0 for device-only requests).
* ``exits``, ``splits``, ``bits``: fractions of requests per chosen exit, split and bit option of
  the canonical action; device-only requests send nothing and count under the bit option
  ``"local"``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from splitrl.agents.rollout import LOCAL_BITS, Rollout
from splitrl.statistics import PairedDifference, t_interval

#: the bit-option label of device-only requests in the action distribution
LOCAL_LABEL = "local"
#: the normalized score is ``nan`` when its two references are closer than this (reward per
#: request): a ratio of two small, noisy numbers says nothing; read the paired gain instead
MIN_SCORE_GAP = 0.01


def episode_rewards(rollout: Rollout) -> np.ndarray:
    """The mean reward per request of every episode of ``rollout``."""
    return np.asarray(rollout.reward.mean(axis=1))


def paired_difference(rollout: Rollout, reference: Rollout) -> PairedDifference:
    """``rollout``'s reward minus ``reference``'s, paired per episode.

    :raises ValueError: when the two ran on different seeds (the pairing would be meaningless)
    """
    if rollout.seeds != reference.seeds:
        raise ValueError(f"{rollout.name} ran on other seeds than {reference.name}")
    mean, half_width = t_interval(episode_rewards(rollout) - episode_rewards(reference))
    return PairedDifference(reference.name, mean, half_width)


def normalized_score(
    reward: float, low_reward: float, high_reward: float, min_gap: float = MIN_SCORE_GAP
) -> float:
    """``(R - R_low) / (R_high - R_low)``: 0 is the lower reference, 1 the upper one.

    :param reward: the policy's mean reward per request
    :param low_reward: the lower reference's (the best causal baseline)
    :param high_reward: the upper reference's (``clairvoyant-lookahead``)
    :param min_gap: the smallest ``R_high - R_low`` worth normalizing by
    :return: the score, ``nan`` when the references are less than ``min_gap`` apart
    """
    gap = high_reward - low_reward
    if not gap >= min_gap:
        return math.nan
    return (reward - low_reward) / gap


@dataclass
class PolicyMetrics:
    """The summary of one policy in one condition.

    :param name: row name (``"sacd"``, ``"sacd (seed 1)"``, ``"robust-mpc"``)
    :param condition: the evaluation condition (channel model or trace file)
    :param kind: ``"learned"`` or ``"baseline"``
    :param causal: whether the policy decides only from what the device knows at decision time
    :param episodes: evaluation episodes
    :param requests: requests served
    :param reward: mean reward per request
    :param reward_ci95: half-width of the 95% t-interval over episodes
    :param latency_ms: mean end-to-end latency
    :param latency_p95_ms: 95th percentile latency
    :param accuracy: mean correctness
    :param deadline_miss_rate: fraction of requests over the deadline
    :param energy_mj: mean device energy per request
    :param payload_bytes: mean bytes sent per request
    :param exits: fraction of requests per exit index
    :param splits: fraction of requests per split index
    :param bits: fraction of requests per bit option label (``"local"``: nothing sent)
    :param normalized_score: ``(R - R_best_causal) / (R_clairvoyant_lookahead - R_best_causal)``
    :param gains: the paired gain over every evaluated baseline, by baseline name
    :param seeds: the training seed of a learned policy
    """

    name: str
    condition: str
    kind: str
    causal: bool
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
    gains: dict[str, PairedDifference] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (``nan`` becomes ``None``)."""
        return json_safe(dataclasses.asdict(self))


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no ``nan``)."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fractions(values: np.ndarray, labels: Sequence[str], codes: Sequence[int]) -> dict[str, float]:
    return {
        label: float(np.mean(values == code)) for label, code in zip(labels, codes, strict=True)
    }


def summarize(
    rollout: Rollout,
    bit_options: Sequence[int | str],
    *,
    condition: str = "",
    kind: str = "baseline",
    causal: bool = True,
) -> PolicyMetrics:
    """The metrics of one policy's rollout (gains and score are set by :func:`compare`).

    :param rollout: the per-request records of the policy
    :param bit_options: the profile's bit options (labels of the bits distribution)
    :param condition: the evaluation condition's name
    :param kind: ``"learned"`` or ``"baseline"``
    :param causal: whether the policy decides only from what the device knows
    """
    reward, half_width = t_interval(episode_rewards(rollout))
    n_exits = int(rollout.n_exits)
    n_splits = int(rollout.n_splits)
    bit_labels = [*(str(option) for option in bit_options), LOCAL_LABEL]
    bit_codes = [*range(len(bit_options)), LOCAL_BITS]
    return PolicyMetrics(
        name=rollout.name,
        condition=condition,
        kind=kind,
        causal=causal,
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


def compare(
    rows: Sequence[PolicyMetrics],
    rollouts: Mapping[str, Rollout],
    baselines: Sequence[str],
    low_reference: str,
    high_reference: str,
) -> None:
    """Set every row's paired gains over ``baselines`` and its normalized score, in place.

    :param rows: the summaries of the policies in ``rollouts``
    :param rollouts: every policy's rollout on the same seeds, by name
    :param baselines: the baselines to pair every row with
    :param low_reference: the policy at score 0 (the best causal baseline)
    :param high_reference: the policy at score 1 (``clairvoyant-lookahead``)
    """
    low = float(episode_rewards(rollouts[low_reference]).mean())
    high = float(episode_rewards(rollouts[high_reference]).mean())
    for row in rows:
        rollout = rollouts[row.name]
        row.gains = {name: paired_difference(rollout, rollouts[name]) for name in baselines}
        row.normalized_score = normalized_score(row.reward, low, high)
