"""Tests of the link memory: slow statistics of the device's throughputs over an episode."""

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from splitrl.agents.features import PredictedActionValues
from splitrl.agents.learners import get_learner
from splitrl.agents.link_memory import N_MEMORY_FEATURES, LinkMemory, memory_space_bounds
from splitrl.envs import SplitComputingEnv
from splitrl.envs.observation import DeviceKnowledge, ObservationLayout, scale_throughput

PRIOR_BPS = 4e6


class _View(SimpleNamespace):
    """The two things the memory reads of a forecast view: the knowledge and the request's start."""

    knowledge: DeviceKnowledge
    request_start_s: float


def _view() -> _View:
    knowledge = DeviceKnowledge(
        ObservationLayout(), PRIOR_BPS, deadline_s=0.1, frame_interval_s=0.05
    )
    return _View(knowledge=knowledge, request_start_s=0.0)


def _send(view: _View, memory: LinkMemory, bps: float) -> np.ndarray:
    """One request that sends ``bps`` worth of bytes in 10 ms, then the next request's features."""
    view.request_start_s += 0.05
    view.knowledge.record_transfer(int(bps * 0.01 / 8), 0.01, view.request_start_s)
    view.request_start_s += 0.05
    return memory(view)


def test_level_starts_at_the_prior_and_follows_a_steady_link() -> None:
    view, memory = _view(), LinkMemory(decay=0.1)
    memory.reset(view)
    level, spread, drop_rate, since_drop = memory(view)
    assert level == pytest.approx(scale_throughput(PRIOR_BPS))
    assert (spread, drop_rate, since_drop) == (0.0, 0.0, 1.0)
    for _ in range(200):
        features = _send(view, memory, 20e6)
    assert features[0] == pytest.approx(scale_throughput(20e6), abs=1e-4)
    assert features[1] < 1e-3 and features[2] == 0.0 and features[3] == 1.0


def test_a_drop_raises_the_drop_rate_and_is_dated() -> None:
    view, memory = _view(), LinkMemory(decay=0.1, drop_ratio=0.25)
    memory.reset(view)
    for _ in range(50):
        _send(view, memory, 4e6)
    before = memory(view)
    after_dip = _send(view, memory, 1.5e6)  # below the level, not a quarter of it
    assert after_dip[2] == 0.0 and after_dip[3] == 1.0
    dropped = _send(view, memory, 0.5e6)
    assert dropped[2] == pytest.approx(0.1)
    assert 0.0 < dropped[3] < 0.01
    assert dropped[1] > before[1]
    view.request_start_s += 10.0
    later = memory(view)
    assert later[3] == pytest.approx(0.5, abs=0.01)
    assert later[2] == dropped[2], "no new transfer: the statistics stay"
    recovered = [_send(view, memory, 4e6)[2] for _ in range(20)]
    assert recovered[-1] == pytest.approx(0.1 * 0.9**20)


def test_reset_forgets_the_episode() -> None:
    view, memory = _view(), LinkMemory()
    memory.reset(view)
    fresh = memory(view)
    for bps in (4e6, 0.1e6, 9e6, 0.2e6):
        _send(view, memory, bps)
    assert not np.array_equal(memory(view), fresh)
    view = _view()
    memory.reset(view)
    np.testing.assert_array_equal(memory(view), fresh)


def test_features_stay_in_their_bounds_on_a_wild_link() -> None:
    view, memory = _view(), LinkMemory(decay=1.0)
    memory.reset(view)
    low, high = memory_space_bounds()
    rng = np.random.default_rng(0)
    for _ in range(300):
        features = _send(view, memory, float(10 ** rng.uniform(0, 10)))
        assert features.shape == (N_MEMORY_FEATURES,) and features.dtype == np.float32
        assert np.all(features >= low) and np.all(features <= high)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"decay": 0.0}, "decay must be in"),
        ({"decay": 1.5}, "decay must be in"),
        ({"drop_ratio": 1.0}, "drop_ratio must be in"),
        ({"drop_ratio": -0.1}, "drop_ratio must be in"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LinkMemory(**kwargs)


def test_memory_comes_before_the_predicted_values() -> None:
    env = SplitComputingEnv("default", horizon=40)
    with_memory = PredictedActionValues("mpc-quantile", memory=True)
    alone, memory = PredictedActionValues("mpc-quantile"), LinkMemory()
    env.reset(seed=2)
    for member in (with_memory, alone, memory):
        member.reset(env)
    assert with_memory.n_memory == N_MEMORY_FEATURES and alone.n_memory == 0
    moved = 0
    first = memory(env)
    for _ in range(40):
        values = with_memory(env)
        expected_memory = memory(env)
        np.testing.assert_array_equal(values[:N_MEMORY_FEATURES], expected_memory)
        np.testing.assert_array_equal(values[N_MEMORY_FEATURES:], alone(env))
        moved += not np.array_equal(expected_memory, first)
        env.step(np.array([2, 0, 6]))
    assert moved > 0


def test_learner_with_link_memory_observes_it() -> None:
    plain = SplitComputingEnv("default", horizon=40)
    spec = get_learner("sacd-hindsight-mpc-quantile-memory")
    env = spec.wrap_env(plain)
    assert plain.observation_space.shape is not None
    n_base = plain.observation_space.shape[0]
    assert env.observation_space.shape == (n_base + N_MEMORY_FEATURES + 126,)
    observation, _ = env.reset(seed=1)
    assert env.observation_space.contains(observation)
    policy = spec.as_policy(SimpleNamespace(predict=lambda observation: None), plain.actions.nvec)
    assert policy.observation_shape(plain) == env.observation_space.shape
    assert math.isclose(
        observation[n_base], scale_throughput(plain.knowledge.prior_bps), rel_tol=1e-6
    )


def random_gate(learner: str, std: float) -> tuple[Any, np.ndarray, int]:
    """A gated ``learner``'s untrained actor with its gate's weights drawn at ``std`` (seeded), a
    first observation of the default scenario, and how many entries the env's own part has."""
    import torch as th
    from stable_baselines3.common.vec_env import DummyVecEnv

    plain = SplitComputingEnv("default", horizon=40)
    spec = get_learner(learner)
    env = spec.wrap_env(plain)
    model = spec.build_model(DummyVecEnv([lambda: env]), spec.resolved_hyperparameters({}), seed=0)
    actor = model.policy.actor
    assert actor.gate_net is not None
    th.manual_seed(0)
    for layer in actor.gate_net:
        if isinstance(layer, th.nn.Linear):
            th.nn.init.normal_(layer.weight, std=std)
    observation, _ = env.reset(seed=1)
    assert plain.observation_space.shape is not None
    return actor, observation, plain.observation_space.shape[0]


def test_gate_of_the_gated_memory_learner_reads_the_link_memory(one_torch_thread: None) -> None:
    """``sacd-hindsight-mpc-quantile-gated-memory``: which rule the gate trusts can change with the
    link memory alone (the other features held fixed)."""
    import torch as th

    # small weights, so that the softmax does not saturate on the large predicted values
    actor, observation, n_base = random_gate("sacd-hindsight-mpc-quantile-gated-memory", std=0.02)
    obs = th.as_tensor(np.stack([observation, observation]))
    obs[1, n_base : n_base + N_MEMORY_FEATURES] = th.tensor([0.1, 1.0, 0.9, 0.0])
    weights = actor.gate_weights(obs)
    assert weights.shape == (2, 3)
    # a gate blind to the memory gives exactly the same weights to both
    assert (weights[0] - weights[1]).abs().max() > 1e-6


def test_gate_of_the_gated_by_memory_learner_reads_the_link_memory_alone(
    one_torch_thread: None,
) -> None:
    """``sacd-hindsight-mpc-quantile-gated-by-memory``: its gate's weights change with the link
    memory and with nothing else of the observation (the env's features, the rules' values)."""
    import torch as th

    actor, observation, n_base = random_gate("sacd-hindsight-mpc-quantile-gated-by-memory", std=0.5)
    assert actor.gate_inputs == N_MEMORY_FEATURES
    obs = th.as_tensor(np.stack([observation] * 3))
    obs[1, :n_base] += 0.5
    obs[1, n_base + N_MEMORY_FEATURES :] -= 0.3
    obs[2, n_base : n_base + N_MEMORY_FEATURES] = th.tensor([0.1, 1.0, 0.9, 0.0])
    weights = actor.gate_weights(obs)
    assert th.allclose(weights[0], weights[1])
    assert (weights[0] - weights[2]).abs().max() > 1e-3
