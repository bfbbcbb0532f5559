"""One request served from many start times, or with every action, at once (numpy) equals
serving it once per start or action."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from splitrl.envs import SplitComputingEnv
from splitrl.envs.channels import TraceChannel
from splitrl.envs.channels.base import PiecewiseConstantChannel
from splitrl.envs.channels.randomized import RandomizedChannel, TraceMixChannel
from splitrl.envs.reward import get_reward_spec
from splitrl.envs.scenarios import network_channel
from splitrl.envs.server_load import ServerLoad
from splitrl.envs.time_model import LinkOverheads
from splitrl.envs.traces import Trace
from splitrl.profiles.schema import Profile

#: a link with outages: 2 Mbit/s, nothing for 0.3 s, 200 kbit/s, nothing for 0.1 s
OUTAGES = Trace.from_rates([2e6, 0.0, 0.0, 0.0, 2e5, 0.0], slot_s=0.1)


def channels() -> list[PiecewiseConstantChannel | RandomizedChannel | TraceMixChannel]:
    built: list[PiecewiseConstantChannel | RandomizedChannel | TraceMixChannel] = [
        network_channel(name, (0.5, 12.0), 2.45) for name in ("markov", "fading", "gilbert-elliott")
    ]
    mix = TraceMixChannel([OUTAGES, Trace.from_rates([3e6, 1e5], slot_s=0.2)])
    return [*built, TraceChannel(OUTAGES), RandomizedChannel((0.5, 12.0)), mix]


@pytest.mark.parametrize("channel", channels(), ids=lambda c: type(c).__name__)
def test_channel_queries_at_many_times_equal_the_single_ones(
    channel: PiecewiseConstantChannel | RandomizedChannel | TraceMixChannel,
) -> None:
    channel.reset(np.random.default_rng(5))
    starts = np.sort(np.random.default_rng(0).uniform(0.0, 3.0, 200))
    for n_bytes in (0, 1, 700, 60_000):
        expected = [channel.transfer_time(n_bytes, t) for t in starts.tolist()]
        assert channel.transfer_times(n_bytes, starts).tolist() == expected
    assert channel.capacities(starts).tolist() == [channel.capacity(t) for t in starts.tolist()]
    assert channel.transfer_times(700, np.empty(0)).shape == (0,)
    with pytest.raises(ValueError, match="n_bytes must be non-negative"):
        channel.transfer_times(-1, starts)
    # one payload per start (as every action of one request has)
    sizes = np.random.default_rng(1).integers(0, 60_000, starts.size)
    sizes[::7] = 0
    pairs = zip(sizes.tolist(), starts.tolist(), strict=True)
    expected = [channel.transfer_time(n, t) for n, t in pairs]
    assert channel.transfer_times(sizes, starts).tolist() == expected
    with pytest.raises(ValueError, match="n_bytes must be non-negative, got -3"):
        channel.transfer_times(np.where(sizes == 0, -3, sizes), starts)


def test_server_loads_at_many_times_equal_the_single_ones() -> None:
    load = ServerLoad()
    load.reset(np.random.default_rng(2))
    times = np.random.default_rng(1).uniform(0.0, 30.0, 100)
    assert load.loads(times).tolist() == [load.load(t) for t in times.tolist()]


class ScalarOnly:
    """A channel that times one transfer at a time: the env serves it one start at a time."""

    def __init__(self, channel: PiecewiseConstantChannel) -> None:
        self.channel = channel

    def reset(self, rng: np.random.Generator) -> None:
        self.channel.reset(rng)

    def capacity(self, t: float) -> float:
        return self.channel.capacity(t)

    def transfer_time(self, n_bytes: int, t0: float) -> float:
        return self.channel.transfer_time(n_bytes, t0)

    def mean_throughput(self, t0: float, t1: float) -> float:
        return self.channel.mean_throughput(t0, t1)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"transfer_timeout_s": 0.05},
        {"link_overheads": LinkOverheads(header_bytes_per_packet=66, burst_bytes=1600)},
    ],
    ids=["plain", "timeout", "link-overheads"],
)
def test_an_action_from_many_start_times_equals_each_start(
    tiny_profile: Profile, overrides: dict[str, object]
) -> None:
    """Every canonical action of a few requests on a link with outages, from start times on
    either side of the request's own start: the rewards and device-free times of the numpy path
    are those of serving one start at a time (timeouts and link overheads included)."""
    envs = [
        SplitComputingEnv(
            profile=tiny_profile,
            channel=channel,  # type: ignore[arg-type]
            frame_interval_s=0.03,
            **overrides,  # type: ignore[arg-type]
        )
        for channel in (TraceChannel(OUTAGES), ScalarOnly(TraceChannel(OUTAGES)))
    ]
    for env in envs:
        env.reset(seed=0)
    numpy_env, scalar_env = envs
    for _ in range(12):
        starts = numpy_env.request_start_s + np.linspace(-0.05, 0.4, 23)
        for action in numpy_env.evaluate_actions().actions:
            rewards, frees = numpy_env.evaluate_action_from(action, starts)
            expected_rewards, expected_frees = scalar_env.evaluate_action_from(action, starts)
            assert rewards.tolist() == pytest.approx(expected_rewards.tolist(), abs=1e-12)
            assert frees.tolist() == pytest.approx(expected_frees.tolist(), abs=1e-12)
            one = numpy_env.evaluate_action_from(action, float(starts[3]))
            assert one == pytest.approx((rewards[3], frees[3]), abs=1e-12)
        best = numpy_env.evaluate_actions().best()
        numpy_env.step(best)
        scalar_env.step(best)


@pytest.mark.parametrize("correctness", ["sample", "expected"])
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"transfer_timeout_s": 0.05},
        {"link_overheads": LinkOverheads(header_bytes_per_packet=66, burst_bytes=1600)},
    ],
    ids=["plain", "timeout", "link-overheads"],
)
def test_every_action_at_once_is_what_a_step_with_it_gets(
    tiny_profile: Profile, overrides: dict[str, object], correctness: str
) -> None:
    """``evaluate_actions(know_labels=True)`` serves every canonical action at once (numpy); on a
    link with outages each of its outcomes is what stepping a copy of the env with that action
    gets. Only each exit's device-only answer is correct in this profile, so an action whose
    transfer was given up (answered on the device) is told apart."""
    correct = np.zeros_like(tiny_profile.correct)
    for e, k_e in enumerate(tiny_profile.exit_stages):
        correct[:, k_e, 0, e] = 1
    env = SplitComputingEnv(
        profile=dataclasses.replace(tiny_profile, correct=correct),
        channel=TraceChannel(OUTAGES),
        frame_interval_s=0.03,
        reward=get_reward_spec("deadline", correctness=correctness),
        **overrides,  # type: ignore[arg-type]
    )
    env.reset(seed=0)
    given_up = 0
    for step in range(8):
        outcomes = env.evaluate_actions(know_labels=True)
        for i, action in enumerate(outcomes.actions):
            _, reward, _, _, info = copy.deepcopy(env).step(action)
            assert reward == outcomes.reward[i], (step, action)
            for key, values in (
                ("latency_s", outcomes.latency_s),
                ("energy_j", outcomes.energy_j),
                ("correct", outcomes.correct),
                ("payload_bytes", outcomes.payload_bytes),
                ("gave_up", outcomes.gave_up),
            ):
                assert info[key] == values[i], (step, action, key)
        given_up += int(outcomes.gave_up.sum())
        env.step(outcomes.actions[step % 7])
    assert given_up > 0 or "transfer_timeout_s" not in overrides


def test_an_assumed_capacity_must_be_positive(tiny_profile: Profile) -> None:
    env = SplitComputingEnv(profile=tiny_profile)
    env.reset(seed=0)
    for capacity in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="capacity_bps must be a positive bit rate"):
            env.evaluate_actions(capacity_bps=capacity)


def test_many_start_times_far_apart_keep_the_history_they_need() -> None:
    """Starts further apart than the channel keeps history: answered as one call per start in
    time order answers them (the history is kept from the earliest)."""
    from splitrl.envs.channels import MarkovChannel

    def channel() -> MarkovChannel:
        built = MarkovChannel(
            levels_bps=(1e5, 1e6),
            transition_matrix=((0.5, 0.5), (0.5, 0.5)),
            slot_s=1e-4,
            history_s=1.0,
        )
        built.reset(np.random.default_rng(0))
        return built

    starts = np.array([0.2, 1.5, 3.0])
    single = channel()
    expected = [single.transfer_time(5000, t) for t in starts.tolist()]
    assert channel().transfer_times(5000, starts).tolist() == expected
    ascending = channel()
    capacities = [ascending.capacity(t) for t in starts.tolist()]
    assert channel().capacities(starts[::-1]).tolist() == capacities[::-1]
