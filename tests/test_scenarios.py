"""Named scenarios on the shipped default profile: they run, adapting is worth something in the
default one, and profile replay agrees with live inference."""

from __future__ import annotations

import numpy as np
import pytest

from splitrl.envs import SCENARIOS, SplitComputingEnv, get_scenario
from splitrl.evaluation.references import UPPER_GAIN_GOAL, adaptation_value, reference_rollouts
from splitrl.models.fashion_mnist import idx_paths


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_runs(name: str) -> None:
    env = SplitComputingEnv(name)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    _, reward, _, _, info = env.step(env.evaluate_actions().best())
    assert np.isfinite(reward) and info["latency_s"] > 0
    assert get_scenario(name).to_dict()["name"] == name


#: paired episodes of the non-triviality test (apart from the evaluation seeds)
NONTRIVIALITY_EPISODES = 10


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="the current default profile misses the first goal: on 40 evaluation episodes "
    "clairvoyant-lookahead - channel-blind = +0.043 ± 0.008 (robust-mpc - channel-blind = "
    "+0.009 ± 0.007, docs/evaluation.md); remove this mark when the network and scenario meet both",
)
def test_default_scenario_adapting_is_worth_something() -> None:
    """On the default (Markov) channel, clairvoyant-lookahead beats channel-blind by at least 0.05
    reward per request, and the best causal baseline other than channel-blind beats channel-blind
    with a paired 95% interval above zero: the link is worth watching."""
    rollouts, causal = reference_rollouts(
        lambda: SplitComputingEnv("default"),
        range(100, 100 + NONTRIVIALITY_EPISODES),
        fit_episodes=1,
        fit_seed=0,
    )
    value = adaptation_value(rollouts, causal)
    assert value.upper_gain.mean >= UPPER_GAIN_GOAL, value.summary()
    assert value.causal_gain.is_positive(), value.summary()


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
