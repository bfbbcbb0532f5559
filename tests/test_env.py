"""SplitComputingEnv: API checkers, determinism, time model, backlog, rewards, observations."""

from __future__ import annotations

import itertools
import pickle
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from splitrl.envs import (
    ENV_ID,
    SCENARIOS,
    ActionTable,
    SplitComputingEnv,
    get_reward_spec,
    scenario_env_id,
)
from splitrl.envs.actions import flat_indices
from splitrl.envs.channels import ConstantChannel, MarkovChannel
from splitrl.envs.observation import scale_throughput, unscale_throughput
from splitrl.envs.time_model import block_time_s
from splitrl.profiles.schema import Profile


def make_env(profile: Profile, **kwargs: object) -> SplitComputingEnv:
    return SplitComputingEnv(profile=profile, **kwargs)  # type: ignore[arg-type]


def test_passes_gymnasium_and_sb3_checkers(tiny_profile: Profile) -> None:
    env = gym.make(ENV_ID, profile=tiny_profile, render_mode="ansi").unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env, skip_render_check=False)
        sb3_check_env(make_env(tiny_profile), warn=True)


def test_registered_with_gymnasium() -> None:
    env = gym.make(ENV_ID)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert isinstance(env.action_space, gym.spaces.MultiDiscrete)
    env.close()


def test_import_splitrl_registers_the_envs_without_torch() -> None:
    # a fresh interpreter: in this one, the test modules have imported splitrl.envs and torch
    code = (
        "import sys, gymnasium as gym, splitrl;"
        f"gym.make({ENV_ID!r}).reset(seed=0);"
        "sys.exit(10 + int('torch' in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 10


def test_every_scenario_is_registered_as_v1() -> None:
    for name in SCENARIOS:
        env_id = scenario_env_id(name)
        assert env_id.endswith("-v1") and env_id in gym.registry
    assert gym.registry[ENV_ID].kwargs == {"scenario": "default"}
    assert "splitrl/SplitComputing-v0" not in gym.registry


def _rollout(env: SplitComputingEnv, seed: int, steps: int) -> list[tuple[object, ...]]:
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(123)
    trajectory = []
    for _ in range(steps):
        action = rng.integers(0, env.action_space.nvec)
        obs, reward, _, truncated, info = env.step(action)
        trajectory.append(
            (obs.tobytes(), reward, info["latency_s"], info["sample_index"], truncated)
        )
    return trajectory


def test_same_seed_same_trajectory(tiny_profile: Profile) -> None:
    first = _rollout(make_env(tiny_profile), seed=7, steps=300)
    second = _rollout(make_env(tiny_profile), seed=7, steps=300)
    assert first == second
    assert first != _rollout(make_env(tiny_profile), seed=8, steps=300)


def test_requests_and_channel_do_not_depend_on_the_policy(tiny_profile: Profile) -> None:
    """Common random numbers: two policies with one seed see the same samples and capacity."""
    seen = []
    for action in ((1, 3, 0), (1, 0, 3)):
        env = make_env(tiny_profile)
        env.reset(seed=3)
        samples, capacities = [], []
        for _ in range(50):
            _, _, _, _, info = env.step(np.array(action))
            samples.append(info["sample_index"])
            capacities.append(env.channel.capacity(float(len(samples))))
        seen.append((samples, capacities))
    assert seen[0] == seen[1]


def test_env_pickles_and_runs_in_subprocesses(tiny_profile: Profile) -> None:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    env = make_env(tiny_profile)
    env.reset(seed=0)
    clone = pickle.loads(pickle.dumps(env))
    action = np.array((1, 1, 1))
    assert clone.step(action)[1] == env.step(action)[1]
    vec = make_vec_env(lambda: make_env(tiny_profile), n_envs=2, seed=0, vec_env_cls=SubprocVecEnv)
    obs = vec.reset()
    obs, rewards, _, _ = vec.step(np.array([[1, 0, 0], [0, 1, 1]]))
    assert obs.shape == (2, vec.observation_space.shape[0]) and rewards.shape == (2,)
    vec.close()


def test_constant_channel_latency_is_the_sum_of_its_parts(tiny_profile: Profile) -> None:
    env = make_env(tiny_profile, channel=ConstantChannel(2e6), frame_interval_s=1.0)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array((1, 1, 1)))
    n_bytes = info["payload_bytes"]
    assert info["transfer_s"] == pytest.approx(8 * n_bytes / 2e6)
    parts = ("wait_s", "device_compute_s", "encode_s", "transfer_s", "rtt_s", "queue_s", "server_s")
    assert info["latency_s"] == pytest.approx(sum(info[p] for p in parts))
    assert info["encode_s"] == pytest.approx(env.costs.encode_s[1, 1])
    assert info["capacity_bps"] == 2e6


def test_gate_heads_charge_the_heads_of_the_earlier_exits_an_action_computes(
    tiny_profile: Profile,
) -> None:
    plain = make_env(tiny_profile, channel=ConstantChannel(2e6), frame_interval_s=1.0)
    gated = make_env(
        tiny_profile, channel=ConstantChannel(2e6), frame_interval_s=1.0, gate_heads=True
    )
    head_0 = block_time_s(tiny_profile.exits[0], plain.parts.device, all_threads=False)
    assert head_0 > 0
    k_0, k_1 = tiny_profile.exit_stages
    for e, s in itertools.product(range(2), range(tiny_profile.n_splits)):
        passes_exit_0 = e == 1 and min(s, k_1) >= k_0
        extra = gated.costs.device_compute_s[e, s] - plain.costs.device_compute_s[e, s]
        assert extra == pytest.approx(head_0 if passes_exit_0 else 0.0, abs=1e-12), (e, s)
    np.testing.assert_array_equal(gated.costs.server_compute_s, plain.costs.server_compute_s)
    # the step charges it: the final exit on the device, and exit 0 on the device, which does not
    for env in (plain, gated):
        env.reset(seed=0)
    for action, extra in (((1, k_1, 0), head_0), ((0, k_0, 0), 0.0)):
        infos = [env.step(np.array(action))[-1] for env in (plain, gated)]
        assert infos[1]["device_compute_s"] - infos[0]["device_compute_s"] == pytest.approx(extra)
    with pytest.raises(ValueError, match="gate_heads"):
        make_env(tiny_profile, gate_heads=1)


def test_device_only_sends_nothing_and_canonicalizes(tiny_profile: Profile) -> None:
    env = make_env(tiny_profile)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array((0, 2, 3)))  # exit 0 sits after stage 1
    assert info["payload_bytes"] == 0 and info["transfer_s"] == 0.0 and info["rtt_s"] == 0.0
    assert tuple(info["canonical_action"]) == (0, 1, 0)
    assert info["latency_s"] == pytest.approx(env.costs.device_compute_s[0, 1])


def test_backlog_builds_when_requests_outpace_the_device(tiny_profile: Profile) -> None:
    # a 1 kbit/s uplink: every input transfer takes far longer than the frame interval
    env = make_env(tiny_profile, channel=ConstantChannel(1e3), frame_interval_s=0.01, horizon=20)
    env.reset(seed=0)
    waits = [env.step(np.array((1, 0, 3)))[4]["wait_s"] for _ in range(5)]
    assert waits[0] == 0.0
    assert all(b > a for a, b in itertools.pairwise(waits))
    obs = env.step(np.array((1, 3, 0)))[0]
    assert obs[-1] == pytest.approx(10.0)  # backlog feature saturates at 10 frames
    # device-only work is faster than the frame interval: the queue drains again
    draining = [env.step(np.array((1, 3, 0)))[4]["wait_s"] for _ in range(5)]
    assert all(b < a for a, b in itertools.pairwise(draining))


def test_transfer_over_the_real_channel_spans_capacity_changes(tiny_profile: Profile) -> None:
    channel = MarkovChannel(
        levels_bps=(1e4, 1e6), transition_matrix=((0.5, 0.5), (0.5, 0.5)), slot_s=0.001
    )
    env = make_env(tiny_profile, channel=channel)
    env.reset(seed=0)
    info = env.step(np.array((1, 0, 3)))[4]
    n_bits = 8 * info["payload_bytes"]
    # the transfer is slower than at the high rate and faster than at the low one
    assert n_bits / 1e6 < info["transfer_s"] < n_bits / 1e4


@pytest.mark.parametrize("preset", ["latency-accuracy", "deadline", "energy-aware"])
def test_reward_presets_follow_their_formula(tiny_profile: Profile, preset: str) -> None:
    env = make_env(tiny_profile, reward=get_reward_spec(preset, deadline_s=0.005))
    env.reset(seed=0)
    spec = env.reward_spec
    for action in ((1, 0, 3), (1, 3, 0), (0, 1, 0)):
        _, reward, _, _, info = env.step(np.array(action))
        expected = (
            info["correct"]
            - spec.w_latency * min(info["latency_s"] / spec.deadline_s, spec.latency_cap)
            - spec.w_miss * (info["latency_s"] > spec.deadline_s)
            - spec.w_energy * info["energy_j"] / spec.energy_ref_j
        )
        assert reward == pytest.approx(expected)
        assert info["deadline_missed"] == (info["latency_s"] > 0.005)


def test_latency_term_is_capped(tiny_profile: Profile) -> None:
    spec = get_reward_spec("latency-accuracy", deadline_s=0.01, latency_cap=3.0)
    env = make_env(tiny_profile, channel=ConstantChannel(1e3), reward=spec)  # 1 kbit/s: very late
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.array((1, 0, 3)))
    assert info["latency_s"] > 100 * spec.deadline_s
    assert reward == pytest.approx(info["correct"] - spec.w_latency * 3.0 - spec.w_miss)


def test_expected_correctness_uses_profile_accuracy(tiny_profile: Profile) -> None:
    env = make_env(tiny_profile, reward=get_reward_spec("deadline", correctness="expected"))
    env.reset(seed=0)
    info = env.step(np.array((1, 1, 0)))[4]
    assert info["correct"] == pytest.approx(tiny_profile.accuracy()[1, 0, 1])


def test_observation_never_contains_the_true_capacity(tiny_profile: Profile) -> None:
    """Before any transfer the throughput features hold the prior, whatever the channel's rate.

    Without the radio's link-rate report (``tests/test_link_quality.py``) nothing else varies.
    """
    observations = []
    for rate in (1e5, 5e7):
        env = make_env(tiny_profile, channel=ConstantChannel(rate), link_quality=False)
        obs, _ = env.reset(seed=0)
        obs, *_ = env.step(np.array((1, 3, 0)))  # device-only: nothing measured
        observations.append(obs)
    assert np.array_equal(observations[0], observations[1])
    # after a transfer the device measures its own throughput
    env = make_env(tiny_profile, channel=ConstantChannel(5e6))
    env.reset(seed=0)
    obs, *_ = env.step(np.array((1, 0, 3)))
    assert unscale_throughput(float(obs[0])) == pytest.approx(5e6, rel=1e-4)
    assert scale_throughput(5e6) == pytest.approx(float(obs[0]))


def test_evaluate_actions_matches_step_and_does_not_change_state(tiny_profile: Profile) -> None:
    env = make_env(tiny_profile)
    env.reset(seed=4)
    env.step(np.array((1, 0, 1)))
    outcomes = env.evaluate_actions(know_labels=True)
    again = env.evaluate_actions(know_labels=True)
    assert np.array_equal(outcomes.reward, again.reward)
    expected = env.evaluate_actions()
    accuracy = tiny_profile.accuracy()
    assert np.allclose(expected.correct, [accuracy[s, b, e] for e, s, b in expected.actions])
    assert np.allclose(expected.latency_s, outcomes.latency_s)
    table = ActionTable.from_profile(tiny_profile)
    assert len(outcomes.actions) == int(table.mask().sum())
    pick = 5
    _, reward, _, _, info = env.step(outcomes.actions[pick])
    assert reward == pytest.approx(outcomes.reward[pick])
    assert info["latency_s"] == pytest.approx(outcomes.latency_s[pick])


def test_an_action_evaluated_from_another_start_time(tiny_profile: Profile) -> None:
    """From the request's own start, the counterfactual is evaluate_actions' outcome; from a later
    start the same request waits that much longer; before its arrival it starts on arrival."""
    env = make_env(tiny_profile, horizon=60)
    env.reset(seed=4)
    for _ in range(40):
        outcomes = env.evaluate_actions()
        arrival = env.request_start_s - outcomes.wait_s
        for index in range(0, len(outcomes.actions), 7):
            action = outcomes.actions[index]
            reward, free = env.evaluate_action_from(action, env.request_start_s)
            assert reward == pytest.approx(outcomes.reward[index], abs=1e-12)
            assert free - arrival == pytest.approx(outcomes.device_free_s[index], abs=1e-12)
            assert env.evaluate_action_from(action, arrival - 1.0) == env.evaluate_action_from(
                action, arrival
            )
        local = next(i for i, bytes_ in enumerate(outcomes.payload_bytes) if bytes_ == 0)
        _, free_now = env.evaluate_action_from(outcomes.actions[local], env.request_start_s)
        _, free_later = env.evaluate_action_from(
            outcomes.actions[local], env.request_start_s + 0.01
        )
        assert free_later - free_now == pytest.approx(0.01)  # local compute only shifts
        # nothing changed: the request's outcomes are what they were
        np.testing.assert_array_equal(env.evaluate_actions().reward, outcomes.reward)
        env.step(outcomes.actions[int(np.argmax(outcomes.reward))])
    with pytest.raises(ValueError):
        env.evaluate_action_from(np.array((99, 0, 0)), env.request_start_s)


def test_mean_draws_replace_only_this_requests_rtt_and_queueing(tiny_profile: Profile) -> None:
    env = make_env(tiny_profile)
    env.reset(seed=4)
    for _ in range(30):
        exact = env.evaluate_actions()
        mean = env.evaluate_actions(draws="mean")
        offloaded = exact.payload_bytes > 0
        # local actions and the device's occupancy do not depend on the round trip or the queue
        np.testing.assert_array_equal(mean.latency_s[~offloaded], exact.latency_s[~offloaded])
        np.testing.assert_array_equal(mean.device_free_s, exact.device_free_s)
        np.testing.assert_array_equal(mean.payload_bytes, exact.payload_bytes)
        # every offloaded action moves by the same draw (up to the server load's drift)
        shift = exact.latency_s[offloaded] - mean.latency_s[offloaded]
        assert np.ptp(shift) < 1e-3
        env.step(exact.actions[int(np.argmax(exact.reward))])
    assert env.evaluate_actions(draws="mean").latency_s.shape == exact.latency_s.shape
    with pytest.raises(ValueError, match="draws must be 'exact' or 'mean'"):
        env.evaluate_actions(draws="median")  # type: ignore[arg-type]


def test_estimated_capacity_changes_only_transfer_times(tiny_profile: Profile) -> None:
    env = make_env(tiny_profile, channel=ConstantChannel(3e6))
    env.reset(seed=0)
    true = env.evaluate_actions()
    assumed = env.evaluate_actions(capacity_bps=3e6)
    assert np.allclose(true.latency_s, assumed.latency_s)
    slower = env.evaluate_actions(capacity_bps=1e6)
    offloaded = true.payload_bytes > 0
    assert np.all(slower.latency_s[offloaded] > true.latency_s[offloaded])
    assert np.allclose(slower.latency_s[~offloaded], true.latency_s[~offloaded])


def test_action_masks_mark_canonical_actions(tiny_profile: Profile) -> None:
    env = make_env(tiny_profile)
    mask = env.action_masks()
    table = ActionTable.from_profile(tiny_profile)
    assert mask.shape == (table.n_actions,)
    # exit 0 (after stage 1): split 0 with 4 bit options + one device-only; exit 1: 3 x 4 + 1
    assert int(mask.sum()) == (1 * 4 + 1) + (3 * 4 + 1)
    canonical = table.canonical_actions()
    assert all(table.canonical(*action) == action for action in canonical)
    np.testing.assert_array_equal(
        flat_indices(np.array(canonical), table.strides), np.flatnonzero(mask)
    )


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ((0, 0), "three integers"),
        ((2, 0, 0), "exit index 2"),
        ((0, 4, 0), "split index 4"),
        ((0, 0, -1), "bits index -1"),
        ((0.5, 0, 0), "integers"),
        ("abc", "three integers"),
    ],
)
def test_invalid_actions_get_clear_errors(
    tiny_profile: Profile, action: object, message: str
) -> None:
    env = make_env(tiny_profile)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)  # type: ignore[arg-type]


def test_truncates_after_horizon(tiny_profile: Profile) -> None:
    env = make_env(tiny_profile, horizon=5)
    env.reset(seed=0)
    flags = [env.step(np.array((1, 3, 0)))[3] for _ in range(5)]
    assert flags == [False, False, False, False, True]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scenario": "nope"}, "unknown scenario"),
        ({"device": "toaster"}, "toaster"),
        ({"reward": "greedy"}, "unknown reward preset"),
        ({"channel": "warp-drive"}, "warp-drive"),
        ({"horizon": 0}, "horizon"),
        ({"mode": "dream"}, "mode"),
    ],
)
def test_bad_arguments_get_clear_errors(
    tiny_profile: Profile, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_env(tiny_profile, **kwargs)


def test_predictions_use_only_device_knowledge(tiny_profile: Profile) -> None:
    env = make_env(tiny_profile, channel=ConstantChannel(3e6))
    env.reset(seed=0)
    predicted = env.predict_actions(capacity_bps=3e6)
    accuracy = tiny_profile.accuracy()
    mean_payload = np.rint(tiny_profile.mean_payload_bytes())
    for index, (e, s, b) in enumerate(predicted.actions):
        assert predicted.correct[index] == pytest.approx(accuracy[s, b, e])
        if s < tiny_profile.exit_stages[e]:
            assert predicted.payload_bytes[index] == mean_payload[s, b]
    # the device's default estimate is its latest measurement: the prior before any transfer
    prior = env.knowledge.throughput_estimate_bps
    assert np.allclose(env.predict_actions().latency_s, env.predict_actions(prior).latency_s)
