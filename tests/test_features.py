"""Tests of the predicted-value features: what robust-mpc (or mpc) predicts for every action."""

import numpy as np
import pytest

from splitrl.agents.baselines import make_baseline
from splitrl.agents.features import PredictedActionValues, PredictedValuesObservation
from splitrl.agents.learners import get_learner
from splitrl.envs import SplitComputingEnv

HORIZON = 40


@pytest.mark.parametrize("predictor", ["robust-mpc", "mpc", "mpc-geometric", "mpc-quantile"])
def test_features_rank_actions_as_their_rule_does(predictor: str) -> None:
    env = SplitComputingEnv("default", horizon=HORIZON)
    twin = SplitComputingEnv("default", horizon=HORIZON)
    features, baseline = PredictedActionValues(predictor), make_baseline(predictor)
    observation, _ = env.reset(seed=3)
    twin.reset(seed=3)
    features.reset(env)
    baseline.reset(twin)
    canonical = env.action_masks()
    for _ in range(HORIZON):
        values = features(env)
        action = baseline.act(twin, observation)
        assert values.shape == (env.actions.n_actions,)
        assert values.max() == 0.0 and np.all(values[~canonical] == 0.0)
        best = np.flatnonzero(canonical)[np.argmax(values[canonical])]
        assert best == np.ravel_multi_index(tuple(action), env.actions.nvec)
        observation, *_ = env.step(action)
        twin.step(action)


def test_wrapper_and_trained_policy_see_the_same_observation() -> None:
    wrapped = PredictedValuesObservation(SplitComputingEnv("default", horizon=HORIZON))
    plain = SplitComputingEnv("default", horizon=HORIZON)
    features = PredictedActionValues()
    extended, _ = wrapped.reset(seed=5)
    observation, _ = plain.reset(seed=5)
    features.reset(plain)
    rng = np.random.default_rng(0)
    for _ in range(HORIZON):
        assert wrapped.observation_space.contains(extended)
        np.testing.assert_array_equal(extended, features.extend(plain, observation))
        action = np.array(
            np.unravel_index(rng.choice(np.flatnonzero(plain.action_masks())), (3, 6, 7))
        )
        extended, *_ = wrapped.step(action)
        observation, *_ = plain.step(action)
    np.testing.assert_array_equal(wrapped.action_masks(), plain.action_masks())


def test_sacd_prior_learner_observes_the_features() -> None:
    plain = SplitComputingEnv("default", horizon=HORIZON)
    env = get_learner("sacd-prior").wrap_env(plain)
    assert plain.observation_space.shape is not None
    assert env.observation_space.shape == (plain.observation_space.shape[0] + 126,)
    assert get_learner("sacd").wrap_env(plain) is plain
    mpc_env = get_learner("sacd-hindsight-mpc").wrap_env(plain)
    assert mpc_env.get_wrapper_attr("features").predictor.name == "mpc"


def test_mpc_features_differ_from_robust_mpc_after_a_forecast_error() -> None:
    """The two predictors are different features: once a transfer's throughput missed the
    forecast, robust-mpc discounts it and mpc does not."""
    env = SplitComputingEnv("default", horizon=HORIZON)
    robust, plain = PredictedActionValues("robust-mpc"), PredictedActionValues("mpc")
    env.reset(seed=3)
    robust.reset(env)
    plain.reset(env)
    offload = np.array([2, 0, 6])  # everything on the server, lossless
    assert not env.actions.is_device_only(2, 0)
    differ = 0
    for _ in range(HORIZON):
        differ += not np.array_equal(robust(env), plain(env))
        env.step(offload)
    assert differ > 0


def test_context_rules_come_before_the_prior() -> None:
    """With context rules, the features are each rule's values in order, the prior's last (what a
    SACD actor reads as its prior), each equal to that rule's own features."""
    env = SplitComputingEnv("default", horizon=HORIZON)
    both = PredictedActionValues("mpc-quantile", context=("robust-mpc",))
    alone = [PredictedActionValues("robust-mpc"), PredictedActionValues("mpc-quantile")]
    env.reset(seed=4)
    for member in (both, *alone):
        member.reset(env)
    n_actions = env.actions.n_actions
    assert both.n_rules == 2 and both.predictor.name == "mpc-quantile"
    differ = 0
    for _ in range(HORIZON):
        values = both(env)
        expected = [rule(env) for rule in alone]
        assert values.shape == (2 * n_actions,)
        np.testing.assert_array_equal(values[:n_actions], expected[0])
        np.testing.assert_array_equal(values[n_actions:], expected[1])
        differ += not np.array_equal(*expected)
        env.step(np.array([2, 0, 6]))
    assert differ > 0


def test_learner_with_context_rules_observes_them() -> None:
    plain = SplitComputingEnv("default", horizon=HORIZON)
    spec = get_learner("sacd-hindsight-mpc-quantile-robust")
    env = spec.wrap_env(plain)
    assert plain.observation_space.shape is not None
    assert env.observation_space.shape == (plain.observation_space.shape[0] + 2 * 126,)
    from types import SimpleNamespace

    policy = spec.as_policy(SimpleNamespace(predict=lambda observation: None), plain.actions.nvec)
    assert policy.observation_shape(plain) == env.observation_space.shape


@pytest.mark.parametrize(
    ("context", "match"),
    [(("mpc",), "observed once"), (("bola",), "unknown predictor 'bola'")],
)
def test_bad_context_rules_are_refused(context: tuple[str, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PredictedActionValues("mpc", context=context)


def test_unknown_predictor_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown predictor 'bola'; known: robust-mpc, mpc"):
        PredictedActionValues("bola")


def test_features_need_a_split_computing_env() -> None:
    import gymnasium as gym

    with pytest.raises(ValueError, match="need a SplitComputingEnv"):
        PredictedValuesObservation(gym.make("CartPole-v1"))


def test_untrained_sacd_prior_acts_as_robust_mpc(one_torch_thread: None) -> None:
    """The prior policy's output layers start at zero: before any training its greedy action is
    robust-mpc's on every request of an episode."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from splitrl.agents.rollout import run_episodes

    spec = get_learner("sacd-prior")
    vec_env = DummyVecEnv([lambda: spec.wrap_env(SplitComputingEnv("default", horizon=HORIZON))])
    model = spec.build_model(vec_env, spec.resolved_hyperparameters({}), seed=0)
    env = SplitComputingEnv("default", horizon=2 * HORIZON)
    learned = run_episodes(spec.as_policy(model, env.actions.nvec), env, [7])
    prior = run_episodes(
        make_baseline("robust-mpc"), SplitComputingEnv("default", horizon=2 * HORIZON), [7]
    )
    for field in ("exit", "split", "bits"):
        np.testing.assert_array_equal(getattr(learned, field), getattr(prior, field))
    np.testing.assert_array_equal(learned.reward, prior.reward)


def test_link_range_guard_names_the_newest_throughput_and_the_local_actions(
    one_torch_thread: None,
) -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv

    from splitrl.agents.learners import LINK_RANGE_GUARD, link_range_guard

    env = SplitComputingEnv("mcu-lte-video-timeout-gate", horizon=HORIZON)
    guard = link_range_guard(env)
    assert env.layout.names[guard["input"]] == "throughput_0"
    local = {
        env.actions.flat_index(e, s, b)
        for e, s, b in np.ndindex(*env.actions.nvec)
        if env.actions.is_device_only(e, s)
    }
    assert set(guard["actions"]) == local and len(local) < env.actions.n_actions
    spec = get_learner("sacd-hindsight-mpc-quantile-replayed")
    settings = spec.resolved_hyperparameters({})
    settings["policy_kwargs"] = {**settings["policy_kwargs"], "range_guard": LINK_RANGE_GUARD}
    vec_env = DummyVecEnv([lambda: spec.wrap_env(SplitComputingEnv("mcu-lte-video-timeout-gate"))])
    model = spec.build_model(vec_env, settings, seed=0)
    assert model.policy.actor.range_guard == {"input": guard["input"], "actions": sorted(local)}
    assert settings["policy_kwargs"]["range_guard"] == LINK_RANGE_GUARD  # the config is unchanged


@pytest.mark.parametrize("value", ["wifi", "link:", "link:-1", "link:soon"])
def test_link_range_guard_strings_are_checked_before_training(value: str) -> None:
    spec = get_learner("sacd-hindsight-mpc-quantile-replayed")
    settings = spec.resolved_hyperparameters({})
    policy_kwargs = {**settings["policy_kwargs"], "range_guard": value}
    with pytest.raises(ValueError, match="range_guard"):
        spec.resolved_hyperparameters({"policy_kwargs": policy_kwargs})


def test_link_range_guard_with_an_expiry_lifts_at_that_age(one_torch_thread: None) -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv

    from splitrl.agents.learners import link_guard_expiry, link_range_guard
    from splitrl.envs.observation import scale_age

    env = SplitComputingEnv("mcu-lte-video-timeout-gate", horizon=HORIZON)
    assert link_guard_expiry("link") is None and link_guard_expiry("link:1.5") == 1.5
    guard = link_range_guard(env, 1.5)
    assert env.layout.names[guard["expires"]["input"]] == "estimate_age"
    assert guard["expires"]["at"] == scale_age(1.5) == 0.6
    spec = get_learner("sacd-hindsight-mpc-quantile-replayed")
    settings = spec.resolved_hyperparameters({})
    settings["policy_kwargs"] = {**settings["policy_kwargs"], "range_guard": "link:1.5"}
    vec_env = DummyVecEnv([lambda: spec.wrap_env(SplitComputingEnv("mcu-lte-video-timeout-gate"))])
    model = spec.build_model(vec_env, settings, seed=0)
    assert model.policy.actor.range_guard["expires"] == guard["expires"]
