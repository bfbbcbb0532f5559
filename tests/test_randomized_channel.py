"""Tests of the randomized channel used for domain randomization in training."""

import numpy as np
import pytest

from splitrl.envs import SplitComputingEnv
from splitrl.envs.channels.fading import BlockFadingChannel
from splitrl.envs.channels.gilbert_elliott import GilbertElliottChannel
from splitrl.envs.channels.markov import MarkovChannel
from splitrl.envs.channels.randomized import RandomizedChannel

TIMES = np.arange(0.0, 60.0, 0.25)


def realization(channel: RandomizedChannel, seed: int) -> np.ndarray:
    channel.reset(np.random.default_rng(seed))
    return np.array([channel.capacity(t) for t in TIMES])


def test_same_seed_same_channel_and_every_model_drawn() -> None:
    channel = RandomizedChannel((1.0, 20.0))
    np.testing.assert_array_equal(realization(channel, 7), realization(channel, 7))
    kinds, outages = set(), 0
    for seed in range(40):
        capacities = realization(channel, seed)
        kinds.add(type(channel.current))
        outages += int(capacities.min() == 0.0)
        assert np.all(capacities >= 0.0)
    assert kinds == {MarkovChannel, GilbertElliottChannel, BlockFadingChannel}
    assert outages > 0


def test_transfers_agree_with_the_drawn_channel() -> None:
    channel = RandomizedChannel((1.0, 20.0))
    channel.reset(np.random.default_rng(3))
    assert channel.current is not None
    assert channel.transfer_time(50_000, 1.0) == channel.current.transfer_time(50_000, 1.0)
    assert channel.mean_throughput(0.0, 5.0) == channel.current.mean_throughput(0.0, 5.0)


def test_errors() -> None:
    with pytest.raises(ValueError, match="uplink range"):
        RandomizedChannel((5.0, 1.0))
    with pytest.raises(RuntimeError, match="call reset"):
        RandomizedChannel((1.0, 5.0)).capacity(0.0)


@pytest.mark.parametrize(
    "channel", ["randomized", "cellular", "randomized-cellular", "randomized-all"]
)
def test_env_trains_on_randomized_and_cellular_channels(channel: str) -> None:
    env = SplitComputingEnv("default", channel=channel, horizon=20)
    rewards = []
    for seed in range(3):
        env.reset(seed=seed)
        for _ in range(20):
            _, reward, *_ = env.step(env.action_space.sample())
            rewards.append(reward)
    assert np.all(np.isfinite(rewards))
