"""The evaluation command: common random numbers, metrics, reports, plots, seeds, errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from splitrl.agents.baselines import make_baseline
from splitrl.cli import main
from splitrl.envs import SplitComputingEnv
from splitrl.evaluation.episodes import EpisodeStudy
from splitrl.evaluation.metrics import normalized_score, paired_difference
from splitrl.evaluation.references import CHANNEL_BLIND, UPPER_REFERENCE, reference_names
from splitrl.evaluation.runner import LOCAL_BITS, Rollout, evaluate_policies
from splitrl.evaluation.seeds import (
    interval_estimate,
    mann_whitney_improvement,
    probability_of_improvement,
)
from splitrl.evaluation.suite import (
    baseline_names,
    evaluate,
    evaluation_conditions,
    evaluation_scenario,
    load_runs,
)
from splitrl.statistics import PairedDifference, t_interval
from splitrl.training.callbacks import EVALUATIONS_FILE, load_validation_log
from splitrl.training.config import TrainConfig
from splitrl.training.trainer import train

HORIZON = 30


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
            eval_freq=30,
            n_eval_episodes=3,
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


def test_t_interval_on_known_data() -> None:
    mean, half_width = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0
    # t(0.975, 4) = 2.7764451 (Abramowitz and Stegun, table 26.10)
    assert half_width == pytest.approx(2.7764451 * math.sqrt(2.5 / 5), abs=1e-6)
    assert math.isnan(t_interval([2.0])[1])


@pytest.mark.parametrize(("reward", "expected"), [(0.8, 0.0), (1.0, 1.0), (0.9, 0.5), (0.7, -0.5)])
def test_normalized_score(reward: float, expected: float) -> None:
    assert normalized_score(reward, low_reward=0.8, high_reward=1.0) == pytest.approx(expected)


@pytest.mark.parametrize("high", [0.8, 0.809, 0.7])
def test_normalized_score_is_nan_when_the_references_are_close(high: float) -> None:
    assert math.isnan(normalized_score(0.85, low_reward=0.8, high_reward=high))


def _rollout(name: str, rewards: np.ndarray, seeds: tuple[int, ...] | None = None) -> Rollout:
    """A rollout with the given ``(episodes, horizon)`` rewards (other records zero)."""
    zeros = np.zeros_like(rewards)
    integers = zeros.astype(np.int64)
    return Rollout(
        name=name,
        seeds=seeds or tuple(range(rewards.shape[0])),
        reward=rewards,
        latency_s=zeros,
        energy_j=zeros,
        payload_bytes=integers,
        correct=zeros,
        deadline_missed=zeros.astype(bool),
        capacity_bps=zeros,
        sample_index=integers,
        exit=integers,
        split=integers,
        bits=integers,
        n_exits=1,
        n_splits=1,
    )


def test_paired_difference_removes_the_shared_episode_luck() -> None:
    rng = np.random.default_rng(0)
    luck = rng.normal(0.0, 0.3, size=(40, 1))  # what the episode's channel does to everyone
    reference = _rollout("reference", 0.5 + luck + rng.normal(0, 0.01, (40, 5)))
    better = _rollout("better", 0.52 + luck + rng.normal(0, 0.01, (40, 5)))
    gain = paired_difference(better, reference)
    assert gain.reference == "reference"
    assert gain.is_positive() and gain.low < 0.02 < gain.high
    unpaired = t_interval(better.reward.mean(axis=1))[1]
    assert gain.ci95 < unpaired / 10
    with pytest.raises(ValueError, match="other seeds"):
        paired_difference(better, _rollout("elsewhere", reference.reward, tuple(range(1, 41))))


def test_episode_study_finds_the_episodes_a_half_width_needs() -> None:
    rng = np.random.default_rng(1)
    reference = _rollout("blind", rng.normal(0.5, 0.05, (400, 3)))
    policy = _rollout("mpc", reference.reward + rng.normal(0.01, 0.02, (400, 3)))
    study = EpisodeStudy.from_rollouts(policy, reference)
    curve = study.curve([10, 100, 400])
    assert curve[0][1] > curve[1][1] > curve[2][1]
    needed = study.episodes_needed(0.002)
    spread = study.spread
    from scipy import stats

    assert stats.t.ppf(0.975, needed - 1) * spread / math.sqrt(needed) <= 0.002
    assert stats.t.ppf(0.975, needed - 2) * spread / math.sqrt(needed - 1) > 0.002
    assert study.half_width(400) == pytest.approx(t_interval(study.differences)[1])


def test_iqm_interval_is_reproducible_and_leaves_numpy_alone() -> None:
    scores = np.array([[0.1], [0.5], [0.6], [0.7], [2.0]])
    np.random.seed(123)  # noqa: NPY002
    state = np.random.get_state()  # noqa: NPY002
    first = interval_estimate(scores)
    assert np.array_equal(np.random.get_state()[1], state[1])  # noqa: NPY002
    assert first == interval_estimate(scores)
    # The IQM ignores the outer quarters: the outlier 2.0 barely moves it, unlike the mean.
    assert first.value < interval_estimate(scores, "mean").value
    assert first.low <= first.value <= first.high


def test_mann_whitney_improvement_is_rliables_metric() -> None:
    from rliable import metrics

    rng = np.random.default_rng(5)
    for runs_x, runs_y in [(3, 3), (5, 3), (2, 7)]:
        # rounded so that ties occur, within and across the two learners
        x = rng.normal(size=(runs_x, 8)).round(1)
        y = rng.normal(size=(runs_y, 8)).round(1)
        assert mann_whitney_improvement(x, y) == pytest.approx(
            metrics.probability_of_improvement(x, y)
        )
    assert mann_whitney_improvement(x, x) == pytest.approx(0.5)


def test_probability_of_improvement() -> None:
    low = np.array([[0.1, 0.2], [0.2, 0.3]])
    high = low + 1.0
    assert probability_of_improvement(high, low).value == pytest.approx(1.0)
    assert probability_of_improvement(low, high).value == pytest.approx(0.0)
    assert probability_of_improvement(low, low).value == pytest.approx(0.5)


def test_evaluate_pairs_every_row_with_the_references(sacd_runs: list[Path]) -> None:
    runs = load_runs(sacd_runs)
    assert [run.policy.name for run in runs] == ["sacd (seed 0)", "sacd (seed 1)"]
    conditions = evaluation_conditions(evaluation_scenario(runs))
    result = evaluate(runs, ["greedy"], conditions, episodes=3, seed=100, progress=False)
    (condition,) = result.conditions
    rows = {row.name: row for row in condition.rows}
    assert set(rows) == {"sacd (seed 0)", "sacd (seed 1)", "greedy", *reference_names()}
    causal = [row for row in condition.rows if row.kind == "baseline" and row.causal]
    assert condition.best_causal == max(causal, key=lambda row: row.reward).name
    assert not rows[UPPER_REFERENCE].causal
    low, high = rows[condition.best_causal].reward, rows[UPPER_REFERENCE].reward
    for row in condition.rows:
        assert row.normalized_score == pytest.approx(
            normalized_score(row.reward, low, high), nan_ok=True
        )
        for name in ("greedy", *reference_names()):
            assert row.gains[name].mean == pytest.approx(row.reward - rows[name].reward)
        if row.kind == "baseline":
            assert row.gains[row.name] == PairedDifference(row.name, 0.0, 0.0)
    adaptation = condition.adaptation
    assert adaptation.upper_gain.mean == pytest.approx(
        rows[UPPER_REFERENCE].reward - rows[CHANNEL_BLIND].reward
    )
    assert adaptation.best_causal != CHANNEL_BLIND
    assert sum(rows["greedy"].exits.values()) == pytest.approx(1.0)
    assert result.seeds == [100, 101, 102]
    assert result.fit_seeds == [0, 1, 2]
    report = result.seeds_report
    assert report is not None
    (overall,) = report.overall
    assert (overall.name, overall.seeds) == ("sacd (2 seeds)", [0, 1])
    seed_rewards = [rows["sacd (seed 0)"].reward, rows["sacd (seed 1)"].reward]
    assert overall.reward.value == pytest.approx(np.mean(seed_rewards))  # IQM of two = mean
    assert overall.gain.value == pytest.approx(np.mean(seed_rewards) - low)
    assert overall.beats_best_causal is not None
    assert report.improvements == []  # one learner


def test_command_writes_tables_and_plots(
    sacd_runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", *map(str, sacd_runs), "--episodes", "2", "--out", str(out)]
    assert main([*args, "--no-progress", "--baselines", "greedy,device-only"]) == 0
    printed = capsys.readouterr().out
    assert "| sacd (2 seeds) |" in printed  # the rliable aggregate
    assert "Non-triviality: adapting is worth" in printed
    with (out / "results.csv").open() as handle:
        records = list(csv.DictReader(handle))
    names = [record["name"] for record in records]
    assert names == list(
        dict.fromkeys(
            ["sacd (seed 0)", "sacd (seed 1)", "greedy", "device-only", *reference_names()]
        )
    )
    assert all(0.0 <= float(record["accuracy"]) <= 1.0 for record in records)
    assert all(f"gain_vs_{CHANNEL_BLIND}" in record for record in records)
    document = json.loads((out / "results.json").read_text())
    (condition,) = document["conditions"]
    assert condition["name"] == "markov"
    assert [row["name"] for row in condition["rows"]] == names
    assert condition["adaptation"]["best_causal"] != CHANNEL_BLIND
    assert document["seeds_report"]["overall"][0]["name"] == "sacd (2 seeds)"
    assert "| policy | reward (95% CI) | gain vs " in (out / "results.md").read_text()
    for plot in ("reward_markov", "latency_cdf_markov", "timeline_markov", "seeds_aggregate"):
        path = out / f"{plot}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_keeps_a_new_best_only_on_a_significant_paired_gain(
    sacd_runs: list[Path],
) -> None:
    for run in sacd_runs:
        log = load_validation_log(run / "eval" / EVALUATIONS_FILE)
        assert log.timesteps == [0, 30, 60, 90, 120]  # the untrained model first
        assert log.results.shape == (5, 3)
        best = 0
        for index in range(1, len(log.timesteps)):
            gain, half_width = t_interval(log.results[index] - log.results[best])
            if gain - half_width > 0:
                best = index
        assert log.best_timesteps == log.timesteps[best]
        assert (run / "best_model.zip").exists()


def test_each_trace_is_a_condition(tiny_profile_path: Path, tmp_path: Path) -> None:
    traces = []
    for name, rate in (("slow.csv", 0.5), ("fast.csv", 20.0)):
        path = tmp_path / name
        path.write_text("time_s,throughput_mbps\n" + "".join(f"{t},{rate}\n" for t in range(60)))
        traces.append(path)
    scenario = evaluation_scenario([], profile=str(tiny_profile_path))
    conditions = evaluation_conditions(
        dataclasses.replace(scenario, horizon=HORIZON), traces=traces
    )
    assert [condition.name for condition in conditions] == ["trace:slow.csv", "trace:fast.csv"]
    result = evaluate([], ["edge-only"], conditions, episodes=2, progress=False)
    edge = [next(r for r in c.rows if r.name == "edge-only") for c in result.conditions]
    assert edge[0].latency_ms > edge[1].latency_ms


def test_run_on_another_profile_is_rejected(sacd_runs: list[Path]) -> None:
    runs = load_runs(sacd_runs[:1])
    conditions = evaluation_conditions(evaluation_scenario(runs, scenario="default"))
    with pytest.raises(ValueError, match="trained on profile 'tiny'"):
        evaluate(runs, [], conditions, episodes=2, progress=False)


def test_run_with_another_action_space_is_rejected(sacd_runs: list[Path], tmp_path: Path) -> None:
    copy = Path(shutil.copytree(sacd_runs[0], tmp_path / "edited"))
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["action_nvec"] = [9, 9, 9]
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    runs = load_runs([copy])
    conditions = evaluation_conditions(evaluation_scenario(runs))
    with pytest.raises(ValueError, match=r"MultiDiscrete\(\[9, 9, 9\]\)"):
        evaluate(runs, [], conditions, episodes=2, progress=False)


def test_conditions_in_worker_processes_give_the_same_result(sacd_runs: list[Path]) -> None:
    runs = load_runs(sacd_runs)
    runs[0].policy.name = "renamed"
    scenario = evaluation_scenario(runs)
    conditions = [
        *evaluation_conditions(scenario),
        *evaluation_conditions(scenario, channel="gilbert-elliott"),
    ]
    kwargs: dict[str, Any] = {"episodes": 2, "seed": 100, "progress": False}
    alone = evaluate(runs, ["greedy"], conditions, **kwargs)
    together = evaluate(runs, ["greedy"], conditions, jobs=2, **kwargs)
    assert [c.condition.name for c in together.conditions] == ["markov", "gilbert-elliott"]
    for one, other in zip(alone.conditions, together.conditions, strict=True):
        assert [row.name for row in other.rows] == [row.name for row in one.rows]
        assert "renamed" in other.rollouts
        for name, rollout in one.rollouts.items():
            np.testing.assert_array_equal(other.rollouts[name].reward, rollout.reward)
            np.testing.assert_array_equal(other.rollouts[name].bits, rollout.bits)
        assert other.best_causal == one.best_causal
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        evaluate(runs, [], conditions, jobs=0, **kwargs)


def test_runs_that_repeat_a_seed_are_not_aggregated(sacd_runs: list[Path], tmp_path: Path) -> None:
    copy = Path(shutil.copytree(sacd_runs[0], tmp_path / "again"))
    runs = load_runs([sacd_runs[0], copy])
    conditions = evaluation_conditions(evaluation_scenario(runs))
    result = evaluate(runs, [], conditions, episodes=2, seed=100, progress=False)
    assert len(result.conditions[0].rows) > 2 and result.seeds_report is None


def test_a_learner_with_predicted_value_features_is_evaluated(
    tiny_profile_path: Path, tmp_path: Path
) -> None:
    """A run that observes the env's observation plus one feature per action (sacd-hindsight) is
    evaluated with those features, and a run whose model observes another shape is refused."""
    config = TrainConfig(
        algo="sacd-hindsight",
        profile=str(tiny_profile_path),
        horizon=HORIZON,
        timesteps=60,
        seed=0,
        eval_freq=0,
        checkpoint_freq=0,
        hyperparameters={"learning_starts": 20, "batch_size": 16},
        out=tmp_path,
    )
    runs = load_runs([train(config).run_dir.path])
    conditions = evaluation_conditions(evaluation_scenario(runs))
    result = evaluate(runs, [], conditions, episodes=2, seed=100, progress=False)
    (row,) = [row for row in result.conditions[0].rows if row.name == "sacd-hindsight"]
    assert math.isfinite(row.reward)
    runs[0].policy.features = None
    with pytest.raises(ValueError, match=r"observes vectors of shape \(\d+,\) but would get"):
        evaluate(runs, [], conditions, episodes=2, progress=False)


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
    assert baseline_names("greedy") == list(dict.fromkeys(["greedy", *reference_names()]))
    assert baseline_names("none") == reference_names()
    assert {CHANNEL_BLIND, UPPER_REFERENCE} <= set(reference_names())


def test_all_baselines_leave_the_learned_rules_out_unless_named() -> None:
    from splitrl.agents.baselines import BASELINES, learned_baselines

    assert learned_baselines() == ["mpc-quantile"]
    every = baseline_names("all")
    assert "mpc-quantile" not in every
    assert set(every) == set(BASELINES) - {"mpc-quantile"}
    assert "mpc-quantile" in baseline_names("mpc-quantile")
