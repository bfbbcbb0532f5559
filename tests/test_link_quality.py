"""The radio's link-rate report: its error statistics, delay, seeding, off switch and what leaks."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from splitrl.envs import SplitComputingEnv
from splitrl.envs.channels import ConstantChannel
from splitrl.envs.link_quality import (
    DEFAULT_RELATIVE_ERROR,
    MIN_RELATIVE_ERROR,
    LinkQualityModel,
    LinkQualityReport,
    log_sigma,
)
from splitrl.envs.observation import ObservationLayout, scale_throughput
from splitrl.envs.scenarios import SCENARIOS, episode_requests
from splitrl.profiles.schema import Profile

CAPACITY_BPS = 2e6


def constant(t: float) -> float:
    return CAPACITY_BPS


def reports(model: LinkQualityModel, n: int, seed: int = 0, frame_s: float = 0.01) -> np.ndarray:
    report = LinkQualityReport(model, frame_s, seed)
    return np.array([report.report(constant, k * frame_s) for k in range(n)])


def link_feature(env: SplitComputingEnv, observation: np.ndarray) -> float:
    return float(observation[env.layout.names.index("link_quality")])


@pytest.mark.parametrize("relative_error", [MIN_RELATIVE_ERROR, DEFAULT_RELATIVE_ERROR, 0.5])
def test_independent_errors_have_the_stated_mean_relative_error(relative_error: float) -> None:
    model = LinkQualityModel(relative_error=relative_error, correlation_s=0.0)
    ratios = reports(model, 40_000) / CAPACITY_BPS
    assert np.mean(np.abs(ratios - 1.0)) == pytest.approx(relative_error, rel=0.03)
    logs = np.log(ratios)
    assert np.mean(logs) == pytest.approx(0.0, abs=0.03 * model.sigma)
    assert np.std(logs) == pytest.approx(model.sigma, rel=0.03)
    assert abs(np.corrcoef(logs[:-1], logs[1:])[0, 1]) < 0.03


def test_log_sigma_inverts_the_closed_form() -> None:
    for error in (0.039, 0.17, 1.0, 3.0):
        sigma = log_sigma(error)
        assert math.exp(sigma**2 / 2) * math.erf(sigma / math.sqrt(2)) == pytest.approx(error)
    # small errors: E|exp(sigma Z) - 1| ~ sigma sqrt(2 / pi)
    assert log_sigma(0.05) == pytest.approx(0.05 * math.sqrt(math.pi / 2), rel=0.01)


def test_errors_are_correlated_over_the_correlation_time() -> None:
    model = LinkQualityModel(correlation_s=0.5)
    logs = np.log(reports(model, 40_000, frame_s=0.05) / CAPACITY_BPS)
    lag1 = np.corrcoef(logs[:-1], logs[1:])[0, 1]
    assert lag1 == pytest.approx(math.exp(-0.05 / 0.5), abs=0.02)


def test_report_describes_the_capacity_delay_s_ago() -> None:
    model = LinkQualityModel(delay_s=0.3)

    def step(t: float) -> float:
        return 1e6 if t < 1.0 else 4e6

    stepped, flat = LinkQualityReport(model, 0.05, seed=3), LinkQualityReport(model, 0.05, seed=3)
    times = np.arange(0.0, 2.0, 0.05)
    ratios = [stepped.report(step, t) / flat.report(lambda _: 1e6, t) for t in times]
    # the same error divides out: what remains is the capacity 0.3 s before each decision
    assert ratios == pytest.approx([step(max(t - 0.3, 0.0)) / 1e6 for t in times])
    assert ratios[times.searchsorted(1.25)] == pytest.approx(1.0)


def test_same_seed_same_reports_other_seed_other_reports() -> None:
    model = LinkQualityModel()
    np.testing.assert_array_equal(reports(model, 100, seed=5), reports(model, 100, seed=5))
    assert not np.allclose(reports(model, 100, seed=5), reports(model, 100, seed=6))
    report = LinkQualityReport(model, 0.01, seed=5)
    first = [report.report(constant, 0.0) for _ in range(10)]
    report.reset(5)
    assert [report.report(constant, 0.0) for _ in range(10)] == first


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"relative_error": 0.0}, "relative_error must be at least"),
        ({"relative_error": 0.01}, "relative_error must be at least"),
        ({"relative_error": math.nan}, "relative_error"),
        ({"delay_s": -0.1}, "delay_s"),
        ({"correlation_s": -1.0}, "correlation_s"),
    ],
)
def test_bad_models_get_clear_errors(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LinkQualityModel(**kwargs)


def test_model_round_trips_through_json_form() -> None:
    model = LinkQualityModel(relative_error=0.2, delay_s=0.05, correlation_s=2.0)
    assert LinkQualityModel.from_dict(model.to_dict()) == model


# ---------------------------------------------------------------------- in the environment
def test_env_observes_a_noisy_report_never_the_capacity(tiny_profile: Profile) -> None:
    env = SplitComputingEnv(profile=tiny_profile, channel=ConstantChannel(CAPACITY_BPS))
    obs, _ = env.reset(seed=0)
    features, ratios = [], []
    for _ in range(2000):
        features.append(link_feature(env, obs))
        assert env.knowledge.link_quality_bps is not None
        ratios.append(env.knowledge.link_quality_bps / CAPACITY_BPS)
        obs, *_ = env.step(np.array((0, 1, 0)))  # device-only: no throughput measurement
    # the feature is the report, in the throughput features' scaling
    assert features == pytest.approx([scale_throughput(r * CAPACITY_BPS) for r in ratios], abs=1e-6)
    assert scale_throughput(CAPACITY_BPS) not in features
    # over 2000 requests at 60 frames/s (33 s, errors correlated over 1 s) the error is LinkForecast's
    assert np.mean(np.abs(np.array(ratios) - 1.0)) == pytest.approx(
        DEFAULT_RELATIVE_ERROR, rel=0.25
    )


def test_other_features_do_not_see_the_capacity(tiny_profile: Profile) -> None:
    observations = []
    for rate in (1e5, 5e7):
        env = SplitComputingEnv(profile=tiny_profile, channel=ConstantChannel(rate))
        env.reset(seed=0)
        obs, *_ = env.step(np.array((1, 3, 0)))  # device-only: nothing measured
        observations.append(obs)
    index = env.layout.names.index("link_quality")
    others = [i for i in range(len(env.layout.names)) if i != index]
    np.testing.assert_array_equal(observations[0][others], observations[1][others])
    # the same error (same seed) on capacities 500 times apart
    assert link_feature(env, observations[1]) > link_feature(env, observations[0])


def test_report_is_the_same_whatever_the_actions(tiny_profile: Profile) -> None:
    """Common random numbers: the error depends on the request, not on what the policy did."""
    features = []
    for action in ((0, 1, 0), (1, 3, 0)):
        env = SplitComputingEnv(profile=tiny_profile, channel=ConstantChannel(CAPACITY_BPS))
        obs, _ = env.reset(seed=11)
        episode = [link_feature(env, obs)]
        for _ in range(50):
            obs, *_ = env.step(np.array(action))
            episode.append(link_feature(env, obs))
        features.append(episode)
    assert features[0] == features[1]


def test_off_switch_drops_the_feature(tiny_profile: Profile) -> None:
    env = SplitComputingEnv(profile=tiny_profile, link_quality=False)
    obs, _ = env.reset(seed=0)
    assert env.link_quality_model is None and env.knowledge.link_quality_bps is None
    assert "link_quality" not in env.layout.names
    assert obs.shape == env.observation_space.shape == (len(ObservationLayout(4, False).names),)
    on = SplitComputingEnv(profile=tiny_profile)
    assert on.observation_space.shape == (obs.shape[0] + 1,)
    # off keeps the rest of the episode: the same requests, channel and outcomes
    on.reset(seed=0)
    for _ in range(20):
        a, b = env.step(np.array((1, 0, 3))), on.step(np.array((1, 0, 3)))
        assert a[1] == b[1] and a[4]["sample_index"] == b[4]["sample_index"]


def test_custom_model_and_scenario_switch(tiny_profile: Profile) -> None:
    model = LinkQualityModel(relative_error=0.3, delay_s=0.0)
    env = SplitComputingEnv(profile=tiny_profile, link_quality=model)
    assert env.link_quality_model == model
    off = SplitComputingEnv(dataclasses.replace(SCENARIOS["default"], link_quality=False))
    assert off.link_quality_model is None
    with pytest.raises(TypeError, match="link_quality"):
        SplitComputingEnv(profile=tiny_profile, link_quality="yes")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- episode length
def test_episodes_cover_the_scenarios_seconds(tiny_profile: Profile) -> None:
    for scenario in SCENARIOS.values():
        assert scenario.requests_per_episode * scenario.frame_interval_s >= 20.0 - 1e-9
    assert SCENARIOS["default"].requests_per_episode == 2400  # 20 s at 120 frames/s
    env = SplitComputingEnv(profile=tiny_profile)
    assert env.horizon == 2400
    assert SplitComputingEnv(profile=tiny_profile, horizon=7).horizon == 7
    assert SplitComputingEnv(profile=tiny_profile, frame_interval_s=0.1).horizon == 200
    assert episode_requests(20.0, 0.3) == 67
    with pytest.raises(ValueError, match="episode_s"):
        episode_requests(0.0, 0.1)


def test_train_flag_turns_link_quality_off() -> None:
    import argparse

    from splitrl.training.cli import config_from_args, configure_parser

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    off = config_from_args(parser.parse_args(["--no-link-quality"]))
    assert off.effective_scenario().link_quality is False
    assert config_from_args(parser.parse_args([])).effective_scenario().link_quality is True
