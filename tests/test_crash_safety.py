"""Training survives kill -9 in every phase, and bad hyperparameters fail before anything is written."""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from stable_baselines3.common.callbacks import BaseCallback

from splitrl.cli import main
from splitrl.files import TEMPORARY_MARK
from splitrl.training.run_dir import FAULT_INJECTION_VARIABLE, RunDirectory
from splitrl.training.trainer import resume, train
from tests.test_train import fast_config

#: checkpoints every 100 steps of a 400-step run with a 1,000-transition buffer; learning from
#: step 250 keeps the runs short
FLAGS = [
    "--timesteps", "400", "--checkpoint-freq", "100", "--eval-freq", "0", "--horizon", "50",
    "--hyperparams", "learning_starts=250", "batch_size=32", "buffer_size=1000",
    "--no-progress",
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class InterruptAfterStep(BaseCallback):
    """Raises KeyboardInterrupt once step ``timestep`` is stored, as Ctrl-C during learning would."""

    def __init__(self, timestep: int) -> None:
        super().__init__()
        self.timestep = timestep

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.num_timesteps >= self.timestep:
            raise KeyboardInterrupt


def killed_run(profile: Path, out: Path, fault: str) -> RunDirectory:
    """A training subprocess killed with SIGKILL at ``fault`` (``PHASE@STEPS``)."""
    environment = {**os.environ, FAULT_INJECTION_VARIABLE: fault, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "splitrl", "train", "--profile", str(profile), "--out"]
    completed = subprocess.run(
        [*command, str(out), *FLAGS], env=environment, capture_output=True, timeout=120
    )
    assert completed.returncode == -signal.SIGKILL, completed.stderr.decode()[-2000:]
    (path,) = out.iterdir()
    return RunDirectory(path)


def buffer_size_of(path: Path) -> int:
    with open(path, "rb") as file:
        return int(pickle.load(file).size())


@pytest.mark.parametrize(
    ("fault", "resumes_from", "config_steps", "half_written"),
    [
        ("env-step@250", 200, 200, []),
        ("replay-buffer-write@200", 100, 100, [".model_replay_buffer_200_steps.pkl"]),
        ("model-write@200", 100, 100, [".model_200_steps.zip"]),
        ("config-write@200", 200, 100, [".config.yaml"]),
    ],
)
def test_kill_in_any_phase_resumes_from_the_newest_complete_checkpoint(
    fault: str,
    resumes_from: int,
    config_steps: int,
    half_written: list[str],
    tiny_profile_path: Path,
    tmp_path: Path,
) -> None:
    run = killed_run(tiny_profile_path, tmp_path / "runs", fault)
    config = run.read_config()
    assert config["status"] == "interrupted"
    assert config["num_timesteps"] == config_steps
    leftovers = [file.name for file in run.path.rglob("*") if TEMPORARY_MARK in file.name]
    assert [name.split(TEMPORARY_MARK)[0] for name in leftovers] == half_written
    newest = run.latest_checkpoint()
    assert newest is not None and newest.num_timesteps == resumes_from
    assert newest.replay_buffer_path is not None
    assert buffer_size_of(newest.replay_buffer_path) == resumes_from  # all N transitions

    result = resume(run.path, timesteps=300)
    assert not [file for file in run.path.rglob("*") if TEMPORARY_MARK in file.name]
    assert result.resumed_from is not None and result.resumed_from.num_timesteps == resumes_from
    assert result.num_timesteps == 300
    assert result.model.replay_buffer.size() == 300  # type: ignore[attr-defined]
    config = run.read_config()
    assert config["status"] == "finished" and config["num_timesteps"] == 300


def test_resume_skips_a_damaged_newest_checkpoint(tiny_profile_path: Path, tmp_path: Path) -> None:
    first = train(fast_config(tiny_profile_path, tmp_path, checkpoint_freq=100))
    run = first.run_dir
    newest = run.latest_checkpoint()
    assert newest is not None and newest.num_timesteps == 200
    assert newest.replay_buffer_path is not None
    newest.replay_buffer_path.write_bytes(newest.replay_buffer_path.read_bytes()[:100])
    result = resume(run.path, timesteps=250)
    assert result.resumed_from is not None and result.resumed_from.num_timesteps == 100
    assert result.model.replay_buffer.size() == 250  # type: ignore[attr-defined]


def test_checkpoint_grid_holds_after_a_resume(tiny_profile_path: Path, tmp_path: Path) -> None:
    config = fast_config(tiny_profile_path, tmp_path, checkpoint_freq=100, timesteps=400)
    first = train(config, callbacks=[InterruptAfterStep(150)])
    assert first.interrupted and first.num_timesteps == 150
    resume(first.run_dir.path, timesteps=320)
    steps = sorted(checkpoint.num_timesteps for checkpoint in first.run_dir.checkpoints())
    assert steps == [100, 150, 200, 300, 320]
    for checkpoint in first.run_dir.checkpoints():
        assert checkpoint.replay_buffer_path is not None
        assert buffer_size_of(checkpoint.replay_buffer_path) == checkpoint.num_timesteps


def test_a_run_in_use_cannot_be_resumed_twice(tiny_profile_path: Path, tmp_path: Path) -> None:
    first = train(fast_config(tiny_profile_path, tmp_path, checkpoint_freq=100))
    with first.run_dir.lock(), pytest.raises(ValueError, match="in use by another"):
        resume(first.run_dir.path, timesteps=300)


@pytest.mark.parametrize(
    ("hyperparams", "message"),
    [
        (["batch_size=12.5"], r"batch_size must be an integer > 0, got 12\.5"),
        (["batch_size=-1"], "batch_size must be an integer > 0"),
        (["batch_size=0"], "batch_size must be an integer > 0"),
        (["buffer_size=0"], "buffer_size must be an integer > 0"),
        (["gamma=abc"], r"gamma must be a number in \(0, 1\], got 'abc'"),
        (["gamma=5"], r"gamma must be a number in \(0, 1\]"),
        (["learning_rate=-1"], "learning_rate must be a number > 0"),
        (["ent_coef=bogus"], "ent_coef must be"),
        (["train_freq=[1, hour]"], "train_freq must be"),
    ],
)
def test_bad_hyperparameters_fail_before_the_run_directory(
    hyperparams: list[str],
    message: str,
    tiny_profile_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "runs"
    flags = ["train", "--profile", str(tiny_profile_path), "--out", str(out), "--hyperparams"]
    assert main([*flags, *hyperparams]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(
        "splitrl train: error: invalid hyperparameters:"
    )
    assert re.search(message, error), error
    assert not out.exists()


def test_unknown_torch_device_fails_in_one_line(
    tiny_profile_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    status = main(
        ["train", "--profile", str(tiny_profile_path), "--out", str(out), "--device", "foo"]
    )
    assert status == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "unknown torch device 'foo'" in error
    assert not out.exists()


def test_a_gate_over_more_rules_than_observed_fails_before_the_run_directory(
    tiny_profile_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    flags = ["train", "--profile", str(tiny_profile_path), "--out", str(out)]
    gate = "policy_kwargs={net_arch: [8], action_prior: true, prior_rules: 4}"
    algo = ["--algo", "sacd-hindsight-mpc-quantile-gated"]
    assert main([*flags, *algo, "--hyperparams", gate]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    assert "prior_rules must be an integer from 1 to 3" in error and "got 4" in error
    assert not out.exists()
