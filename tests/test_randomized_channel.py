"""Tests of the randomized channels used for domain randomization in training: synthetic models
with drawn parameters, a mix of recorded traces, and a mixture of such channels."""

import re
from pathlib import Path

import numpy as np
import pytest

from splitrl.envs import SplitComputingEnv
from splitrl.envs.channels.fading import BlockFadingChannel
from splitrl.envs.channels.gilbert_elliott import GilbertElliottChannel
from splitrl.envs.channels.markov import MarkovChannel
from splitrl.envs.channels.randomized import (
    ChannelMixture,
    EpisodeDrawnChannel,
    RandomizedChannel,
    TraceMixChannel,
    make_trace_mix,
    mixture_specs,
    trace_mix_paths,
)
from splitrl.envs.traces import Trace, TraceFormatError
from splitrl.training.config import TrainConfig

TIMES = np.arange(0.0, 60.0, 0.25)


def realization(channel: EpisodeDrawnChannel, seed: int) -> np.ndarray:
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


def write_trace(path: Path, mbps: float, outage_s: float = 0.0) -> Path:
    """A ``time_s,Mbps`` CSV trace of 30 s at ``mbps``, ending in ``outage_s`` of nothing."""
    rows = [f"{t:.1f},{mbps}" for t in np.arange(0.5, 30.0 - outage_s + 0.01, 0.5)]
    rows += [f"{30.0 - outage_s + t:.1f},0" for t in np.arange(0.5, outage_s + 0.01, 0.5)]
    path.write_text("time_s,Mbps\n" + "\n".join(rows) + "\n")
    return path


def episodes_drawn(
    env: SplitComputingEnv, channel: TraceMixChannel | ChannelMixture, episodes: int
) -> set[int | None]:
    """Which of ``channel``'s members ``episodes`` seeded episodes of random actions drew; every
    reward must be finite."""
    drawn, rewards = set(), []
    for seed in range(episodes):
        env.reset(seed=seed)
        drawn.add(channel.drawn)
        for _ in range(env.horizon):
            _, reward, *_ = env.step(env.action_space.sample())
            rewards.append(reward)
    assert np.all(np.isfinite(rewards))
    return drawn


def test_trace_mix_draws_every_trace_from_a_random_offset() -> None:
    rates = (1e6, 4e6, 16e6)
    mix = TraceMixChannel([Trace.from_rates([rate] * 50, slot_s=0.2) for rate in rates])
    np.testing.assert_array_equal(realization(mix, 3), realization(mix, 3))
    drawn = []
    for seed in range(30):
        capacities = realization(mix, seed)
        assert mix.drawn is not None
        drawn.append(mix.drawn)
        assert np.all(capacities == rates[mix.drawn])
        assert mix.current is not None
        assert mix.transfer_time(10_000, 2.0) == mix.current.transfer_time(10_000, 2.0)
    assert set(drawn) == {0, 1, 2}
    assert mix.names == ("trace-0", "trace-1", "trace-2")


def test_trace_mix_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one trace"):
        TraceMixChannel([])
    with pytest.raises(ValueError, match="2 names for 1 traces"):
        TraceMixChannel([Trace.from_rates([1e6, 2e6], slot_s=1.0)], names=["a", "b"])
    with pytest.raises(RuntimeError, match="call reset"):
        TraceMixChannel([Trace.from_rates([1e6, 2e6], slot_s=1.0)]).capacity(0.0)
    with pytest.raises(ValueError, match="expected 'traces:PATH,PATH"):
        trace_mix_paths("traces:a.csv,,b.csv")
    with pytest.raises(ValueError, match="names a trace twice"):
        trace_mix_paths("traces:a.csv,a.csv")
    with pytest.raises(FileNotFoundError, match=r"missing\.csv not found"):
        make_trace_mix(f"traces:{write_trace(tmp_path / 'a.csv', 5.0)},{tmp_path / 'missing.csv'}")
    (tmp_path / "bad.csv").write_text("time_s,Mbps\n1.0,abc\n")
    with pytest.raises(TraceFormatError, match=r"bad\.csv"):
        make_trace_mix(f"traces:{tmp_path / 'bad.csv'}")


def test_env_and_training_config_take_a_trace_mix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = write_trace(tmp_path / "fast.csv", 20.0)
    slow = write_trace(tmp_path / "slow.csv", 0.5, outage_s=10.0)
    env = SplitComputingEnv("default", channel=f"traces:{fast},{slow}", horizon=30)
    channel = env.unwrapped.channel
    assert isinstance(channel, TraceMixChannel)
    assert channel.names == ("fast.csv", "slow.csv")
    assert episodes_drawn(env, channel, episodes=8) == {0, 1}
    # a run records the mix with absolute paths, so that it loads wherever it is evaluated from
    monkeypatch.chdir(tmp_path)
    overrides = TrainConfig(channel="traces:fast.csv, slow.csv").scenario_overrides()
    assert overrides["channel"] == f"traces:{fast},{slow}"


def test_mixture_draws_every_member_and_each_member_draws_its_own() -> None:
    """A mixture of a trace mix and a constant channel: each episode is one member; the trace mix
    member then draws its own trace."""
    from splitrl.envs.channels import make_channel

    traces = TraceMixChannel([Trace.from_rates([rate] * 50, slot_s=0.2) for rate in (1e6, 4e6)])
    mixture = ChannelMixture([traces, make_channel("constant:9e6")], ["traces", "constant"])
    np.testing.assert_array_equal(realization(mixture, 5), realization(mixture, 5))
    seen = set()
    for seed in range(30):
        capacities = realization(mixture, seed)
        assert mixture.drawn is not None
        if mixture.drawn == 0:
            assert traces.drawn is not None
            seen.add(("traces", traces.drawn))
            assert np.all(capacities == (1e6, 4e6)[traces.drawn])
        else:
            seen.add(("constant", 0))
            assert np.all(capacities == 9e6)
        queries = np.array([1.0, 3.0])
        np.testing.assert_array_equal(
            mixture.transfer_times(20_000, queries),
            [mixture.transfer_time(20_000, float(t)) for t in queries],
        )
    assert seen == {("traces", 0), ("traces", 1), ("constant", 0)}


def test_mixture_errors() -> None:
    from splitrl.envs.channels import make_channel

    constant = make_channel("constant:1e6")
    with pytest.raises(ValueError, match="at least two members, got 1"):
        ChannelMixture([constant])
    with pytest.raises(ValueError, match="1 names for 2 members"):
        ChannelMixture([constant, constant], ["a"])

    class Bare:
        def reset(self, rng: np.random.Generator) -> None: ...

    with pytest.raises(ValueError, match="member 'bare' is a Bare, which answers no batch"):
        ChannelMixture([constant, Bare()], ["constant", "bare"])  # type: ignore[list-item]
    with pytest.raises(RuntimeError, match="call reset"):
        ChannelMixture([constant, constant]).capacity(0.0)
    for spec, match in [
        ("mix:markov", "expected 'mix:SPEC|SPEC"),
        ("mix:markov||fading", "expected 'mix:SPEC|SPEC"),
        ("mix:markov|markov", "names a member twice"),
        ("mix:markov|mix:fading", "may not be a mixture"),
        ("markov|fading", "starts with 'mix:'"),
    ]:
        with pytest.raises(ValueError, match=re.escape(match)):
            mixture_specs(spec)


def test_env_and_training_config_take_a_mixture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = write_trace(tmp_path / "fast.csv", 20.0)
    slow = write_trace(tmp_path / "slow.csv", 0.5)
    spec = f"mix:randomized-all|traces:{fast},{slow}"
    env = SplitComputingEnv("default", channel=spec, horizon=20)
    channel = env.unwrapped.channel
    assert isinstance(channel, ChannelMixture)
    assert channel.names == ("randomized-all", f"traces:{fast},{slow}")
    assert isinstance(channel.members[0], RandomizedChannel)
    assert isinstance(channel.members[1], TraceMixChannel)
    assert episodes_drawn(env, channel, episodes=10) == {0, 1}
    monkeypatch.chdir(tmp_path)
    overrides = TrainConfig(
        channel="mix:randomized-all|traces:fast.csv,slow.csv"
    ).scenario_overrides()
    assert overrides["channel"] == spec
    with pytest.raises(FileNotFoundError, match=r"nope\.csv not found"):
        SplitComputingEnv("default", channel=f"mix:markov|traces:{tmp_path / 'nope.csv'}")
