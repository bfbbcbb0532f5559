"""Tests of ``splitrl sweep`` and ``splitrl tune``: the grid, the report, and runs on Ray (local,
and a two-node cluster on loopback). Ray starts once for the module; every trial trains a few
dozen steps on the tiny profile, with one torch thread."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from splitrl.sweeps.cells import (
    EvalCell,
    RunSummary,
    TrainCell,
    read_cell,
    recorded_run_dir,
    write_cell,
)
from splitrl.sweeps.grid import Sweep, load_sweep
from splitrl.sweeps.report import (
    aggregate_condition,
    markdown_report,
    sweep_document,
    write_report,
)
from splitrl.sweeps.sweep import parse_entries

#: why the tests that run Ray skip where it is not installed
NO_RAY = "Ray is the extra splitrl[scale]"


def write_sweep(folder: Path, profile: Path, **entries: object) -> Path:
    """A sweep of ``dqn`` and a variant that trains on a malformed trace, on the tiny profile."""
    (folder / "broken.trace").write_text("this is not a trace\n")
    document = {
        "out": str(folder / "results"),
        "scenarios": {"tiny": {"scenario": "default", "profile": str(profile), "horizon": 20}},
        "learners": ["dqn", "broken"],
        "variants": {
            "broken": {"algo": "dqn", "channel": "trace:broken.trace", "description": "fails"}
        },
        "seeds": 1,
        "timesteps": 40,
        "conditions": ["markov"],
        "episodes": 2,
        "baselines": ["channel-blind"],
        **entries,
    }
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray of two CPUs for the module; its session files in a temporary folder."""
    ray = pytest.importorskip("ray", reason=NO_RAY)
    temporary = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temporary)
    yield
    ray.shutdown()
    shutil.rmtree(temporary, ignore_errors=True)


@pytest.fixture(scope="module")
def first_run(
    local_ray: None, tiny_profile_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Sweep, RunSummary]:
    from splitrl.sweeps.sweep import run_sweep

    sweep = load_sweep(write_sweep(tmp_path_factory.mktemp("sweep"), tiny_profile_path))
    return sweep, run_sweep(sweep)


def test_grid_cells_and_checks(tiny_profile_path: Path, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, tiny_profile_path, seeds=[0, 3], grid={"gamma": [0.9, 0.95]})
    sweep = load_sweep(path)
    assert list(sweep.variants) == [
        "dqn+gamma=0.9",
        "dqn+gamma=0.95",
        "broken+gamma=0.9",
        "broken+gamma=0.95",
    ]
    assert sweep.variants["dqn+gamma=0.95"].hyperparameters == {"gamma": 0.95}
    assert sweep.cell_count() == 4 * 2 * 2 + 1
    assert len(sweep.trials()) == 4 * 2 + 1
    with pytest.raises(ValueError, match="unknown learner 'nope'"):
        load_sweep(path, learners=["nope"])
    with pytest.raises(ValueError, match=r"learner dqn\+gamma=5: .*gamma must be"):
        load_sweep(path, grid={"gamma": [5]})
    with pytest.raises(FileNotFoundError, match=r"missing\.up"):
        load_sweep(path, conditions=["trace:missing.up"])
    (tmp_path / "a.up").write_text("1\n2\n")
    mixed = {"algo": "dqn", "channel": "traces:a.up,missing.up", "description": "a trace mix"}
    with pytest.raises(FileNotFoundError, match=r"missing\.up"):
        load_sweep(path, learners=["mixed"], variants={"mixed": mixed})
    # a variant that is not chosen may name traces this machine does not have
    unchosen = load_sweep(path, learners=["dqn"], variants={"mixed": mixed}, grid=None)
    assert list(unchosen.variants) == ["dqn"]
    mixed["channel"] = "traces:a.up"
    mixes = load_sweep(path, learners=["mixed"], variants={"mixed": mixed}, grid=None)
    mix = mixes.variants["mixed"]
    assert mix.channel == f"traces:{tmp_path / 'a.up'}"
    assert parse_entries(["seeds=3", "conditions=[markov, fading]", "trace_dir=null"]) == {
        "seeds": 3,
        "conditions": ["markov", "fading"],
        "trace_dir": None,
    }
    with pytest.raises(ValueError, match="ENTRY=VALUE"):
        parse_entries(["seeds"])
    assert sweep.report_folder == sweep.out / "report"
    assert (
        load_sweep(path, report=str(tmp_path / "ablation")).report_folder == tmp_path / "ablation"
    )
    with pytest.raises(ValueError, match="report must be a folder path, got 3"):
        load_sweep(path, report=3)


def test_cell_keys_keep_the_benchmark_layout() -> None:
    assert TrainCell("sacd", "default", 1, 1000).key == "train/default/sacd_t1000_s1"
    assert (
        EvalCell("sacd", "default", "trace:a.up", 10, seed=0, timesteps=1000).key
        == "eval/default/trace-a.up/e10/sacd_t1000_s0"
    )
    assert (
        EvalCell("robust-mpc", "default", "markov", 10).key == "eval/default/markov/e10/robust-mpc"
    )


def test_aggregation_pairs_episodes_and_counts_seeds() -> None:
    baselines = {
        "channel-blind": np.array([0.70, 0.72, 0.74, 0.76]),
        "robust-mpc": np.array([0.71, 0.74, 0.75, 0.78]),
        "clairvoyant-lookahead": np.array([0.80, 0.82, 0.84, 0.86]),
    }
    # seed 0 beats robust-mpc by 0.01 on every episode, seed 1 by 0.02, seed 2 loses 0.01
    learner = baselines["robust-mpc"][None, :] + np.array([[0.01], [0.02], [-0.01]])
    result = aggregate_condition(
        "default", "markov", baselines, {"sacd": learner}, ["channel-blind", "robust-mpc"]
    )
    row = result["learners"]["sacd"]
    assert result["best_causal"] == "robust-mpc"
    assert row["gains"]["robust-mpc"]["seeds_better"] == 2
    assert row["gains"]["robust-mpc"]["low"] <= 0.01 <= row["gains"]["robust-mpc"]["high"]
    assert row["gains"]["channel-blind"]["seeds_better"] == 3
    assert not row["beats_every_causal_baseline"]
    best, upper = baselines["robust-mpc"].mean(), baselines["clairvoyant-lookahead"].mean()
    assert row["score"] == pytest.approx((row["reward_iqm"] - best) / (upper - best))


def test_a_win_needs_an_interval_over_episodes_above_zero_too() -> None:
    """Seeds that agree on a few episodes are not enough: another draw of episodes must also be
    unlikely to reverse the sign."""
    baselines = {"mpc": np.array([0.70, 0.72, 0.74, 0.76, 0.78])}
    seeds = np.array([[0.001], [0.002], [0.003], [0.004], [0.005]])
    noisy = baselines["mpc"][None, :] + seeds + np.array([0.03, -0.03, 0.03, -0.03, 0.0])
    steady = baselines["mpc"][None, :] + seeds + np.array([0.002, -0.002, 0.002, -0.002, 0.0])
    result = aggregate_condition(
        "default", "markov", baselines, {"noisy": noisy, "steady": steady}, ["mpc"]
    )
    for name in ("noisy", "steady"):
        gain = result["learners"][name]["gains"]["mpc"]
        assert gain["low"] > 0 and gain["seeds_better"] == 5
        assert gain["episodes_mean"] == pytest.approx(0.003)
    noisy_gain = result["learners"]["noisy"]["gains"]["mpc"]
    assert noisy_gain["episodes_mean"] - noisy_gain["episodes_ci95"] < 0
    assert not result["learners"]["noisy"]["beats_every_causal_baseline"]
    assert result["learners"]["steady"]["beats_every_causal_baseline"]
    document = {"conditions": [result], "overall": [], "missing_cells": []}
    table = markdown_report(document)
    assert "| +0.0030 ± " in table and "| 5/5 | no |" in table and "| 5/5 | yes |" in table


def test_room_pairs_each_reference_with_the_best_causal_baseline(tmp_path: Path) -> None:
    baselines = {
        "mpc": np.array([0.70, 0.74, 0.72]),
        "oracle-now": np.array([0.70, 0.76, 0.75]),
        "clairvoyant-lookahead": np.array([0.80, 0.82, 0.84]),
    }
    learner = baselines["mpc"][None, :] + np.array([[0.01], [-0.01]])
    condition = aggregate_condition("default", "markov", baselines, {"sacd": learner}, ["mpc"])
    link, upper = condition["room"]["oracle-now"], condition["room"]["clairvoyant-lookahead"]
    assert link["mean"] == pytest.approx(np.mean([0.0, 0.02, 0.03]))
    assert upper["mean"] == pytest.approx(np.mean([0.10, 0.08, 0.12]))
    assert 0.0 < link["ci95"] < upper["mean"]
    # the references are never the best causal baseline, however high they score
    assert condition["best_causal"] == "mpc"
    document = {"conditions": [condition], "overall": [], "missing_cells": []}
    table = markdown_report(document)
    assert "| default | markov | mpc 0.7200 | +0.0167 ±" in table
    assert "clairvoyant-link" not in table  # a reference the sweep did not run has no column
    paths = write_report(document, tmp_path)
    with (tmp_path / "room.csv").open() as stream:
        (row,) = list(csv.DictReader(stream))
    assert tmp_path / "room.csv" in paths
    assert float(row["oracle-now_gain"]) == pytest.approx(link["mean"])
    assert row["best_causal"] == "mpc"


def test_room_shows_the_knowable_reference_between_the_other_two() -> None:
    baselines = {
        "mpc": np.array([0.70, 0.74, 0.72]),
        "oracle-now": np.array([0.70, 0.76, 0.75]),
        "clairvoyant-lookahead": np.array([0.80, 0.82, 0.84]),
        "clairvoyant-link": np.array([0.71, 0.75, 0.74]),
    }
    condition = aggregate_condition("default", "markov", baselines, {}, ["mpc"])
    assert condition["room"]["clairvoyant-link"]["mean"] == pytest.approx(0.0133, abs=1e-4)
    assert list(condition["room"]) == ["oracle-now", "clairvoyant-link", "clairvoyant-lookahead"]
    assert "oracle-ahead" not in condition["room"]  # not evaluated: no entry, no column
    table = markdown_report({"conditions": [condition], "overall": [], "missing_cells": []})
    header = "| oracle-now gain | clairvoyant-link gain | clairvoyant-lookahead gain |"
    assert header in table and "oracle-ahead" not in table
    assert "| mpc 0.7200 | +0.0167 ± " in table and " | +0.0133 ± " in table


def test_room_is_left_out_when_no_reference_ran() -> None:
    condition = aggregate_condition("default", "markov", {"mpc": np.array([0.7, 0.8])}, {}, ["mpc"])
    assert condition["room"] == {}
    document = {"conditions": [condition], "overall": [], "missing_cells": []}
    assert "room a causal policy has" not in markdown_report(document)


def test_a_learned_rule_the_sweep_ran_counts_as_a_causal_baseline(
    tmp_path: Path, tiny_profile_path: Path
) -> None:
    """``mpc-quantile`` is outside the default causal set, but a sweep that names it compares its
    learners with it."""
    path = write_sweep(
        tmp_path, tiny_profile_path, learners=["dqn"], baselines=["mpc-geometric", "mpc-quantile"]
    )
    sweep = load_sweep(path)
    out = sweep.out.resolve()
    rewards = {"mpc-geometric": [0.70, 0.72], "mpc-quantile": [0.74, 0.76]}
    for cell in sweep.baseline_cells():
        write_cell(out, cell.key, {"episode_rewards": rewards[cell.policy]})
    for train in sweep.train_cells():
        write_cell(out, train.key, {"seconds_per_10k_steps": 1.0})
        for cell in sweep.learner_cells(train):
            write_cell(out, cell.key, {"episode_rewards": [0.73, 0.75]})
    (condition,) = sweep_document(sweep)["conditions"]
    assert condition["best_causal"] == "mpc-quantile"
    assert not condition["learners"]["dqn"]["beats_every_causal_baseline"]


def test_core_does_not_import_ray() -> None:
    code = (
        "import sys, splitrl.envs, splitrl.agents, splitrl.runtime, splitrl.sweeps.sweep\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"


def test_sweep_runs_cells_in_local_ray(first_run: tuple[Sweep, RunSummary]) -> None:
    sweep, summary = first_run
    out = sweep.out.resolve()
    assert sorted(summary.finished) == ["tiny/channel-blind/markov", "tiny/dqn/s0"]
    train = read_cell(out, "train/tiny/dqn_t40_s0")
    evaluation = read_cell(out, "eval/tiny/markov/e2/dqn_t40_s0")
    assert train is not None and evaluation is not None
    assert train["run_dir"].startswith("runs/dqn/")  # relative: the folder may move
    assert recorded_run_dir(out, train["run_dir"]).is_dir()
    assert train["node_id"] == evaluation["node_id"]
    assert len(evaluation["episode_rewards"]) == 2
    document = sweep_document(sweep)
    (condition,) = document["conditions"]
    assert condition["best_causal"] == "channel-blind" and condition["upper_reference"] is None
    assert condition["learners"]["dqn"]["seeds"] == 1
    assert "train/tiny/broken_t40_s0" in document["missing_cells"]


def test_failing_cell_is_reported_and_the_others_finish(
    first_run: tuple[Sweep, RunSummary],
) -> None:
    sweep, summary = first_run
    assert list(summary.failed) == ["tiny/broken/s0"]
    assert "broken.trace" in summary.failed["tiny/broken/s0"]
    assert read_cell(sweep.out.resolve(), "eval/tiny/markov/e2/channel-blind") is not None


def test_rerun_skips_finished_cells(first_run: tuple[Sweep, RunSummary]) -> None:
    from splitrl.sweeps.sweep import run_sweep

    sweep, _ = first_run
    finished = sweep.out.resolve() / "train/tiny/dqn_t40_s0.json"
    written = finished.stat().st_mtime_ns
    assert [trial.name for trial in sweep.trials()] == ["tiny/broken/s0"]
    summary = run_sweep(sweep)
    assert summary.finished == [] and list(summary.failed) == ["tiny/broken/s0"]
    assert finished.stat().st_mtime_ns == written


def test_process_pool_runs_the_same_cells(tiny_profile_path: Path, tmp_path: Path) -> None:
    from splitrl.sweeps.sweep import report, run_sweep

    path = write_sweep(tmp_path, tiny_profile_path)
    sweep = load_sweep(path)
    summary = run_sweep(sweep, runner="processes", jobs=2)
    assert sorted(summary.finished) == ["tiny/channel-blind/markov", "tiny/dqn/s0"]
    assert "broken.trace" in summary.failed["tiny/broken/s0"]
    evaluation = read_cell(sweep.out.resolve(), "eval/tiny/markov/e2/dqn_t40_s0")
    assert evaluation is not None and len(evaluation["episode_rewards"]) == 2
    assert [trial.name for trial in sweep.trials()] == ["tiny/broken/s0"]
    # a subset of the same cells, reported in a folder of its own
    subset = load_sweep(path, learners=["dqn"], report=str(tmp_path / "subset"))
    document = report(subset)
    assert [row["learner"] for row in document["overall"]] == ["dqn"]
    assert (tmp_path / "subset" / "report.md").is_file()
    assert not (sweep.out / "report").exists()


def test_a_moved_or_cloned_sweep_folder_finds_or_retrains_its_runs(
    tiny_profile_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from splitrl.sweeps.sweep import run_sweep

    path = write_sweep(tmp_path, tiny_profile_path, learners=["dqn"])
    sweep = load_sweep(path)
    run_sweep(sweep, runner="processes", jobs=1)
    out = sweep.out.resolve()
    cell_file = out / "train/tiny/dqn_t40_s0.json"
    trained = read_cell(out, "train/tiny/dqn_t40_s0")
    assert trained is not None
    run = recorded_run_dir(out, trained["run_dir"])
    # a cell written before run directories were recorded relative to the folder: an absolute
    # path where the sweep ran, now gone, is looked for under this folder's runs
    gone = Path("/nonexistent/elsewhere/results/runs") / run.parent.name / run.name
    assert recorded_run_dir(out, str(gone)) == run
    assert recorded_run_dir(out, str(run)) == run
    # or a path relative to the folder the sweep ran from
    assert recorded_run_dir(out, f"elsewhere/runs/{run.parent.name}/{run.name}") == run
    # a new condition, and no run directory (as in a fresh clone): the training runs again first
    shutil.rmtree(out / "runs")
    more = load_sweep(path, conditions=["markov", "fading"])
    (trial,) = [trial for trial in more.trials() if trial.train is not None]
    assert trial.run_dir is None and [cell.condition for cell in trial.evaluations] == ["fading"]
    capsys.readouterr()
    summary = run_sweep(more, runner="processes", jobs=1)
    assert "trained again, their run directories gone (1): tiny/dqn/s0" in capsys.readouterr().out
    assert "tiny/dqn/s0" in summary.finished and not summary.failed
    retrained = read_cell(out, "train/tiny/dqn_t40_s0")
    assert retrained is not None and recorded_run_dir(out, retrained["run_dir"]).is_dir()
    assert read_cell(out, "eval/tiny/fading/e2/dqn_t40_s0") is not None
    assert cell_file.is_file()


def test_a_validated_variant_is_evaluated_with_its_best_model(
    tiny_profile_path: Path, tmp_path: Path
) -> None:
    from splitrl.sweeps.sweep import run_sweep

    variants = {"checked": {"algo": "dqn", "validation": 20}}
    path = write_sweep(tmp_path, tiny_profile_path, learners=["checked"], variants=variants)
    sweep = load_sweep(path)
    assert sweep.variants["checked"].validation == 20
    summary = run_sweep(sweep, runner="processes", jobs=1)
    assert sorted(summary.finished) == ["tiny/channel-blind/markov", "tiny/checked/s0"]
    trained = read_cell(sweep.out.resolve(), "train/tiny/checked_t40_s0")
    assert trained is not None
    run = recorded_run_dir(sweep.out.resolve(), trained["run_dir"])
    assert (run / "best_model.zip").exists() and (run / "eval" / "evaluations.npz").exists()
    with pytest.raises(ValueError, match="validation must be a whole number of steps"):
        load_sweep(path, variants={"checked": {"algo": "dqn", "validation": -1}})


def test_a_variant_trains_on_shorter_episodes_and_is_evaluated_on_the_scenario_s(
    tiny_profile_path: Path, tmp_path: Path
) -> None:
    from splitrl.sweeps.sweep import run_sweep
    from splitrl.training.run_dir import RunDirectory

    variants = {"short": {"algo": "dqn", "horizon": 7}}
    path = write_sweep(tmp_path, tiny_profile_path, learners=["short"], variants=variants)
    sweep = load_sweep(path)
    assert sweep.variants["short"].horizon == 7
    summary = run_sweep(sweep, runner="processes", jobs=1)
    assert sorted(summary.finished) == ["tiny/channel-blind/markov", "tiny/short/s0"]
    trained = read_cell(sweep.out.resolve(), "train/tiny/short_t40_s0")
    assert trained is not None
    run = recorded_run_dir(sweep.out.resolve(), trained["run_dir"])
    assert RunDirectory(run).make_env().horizon == 7
    evaluation = read_cell(sweep.out.resolve(), "eval/tiny/markov/e2/short_t40_s0")
    assert evaluation is not None
    assert evaluation["requests_per_episode"] == 20  # the scenario's, not the training's
    for horizon in (0, "seven", True):
        with pytest.raises(ValueError, match="horizon must be a whole number of requests"):
            load_sweep(path, variants={"short": {"algo": "dqn", "horizon": horizon}})


def test_tune_two_trials_writes_a_conf_file_train_accepts(
    local_ray: None, tiny_profile_path: Path, tmp_path: Path
) -> None:
    from splitrl.cli import build_parser, main
    from splitrl.sweeps.search_spaces import NET_ARCHS
    from splitrl.training.cli import config_from_args

    conf = tmp_path / "best.yaml"
    status = main(
        [
            *("tune", "--algo", "dqn", "--profile", str(tiny_profile_path), "--horizon", "20"),
            *("--trials", "2", "--timesteps", "60", "--eval-freq", "30", "--eval-episodes", "2"),
            *("--out", str(tmp_path / "tune"), "--conf-out", str(conf)),
        ]
    )
    assert status == 0
    section = yaml.safe_load(conf.read_text())["dqn"]
    assert 0 < section["learning_rate"] <= 1e-2
    assert section["policy_kwargs"]["net_arch"] in NET_ARCHS.values()
    args = build_parser().parse_args(["train", "--algo", "dqn", "--conf-file", str(conf)])
    assert config_from_args(args).hyperparameters == section


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a ``ray start --block`` and every Ray process it started (its process group)."""
    for signal_number in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, signal_number)
            process.wait(timeout=5)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def test_two_node_cluster_runs_cells_on_both_nodes(tiny_profile_path: Path, tmp_path: Path) -> None:
    """``ray start --head`` and a second ``ray start --address`` on loopback, one CPU each; two
    trials must use both nodes. Runs last: it leaves the module's local Ray first."""
    from splitrl.sweeps.sweep import run_sweep

    ray = pytest.importorskip("ray", reason=NO_RAY)
    ray.shutdown()
    executable = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    temporary = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    start = [executable, "start", "--block", "--num-cpus", "1", "--disable-usage-stats"]
    head_command = [*start, "--head", "--port", str(port), "--temp-dir", temporary]
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        for command in (head_command, [*start, "--address", f"127.0.0.1:{port}"]):
            log = (tmp_path / f"node{len(nodes)}.log").open("wb")
            nodes.append(
                subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and all(node.poll() is None for node in nodes):
            probe = subprocess.run(
                [executable, "status", "--address", f"127.0.0.1:{port}"],
                capture_output=True,
                text=True,
            )
            if probe.stdout.count("node_") >= 2:
                break
            time.sleep(1)
        else:
            logs = " | ".join((tmp_path / f"node{i}.log").read_text()[-300:] for i in range(2))
            pytest.skip(f"a two-node Ray cluster on loopback does not start here: {logs}")
        path = write_sweep(tmp_path, tiny_profile_path, learners=["dqn"], seeds=2, baselines=[])
        sweep = load_sweep(path)
        summary = run_sweep(sweep, address=f"127.0.0.1:{port}")
        assert summary.failed == {} and len(summary.finished) == 2
        results = [read_cell(sweep.out.resolve(), f"train/tiny/dqn_t40_s{s}") for s in (0, 1)]
        assert len({result["node_id"] for result in results if result is not None}) == 2
    finally:
        ray.shutdown()
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(temporary, ignore_errors=True)


@pytest.mark.parametrize("algo", ["sacd", "sacd-prior"])
def test_sacd_search_spaces_sample_valid_hyperparameters(algo: str) -> None:
    """``sacd-prior`` searches the KL trust region around its prior, ``sacd`` the target entropy;
    every sampled configuration is one the learner accepts."""
    optuna = pytest.importorskip("optuna", reason="optuna comes with the extra splitrl[scale]")
    from splitrl.agents import get_learner
    from splitrl.sweeps.search_spaces import hyperparameters, sampler

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        sampler(algo)(trial)
        values = hyperparameters(algo, trial.params)
        spec = get_learner(algo)
        spec.check_hyperparameters(values)
        resolved = spec.resolved_hyperparameters(values)
        if algo == "sacd-prior":
            assert 0.005 <= values["target_kl"] <= 1.0
            assert "target_entropy_ratio" not in values
            assert resolved["policy_kwargs"]["action_prior"] is True
        else:
            assert "target_kl" not in resolved
