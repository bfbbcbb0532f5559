"""Baselines and the oracle: valid canonical actions, their defining rules, their ordering."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from splitrl.agents.baselines import (
    BASELINES,
    BestStaticPolicy,
    EdgentPolicy,
    NeurosurgeonPolicy,
    lossless_bit_index,
    make_baseline,
)
from splitrl.agents.policy import Policy
from splitrl.envs import SplitComputingEnv
from splitrl.profiles.presets import get_device_preset
from splitrl.profiles.schema import Profile

#: the tiny model on a device slow enough that offloading sometimes pays off
SLOW_DEVICE = dataclasses.replace(get_device_preset("stm32h7"), compute_gflops=0.001)


def env_factory(profile: Profile, horizon: int = 50) -> Callable[[], SplitComputingEnv]:
    def make() -> SplitComputingEnv:
        return SplitComputingEnv(profile=profile, device=SLOW_DEVICE, horizon=horizon)

    return make


def baseline(name: str, profile: Profile) -> Policy:
    if name == "best-static":
        return make_baseline(name, env_factory=env_factory(profile), episodes=1, seed=100)
    return make_baseline(name)


def run_episodes(
    policy: Policy, env: SplitComputingEnv, seeds: range
) -> tuple[list[np.ndarray], list[dict[str, Any]], list[float]]:
    actions, infos, rewards = [], [], []
    for seed in seeds:
        observation, _ = env.reset(seed=seed)
        policy.reset(env)
        done = False
        while not done:
            action = policy.act(env, observation)
            observation, reward, terminated, truncated, info = env.step(action)
            actions.append(action)
            infos.append(info)
            rewards.append(reward)
            done = terminated or truncated
    return actions, infos, rewards


@pytest.mark.parametrize("name", list(BASELINES))
def test_every_baseline_takes_valid_canonical_actions(name: str, tiny_profile: Profile) -> None:
    env = env_factory(tiny_profile)()
    policy = baseline(name, tiny_profile)
    actions, _, _ = run_episodes(policy, env, range(1))
    mask = env.action_masks()
    assert len(actions) == env.horizon
    for action in actions:
        assert action.shape == (3,) and np.issubdtype(action.dtype, np.integer)
        assert env.action_space.contains(action)
        assert mask[env.actions.flat_index(*action)], f"{name} took non-canonical {action}"


def test_oracle_bounds_every_baseline_and_greedy_beats_random(tiny_profile: Profile) -> None:
    # The env draws requests and the channel from private streams: every policy faces the same ones.
    seeds = range(3)
    mean_reward = {
        name: float(
            np.mean(
                run_episodes(baseline(name, tiny_profile), env_factory(tiny_profile, 200)(), seeds)[
                    2
                ]
            )
        )
        for name in BASELINES
    }
    assert all(mean_reward["oracle"] >= value for value in mean_reward.values()), mean_reward
    assert mean_reward["greedy"] > mean_reward["random"], mean_reward


@pytest.mark.parametrize("name", ["device-only", "device-only-first-exit"])
def test_device_only_sends_nothing(name: str, tiny_profile: Profile) -> None:
    env = env_factory(tiny_profile)()
    actions, infos, _ = run_episodes(make_baseline(name), env, range(1))
    expected_exit = len(tiny_profile.exits) - 1 if name == "device-only" else 0
    assert all(info["payload_bytes"] == 0 and info["transfer_s"] == 0.0 for info in infos)
    assert all(action[0] == expected_exit for action in actions)


def test_edge_only_sends_the_input_losslessly(tiny_profile: Profile) -> None:
    env = env_factory(tiny_profile)()
    actions, infos, _ = run_episodes(make_baseline("edge-only"), env, range(1))
    lossless = tiny_profile.bit_options.index("lossless")
    final = len(tiny_profile.exits) - 1
    assert all(tuple(action) == (final, 0, lossless) for action in actions)
    assert all(info["payload_bytes"] > 0 for info in infos)


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


def test_best_static_keeps_the_argmax_of_its_enumeration(tiny_profile: Profile) -> None:
    factory = env_factory(tiny_profile, horizon=40)
    policy = BestStaticPolicy().fit(factory, episodes=2, seed=5)
    env = factory()
    assert policy.candidates == env.actions.canonical_actions()
    assert policy.best_action == policy.candidates[int(np.argmax(policy.mean_rewards))]
    # its score is the mean reward of a rollout of that action alone
    rewards = run_episodes(BestStaticPolicy(policy.best_action), env, range(5, 7))[2]
    assert policy.mean_rewards.max() == pytest.approx(np.mean(rewards))


def test_best_static_must_be_fitted(tiny_profile: Profile) -> None:
    env = env_factory(tiny_profile)()
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match="fit"):
        BestStaticPolicy().reset(env)


def test_random_is_reproducible_and_covers_the_canonical_actions(tiny_profile: Profile) -> None:
    env = env_factory(tiny_profile, horizon=300)()
    first = run_episodes(make_baseline("random", seed=3), env, range(1))[0]
    second = run_episodes(make_baseline("random", seed=3), env, range(1))[0]
    assert [tuple(a) for a in first] == [tuple(a) for a in second]
    assert {tuple(int(v) for v in a) for a in first} == set(env.actions.canonical_actions())


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


def test_unknown_baseline_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown baseline 'nope'.*oracle"):
        make_baseline("nope")
    with pytest.raises(ValueError, match="oracle"):
        make_baseline("oracle", seed=1)
