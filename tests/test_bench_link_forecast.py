"""The link-forecast benchmark: its rule, its fit and its command line, on short episodes."""

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_link_forecast import (
    N_FEATURES,
    QUANTILES,
    ForecastGate,
    GatedQuantileMPCPolicy,
    QuantileMPCPolicy,
    SwitchedQuantileMPCPolicy,
    candidate_gates,
    fit_forecast,
    main,
)
from splitrl.agents.baselines.link_forecast import LinkForecast
from splitrl.agents.baselines.robust_mpc import GeometricMPCPolicy
from splitrl.agents.rollout import run_episodes
from tests.test_link_forecast import short_markov_env as _env


def _dead_link(features: np.ndarray) -> np.ndarray:
    return np.full(5, -12.0)


def _gate(low: float, high: float, max_spread: float) -> ForecastGate:
    return ForecastGate(np.full(N_FEATURES, low), np.full(N_FEATURES, high), max_spread)


@pytest.mark.parametrize(
    "gate",
    [_gate(-np.inf, np.inf, -np.inf), _gate(np.inf, np.inf, np.inf)],
    ids=["spread-too-wide", "features-out-of-range"],
)
def test_where_the_gate_distrusts_the_forecast_the_rule_is_mpc_geometric(
    gate: ForecastGate,
) -> None:
    seeds = range(2)
    rule = run_episodes(GeometricMPCPolicy(), _env(), seeds)
    gated = GatedQuantileMPCPolicy(_dead_link, gate)
    same = run_episodes(gated, _env(), seeds)
    np.testing.assert_array_equal(same.reward, rule.reward)
    assert gated.decisions == 2 * 120 and gated.trusted == 0


def test_where_the_gate_trusts_the_forecast_the_rule_follows_it() -> None:
    gated = GatedQuantileMPCPolicy(_dead_link, _gate(-np.inf, np.inf, 0.0))
    dead = run_episodes(gated, _env(), range(2))
    assert not (dead.payload_bytes > 0).any()
    assert gated.trusted == gated.decisions == 2 * 120


def test_a_switch_between_equal_rules_is_mpc_geometric() -> None:
    seeds = range(2)
    rule = run_episodes(GeometricMPCPolicy(), _env(), seeds)
    switched = SwitchedQuantileMPCPolicy(lambda features: np.zeros(1))
    same = run_episodes(switched, _env(), seeds)
    np.testing.assert_array_equal(same.reward, rule.reward)
    assert switched.decisions == 2 * 120 and switched.changed == 0


def test_the_switch_never_follows_a_forecast_that_its_reports_refute() -> None:
    # a link forecast 20 times faster than the geometric mean offloads into every slow spell;
    # the reports that follow price those offloads, so the switch keeps to mpc-geometric
    seeds = range(2)
    rule = run_episodes(GeometricMPCPolicy(), _env(), seeds)
    optimistic = run_episodes(QuantileMPCPolicy(lambda features: np.full(5, 3.0)), _env(), seeds)
    switched = SwitchedQuantileMPCPolicy(lambda features: np.full(5, 3.0))
    same = run_episodes(switched, _env(), seeds)
    assert optimistic.reward.mean() < rule.reward.mean() - 0.05
    np.testing.assert_array_equal(same.reward, rule.reward)
    assert switched.trusted == 0


def test_the_switch_scores_each_request_once_its_report_describes_it() -> None:
    switched = SwitchedQuantileMPCPolicy(lambda features: np.zeros(1), memory_s=1.0)
    env = _env()
    env.reset(seed=0)
    switched.reset(env)
    delay = switched.report_delay_s
    assert delay == env.link_quality_model.delay_s > 0  # type: ignore[union-attr]
    logs = np.array([0.0, 1.0, 2.0])
    switched._pending.extend(
        [
            (0.0, logs, np.array([0.0, 2.0, 4.0]), np.zeros(3)),
            (1.0, logs, np.zeros(3), np.ones(3)),
        ]
    )
    switched._score(1.5, now=delay)  # describes the first request: lead 3 at log rate 1.5
    assert switched.score == pytest.approx(3.0) and len(switched._pending) == 1
    switched._score(9.0, now=1.0 + delay)  # held at the grid's end; the old lead decays 1 s
    assert switched.score == pytest.approx(3.0 * np.exp(-1.0) - 1.0) and not switched._pending
    switched.reset(env)
    assert switched.score == 0.0


@pytest.mark.parametrize("measured", [True, False])
def test_the_switch_scores_an_offloaded_request_at_its_own_throughput(measured: bool) -> None:
    switched = SwitchedQuantileMPCPolicy(
        lambda features: np.zeros(1), score="measured" if measured else "report"
    )
    env = _env()
    env.reset(seed=0)
    switched.reset(env)
    now = env.request_start_s
    logs = np.log([1e5, 1e6, 1e7])
    switched._previous_start = now  # the request just decided, not yet described by a report
    switched._pending.append((now, logs, np.array([0.0, 1.0, 2.0]), np.zeros(3)))
    env.knowledge.record_transfer(125_000, 1.0, now + 0.001)  # 1 Mbit/s, its own transfer
    switched.action_values(env)
    if measured:
        assert switched.score == pytest.approx(1.0) and not switched._pending
    else:
        assert switched.score == 0.0 and switched._pending[0][0] == now


def test_a_switch_scored_by_the_true_values_is_a_reference_that_avoids_a_bad_forecast() -> None:
    seeds = range(2)
    optimistic = run_episodes(QuantileMPCPolicy(lambda features: np.full(5, 3.0)), _env(), seeds)
    switched = SwitchedQuantileMPCPolicy(lambda features: np.full(5, 3.0), score="clairvoyant")
    scored = run_episodes(switched, _env(), seeds)
    assert not switched.causal and SwitchedQuantileMPCPolicy(np.zeros_like).causal
    assert scored.reward.mean() > optimistic.reward.mean() + 0.05
    assert switched.trusted < switched.decisions / 2


def test_the_switch_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="memory_s"):
        SwitchedQuantileMPCPolicy(lambda features: np.zeros(1), memory_s=0.0)
    with pytest.raises(ValueError, match="score"):
        SwitchedQuantileMPCPolicy(lambda features: np.zeros(1), score="oracle")


def test_the_candidate_gates_widen_and_trust_the_training_range() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, N_FEATURES)).astype(np.float32)
    y = (x[:, 0] * rng.normal(size=3000)).astype(np.float32)
    model = fit_forecast(x, y, epochs=3)
    gates = candidate_gates(model, x)
    forecast = LinkForecast.from_state_dict(model.state_dict())
    assert next(iter(gates)) == "never" and gates["never"].max_spread == -np.inf
    widths = [gate.max_spread for gate in gates.values()]
    assert widths == sorted(widths) and widths[1] < widths[-1]
    widest = gates[list(gates)[-1]]
    trusted = np.mean([widest.trusts(row, forecast(row)) for row in x[:500]])
    assert 0.97 <= trusted < 1.0


def test_the_fitted_quantiles_cover_their_levels() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6000, N_FEATURES)).astype(np.float32)
    y = (x[:, 0] + rng.normal(size=6000)).astype(np.float32)
    forecast = LinkForecast.from_state_dict(
        fit_forecast(x[:5000], y[:5000], epochs=15).state_dict()
    )
    held_out = np.array([forecast(row) for row in x[5000:]])
    assert (np.diff(held_out, axis=1) > 0).all()
    coverage = (y[5000:, None] < held_out).mean(axis=0)
    np.testing.assert_allclose(coverage, QUANTILES, atol=0.06)


def test_the_benchmark_writes_a_row_per_condition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    flags = ["--train-episodes", "1", "--horizon", "60", "--episodes", "2", "--epochs", "1"]
    flags += ["--validation-episodes", "1"]
    assert main([*flags, "--conditions", "markov", "fading", "--jobs", "1"]) == 0
    written = json.loads((tmp_path / "results" / "bench_link_forecast.json").read_text())
    rows = {row["condition"]: row for row in written["conditions"]}
    assert set(rows) == {"markov", "fading"}
    for row in rows.values():
        assert row["best_rule"] in written["settings"]["rules"]
        assert np.isfinite([row["gain"], row["gain_ci95"], row["reward"]]).all()
        fractions = row["offload_fraction"]
        forecasts = {"mpc-quantile", "mpc-quantile-gated", "mpc-quantile-switched"}
        assert set(fractions) == {*forecasts, *written["settings"]["rules"]}
        assert all(0.0 <= fraction <= 1.0 for fraction in fractions.values())
    assert written["train_requests"] == 4 * 60
    gate = written["gate"]
    chosen = gate["validation_reward"][gate["chosen"]]
    assert chosen == max(gate["validation_reward"].values())
    for row in rows.values():
        assert 0.0 <= row["trusted_fraction"] <= 1.0
        assert np.isfinite([row["gated_gain"], row["gated_gain_ci95"]]).all()
        if gate["chosen"] == "never":
            assert row["trusted_fraction"] == 0.0
        assert 0.0 <= row["switched_changed_fraction"] <= 1.0
        assert np.isfinite([row["switched_gain"], row["switched_gain_ci95"]]).all()


def test_the_benchmark_evaluates_only_the_forecast_rules_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    flags = ["--train-episodes", "1", "--horizon", "60", "--episodes", "2", "--epochs", "1"]
    flags += ["--forecast-rules", "switched", "--conditions", "markov", "--jobs", "1"]
    assert main([*flags, "--save-forecast", "fitted/forecast.npz"]) == 0
    saved = LinkForecast.load(tmp_path / "fitted" / "forecast.npz")
    assert saved.levels.tolist() == pytest.approx(QUANTILES)
    written = json.loads((tmp_path / "results" / "bench_link_forecast.json").read_text())
    (row,) = written["conditions"]
    assert "gate" not in written and "gated_gain" not in row and "gain" not in row
    assert set(row["offload_fraction"]) == {"mpc-quantile-switched", *written["settings"]["rules"]}
    assert np.isfinite([row["switched_gain"], row["switched_reward"]]).all()


@pytest.mark.parametrize(
    "flags",
    [
        ["--conditions", "trace:absent.up"],
        ["--conditions", "markov", "no-such-channel"],
        ["--train-channels", "no-such-channel"],
        ["--episodes", "0"],
        ["--validation-episodes", "0"],
        ["--seed", "-1"],
        ["--seed", "25000"],
        ["--switch-memory-s", "0"],
        ["--switch-memory-s", "nan"],
        ["--forecast-rules", "no-such-rule"],
        ["--switch-score", "oracle"],
        ["--scenario", "no-such"],
        ["--save-forecast", "forecast.pt"],
        ["--save-forecast", "."],
        ["--save-forecast", "a-file/forecast.npz"],
    ],
)
def test_bad_flags_are_refused_before_any_work(
    flags: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit):
        main(flags)
    assert not (tmp_path / "results").exists()
