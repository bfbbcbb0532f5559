"""Named scenarios on the shipped default profile: they run, the default one is non-trivial, and
profile replay agrees with live inference."""

from __future__ import annotations

import numpy as np
import pytest

from splitrl.envs import SCENARIOS, SplitComputingEnv, get_scenario
from splitrl.envs.diagnostics import oracle_statistics
from splitrl.models.fashion_mnist import idx_paths


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_runs(name: str) -> None:
    env = SplitComputingEnv(name)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    _, reward, _, _, info = env.step(env.evaluate_actions().best())
    assert np.isfinite(reward) and info["latency_s"] > 0
    assert get_scenario(name).to_dict()["name"] == name


def test_default_scenario_decision_depends_on_the_state() -> None:
    """The oracle's most frequent action covers < 60% of requests, and >= 3 (exit, split) pairs
    each cover >= 5%: no static rule is as good."""
    stats = oracle_statistics(SplitComputingEnv("default"), episodes=5, seed=100)
    assert stats.requests == 5 * SplitComputingEnv("default").horizon
    assert stats.top_action_share < 0.6, stats
    assert stats.pairs_above(0.05) >= 3, stats


def _fashion_mnist_available() -> bool:
    return all(path.exists() for path in idx_paths("test"))


@pytest.mark.skipif(
    not _fashion_mnist_available(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): live mode needs it",
)
def test_replay_agrees_with_live_inference() -> None:
    replay = SplitComputingEnv("default")
    live = SplitComputingEnv("default", mode="live")
    rng = np.random.default_rng(0)
    canonical = replay.actions.canonical_actions()
    for env in (replay, live):
        env.reset(seed=5)
    for _ in range(40):
        action = np.array(canonical[int(rng.integers(len(canonical)))])
        _, _, _, _, replayed = replay.step(action)
        _, _, _, _, lived = live.step(action)
        assert replayed["sample_index"] == lived["sample_index"]
        assert replayed["payload_bytes"] == lived["payload_bytes"], action
        assert replayed["correct"] == lived["correct"], action
