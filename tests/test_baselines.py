"""Baselines and references: valid actions, what each one may read, and the behaviour that defines it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from splitrl.agents.baselines import (
    BASELINES,
    DEFAULT_BACKLOG_HORIZON,
    BestStaticPolicy,
    ChannelBlindPolicy,
    ClairvoyantLookaheadPolicy,
    ClairvoyantPolicy,
    EdgentPolicy,
    GreedyPolicy,
    NeurosurgeonPolicy,
    OracleNowPolicy,
    RobustMPCPolicy,
    backlog_cost,
    causal_baselines,
    fitted_baselines,
    lossless_bit_index,
    make_baseline,
)
from splitrl.agents.baselines.spread import LatencySpread
from splitrl.agents.policy_interface import Policy
from splitrl.agents.rollout import run_episodes
from splitrl.envs import SplitComputingEnv
from splitrl.envs.server_load import ServerLoad
from splitrl.profiles.presets import get_device_preset
from splitrl.profiles.schema import Profile

#: the tiny model on a device slow enough that offloading sometimes pays off
SLOW_DEVICE = dataclasses.replace(get_device_preset("stm32h7"), compute_gflops=0.001)
#: frames faster than the tiny model's final exit on SLOW_DEVICE (10 ms), with a tight deadline:
#: a slow choice makes the next frames wait
QUEUEING: dict[str, Any] = {"frame_interval_s": 0.006, "deadline_s": 0.02}


def env_factory(
    profile: Profile, horizon: int = 50, *, fcfs: bool = False, **overrides: Any
) -> Callable[[], SplitComputingEnv]:
    """Envs of the tiny profile; ``fcfs``: a server whose queueing is a random draw per request."""

    def make() -> SplitComputingEnv:
        env = SplitComputingEnv(profile=profile, device=SLOW_DEVICE, horizon=horizon, **overrides)
        if fcfs:
            env.server_load = ServerLoad(discipline="fcfs")
        return env

    return make


def baseline(name: str, profile: Profile) -> Policy:
    if name in fitted_baselines():
        return make_baseline(name, env_factory=env_factory(profile), episodes=1, seed=100)
    return make_baseline(name)


def mean_reward(policy: Policy, env: SplitComputingEnv, seeds: list[int]) -> float:
    return float(run_episodes(policy, env, seeds).reward.mean())


@pytest.mark.parametrize("name", list(BASELINES))
def test_every_baseline_takes_valid_canonical_actions(name: str, tiny_profile: Profile) -> None:
    env = env_factory(tiny_profile)()
    rollout = run_episodes(baseline(name, tiny_profile), env, [0])
    mask = env.action_masks()
    assert rollout.reward.shape == (1, env.horizon)
    for e, s, b in zip(rollout.exit[0], rollout.split[0], rollout.bits[0], strict=True):
        assert mask[env.actions.flat_index(*env.actions.canonical(e, s, max(b, 0)))]


def test_every_baseline_says_whether_it_is_causal_and_what_it_knows() -> None:
    for name, factory in BASELINES.items():
        policy = factory()
        assert isinstance(policy.causal, bool) and policy.knows.strip(), name
    references = {"oracle-now", "clairvoyant", "clairvoyant-lookahead"}
    assert set(causal_baselines()) == set(BASELINES) - references
    assert set(fitted_baselines()) == {"best-static", "channel-blind"}


class _Forbidden:
    """Raises on any use: what the device cannot know while it decides."""

    def __init__(self, what: str) -> None:
        self._what = what

    def _refuse(self, *_: object) -> Any:
        raise AssertionError(f"read {self._what} while deciding")

    __getattr__ = __iter__ = __getitem__ = __call__ = _refuse


class _ServiceModelOnly:
    """The server's published service model at a reported load, without the true load.

    A policy may evaluate the queueing model with variates of its own; this request's own variate
    lies in ``env._draw``, which is hidden.
    """

    def __init__(self, server_load: ServerLoad) -> None:
        self._server_load = server_load

    def compute_slowdown(self, load: float) -> float:
        return self._server_load.compute_slowdown(load)

    def queueing_delay(self, load: float, service_time: float, u: float | None = None) -> float:
        return self._server_load.queueing_delay(load, service_time, u)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"read server_load.{name} (the true load) while deciding")


#: env attributes that hold the truth: the channel, the RTT and request draws, the radio's report
#: process (the device sees its report through ``env.knowledge``), and the all-knowing helpers
_HIDDEN = (
    "channel",
    "rtt",
    "_draw",
    "_requests",
    "link_quality_report",
    "evaluate_actions",
    "step",
    "reset",
)


@contextmanager
def device_view(env: SplitComputingEnv, also_hidden: tuple[str, ...] = ()) -> Iterator[None]:
    """Within the block, everything the device cannot know raises when touched."""
    names = [name for name in (*_HIDDEN, *also_hidden) if hasattr(env, name)]
    saved = {name: env.__dict__[name] for name in (*names, "server_load") if name in env.__dict__}
    for name in names:
        setattr(env, name, _Forbidden(name))
    env.server_load = _ServiceModelOnly(saved["server_load"])  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in names:
            if name not in saved:
                delattr(env, name)  # a method: the class's own comes back
        for name, value in saved.items():
            setattr(env, name, value)


class _DeviceViewPolicy:
    """Runs ``policy`` with every ``act`` inside :func:`device_view`."""

    def __init__(self, policy: Policy, also_hidden: tuple[str, ...] = ()) -> None:
        self.policy = policy
        self.name = policy.name
        self.also_hidden = also_hidden

    def reset(self, env: SplitComputingEnv) -> None:
        self.policy.reset(env)

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        with device_view(env, self.also_hidden):
            return self.policy.act(env, observation)


@pytest.mark.parametrize("name", causal_baselines())
def test_no_causal_baseline_reads_what_the_device_cannot_know(
    name: str, tiny_profile: Profile
) -> None:
    make_env = env_factory(tiny_profile, horizon=60, fcfs=True, **QUEUEING)
    policy = baseline(name, tiny_profile)
    guarded = run_episodes(_DeviceViewPolicy(policy), make_env(), [3])
    free = run_episodes(baseline(name, tiny_profile), make_env(), [3])
    np.testing.assert_array_equal(guarded.reward, free.reward)


def test_the_guard_catches_a_reference(tiny_profile: Profile) -> None:
    env = env_factory(tiny_profile)()
    with pytest.raises(AssertionError, match="while deciding"):
        run_episodes(_DeviceViewPolicy(OracleNowPolicy()), env, [0])
    with pytest.raises(AssertionError, match="while deciding"):
        run_episodes(_DeviceViewPolicy(ClairvoyantPolicy()), env, [0])


def test_predict_actions_is_the_step_time_model_at_the_devices_estimates(
    tiny_profile: Profile,
) -> None:
    env = env_factory(tiny_profile, horizon=80, fcfs=True, **QUEUEING, reward="energy-aware")()
    env.reset(seed=4)
    rng = np.random.default_rng(0)
    for _ in range(80):
        predicted = env.predict_actions()
        capacity = env.knowledge.throughput_estimate_bps
        for index, (e, s, b) in enumerate(predicted.actions):
            expected = env._simulate(e, s, b, capacity, predicted=True, know_labels=False)
            assert predicted.reward[index] == expected["reward"]
            assert predicted.latency_s[index] == expected["latency_s"]
            assert predicted.energy_j[index] == expected["energy_j"]
            assert predicted.payload_bytes[index] == expected["payload_bytes"]
            assert predicted.device_free_s[index] == expected["device_free"] - env._arrival
        assert predicted.wait_s == pytest.approx(expected["wait_s"])
        env.step(predicted.actions[rng.integers(len(predicted.actions))])


def test_backlog_cost_is_what_the_next_requests_lose_to_the_wait(tiny_profile: Profile) -> None:
    env = env_factory(tiny_profile, horizon=40, **QUEUEING)()
    env.reset(seed=0)
    outcomes = env.evaluate_actions()
    cost = backlog_cost(outcomes, env.frame_interval_s, env.reward_spec)
    leaves_no_wait = outcomes.device_free_s <= env.frame_interval_s
    assert leaves_no_wait.any() and (~leaves_no_wait).any()
    assert np.all(cost[leaves_no_wait] == 0.0)
    assert np.all(cost >= 0.0)
    # the longer the wait an action leaves, the more it costs
    order = np.argsort(outcomes.device_free_s)
    assert np.all(np.diff(cost[order]) >= -1e-12)
    assert cost[order[-1]] > 0.0
    with pytest.raises(ValueError, match="horizon"):
        backlog_cost(outcomes, env.frame_interval_s, env.reward_spec, 0)


def test_backlog_cost_counts_the_requests_until_the_backlog_has_drained(
    tiny_profile: Profile,
) -> None:
    env = env_factory(tiny_profile, horizon=40, **QUEUEING)()
    env.reset(seed=0)
    outcomes = env.evaluate_actions()
    cost = {
        horizon: backlog_cost(outcomes, env.frame_interval_s, env.reward_spec, horizon)
        for horizon in (2, DEFAULT_BACKLOG_HORIZON, 4 * DEFAULT_BACKLOG_HORIZON)
    }
    # two requests see only part of what a long wait costs
    assert np.all(cost[DEFAULT_BACKLOG_HORIZON] >= cost[2] - 1e-12)
    assert np.any(cost[DEFAULT_BACKLOG_HORIZON] > cost[2] + 0.01)
    # the default horizon has seen nearly all the price of a backlog that drains: counting four
    # times as many requests changes it by a tenth of what two requests leave out at most
    drains = cost[DEFAULT_BACKLOG_HORIZON] < 1.0
    longer = cost[4 * DEFAULT_BACKLOG_HORIZON][drains]
    left_out = np.abs(longer - cost[DEFAULT_BACKLOG_HORIZON][drains]).max()
    assert left_out < 0.1 * np.abs(longer - cost[2][drains]).max()


def test_latency_spread_prices_the_risk_of_missing_the_deadline(tiny_profile: Profile) -> None:
    env = env_factory(tiny_profile, fcfs=True)()
    env.reset(seed=0)
    predicted = env.predict_actions()
    offloaded = predicted.payload_bytes > 0
    # a deadline 1 ms after the fastest offloaded action's predicted latency: safe at the means,
    # missed whenever the RTT jitter or the server's queue adds more than 1 ms
    fastest = int(np.flatnonzero(offloaded)[np.argmin(predicted.latency_s[offloaded])])
    env.reward_spec = dataclasses.replace(
        env.reward_spec, deadline_s=float(predicted.latency_s[fastest]) + 1e-3
    )
    predicted = env.predict_actions()
    spread = LatencySpread(draws=256)
    spread.reset(env)
    expected = spread.expected_rewards(predicted, env)
    np.testing.assert_allclose(expected[~offloaded], predicted.reward[~offloaded])
    miss_penalty = env.reward_spec.w_miss
    assert predicted.reward[fastest] - expected[fastest] > 0.05 * miss_penalty


def test_channel_blind_decides_from_its_observation_and_the_profile_alone(
    tiny_profile: Profile,
) -> None:
    policy = _DeviceViewPolicy(
        ChannelBlindPolicy(0.5), also_hidden=("knowledge", "predict_actions")
    )
    rollouts = [
        run_episodes(policy, env_factory(tiny_profile, **QUEUEING, channel=channel)(), [0, 1])
        for channel in ("markov", "gilbert-elliott")
    ]
    exit_stages = np.asarray(tiny_profile.exit_stages)
    assert (rollouts[0].split >= exit_stages[rollouts[0].exit]).all()  # never offloads
    np.testing.assert_array_equal(rollouts[0].exit, rollouts[1].exit)


@pytest.mark.parametrize(("fraction", "expected_exit"), [(0.1, 0), (5.0, 1)])
def test_channel_blind_budget_chooses_between_fast_and_accurate(
    fraction: float, expected_exit: int, tiny_profile: Profile
) -> None:
    # exit 1 takes 10 ms on the device, exit 0 5 ms, frames come every 17 ms (nothing queues);
    # the budget is a fraction of the 40 ms deadline
    rollout = run_episodes(ChannelBlindPolicy(fraction), env_factory(tiny_profile)(), [0])
    assert (rollout.exit == expected_exit).all()


def test_channel_blind_fit_keeps_the_best_member(tiny_profile: Profile) -> None:
    factory = env_factory(tiny_profile, horizon=40, **QUEUEING)
    policy = make_baseline("channel-blind", env_factory=factory, episodes=2, seed=5)
    assert isinstance(policy, ChannelBlindPolicy)
    assert policy.deadline_fraction == policy.candidates[int(np.argmax(policy.mean_rewards))]
    assert len(set(policy.mean_rewards.round(9))) > 1  # the members differ
    assert policy.mean_rewards.max() == pytest.approx(
        mean_reward(ChannelBlindPolicy(policy.deadline_fraction), factory(), [5, 6])
    )
    with pytest.raises(RuntimeError, match="fit"):
        ChannelBlindPolicy().reset(factory())


def test_robust_mpc_lowers_its_forecast_after_a_big_over_estimate(tiny_profile: Profile) -> None:
    env = env_factory(tiny_profile)()
    observation, _ = env.reset(seed=0)
    policy = RobustMPCPolicy()
    policy.reset(env)
    policy.act(env, observation)
    assert policy.robust_bps == policy.predicted_bps  # no error measured yet
    measured = policy.predicted_bps / 10
    env.knowledge.record_transfer(1000, 8 * 1000 / measured, end_time=0.01)
    policy.act(env, observation)
    assert policy.errors[-1] == pytest.approx(9.0)  # |10 m - m| / m
    assert policy.robust_bps == pytest.approx(policy.predicted_bps / 10)
    # the harmonic mean follows the low measurement more than an arithmetic mean would
    samples = list(env.knowledge.throughputs)
    if env.knowledge.link_quality_bps is not None:
        samples.append(env.knowledge.link_quality_bps)
    assert policy.predicted_bps < np.mean(samples)
    policy.reset(env)
    assert not policy.errors


def test_robust_mpc_drains_the_backlog_that_greedy_lets_grow(tiny_profile: Profile) -> None:
    env = env_factory(tiny_profile, horizon=150, **QUEUEING)()
    greedy = run_episodes(GreedyPolicy(), env, [0, 1])
    robust = run_episodes(RobustMPCPolicy(), env, [0, 1])
    assert robust.latency_s.mean() < 0.7 * greedy.latency_s.mean()
    assert robust.reward.mean() > greedy.reward.mean()


def test_oracle_now_follows_the_true_capacity_at_decision_time_only(
    tiny_profile: Profile,
) -> None:
    class CapacityNow:
        def __init__(self, bps: float) -> None:
            self.bps = bps
            self.times: list[float] = []

        def capacity(self, t: float) -> float:
            self.times.append(t)
            return self.bps

        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"oracle-now read channel.{name}")

    env = env_factory(tiny_profile)()
    observation, _ = env.reset(seed=0)
    for _ in range(3):  # a few requests in, so that the device may be busy
        observation, *_ = env.step(np.array((0, 1, 0)))
    real_channel = env.channel
    local = {}
    for bps in (1e3, 1e9):
        channel = CapacityNow(bps)
        env.channel = channel
        policy = OracleNowPolicy()
        policy.reset(env)
        e, s, _ = policy.act(env, observation)
        local[bps] = env.actions.is_device_only(int(e), int(s))
        assert channel.times == [env.request_start_s]
    env.channel = real_channel
    assert local == {1e3: True, 1e9: False}  # a dead link keeps it local, a fast one offloads


def test_clairvoyant_lookahead_is_the_upper_reference_where_frames_queue(
    tiny_profile: Profile,
) -> None:
    factory = env_factory(tiny_profile, horizon=150, **QUEUEING)
    env = factory()
    seeds = [0, 1]
    lookahead = mean_reward(ClairvoyantLookaheadPolicy(), env, seeds)
    others: list[Policy] = [
        make_baseline("channel-blind", env_factory=factory, episodes=2, seed=100),
        *(make_baseline(name) for name in ("clairvoyant", "greedy", "robust-mpc", "oracle-now")),
    ]
    for policy in others:
        assert lookahead > mean_reward(policy, env, seeds), policy.name


def test_neurosurgeon_takes_the_fastest_predicted_lossless_split_of_the_final_exit(
    tiny_profile: Profile,
) -> None:
    env = env_factory(tiny_profile)()
    policy = NeurosurgeonPolicy()
    observation, _ = env.reset(seed=0)
    policy.reset(env)
    final = len(tiny_profile.exits) - 1
    lossless = tiny_profile.bit_options.index("lossless")
    splits_seen = set()
    for _ in range(100):
        action = policy.act(env, observation)
        predicted = env.predict_actions()
        allowed = [
            i
            for i, (e, s, b) in enumerate(predicted.actions)
            if e == final and (b == lossless or s == tiny_profile.exit_stages[final])
        ]
        fastest = predicted.actions[min(allowed, key=lambda i: predicted.latency_s[i])]
        assert action[0] == final
        np.testing.assert_array_equal(action, fastest)
        splits_seen.add(int(action[1]))
        observation, *_ = env.step(action)
    assert len(splits_seen) > 1  # the choice follows the measured throughput


@pytest.mark.parametrize("deadline_s", [1e-6, 10.0])
def test_edgent_takes_the_most_accurate_exit_within_the_deadline_else_the_fastest(
    deadline_s: float, tiny_profile: Profile
) -> None:
    env = SplitComputingEnv(profile=tiny_profile, device=SLOW_DEVICE, deadline_s=deadline_s)
    policy = EdgentPolicy()
    observation, _ = env.reset(seed=0)
    policy.reset(env)
    most_accurate = int(np.argmax(tiny_profile.clean_accuracy()))
    lossless = tiny_profile.bit_options.index("lossless")
    for _ in range(20):
        action = policy.act(env, observation)
        predicted = env.predict_actions()
        index = next(i for i, a in enumerate(predicted.actions) if tuple(a) == tuple(action))
        device_only = action[1] >= tiny_profile.exit_stages[action[0]]
        assert device_only or action[2] == lossless
        if deadline_s > 1:
            assert action[0] == most_accurate
        else:
            lossless_or_local = [
                i
                for i, (e, s, b) in enumerate(predicted.actions)
                if b == lossless or s >= tiny_profile.exit_stages[e]
            ]
            assert predicted.latency_s[index] == min(predicted.latency_s[lossless_or_local])
        observation, *_ = env.step(action)


@pytest.mark.parametrize("name", ["device-only", "device-only-first-exit"])
def test_device_only_sends_nothing(name: str, tiny_profile: Profile) -> None:
    rollout = run_episodes(make_baseline(name), env_factory(tiny_profile)(), [0])
    expected_exit = len(tiny_profile.exits) - 1 if name == "device-only" else 0
    assert (rollout.payload_bytes == 0).all()
    assert (rollout.exit == expected_exit).all()


def test_edge_only_sends_the_input_losslessly(tiny_profile: Profile) -> None:
    rollout = run_episodes(make_baseline("edge-only"), env_factory(tiny_profile)(), [0])
    assert (rollout.split == 0).all()
    assert (rollout.bits == tiny_profile.bit_options.index("lossless")).all()
    assert (rollout.exit == len(tiny_profile.exits) - 1).all()
    assert (rollout.payload_bytes > 0).all()


def test_best_static_keeps_the_argmax_of_its_enumeration(tiny_profile: Profile) -> None:
    factory = env_factory(tiny_profile, horizon=40)
    policy = BestStaticPolicy().fit(factory, episodes=2, seed=5)
    env = factory()
    assert policy.candidates == env.actions.canonical_actions()
    assert policy.best_action == policy.candidates[int(np.argmax(policy.mean_rewards))]
    # its score is the mean reward of a rollout of that action alone
    assert policy.mean_rewards.max() == pytest.approx(
        mean_reward(BestStaticPolicy(policy.best_action), env, [5, 6])
    )
    with pytest.raises(RuntimeError, match="fit"):
        BestStaticPolicy().reset(env)


def test_random_is_reproducible_and_covers_the_canonical_actions(tiny_profile: Profile) -> None:
    env = env_factory(tiny_profile, horizon=300)()
    first = run_episodes(make_baseline("random", seed=3), env, [0])
    second = run_episodes(make_baseline("random", seed=3), env, [0])
    np.testing.assert_array_equal(first.exit, second.exit)
    np.testing.assert_array_equal(first.bits, second.bits)
    taken = {
        env.actions.canonical(int(e), int(s), max(int(b), 0))
        for e, s, b in zip(first.exit[0], first.split[0], first.bits[0], strict=True)
    }
    assert taken == set(env.actions.canonical_actions())


@pytest.mark.parametrize(
    ("bit_options", "expected"),
    [
        ((2, 4, 8, "lossless"), 3),
        ((1, "float16", 8), 1),
        (("float16", "float32", 4), 1),
        ((8, 2, 4), 0),
    ],
)
def test_lossless_bit_index(bit_options: tuple[int | str, ...], expected: int) -> None:
    assert lossless_bit_index(bit_options) == expected


def test_bad_baseline_arguments_are_named(tiny_profile: Profile) -> None:
    with pytest.raises(ValueError, match=r"unknown baseline 'oracle'.*clairvoyant"):
        make_baseline("oracle")
    with pytest.raises(ValueError, match="greedy"):
        make_baseline("greedy", seed=1)
    with pytest.raises(ValueError, match="not fitted"):
        make_baseline("greedy", env_factory=env_factory(tiny_profile))
    with pytest.raises(ValueError, match="horizon"):
        make_baseline("robust-mpc", horizon=0)
    with pytest.raises(ValueError, match="deadline_fraction"):
        make_baseline("channel-blind", deadline_fraction=0.0)
