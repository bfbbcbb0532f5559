"""Tests of the policy benchmark's aggregation and cell keys (no training)."""

import numpy as np
import pytest

from benchmarks.bench_policy import EvalCell, TrainCell, aggregate_condition, variant


def test_aggregation_pairs_episodes_and_counts_seeds() -> None:
    baselines = {
        "channel-blind": np.array([0.70, 0.72, 0.74, 0.76]),
        "robust-mpc": np.array([0.71, 0.74, 0.75, 0.78]),
        "clairvoyant-lookahead": np.array([0.80, 0.82, 0.84, 0.86]),
    }
    # seed 0 beats robust-mpc by 0.01 on every episode, seed 1 by 0.02, seed 2 loses 0.01
    learner = baselines["robust-mpc"][None, :] + np.array([[0.01], [0.02], [-0.01]])
    result = aggregate_condition(
        "default", "markov", baselines, {"sacd": learner}, ["channel-blind", "robust-mpc"]
    )
    row = result["learners"]["sacd"]
    assert result["best_causal"] == "robust-mpc"
    assert row["gains"]["robust-mpc"]["seeds_better"] == 2
    assert row["gains"]["robust-mpc"]["low"] <= 0.01 <= row["gains"]["robust-mpc"]["high"]
    assert row["gains"]["channel-blind"]["seeds_better"] == 3
    assert not row["beats_every_causal_baseline"]
    best, upper = baselines["robust-mpc"].mean(), baselines["clairvoyant-lookahead"].mean()
    assert row["score"] == pytest.approx((row["reward_iqm"] - best) / (upper - best))


def test_cell_keys_are_distinct_and_variants_are_checked() -> None:
    keys = {
        TrainCell("sacd", "default", 0, 1000).key,
        TrainCell("sacd", "default", 1, 1000).key,
        EvalCell("robust-mpc", "default", "trace:a.up", 10).key,
        EvalCell("sacd", "default", "trace:a.up", 10, seed=0, timesteps=1000).key,
    }
    assert len(keys) == 4
    assert variant("sacd-center").algo == "sacd"
    with pytest.raises(ValueError, match="unknown learner 'nope'"):
        variant("nope")
