"""Baselines and references: valid actions, and the behaviour that defines each one.

Where the right decision can be worked out by hand, the test works in the hand-built situation of
``tests/handmade.py``; what each baseline may read is checked in ``tests/test_causality.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from splitrl.agents.baselines import (
    BASELINES,
    DEFAULT_BACKLOG_HORIZON,
    BestStaticPolicy,
    ChannelBlindPolicy,
    ClairvoyantLookaheadPolicy,
    ConfidenceGatePolicy,
    GeometricMPCPolicy,
    GreedyPolicy,
    MPCPolicy,
    OracleAheadPolicy,
    OracleNowPolicy,
    RobustMPCPolicy,
    backlog_cost,
    causal_baselines,
    fitted_baselines,
    lossless_bit_index,
    make_baseline,
)
from splitrl.agents.baselines.oracles import clairvoyant_values
from splitrl.agents.baselines.spread import LatencySpread
from splitrl.agents.policy_interface import Policy
from splitrl.agents.rollout import run_episodes
from splitrl.envs import SplitComputingEnv
from splitrl.envs.channels.markov import MarkovChannel
from splitrl.envs.server_load import ServerLoad
from splitrl.profiles.presets import get_device_preset
from splitrl.profiles.schema import Profile
from tests.handmade import FOUR_BITS, LOSSLESS, hand_env

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
    references = {
        "oracle-now",
        "oracle-ahead",
        "clairvoyant",
        "clairvoyant-lookahead",
        "clairvoyant-link",
        "mpc-geometric-gated",
    }
    assert set(causal_baselines(learned=True)) == set(BASELINES) - references
    assert set(causal_baselines()) == set(BASELINES) - references - {"mpc-quantile"}
    assert set(fitted_baselines()) == {"best-static", "channel-blind"}


def test_the_devices_prediction_is_what_happens_when_its_estimate_is_right() -> None:
    # the hand-built situation: every payload is the mean, the RTT has no jitter, the server is
    # idle; with frames every 12 ms and random actions the device is often busy when a request
    # comes (actions keep it busy 10 to 40 ms)
    env = hand_env(2e4, frame_interval_s=0.012, horizon=60)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    busy = 0
    for _ in range(60):
        predicted = env.predict_actions()
        actual = env.evaluate_actions()
        np.testing.assert_array_equal(predicted.actions, actual.actions)
        np.testing.assert_array_equal(predicted.payload_bytes, actual.payload_bytes)
        for field in ("reward", "latency_s", "energy_j", "device_free_s"):
            np.testing.assert_allclose(
                getattr(predicted, field), getattr(actual, field), rtol=1e-7, err_msg=field
            )
        assert predicted.wait_s == pytest.approx(actual.wait_s)
        busy += predicted.wait_s > 0
        index = rng.integers(len(predicted.actions))
        info = env.step(predicted.actions[index])[4]
        assert info["latency_s"] == pytest.approx(predicted.latency_s[index], rel=1e-7)
    assert busy > 10


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


def test_backlog_cost_with_a_spread_is_the_mean_over_its_draws(tiny_profile: Profile) -> None:
    env = env_factory(tiny_profile, horizon=40, fcfs=True, **QUEUEING)()
    env.reset(seed=0)
    predicted = env.predict_actions()
    offsets = np.random.default_rng(1).exponential(0.01, 32) - 0.01
    spec = env.reward_spec
    # the expected reward over the offsets, computed without the extra axis
    latency = np.linspace(0.0, 1.5 * spec.latency_cap * spec.deadline_s, 301)
    brute = spec.rewards(0.8, latency[:, None] + offsets, 0.01).mean(axis=1)
    np.testing.assert_allclose(spec.expected_rewards(0.8, latency, 0.01, offsets), brute)
    with pytest.raises(ValueError, match="at least one offset"):
        spec.expected_rewards(0.8, latency, 0.01, np.zeros(0))
    # no spread, or a spread of zeros, leaves the price as it was
    plain = backlog_cost(predicted, env.frame_interval_s, spec)
    zeros = backlog_cost(predicted, env.frame_interval_s, spec, latency_spread=np.zeros(8))
    np.testing.assert_allclose(zeros, plain, atol=1e-12)
    # a spread that can only delay an offload makes draining by offloads dearer: never cheaper
    late = backlog_cost(predicted, env.frame_interval_s, spec, latency_spread=np.abs(offsets))
    assert np.all(late >= plain - 1e-12)


def test_the_spread_in_the_lookahead_stops_robust_mpc_keeping_a_standing_backlog() -> None:
    # mcu-lte-video: a 100 ms deadline, a 50 ms round trip with 15 ms of exponential jitter, and
    # a cheap latency term. Priced at the mean RTT, every next request could drain a backlog by an
    # offload that just makes the deadline, so a wait looked nearly free and robust-mpc kept one
    # of several frames; priced over the jitter, it drains it like channel-blind does.
    env = SplitComputingEnv("mcu-lte-video", horizon=480)
    seeds = [1, 2]
    channel_blind = ChannelBlindPolicy(deadline_fraction=0.15)
    blind = run_episodes(channel_blind, env, seeds)
    robust = run_episodes(RobustMPCPolicy(), env, seeds)
    local = robust.payload_bytes == 0
    assert robust.latency_s[local].mean() < 1.5 * blind.latency_s.mean()
    assert robust.reward.mean() > blind.reward.mean()


@pytest.mark.parametrize(
    ("fraction", "expected_exits"),
    [
        # a budget of 30 ms: exit 1 (40 ms) never fits, exit 0 (10 ms) always does
        (0.5, [0, 0, 0, 0, 0]),
        # 60 ms: frames every 34 ms behind 40 ms of compute wait 0, 6, 12, 18 ms and fit exit 1;
        # at a 24-ms wait it would answer at 64 ms, so exit 0 runs and the backlog is gone
        (1.0, [1, 1, 1, 1, 0]),
    ],
)
def test_channel_blind_runs_the_most_accurate_local_exit_that_fits_its_budget(
    fraction: float, expected_exits: list[int]
) -> None:
    env = hand_env(1e6, frame_interval_s=0.034, deadline_s=0.06, horizon=20)
    rollout = run_episodes(ChannelBlindPolicy(fraction), env, [0])
    assert rollout.exit[0].tolist() == expected_exits * 4
    assert (rollout.payload_bytes == 0).all()


def test_channel_blind_fit_keeps_the_budget_of_the_best_mean_reward() -> None:
    # in the situation above the whole deadline is the best budget: its cycle of four answers at
    # exit 1 (reward 1) and one at exit 0 (0.5) scores 0.9; a longer budget would miss the
    # deadline with exit 1, a shorter one runs exit 0 more often
    factory = functools.partial(hand_env, 1e6, frame_interval_s=0.034, deadline_s=0.06)
    policy = make_baseline("channel-blind", env_factory=factory, episodes=1, seed=0)
    assert isinstance(policy, ChannelBlindPolicy)
    assert policy.deadline_fraction == 1.0
    assert policy.mean_rewards.max() == pytest.approx(0.9)
    policy.fit(factory, episodes=1, fractions=(0.5, 0.95, 1.0, 1.1))
    assert policy.deadline_fraction == 1.0
    # 0.95 fits exit 1 three times in four; 1.1 lets the backlog grow until exit 1 misses
    np.testing.assert_allclose(policy.mean_rewards[:2], [0.5, (3 + 0.5) / 4], atol=0.02)
    assert policy.mean_rewards[3] < 0.9
    with pytest.raises(RuntimeError, match="fit"):
        ChannelBlindPolicy().reset(factory())


@pytest.mark.parametrize(("policy_class", "discount"), [(RobustMPCPolicy, 10.0), (MPCPolicy, 1.0)])
def test_forecast_after_a_big_over_estimate(
    tiny_profile: Profile, policy_class: type[RobustMPCPolicy], discount: float
) -> None:
    """robust-mpc divides its forecast by 1 + max error after an over-estimate; mpc measures the
    same error and keeps the harmonic mean as it is."""
    env = env_factory(tiny_profile)()
    observation, _ = env.reset(seed=0)
    policy = policy_class()
    policy.reset(env)
    policy.act(env, observation)
    assert policy.robust_bps == policy.predicted_bps  # no error measured yet
    measured = policy.predicted_bps / 10
    env.knowledge.record_transfer(1000, 8 * 1000 / measured, end_time=0.01)
    policy.act(env, observation)
    assert policy.errors[-1] == pytest.approx(9.0)  # |10 m - m| / m
    assert policy.robust_bps == pytest.approx(policy.predicted_bps / discount)
    # the harmonic mean follows the low measurement more than an arithmetic mean would
    samples = list(env.knowledge.throughputs)
    if env.knowledge.link_quality_bps is not None:
        samples.append(env.knowledge.link_quality_bps)
    assert policy.predicted_bps < np.mean(samples)
    assert policy.causal and policy.robust == (discount != 1.0)
    policy.reset(env)
    assert not policy.errors


def test_mpc_geometric_forecasts_the_geometric_mean_and_otherwise_is_mpc(
    tiny_profile: Profile,
) -> None:
    """After one slow transfer, mpc-geometric forecasts the geometric mean of the same samples mpc
    takes the harmonic mean of (higher, below the arithmetic mean), and with every sample equal it
    values every action as mpc does."""
    env = env_factory(tiny_profile)()
    env.reset(seed=0)
    harmonic, geometric = MPCPolicy(), make_baseline("mpc-geometric")
    assert isinstance(geometric, GeometricMPCPolicy) and geometric.causal
    for policy in (harmonic, geometric):
        policy.reset(env)
    env.knowledge.link_quality_bps = None
    actions, values = harmonic.action_values(env)
    same_actions, same_values = geometric.action_values(env)
    np.testing.assert_array_equal(actions, same_actions)
    np.testing.assert_allclose(same_values, values, rtol=1e-12)
    slow = harmonic.predicted_bps / 50
    env.knowledge.record_transfer(1000, 8 * 1000 / slow, end_time=0.01)
    env.knowledge.link_quality_bps = None
    harmonic.action_values(env)
    geometric.action_values(env)
    samples = np.array(env.knowledge.throughputs)
    assert geometric.predicted_bps == pytest.approx(np.exp(np.log(samples).mean()), rel=1e-12)
    assert harmonic.predicted_bps == pytest.approx(len(samples) / (1 / samples).sum(), rel=1e-12)
    assert harmonic.predicted_bps < geometric.predicted_bps < samples.mean()
    assert geometric.robust_bps == geometric.predicted_bps  # no discount


def test_mpc_geometric_counts_the_link_report_as_many_samples_as_its_weight(
    tiny_profile: Profile,
) -> None:
    """The report weight moves the forecast toward the link-rate report; at 1 it is the rule as
    named (the plain geometric mean of the throughputs and the report, to the last bit)."""
    env = env_factory(tiny_profile)()
    env.reset(seed=0)
    plain, weighted = GeometricMPCPolicy(), GeometricMPCPolicy(report_weight=2.0)
    for policy in (plain, weighted):
        policy.reset(env)
    env.knowledge.record_transfer(1000, 0.5, end_time=0.01)  # 16 kbit/s among faster samples
    env.knowledge.link_quality_bps = report = 5e6
    plain.action_values(env)
    weighted.action_values(env)
    throughputs = list(env.knowledge.throughputs)
    assert plain.predicted_bps == statistics.geometric_mean([*throughputs, report])
    logs = np.log(throughputs)
    expected = math.exp((logs.sum() + 2.0 * math.log(report)) / (len(logs) + 2.0))
    assert weighted.predicted_bps == pytest.approx(expected, rel=1e-12)
    assert plain.predicted_bps < weighted.predicted_bps < report
    assert (plain.name, weighted.name) == ("mpc-geometric", "mpc-geometric-report2")
    for bad in (0.0, -1.0, math.nan, math.inf, True, "2"):
        with pytest.raises(ValueError, match="report_weight"):
            GeometricMPCPolicy(report_weight=bad)  # type: ignore[arg-type]


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
    for bps in (0.0, 1e3, 1e9):
        channel = CapacityNow(bps)
        env.channel = channel
        policy = OracleNowPolicy()
        policy.reset(env)
        e, s, _ = policy.act(env, observation)
        local[bps] = env.actions.is_device_only(int(e), int(s))
        assert channel.times == [env.request_start_s]
    env.channel = real_channel
    # an outage or a dead link keeps it local, a fast one offloads
    assert local == {0.0: True, 1e3: True, 1e9: False}


def test_the_request_exit_confidences_are_the_profiles_for_its_own_sample(
    tiny_profile: Profile,
) -> None:
    env = env_factory(tiny_profile)()
    with pytest.raises(RuntimeError, match="reset"):
        env.request_exit_confidences()
    env.reset(seed=0)
    stages = env.actions.exit_stages
    for _ in range(20):
        confidences = env.request_exit_confidences()
        *_, info = env.step(np.array((0, 0, 0)))
        sample = info["sample_index"]
        for e, k_e in enumerate(stages):
            # the device's own tensor: the same whatever bit-width a later split would send
            np.testing.assert_array_equal(
                tiny_profile.confidence[sample, k_e, :, e], np.float16(confidences[e])
            )


def test_the_confidence_gate_stops_only_at_exits_its_action_computes_anyway(
    tiny_profile: Profile,
) -> None:
    # a device fast enough that mpc-geometric runs the final exit on it, passing exit 0
    device = dataclasses.replace(SLOW_DEVICE, compute_gflops=0.003)
    env = SplitComputingEnv(profile=tiny_profile, device=device, horizon=200)
    stages = env.actions.exit_stages
    threshold = float(np.median(tiny_profile.confidence[:, stages[0], 0, 0]))
    policy = ConfidenceGatePolicy(threshold)
    chosen: list[np.ndarray] = []
    rule_act = policy.rule.act

    def recorded(env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        chosen.append(rule_act(env, observation))
        return chosen[-1]

    policy.rule.act = recorded  # type: ignore[method-assign]
    observation, _ = env.reset(seed=5)
    policy.reset(env)
    kept = gated = passing = 0
    for _ in range(env.horizon):
        confidences = env.request_exit_confidences()
        action = policy.act(env, observation)
        e, s, _ = env.actions.canonical(*chosen[-1].tolist())
        on_device = min(s, stages[e])
        open_gates = [g for g in range(e) if stages[g] <= on_device and confidences[g] > threshold]
        passing += any(stages[g] <= on_device for g in range(e))
        if open_gates:
            gated += 1
            assert action.tolist() == [open_gates[0], stages[open_gates[0]], 0]
        else:
            kept += 1
            np.testing.assert_array_equal(action, chosen[-1])
        observation, *_ = env.step(action)
    assert policy.gated == gated
    # both branches ran: the rule computed an early exit's stages, and the gate fired on some
    assert passing > gated > 0 and kept > 0
    policy.reset(env)
    assert policy.gated == 0
    # on the slow device the rule sends the input itself: no exit is computed, so no gate opens
    slow = env_factory(tiny_profile)()
    always_open = ConfidenceGatePolicy(0.0)
    gated_rollout = run_episodes(always_open, slow, [5])
    assert always_open.gated == 0
    np.testing.assert_array_equal(
        gated_rollout.reward, run_episodes(GeometricMPCPolicy(), slow, [5]).reward
    )


def test_the_confidence_gate_checks_its_threshold_and_names_itself() -> None:
    assert ConfidenceGatePolicy().name == "mpc-geometric-gated"
    assert ConfidenceGatePolicy(0.5).name == "mpc-geometric-gated0.5"
    for bad in (1.0, -0.1, math.nan, math.inf, True, "0.8"):
        with pytest.raises(ValueError, match="threshold"):
            ConfidenceGatePolicy(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold"):
        make_baseline("mpc-geometric-gated", threshold=2)


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


def test_oracle_ahead_is_oracle_now_on_a_constant_link() -> None:
    env = hand_env(2e4, frame_interval_s=0.012, horizon=60)
    ahead = run_episodes(make_baseline("oracle-ahead"), env, [0, 1])
    now = run_episodes(OracleNowPolicy(), env, [0, 1])
    for field in ("exit", "split", "bits", "reward"):
        np.testing.assert_array_equal(getattr(ahead, field), getattr(now, field))


def test_oracle_ahead_is_told_the_mean_capacity_of_the_next_window(tiny_profile: Profile) -> None:
    switching = MarkovChannel([2e5, 2e6], np.full((2, 2), 0.5), slot_s=0.1)
    env = env_factory(tiny_profile, horizon=200, channel=switching)()
    env.reset(seed=4)
    ahead, now = OracleAheadPolicy(window_s=0.5), OracleNowPolicy()
    told_other = 0
    for _ in range(200):
        start = env.request_start_s
        expected = env.channel.mean_throughput(start, start + 0.5)
        assert ahead.capacity_bps(env) == pytest.approx(expected)
        told_other += ahead.capacity_bps(env) != pytest.approx(now.capacity_bps(env))
        env.step(env.actions.canonical(0, 0, 0))
    assert told_other > 0  # the link moves within half a second somewhere in the episode


def test_oracle_ahead_checks_its_window_and_names_itself() -> None:
    assert OracleAheadPolicy().name == "oracle-ahead"
    assert OracleAheadPolicy(0.01).name == "oracle-ahead-10ms"
    for bad in (0.0, -0.05, math.nan, math.inf, True, "0.05"):
        with pytest.raises(ValueError, match="window_s"):
            OracleAheadPolicy(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window_s"):
        make_baseline("oracle-ahead", window_s=-1)


def test_clairvoyant_link_is_clairvoyant_lookahead_where_nothing_is_drawn() -> None:
    # no RTT jitter and an idle server: the mean draws are the request's own draws
    seeds = [0, 1]
    env = hand_env(2e4, frame_interval_s=0.012, horizon=60)
    link = run_episodes(make_baseline("clairvoyant-link"), env, seeds)
    lookahead = run_episodes(ClairvoyantLookaheadPolicy(), env, seeds)
    for field in ("exit", "split", "bits", "reward"):
        np.testing.assert_array_equal(getattr(link, field), getattr(lookahead, field))


def test_clairvoyant_link_does_not_read_the_requests_rtt_and_queueing_draws(
    tiny_profile: Profile,
) -> None:
    env = env_factory(tiny_profile, horizon=40, fcfs=True, **QUEUEING)()
    observation, _ = env.reset(seed=3)
    greedy = GreedyPolicy()
    greedy.reset(env)
    spread = LatencySpread()
    spread.reset(env)
    lookahead_moved = False
    for _ in range(40):
        sample, rtt_s, queue_u = env._draw
        values = {}
        for draw in ((rtt_s, queue_u), (rtt_s + 0.05, 0.999)):
            env._draw = (sample, *draw)
            values[draw] = (
                clairvoyant_values(env, spread, draws="mean")[1],
                clairvoyant_values(env, spread, draws="exact")[1],
            )
        env._draw = (sample, rtt_s, queue_u)
        (link, exact), (link_late, exact_late) = values.values()
        np.testing.assert_array_equal(link, link_late)
        lookahead_moved |= not np.array_equal(exact, exact_late)
        observation = env.step(greedy.act(env, observation))[0]
    assert lookahead_moved  # the late draws do change what clairvoyant-lookahead reads


#: (capacity in bit/s, deadline in s) -> the decision of each rule, from the latencies in
#: ``tests/handmade.py``: at 1 Mbit/s the input crosses in 0.8 ms; at 20 kbit/s split 1 (36 ms
#: lossless, 28 ms at 4 bits) beats sending the input (50 ms) and the local 40 ms; at 10 kbit/s
#: the local 40 ms beats split 1 (52 ms)
HAND_DECISIONS = {
    (1e6, 0.03): {
        "neurosurgeon": (1, 0, LOSSLESS),
        "edgent": (1, 0, LOSSLESS),
        "greedy": (1, 0, LOSSLESS),
    },
    (2e4, 0.03): {
        "neurosurgeon": (1, 1, LOSSLESS),  # the fastest lossless split, deadline or not
        "edgent": (0, 1, 0),  # exit 1 misses 30 ms without quantization: exit 0 on the device
        "greedy": (1, 1, FOUR_BITS),  # 4 bits meet the deadline at 75 % accuracy
    },
    (1e4, 0.03): {
        "neurosurgeon": (1, 2, 0),
        "edgent": (0, 1, 0),
        "greedy": (0, 1, 0),
    },
    (1e4, 0.06): {
        "neurosurgeon": (1, 2, 0),
        "edgent": (1, 2, 0),  # now the full model on the device meets the deadline
        # split 1 (52 ms) meets it too, just as accurately: a tie, to the lower flat index
        "greedy": (1, 1, LOSSLESS),
    },
    (1e6, 0.005): {
        "neurosurgeon": (1, 0, LOSSLESS),
        "edgent": (0, 1, 0),  # nothing meets 5 ms: the fastest lossless or local action
        "greedy": (1, 0, LOSSLESS),  # every action misses: the most accurate one
    },
}


@pytest.mark.parametrize("situation", list(HAND_DECISIONS))
@pytest.mark.parametrize("name", ["neurosurgeon", "edgent", "greedy"])
def test_each_published_rule_takes_its_hand_computed_decision(
    name: str, situation: tuple[float, float]
) -> None:
    capacity_bps, deadline_s = situation
    rollout = run_episodes(make_baseline(name), hand_env(capacity_bps, deadline_s=deadline_s), [0])
    taken = set(zip(rollout.exit[0], rollout.split[0], np.maximum(rollout.bits[0], 0), strict=True))
    assert taken == {HAND_DECISIONS[situation][name]}


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


def test_best_static_finds_the_best_action_of_a_constant_link_by_enumeration() -> None:
    # at 20 kbit/s and a 30 ms deadline, 4 bits at split 1 is the only action that answers with
    # exit 1 in time (28 ms, 75 % accurate); exit 0 on the device scores 0.5
    factory = functools.partial(hand_env, 2e4, deadline_s=0.03)
    policy = make_baseline("best-static", env_factory=factory, episodes=1, seed=0)
    assert isinstance(policy, BestStaticPolicy)
    assert policy.best_action == (1, 1, FOUR_BITS)
    assert policy.mean_rewards.max() == pytest.approx(0.75)
    assert sorted(policy.mean_rewards)[-2] == pytest.approx(0.5)
    with pytest.raises(RuntimeError, match="fit"):
        BestStaticPolicy().reset(factory())


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
