"""The learned link forecast and ``mpc-quantile``: its features, its network in numpy, its file."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.bench_link_forecast import QuantileForecast
from splitrl.agents.baselines import causal_baselines, make_baseline
from splitrl.agents.baselines.link_forecast import (
    N_FEATURES,
    QUANTILES,
    LinkForecast,
    QuantileMPCPolicy,
    forecast_features,
    shipped_forecast,
)
from splitrl.agents.baselines.robust_mpc import GeometricMPCPolicy
from splitrl.agents.rollout import run_episodes
from splitrl.envs.forecast import DeviceForecast
from splitrl.envs.scenarios import get_scenario
from splitrl.envs.split_computing import SplitComputingEnv


def short_markov_env() -> SplitComputingEnv:
    """120 requests of ``default-timeout`` on its Markov channel."""
    scenario = dataclasses.replace(get_scenario("default-timeout"), channel="markov", horizon=120)
    return SplitComputingEnv(scenario)


def _random_forecast(seed: int = 0) -> tuple[QuantileForecast, LinkForecast]:
    torch.manual_seed(seed)
    module = QuantileForecast()
    module.center.copy_(torch.randn(N_FEATURES))
    module.scale.copy_(torch.rand(N_FEATURES) + 0.5)
    return module, LinkForecast.from_state_dict(module.state_dict())


def test_a_forecast_at_the_geometric_mean_is_mpc_geometric() -> None:
    seeds = range(3)
    rule = run_episodes(GeometricMPCPolicy(), short_markov_env(), seeds)
    same = run_episodes(QuantileMPCPolicy(lambda features: np.zeros(1)), short_markov_env(), seeds)
    np.testing.assert_array_equal(same.reward, rule.reward)
    assert (rule.payload_bytes > 0).any()


def test_a_forecast_of_a_dead_link_keeps_the_device_local() -> None:
    dead = run_episodes(
        QuantileMPCPolicy(lambda features: np.full(5, -12.0)), short_markov_env(), range(2)
    )
    assert not (dead.payload_bytes > 0).any()


def test_the_features_are_the_devices_own() -> None:
    env = short_markov_env()
    env.reset(seed=0)
    geometric, features = forecast_features(env)
    logs = [np.log(t) for t in env.knowledge.throughputs]
    if env.knowledge.link_quality_bps is not None:
        logs.append(np.log(env.knowledge.link_quality_bps))
    assert geometric == pytest.approx(np.mean(logs))
    assert features.shape == (N_FEATURES,) and np.isfinite(features).all()


def test_a_device_computes_the_features_the_simulator_does() -> None:
    env = short_markov_env()
    env.reset(seed=1)
    device = DeviceForecast(env, env.knowledge)
    canonical = np.array(env.actions.canonical_actions())
    rng = np.random.default_rng(0)
    waited = 0
    for _ in range(60):
        # random actions: offloads move the throughputs, long ones leave a backlog
        env.step(canonical[rng.integers(len(canonical))])
        device.at_request(env._arrival, env.request_start_s)
        waited += env.request_start_s > env._arrival
        simulated, device_side = forecast_features(env), forecast_features(device)
        assert simulated[0] == device_side[0]
        np.testing.assert_array_equal(simulated[1], device_side[1])
    assert waited > 0
    assert np.isfinite(simulated[1][8])  # the newest throughput's age: the device has sent


def test_the_features_need_the_four_throughputs_the_forecast_was_fitted_on() -> None:
    env = SplitComputingEnv(get_scenario("default-timeout"), history_length=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"the device keeps 2 \(history_length must be 4\)"):
        forecast_features(env)


def test_the_numpy_forecast_is_the_fitted_network() -> None:
    module, forecast = _random_forecast()
    rows = np.random.default_rng(0).normal(size=(50, N_FEATURES)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(rows)).numpy()
    got = np.array([forecast(row) for row in rows])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert (np.diff(got, axis=1) > 0).all()


def test_a_saved_forecast_loads_the_same(tmp_path: Path) -> None:
    _, forecast = _random_forecast(seed=3)
    path = tmp_path / "forecast.npz"
    forecast.save(path)
    loaded = LinkForecast.load(path)
    row = np.linspace(-1.0, 1.0, N_FEATURES, dtype=np.float32)
    np.testing.assert_array_equal(loaded(row), forecast(row))
    np.testing.assert_array_equal(loaded.levels, np.array(QUANTILES, dtype=np.float32))


def test_a_file_that_is_not_a_forecast_is_refused_by_name(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a forecast")
    with pytest.raises(ValueError, match=r"corrupt\.npz: not a link forecast"):
        LinkForecast.load(corrupt)
    partial = tmp_path / "partial.npz"
    np.savez(partial, levels=np.array(QUANTILES, dtype=np.float32))
    with pytest.raises(ValueError, match=r"partial\.npz: not a link forecast"):
        LinkForecast.load(partial)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.npz: not a link forecast"):
        LinkForecast.load(empty)
    _, forecast = _random_forecast()
    whole = tmp_path / "whole.npz"
    forecast.save(whole)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"truncated\.npz: not a link forecast"):
        LinkForecast.load(truncated)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"biases": ()}, "one bias per weight matrix"),
        ({"center": np.zeros(3, dtype=np.float32)}, "center and scale"),
        ({"scale": np.zeros(N_FEATURES, dtype=np.float32)}, "scale positive"),
        ({"levels": np.array([0.9, 0.7, 0.5, 0.3, 0.1], dtype=np.float32)}, "increasing values"),
        ({"levels": np.array([0.1, 0.5], dtype=np.float32)}, "levels must be 5"),
    ],
)
def test_malformed_forecasts_are_refused(change: dict, message: str) -> None:
    _, forecast = _random_forecast()
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(forecast, **change)
    nan_weights = (np.full_like(forecast.weights[0], np.nan), *forecast.weights[1:])
    with pytest.raises(ValueError, match="finite"):
        dataclasses.replace(forecast, weights=nan_weights)


def test_the_shipped_forecast_is_a_causal_baseline() -> None:
    forecast = shipped_forecast()
    assert forecast.levels.tolist() == pytest.approx(QUANTILES)
    env = short_markov_env()
    env.reset(seed=0)
    offsets = forecast(forecast_features(env)[1])
    assert offsets.shape == (len(QUANTILES),) and (np.diff(offsets) > 0).all()
    assert "mpc-quantile" in causal_baselines(learned=True)
    rule = make_baseline("mpc-quantile")
    rollout = run_episodes(rule, short_markov_env(), range(2))
    assert np.isfinite(rollout.reward).all() and (rollout.payload_bytes > 0).any()
