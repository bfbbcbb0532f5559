"""No causal baseline reads what the device cannot know while it decides.

Two checks. A counterfactual one: at every request, a copy of the env whose hidden truth is changed
(another realization of the channel, now and ahead, of the server's load and of the RTTs to come)
while the device's knowledge stays the same must get the same decision; the references that know
more must not. And a guard: within ``act``, touching the channel, the RTT or the request's draws
raises.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from splitrl.agents.baselines import (
    ChannelBlindPolicy,
    ClairvoyantPolicy,
    ConfidenceGatePolicy,
    OracleNowPolicy,
    causal_baselines,
    fitted_baselines,
    make_baseline,
)
from splitrl.agents.policy_interface import Policy
from splitrl.agents.rollout import run_episodes
from splitrl.envs import SplitComputingEnv
from splitrl.envs.channels import MarkovChannel
from splitrl.envs.server_load import ServerLoad
from splitrl.profiles.presets import get_device_preset
from splitrl.profiles.schema import Profile
from tests.handmade import hand_env, hand_network

#: the tiny model on a device slow enough that offloading sometimes pays off
SLOW_DEVICE = dataclasses.replace(get_device_preset("stm32h7"), compute_gflops=0.001)


def env_factory(profile: Profile, horizon: int = 60) -> Callable[[], SplitComputingEnv]:
    """Frames that queue, a Markov link and a first-come-first-served server (random queueing)."""

    def make() -> SplitComputingEnv:
        env = SplitComputingEnv(
            profile=profile,
            device=SLOW_DEVICE,
            horizon=horizon,
            frame_interval_s=0.006,
            deadline_s=0.02,
            channel="markov",
        )
        env.server_load = ServerLoad(discipline="fcfs")
        return env

    return make


def baseline(name: str, factory: Callable[[], SplitComputingEnv]) -> Policy:
    if name in fitted_baselines():
        return make_baseline(name, env_factory=factory, episodes=1, seed=100)
    return make_baseline(name)


def varying_world() -> SplitComputingEnv:
    """The hand-built situation on a link between 10 kbit/s and 1 Mbit/s, with RTT jitter and a
    queueing server: the causal baselines offload at 13 to 32 % of the requests there, in two to
    four distinct actions, so their decisions follow their estimates."""
    channel = MarkovChannel(
        levels_bps=(1e4, 3e4, 1e5, 1e6),
        transition_matrix=(
            (0.8, 0.2, 0.0, 0.0),
            (0.1, 0.8, 0.1, 0.0),
            (0.0, 0.1, 0.8, 0.1),
            (0.0, 0.0, 0.2, 0.8),
        ),
        slot_s=0.05,
    )
    network = dataclasses.replace(hand_network(1e5), rtt_jitter_ms=3.0)
    env = hand_env(1e5, channel=channel, network=network, frame_interval_s=0.02, horizon=60)
    env.server_load = ServerLoad(discipline="fcfs")
    return env


def with_other_truth(env: SplitComputingEnv, seed: int) -> SplitComputingEnv:
    """A copy of ``env`` that knows the same, in another world: the channel, the server's load
    and the RTTs to come are new realizations."""
    other = copy.deepcopy(env)
    rng = np.random.default_rng(seed)
    other.channel.reset(rng)
    other.server_load.reset(rng)
    other.rtt.reset(rng)
    return other


def counterfactual_disagreements(policy: Policy, env: SplitComputingEnv, seed: int) -> int:
    """Run an episode; at every request, ask a copy of the policy on :func:`with_other_truth`.

    :return: the requests at which the two decisions differ
    """
    observation, _ = env.reset(seed=seed)
    policy.reset(env)
    disagreements = 0
    for step in range(env.horizon):
        other_env = with_other_truth(env, 1000 + step)
        other_policy = copy.deepcopy(policy)
        action = policy.act(env, observation)
        other_action = other_policy.act(other_env, observation.copy())
        disagreements += int(not np.array_equal(action, other_action))
        observation, *_ = env.step(action)
    return disagreements


@pytest.mark.parametrize("name", causal_baselines(learned=True))
def test_a_causal_baseline_decides_the_same_whatever_the_hidden_truth(name: str) -> None:
    policy = baseline(name, varying_world)
    assert counterfactual_disagreements(policy, varying_world(), seed=3) == 0


@pytest.mark.parametrize("name", ["oracle-now", "clairvoyant"])
def test_a_reference_that_knows_more_decides_otherwise_in_another_world(name: str) -> None:
    # the perturbation reaches what the references read, so the check above could fail
    assert counterfactual_disagreements(make_baseline(name), varying_world(), seed=3) > 10


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
    is hidden.
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
    "request_exit_confidences",
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


@pytest.mark.parametrize("name", causal_baselines(learned=True))
def test_no_causal_baseline_touches_what_the_device_cannot_know(
    name: str, tiny_profile: Profile
) -> None:
    make_env = env_factory(tiny_profile)
    guarded = run_episodes(_DeviceViewPolicy(baseline(name, make_env)), make_env(), [3])
    free = run_episodes(baseline(name, make_env), make_env(), [3])
    np.testing.assert_array_equal(guarded.reward, free.reward)


def test_the_guard_catches_a_reference(tiny_profile: Profile) -> None:
    env = env_factory(tiny_profile)()
    with pytest.raises(AssertionError, match="while deciding"):
        run_episodes(_DeviceViewPolicy(OracleNowPolicy()), env, [0])
    with pytest.raises(AssertionError, match="while deciding"):
        run_episodes(_DeviceViewPolicy(ClairvoyantPolicy()), env, [0])
    with pytest.raises(AssertionError, match="request_exit_confidences while deciding"):
        run_episodes(_DeviceViewPolicy(ConfidenceGatePolicy()), env, [0])


def test_channel_blind_decides_from_its_observation_and_the_profile_alone(
    tiny_profile: Profile,
) -> None:
    policy = _DeviceViewPolicy(
        ChannelBlindPolicy(0.5), also_hidden=("knowledge", "predict_actions")
    )
    rollouts = []
    for channel in ("markov", "gilbert-elliott"):
        env = SplitComputingEnv(
            profile=tiny_profile,
            device=SLOW_DEVICE,
            horizon=60,
            frame_interval_s=0.006,
            deadline_s=0.02,
            channel=channel,
        )
        rollouts.append(run_episodes(policy, env, [0, 1]))
    exit_stages = np.asarray(tiny_profile.exit_stages)
    assert (rollouts[0].split >= exit_stages[rollouts[0].exit]).all()  # never offloads
    np.testing.assert_array_equal(rollouts[0].exit, rollouts[1].exit)
