"""The evaluation command: common random numbers, metrics, reports, plots, seeds, errors."""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from splitrl.agents.baselines import make_baseline
from splitrl.cli import main
from splitrl.envs import SplitComputingEnv
from splitrl.evaluation.metrics import (
    PolicyMetrics,
    aggregate_seeds,
    normalized_score,
    student_t_quantile,
    t_interval,
)
from splitrl.evaluation.runner import LOCAL_BITS, evaluate_policies
from splitrl.evaluation.suite import (
    baseline_names,
    evaluate,
    evaluation_conditions,
    evaluation_scenario,
    load_runs,
)
from splitrl.training.config import TrainConfig
from splitrl.training.trainer import train

HORIZON = 30


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Small networks run fastest on one thread, and the test machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sacd_runs(tiny_profile_path: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny SACD runs (seeds 0 and 1) on the tiny profile."""
    out = tmp_path_factory.mktemp("runs")
    torch.set_num_threads(1)
    paths = []
    for seed in (0, 1):
        config = TrainConfig(
            algo="sacd",
            profile=str(tiny_profile_path),
            horizon=HORIZON,
            timesteps=120,
            seed=seed,
            eval_freq=0,
            checkpoint_freq=0,
            hyperparameters={"learning_starts": 40, "batch_size": 16},
            out=out,
        )
        paths.append(train(config).run_dir.path)
    return paths


@pytest.fixture
def tiny_env(tiny_profile_path: Path) -> SplitComputingEnv:
    return SplitComputingEnv(profile=str(tiny_profile_path), horizon=HORIZON)


def test_common_random_numbers(tiny_env: SplitComputingEnv) -> None:
    policies = [make_baseline(name) for name in ("device-only", "edge-only", "random", "greedy")]
    rollouts = evaluate_policies(policies, tiny_env, seeds=[5, 6, 7], progress=False)
    reference = rollouts[0]
    assert len({tuple(r.exit.reshape(-1)) for r in rollouts}) > 1  # the policies act differently
    for rollout in rollouts[1:]:
        np.testing.assert_array_equal(rollout.sample_index, reference.sample_index)
        # Requests start on arrival whenever nothing is queued: the same capacity then.
        no_wait = (rollout.latency_s < tiny_env.frame_interval_s) & (
            reference.latency_s < tiny_env.frame_interval_s
        )
        np.testing.assert_array_equal(
            rollout.capacity_bps[no_wait], reference.capacity_bps[no_wait]
        )
    assert not np.array_equal(rollouts[0].sample_index[0], rollouts[0].sample_index[1])


def test_device_only_records_no_bits(tiny_env: SplitComputingEnv) -> None:
    (rollout,) = evaluate_policies([make_baseline("device-only")], tiny_env, [0], progress=False)
    assert np.all(rollout.bits == LOCAL_BITS)
    assert np.all(rollout.payload_bytes == 0)


@pytest.mark.parametrize(
    ("dof", "expected"), [(1, 12.7062047), (4, 2.7764451), (9, 2.2621572), (30, 2.0422725)]
)
def test_student_t_quantile(dof: int, expected: float) -> None:
    assert student_t_quantile(0.95, dof) == pytest.approx(expected, abs=1e-6)


def test_t_interval_on_known_data() -> None:
    mean, half_width = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0
    assert half_width == pytest.approx(2.7764451 * math.sqrt(2.5 / 5), abs=1e-6)
    assert math.isnan(t_interval([2.0])[1])


@pytest.mark.parametrize(("reward", "expected"), [(0.8, 0.0), (1.0, 1.0), (0.9, 0.5), (0.7, -0.5)])
def test_normalized_score(reward: float, expected: float) -> None:
    assert normalized_score(reward, static_reward=0.8, oracle_reward=1.0) == pytest.approx(expected)


def test_normalized_score_without_gap_is_nan() -> None:
    assert math.isnan(normalized_score(0.5, static_reward=0.8, oracle_reward=0.8))


def _row(reward: float, score: float, seed: int) -> PolicyMetrics:
    return PolicyMetrics(
        name=f"sacd (seed {seed})",
        condition="markov",
        kind="learned",
        episodes=4,
        requests=40,
        reward=reward,
        reward_ci95=0.01,
        latency_ms=10.0 * (seed + 1),
        latency_p95_ms=20.0,
        accuracy=0.9,
        deadline_miss_rate=0.0,
        energy_mj=1.0,
        payload_bytes=100.0,
        exits={"0": 0.5, "1": 0.5},
        splits={"0": 1.0},
        bits={"8": 1.0 - 0.5 * seed, "local": 0.5 * seed},
        normalized_score=score,
        gain_vs_static=reward - 0.5,
        seeds=[seed],
    )


def test_aggregate_seeds() -> None:
    row = aggregate_seeds("sacd (2 seeds)", [_row(0.5, 0.2, 0), _row(0.7, 0.6, 1)])
    assert (row.name, row.kind, row.seeds) == ("sacd (2 seeds)", "seeds", [0, 1])
    assert row.reward == pytest.approx(0.6)
    assert row.reward_seed_std == pytest.approx(math.sqrt(0.02))
    assert row.normalized_score == pytest.approx(0.4)
    assert row.gain_vs_static == pytest.approx(0.1)
    assert row.latency_ms == pytest.approx(15.0)
    assert row.bits == pytest.approx({"8": 0.75, "local": 0.25})


def test_evaluate_aggregates_training_seeds(sacd_runs: list[Path]) -> None:
    runs = load_runs(sacd_runs)
    assert [run.policy.name for run in runs] == ["sacd (seed 0)", "sacd (seed 1)"]
    conditions = evaluation_conditions(evaluation_scenario(runs))
    result = evaluate(runs, ["greedy"], conditions, episodes=3, seed=100, progress=False)
    rows = {row.name: row for row in result.conditions[0].rows}
    assert set(rows) == {
        "sacd (seed 0)",
        "sacd (seed 1)",
        "sacd (2 seeds)",
        "greedy",
        "best-static",
        "oracle",
    }
    aggregate = rows["sacd (2 seeds)"]
    assert aggregate.reward == pytest.approx(
        (rows["sacd (seed 0)"].reward + rows["sacd (seed 1)"].reward) / 2
    )
    static, oracle = rows["best-static"].reward, rows["oracle"].reward
    for row in result.conditions[0].rows[:2] + result.conditions[0].rows[3:]:
        expected = normalized_score(row.reward, static, oracle)
        assert row.normalized_score == pytest.approx(expected, nan_ok=True)
        assert row.gain_vs_static == pytest.approx(row.reward - static)
    assert rows["best-static"].gain_vs_static_ci95 == 0.0
    assert sum(rows["greedy"].exits.values()) == pytest.approx(1.0)
    assert result.seeds == [100, 101, 102]
    assert result.fit_seeds == [0, 1, 2]


def test_command_writes_tables_and_plots(
    sacd_runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", *map(str, sacd_runs), "--episodes", "2", "--out", str(out)]
    assert main([*args, "--no-progress", "--baselines", "greedy,device-only"]) == 0
    printed = capsys.readouterr().out
    assert "| sacd (2 seeds) |" in printed
    with (out / "results.csv").open() as handle:
        records = list(csv.DictReader(handle))
    names = [record["name"] for record in records]
    assert names == [
        "sacd (seed 0)",
        "sacd (seed 1)",
        "sacd (2 seeds)",
        "greedy",
        "device-only",
        "best-static",
        "oracle",
    ]
    assert all(0.0 <= float(record["accuracy"]) <= 1.0 for record in records)
    document = json.loads((out / "results.json").read_text())
    (condition,) = document["conditions"]
    assert condition["name"] == "markov"
    assert [row["name"] for row in condition["rows"]] == names
    assert "| policy | reward (95% CI) |" in (out / "results.md").read_text()
    for plot in ("reward", "latency_cdf", "timeline", "accuracy_latency"):
        path = out / f"{plot}_markov.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_trace_is_a_condition(tiny_profile_path: Path, tmp_path: Path) -> None:
    traces = []
    for name, rate in (("slow.csv", 0.5), ("fast.csv", 20.0)):
        path = tmp_path / name
        path.write_text("time_s,throughput_mbps\n" + "".join(f"{t},{rate}\n" for t in range(60)))
        traces.append(path)
    scenario = evaluation_scenario([], profile=str(tiny_profile_path))
    conditions = evaluation_conditions(scenario, traces=traces)
    assert [condition.name for condition in conditions] == ["trace:slow.csv", "trace:fast.csv"]
    result = evaluate([], ["edge-only"], conditions, episodes=1, progress=False)
    edge = [next(r for r in c.rows if r.name == "edge-only") for c in result.conditions]
    assert edge[0].latency_ms > edge[1].latency_ms


def test_run_on_another_profile_is_rejected(sacd_runs: list[Path]) -> None:
    runs = load_runs(sacd_runs[:1])
    conditions = evaluation_conditions(evaluation_scenario(runs, scenario="default"))
    with pytest.raises(ValueError, match="trained on profile 'tiny'"):
        evaluate(runs, [], conditions, episodes=1, progress=False)


def test_run_with_another_action_space_is_rejected(sacd_runs: list[Path], tmp_path: Path) -> None:
    copy = Path(shutil.copytree(sacd_runs[0], tmp_path / "edited"))
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["action_nvec"] = [9, 9, 9]
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    runs = load_runs([copy])
    conditions = evaluation_conditions(evaluation_scenario(runs))
    with pytest.raises(ValueError, match=r"MultiDiscrete\(\[9, 9, 9\]\)"):
        evaluate(runs, [], conditions, episodes=1, progress=False)


def test_runs_from_different_scenarios_need_a_scenario(
    sacd_runs: list[Path], tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(sacd_runs[1], tmp_path / "other"))
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["scenario_spec"]["horizon"] = HORIZON + 1
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="--scenario"):
        evaluation_scenario(load_runs([sacd_runs[0], copy]))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["/no/such/run"], "run directory /no/such/run not found"),
        (["--trace", "/no/such/trace.csv"], "trace file /no/such/trace.csv not found"),
        (["--baselines", "greedy,psychic"], "unknown baselines ['psychic']"),
        (["--scenario", "moon"], "unknown scenario 'moon'"),
    ],
)
def test_bad_input_is_one_clear_line(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", *arguments, "--no-progress", "--no-plots"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("splitrl evaluate: error: ")
    assert message in error


def test_baseline_names_always_include_the_references() -> None:
    assert baseline_names("greedy") == ["greedy", "best-static", "oracle"]
    assert baseline_names("none") == ["best-static", "oracle"]
