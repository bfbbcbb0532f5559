"""The training command: learners, run directories, resume, interruption and bad input."""

from __future__ import annotations

import argparse
import inspect
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from stable_baselines3.common.callbacks import BaseCallback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from splitrl.agents.action_views import BinnedAction, FlatAction
from splitrl.agents.learners import LEARNERS
from splitrl.agents.policy_interface import Policy
from splitrl.cli import main
from splitrl.envs import SplitComputingEnv
from splitrl.profiles.io import shipped_profiles_dir
from splitrl.training.cli import config_from_args, configure_parser, run_defining_flags
from splitrl.training.config import TrainConfig, flags, profile_identity
from splitrl.training.run_dir import RunDirectory
from splitrl.training.trainer import resume, train

#: small settings so that a few hundred steps train every learner
FAST: dict[str, dict[str, Any]] = {
    "sacd": {"learning_starts": 50, "batch_size": 32},
    "sacd-prior": {"learning_starts": 50, "batch_size": 32},
    "sacd-hindsight": {"learning_starts": 50, "batch_size": 32},
    "sacd-hindsight-mpc": {"learning_starts": 50, "batch_size": 32},
    "sacd-hindsight-mpc-geometric": {"learning_starts": 50, "batch_size": 32},
    "sacd-hindsight-mpc-replayed": {"learning_starts": 50, "batch_size": 32},
    "sacd-hindsight-mpc-geometric-replayed": {"learning_starts": 50, "batch_size": 32},
    "sacd-hindsight-mpc-geometric-spread": {"learning_starts": 50, "batch_size": 32},
    "sacd-hindsight-mpc-geometric-ahead": {"learning_starts": 50, "batch_size": 32},
    "sacd-hindsight-mpc-geometric-anchored": {"learning_starts": 50, "batch_size": 32},
    "sacd-hindsight-mpc-quantile": {"learning_starts": 50, "batch_size": 32},
    "sacd-hindsight-mpc-quantile-anchored": {"learning_starts": 50, "batch_size": 32},
    "sacd-hindsight-mpc-quantile-replayed": {"learning_starts": 50, "batch_size": 32},
    "sacd-hindsight-mpc-quantile-replayed-h256": {"learning_starts": 50, "batch_size": 32},
    "sacd-hindsight-mpc-quantile-replayed-h16": {"learning_starts": 50, "batch_size": 32},
    "sacd-hindsight-mpc-quantile-rechosen": {"learning_starts": 50, "batch_size": 32},
    "sacd-hindsight-mpc-quantile-robust": {"learning_starts": 50, "batch_size": 32},
    "sacd-hindsight-mpc-quantile-memory": {"learning_starts": 50, "batch_size": 32},
    "sacd-hindsight-mpc-quantile-gated": {"learning_starts": 50, "batch_size": 32},
    "sacd-hindsight-mpc-quantile-gated-memory": {"learning_starts": 50, "batch_size": 32},
    "sacd-hindsight-mpc-quantile-gated-by-memory": {"learning_starts": 50, "batch_size": 32},
    "ppo": {"n_steps": 64, "batch_size": 32, "n_epochs": 2},
    "maskable-ppo": {"n_steps": 64, "batch_size": 32, "n_epochs": 2},
    "dqn": {"learning_starts": 50, "batch_size": 32},
    "sac": {"learning_starts": 50, "batch_size": 32},
}
FAST_FLAGS = ["--hyperparams", "learning_starts=50", "batch_size=32", "--no-progress"]


class InterruptAt(BaseCallback):
    """Raises KeyboardInterrupt at a given timestep, as Ctrl-C would."""

    def __init__(self, timestep: int) -> None:
        super().__init__()
        self.timestep = timestep

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.timestep:
            raise KeyboardInterrupt
        return True


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fast_config(profile_path: Path, out: Path, algo: str = "sacd", **kwargs: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "timesteps": 200,
        "eval_freq": 0,
        "checkpoint_freq": 0,
        "horizon": 50,
        **kwargs,
    }
    return TrainConfig(
        algo=algo, profile=str(profile_path), out=out, hyperparameters=dict(FAST[algo]), **settings
    )


def the_run(out: Path) -> Path:
    (run,) = out.iterdir()
    return run


@pytest.mark.parametrize("algo", list(LEARNERS))
def test_every_learner_trains_and_yields_a_policy(
    algo: str, tiny_profile_path: Path, tmp_path: Path
) -> None:
    result = train(fast_config(tiny_profile_path, tmp_path, algo, timesteps=256))
    assert result.num_timesteps >= 256 and not result.interrupted
    policy = result.run_dir.load_policy()
    assert isinstance(policy, Policy) and policy.name == algo
    env = SplitComputingEnv(profile=str(tiny_profile_path))
    observation, _ = env.reset(seed=0)
    policy.reset(env)
    for _ in range(20):
        action = policy.act(env, observation)
        assert action.shape == (3,) and env.action_space.contains(action)
        if LEARNERS[algo].uses_masks:
            assert env.action_masks()[env.actions.flat_index(*action)]
        observation, *_ = env.step(action)


def test_train_command_writes_a_complete_run_directory(
    tiny_profile_path: Path, tmp_path: Path
) -> None:
    status = main(
        [
            *("train", "--profile", str(tiny_profile_path), "--timesteps", "300"),
            *("--out", str(tmp_path), "--eval-freq", "150", "--eval-episodes", "2"),
            *("--checkpoint-freq", "150", "--log-freq", "100", "--horizon", "50", *FAST_FLAGS),
        ]
    )
    assert status == 0
    run = RunDirectory(the_run(tmp_path))
    config = run.read_config()
    profile_json = json.loads(tiny_profile_path.read_text())
    assert config["algo"] == "sacd" and config["status"] == "finished"
    assert config["num_timesteps"] == 300 and config["seed"] == 0
    assert config["profile_identity"]["arrays_sha256"] == profile_json["arrays"]["sha256"]
    assert config["profile_identity"]["source"] == str(tiny_profile_path.resolve())
    assert (
        config["profile"] == config["scenario_spec"]["profile"] == str(tiny_profile_path.resolve())
    )
    assert config["scenario"] == "default" and config["device"] is None
    assert config["hyperparameters"]["batch_size"] == 32
    assert config["action_nvec"] == [2, 4, 4]
    assert run.model_path.exists() and run.best_model_path.exists()
    for steps in (150, 300):
        assert run.checkpoint(steps).model_path.exists()
        assert run.checkpoint(steps).replay_buffer_path is not None
    events = EventAccumulator(str(run.tensorboard_dir))
    events.Reload()
    assert {"split/latency_ms", "split/deadline_miss_rate", "actions/exit_1"} <= set(
        events.Tags()["scalars"]
    )
    assert "actions/flat_index" in events.Tags()["histograms"]


def test_resume_continues_the_step_count_and_the_replay_buffer(
    tiny_profile_path: Path, tmp_path: Path
) -> None:
    first = train(
        fast_config(
            tiny_profile_path, tmp_path, checkpoint_freq=100, eval_freq=100, n_eval_episodes=2
        )
    )
    assert first.num_timesteps == 200
    result = resume(first.run_dir.path, timesteps=320)
    assert result.num_timesteps == 320
    assert result.model.replay_buffer.size() == 320  # type: ignore[attr-defined]
    with np.load(result.run_dir.eval_dir / "evaluations.npz") as evaluations:
        assert evaluations["timesteps"].tolist() == [0, 100, 200, 300]
    config = result.run_dir.read_config()
    assert config["num_timesteps"] == 320 and config["status"] == "finished"
    assert result.run_dir.latest_checkpoint().num_timesteps == 320  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="already trained 320"):
        resume(first.run_dir.path)


def test_keyboard_interrupt_saves_and_the_run_resumes(
    tiny_profile_path: Path, tmp_path: Path
) -> None:
    result = train(fast_config(tiny_profile_path, tmp_path), callbacks=[InterruptAt(120)])
    assert result.interrupted and result.num_timesteps == 120
    run = result.run_dir
    assert run.model_path.exists()
    assert run.read_config()["status"] == "interrupted"
    checkpoint = run.latest_checkpoint()
    assert checkpoint is not None and checkpoint.num_timesteps == 120
    assert checkpoint.replay_buffer_path is not None
    resumed = resume(run.path)
    assert resumed.num_timesteps == 200 and not resumed.interrupted


def test_conf_file_and_hyperparams_reach_the_model(tiny_profile_path: Path, tmp_path: Path) -> None:
    conf = tmp_path / "hyper.yaml"
    conf.write_text(
        yaml.safe_dump(
            {"sacd": {"gamma": 0.8, "batch_size": 16, "policy_kwargs": {"net_arch": [16]}}}
        )
    )
    out = tmp_path / "runs"
    status = main(
        [
            *(
                "train",
                "--profile",
                str(tiny_profile_path),
                "--timesteps",
                "100",
                "--out",
                str(out),
            ),
            *("--conf-file", str(conf), "--hyperparams", "batch_size=8", "learning_starts=20"),
            *("--eval-freq", "0", "--no-progress"),
        ]
    )
    assert status == 0
    config = RunDirectory(the_run(out)).read_config()
    assert config["hyperparameters"]["gamma"] == 0.8
    assert config["hyperparameters"]["batch_size"] == 8  # --hyperparams wins over the file
    assert config["hyperparameters"]["policy_kwargs"] == {"net_arch": [16]}
    policy = RunDirectory(the_run(out)).load_policy()
    assert policy.model.gamma == 0.8


BAD_CONF_FILES = {
    "not: [valid": "not valid YAML",
    "- sacd\n": "expected a mapping",
    "nope: {gamma: 0.9}\n": "unknown algorithm sections",
    "ppo: {gamma: 0.9}\n": "no section for algorithm 'sacd'",
    "sacd: {gama: 0.9}\n": r"unknown hyperparameters \['gama'\]",
}


@pytest.mark.parametrize(("text", "message"), BAD_CONF_FILES.items())
def test_bad_config_files_are_named(
    text: str,
    message: str,
    tiny_profile_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    conf = tmp_path / "bad.yaml"
    conf.write_text(text)
    out = tmp_path / "runs"
    status = main(
        ["train", "--profile", str(tiny_profile_path), "--out", str(out), "--conf-file", str(conf)]
    )
    assert status == 2
    error = capsys.readouterr().err
    assert error.startswith("splitrl train: error:")
    assert re.search(message, error), error
    assert not out.exists()  # nothing is written for a bad configuration


BAD_FLAGS = {
    "unknown algo": (["--algo", "nope"], "unknown algorithm 'nope'"),
    "unknown scenario": (["--scenario", "nope"], "unknown scenario 'nope'"),
    "unknown hyperparameter": (["--hyperparams", "foo=1"], r"unknown hyperparameters \['foo'\]"),
    "reserved hyperparameter": (["--hyperparams", "seed=3"], "use --seed"),
    "no equals sign": (["--hyperparams", "gamma"], "expects key=value"),
    "rejected value": (["--hyperparams", "ent_coef=bogus"], "invalid hyperparameters"),
    "missing profile": (["--profile", "/nonexistent/p.json"], "not found"),
    "resume with algo": (["--resume", "somewhere", "--algo", "ppo"], "drop --algo"),
    "resume missing run": (["--resume", "/nonexistent/run"], "not found"),
}


@pytest.mark.parametrize(("flags", "message"), BAD_FLAGS.values(), ids=list(BAD_FLAGS))
def test_bad_flags_are_named(
    flags: list[str],
    message: str,
    tiny_profile_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "runs"
    base = ["train", "--out", str(out)] if "--resume" not in flags else ["train"]
    if "--profile" not in flags and "--resume" not in flags:
        base += ["--profile", str(tiny_profile_path)]
    status = main(base + flags)
    assert status == 2
    error = capsys.readouterr().err
    assert error.startswith("splitrl train: error:")
    assert re.search(message, error), error
    assert not out.exists()


@pytest.mark.parametrize("flags", [["--timesteps", "0"], ["--seed", "x"], ["--vec-env", "threads"]])
def test_bad_flag_values_are_argparse_errors(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *flags])
    assert exit_info.value.code == 2
    assert "splitrl train: error: argument" in capsys.readouterr().err


def test_every_config_flag_reaches_its_field_and_resume_refuses_the_run_defining_ones() -> None:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    argv: list[str] = []
    expected: dict[str, Any] = {}
    special = {"algo": "dqn", "torch_device": "cuda"}  # values TrainConfig checks
    for name, flag in flags().items():
        option = flag.option(name)
        default = TrainConfig.__dataclass_fields__[name].default
        if flag.const is not None:
            argv.append(option)
            expected[name] = flag.const
            continue
        if flag.choices is not None:
            value: Any = next(choice for choice in flag.choices if choice != default)
        elif flag.minimum is not None:
            value = flag.minimum + 3
        else:
            value = special.get(name, f"given-{name}")
        argv += [option, str(value)]
        expected[name] = value
    args = parser.parse_args([*argv, "--hyperparams", "gamma=0.5"])
    config = config_from_args(args)
    assert {name: getattr(config, name) for name in expected} == expected
    assert config.hyperparameters == {"gamma": 0.5}
    refused = run_defining_flags(args)
    resumable = [name for name, flag in flags().items() if flag.resumable]
    # what --resume accepts is what trainer.resume can change
    assert set(resumable) == set(inspect.signature(resume).parameters) & set(flags())
    assert len(refused) == len(flags()) - len(resumable) + 1 and "--hyperparams" in refused
    assert not any(flags()[name].option(name) in refused for name in resumable)


@pytest.mark.parametrize("columns", ["40", "80", "200"])
def test_help_lists_every_learner(
    columns: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every learner's name appears whole, however narrow the terminal (no break at a hyphen)."""
    monkeypatch.setenv("COLUMNS", columns)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    words = capsys.readouterr().out.replace(",", " ").split()
    assert all(name in words for name in LEARNERS)


@pytest.mark.parametrize("nvec", [(2, 4, 4), (3, 5, 7)])
def test_action_adapters_reach_every_action(nvec: tuple[int, int, int]) -> None:
    flat = FlatAction(nvec)
    triples = {tuple(flat(i)) for i in range(int(np.prod(nvec)))}
    assert len(triples) == int(np.prod(nvec))
    binned = BinnedAction(nvec)
    grid = np.linspace(-1, 1, 201)
    for component, n in enumerate(nvec):
        points = np.zeros((grid.size, 3))
        points[:, component] = grid
        chosen = [int(binned(point)[component]) for point in points]
        assert sorted(set(chosen)) == list(range(n))
        assert chosen == sorted(chosen)  # bins are in index order


def test_training_reward_uses_expected_correctness_by_default() -> None:
    from splitrl.envs import SplitComputingEnv, get_scenario
    from splitrl.training.config import TrainConfig
    from splitrl.training.trainer import training_scenario

    assert TrainConfig().reward_correctness == "expected"
    with pytest.raises(ValueError, match="reward_correctness"):
        TrainConfig(reward_correctness="coin")
    scenario = training_scenario(get_scenario("default"), "expected")
    assert SplitComputingEnv(scenario).reward_spec.correctness == "expected"
    assert SplitComputingEnv(get_scenario("default")).reward_spec.correctness == "sample"
    # the scenario's own reward overrides survive
    assert SplitComputingEnv(scenario).reward_spec.w_latency == pytest.approx(0.1)


def test_every_evaluation_plays_the_same_episodes(tiny_profile_path: Path, tmp_path: Path) -> None:
    """A policy that does not change scores the same at every evaluation: the episodes are fixed."""
    config = fast_config(
        tiny_profile_path, tmp_path, timesteps=300, eval_freq=100, n_eval_episodes=2
    )
    config.hyperparameters["learning_starts"] = 10_000  # no gradient step within the run
    train(config)
    with np.load(the_run(tmp_path) / "eval" / "evaluations.npz") as logged:
        results = logged["results"]
    assert results.shape == (4, 2)  # the untrained model, then at 100, 200 and 300 steps
    assert all(np.array_equal(results[0], later) for later in results[1:])


def test_the_untrained_model_is_the_first_validation_candidate(
    tiny_profile_path: Path, tmp_path: Path
) -> None:
    """A learner that starts from mpc is validated as mpc before its first step, so the kept
    model is never one the validation shows to be worse than the rule."""
    from splitrl.agents.baselines import make_baseline
    from splitrl.agents.rollout import run_episodes
    from splitrl.training.callbacks import EVALUATIONS_FILE, load_validation_log
    from splitrl.training.trainer import training_scenario

    config = fast_config(
        tiny_profile_path, tmp_path, "sacd-hindsight-mpc", eval_freq=100, n_eval_episodes=2
    )
    result = train(config)
    run = result.run_dir
    log = load_validation_log(run.eval_dir / EVALUATIONS_FILE)
    assert log.timesteps == [0, 100, 200]
    run_config = run.read_config()
    env = SplitComputingEnv(training_scenario(run.scenario(), config.reward_correctness))
    seeds = range(run_config["eval_seed"], run_config["eval_seed"] + 2)
    rule = run_episodes(make_baseline("mpc"), env, seeds).reward.mean(axis=1)
    np.testing.assert_allclose(log.results[0], rule, rtol=0, atol=1e-12)


def test_a_shipped_profile_is_identified_by_name_not_by_the_install_folder() -> None:
    identity = profile_identity("default")
    assert identity["source"] == "shipped:default" and identity["name"]
    by_path = shipped_profiles_dir() / "default.json"
    assert profile_identity(by_path) == identity
