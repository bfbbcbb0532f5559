"""Train a learner in a scenario, or resume a run: the work behind ``splitrl train``."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, ProgressBarCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from splitrl.agents.learners import LearnerSpec, get_learner
from splitrl.envs.scenarios import Scenario
from splitrl.envs.split_computing import SplitComputingEnv
from splitrl.training.callbacks import EVALUATIONS_FILE, SplitMetricsCallback, ValidationCallback
from splitrl.training.checkpoints import PeriodicCheckpoint
from splitrl.training.config import (
    CONFIG_FORMAT,
    EVAL_SEED_OFFSET,
    SCENARIO_OVERRIDES,
    TrainConfig,
    library_versions,
    profile_identity,
    validate_hyperparameters,
)
from splitrl.training.run_dir import Checkpoint, RunDirectory

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a training run left behind.

    :param run_dir: the run directory
    :param model: the trained model
    :param num_timesteps: timesteps trained in total
    :param interrupted: whether training stopped on ``KeyboardInterrupt`` (the model was saved)
    :param resumed_from: for a resumed run, the checkpoint it continued from
    """

    run_dir: RunDirectory
    model: BaseAlgorithm
    num_timesteps: int
    interrupted: bool
    resumed_from: Checkpoint | None = None


def env_factory(scenario: Scenario) -> Callable[[], SplitComputingEnv]:
    """Builds the env of ``scenario`` (picklable for subprocess envs)."""
    return _ScenarioEnv(scenario)


@dataclass(frozen=True)
class _ScenarioEnv:
    scenario: Scenario

    def __call__(self) -> SplitComputingEnv:
        return SplitComputingEnv(self.scenario)


def training_scenario(scenario: Scenario, reward_correctness: str) -> Scenario:
    """``scenario`` with the correctness rule of the training reward (see ``TrainConfig``)."""
    overrides = {**scenario.reward_overrides, "correctness": reward_correctness}
    return dataclasses.replace(scenario, reward_overrides=overrides)


def make_envs(
    spec: LearnerSpec, scenario: Scenario, n_envs: int, seed: int, vec_env: str = "dummy"
) -> VecEnv:
    """``n_envs`` envs of ``scenario`` seeded from ``seed``, with Monitor and the learner's wrapper."""
    return make_vec_env(
        env_factory(scenario),
        n_envs=n_envs,
        seed=seed,
        wrapper_class=spec.wrap_env,
        vec_env_cls=SubprocVecEnv if vec_env == "subproc" else DummyVecEnv,
    )


def train(
    config: TrainConfig,
    *,
    callbacks: Sequence[BaseCallback] = (),
    progress_bar: bool = False,
) -> TrainResult:
    """Train ``config.algo`` in the configured scenario; writes a new run directory.

    Everything is checked (learner, scenario, profile, hyperparameters) before the run directory
    is created. On ``KeyboardInterrupt`` the model (and replay buffer) are saved and the result has
    ``interrupted=True``.

    :param config: the run's configuration
    :param callbacks: extra callbacks, after the built-in ones
    :param progress_bar: show a progress bar
    """
    spec = get_learner(config.algo)
    overrides = config.scenario_overrides()
    scenario = config.effective_scenario()
    train_scenario = training_scenario(scenario, config.reward_correctness)
    probe = env_factory(train_scenario)()
    hyperparameters = spec.resolved_hyperparameters(config.hyperparameters)
    validate_hyperparameters(hyperparameters)
    envs = make_envs(spec, train_scenario, config.n_envs, config.seed, config.vec_env)
    try:
        model = spec.build_model(
            envs, hyperparameters, seed=config.seed, device=config.torch_device
        )
    except ValueError:
        envs.close()
        raise
    name = f"{spec.name}_{config.scenario}_s{config.seed}"
    run = RunDirectory.create(config.out, name)
    run_config: dict[str, Any] = {
        "format": CONFIG_FORMAT,
        "algo": spec.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": "running",
        "num_timesteps": 0,
        "timesteps": config.timesteps,
        "seed": config.seed,
        "n_envs": config.n_envs,
        "vec_env": config.vec_env,
        "torch_device": config.torch_device,
        "eval_freq": config.eval_freq,
        "n_eval_episodes": config.n_eval_episodes,
        "eval_seed": config.seed + EVAL_SEED_OFFSET,
        "checkpoint_freq": config.checkpoint_freq,
        "log_freq": config.log_freq,
        "scenario": config.scenario,
        **{key: overrides.get(key) for key in SCENARIO_OVERRIDES},
        "reward_correctness": config.reward_correctness,
        "scenario_spec": _plain(scenario.to_dict()),
        "profile_identity": profile_identity(scenario.profile),
        "action_nvec": [int(n) for n in probe.actions.nvec],
        "hyperparameter_overrides": _plain(config.hyperparameters),
        "hyperparameters": _plain(hyperparameters),
        "versions": library_versions(),
    }
    with run.lock():
        run.write_config(run_config)
        return _learn(run, run_config, spec, model, probe, callbacks, progress_bar, resuming=False)


def resume(
    run_dir: str | Path,
    *,
    timesteps: int | None = None,
    eval_freq: int | None = None,
    checkpoint_freq: int | None = None,
    callbacks: Sequence[BaseCallback] = (),
    progress_bar: bool = False,
) -> TrainResult:
    """Continue a run from its newest checkpoint that loads, with its replay buffer and step count.

    A checkpoint that does not load (a file damaged outside of splitrl) is skipped with a warning
    and the next older one is tried. The run keeps its configuration; training continues in the same directory until ``timesteps``
    in total (default: the run's own target). The training envs are seeded with
    ``seed + timesteps already trained``, so the resumed part does not replay the first episodes.

    :param run_dir: the run directory
    :param timesteps: new total of timesteps (must exceed what was trained)
    :param eval_freq: replaces the run's evaluation frequency
    :param checkpoint_freq: replaces the run's checkpoint frequency
    :raises FileNotFoundError: when the run has no checkpoint
    :raises ValueError: when the run already trained ``timesteps``, no checkpoint loads, or another
        process trains in the run
    """
    run = RunDirectory(Path(run_dir))
    run_config = run.read_config()
    with run.lock():
        for file in run.remove_temporaries():
            logger.warning("removed %s, left by an interrupted write", file)
        return _resume_locked(
            run, run_config, timesteps, eval_freq, checkpoint_freq, callbacks, progress_bar
        )


def _resume_locked(
    run: RunDirectory,
    run_config: dict[str, Any],
    timesteps: int | None,
    eval_freq: int | None,
    checkpoint_freq: int | None,
    callbacks: Sequence[BaseCallback],
    progress_bar: bool,
) -> TrainResult:
    spec = get_learner(str(run_config["algo"]))
    checkpoints = run.checkpoints()
    if not checkpoints:
        raise FileNotFoundError(
            f"{run.path}: no checkpoint to resume from in {run.checkpoints_dir}"
        )
    target = int(run_config["timesteps"] if timesteps is None else timesteps)
    if target <= checkpoints[0].num_timesteps:
        raise ValueError(
            f"{run.path} has already trained {checkpoints[0].num_timesteps} timesteps; "
            f"pass --timesteps larger than that to train longer"
        )
    for key, value in (("eval_freq", eval_freq), ("checkpoint_freq", checkpoint_freq)):
        if value is not None:
            if value < 0:
                raise ValueError(f"{key} must be >= 0, got {value}")
            run_config[key] = value
    scenario = training_scenario(run.scenario(), _reward_correctness(run_config))
    probe = env_factory(scenario)()
    if [int(n) for n in probe.actions.nvec] != list(run_config["action_nvec"]):
        raise ValueError(
            f"{run.path}: the profile's action space {probe.actions.nvec} differs from the run's "
            f"{tuple(run_config['action_nvec'])}"
        )
    model, checkpoint = _load_newest(run, run_config, spec, scenario, checkpoints)
    run_config.update(timesteps=target, status="running", num_timesteps=checkpoint.num_timesteps)
    run.write_config(run_config)
    result = _learn(run, run_config, spec, model, probe, callbacks, progress_bar, resuming=True)
    return dataclasses.replace(result, resumed_from=checkpoint)


def _load_newest(
    run: RunDirectory,
    run_config: dict[str, Any],
    spec: LearnerSpec,
    scenario: Scenario,
    checkpoints: Sequence[Checkpoint],
) -> tuple[BaseAlgorithm, Checkpoint]:
    """The model of the newest checkpoint that loads completely (with its replay buffer)."""
    for checkpoint in checkpoints:
        if spec.off_policy and checkpoint.replay_buffer_path is None:
            logger.warning("%s: no replay buffer, skipped", checkpoint.model_path)
            continue
        seed = int(run_config["seed"]) + checkpoint.num_timesteps
        n_envs, vec_env = int(run_config["n_envs"]), str(run_config["vec_env"])
        envs = make_envs(spec, scenario, n_envs, seed, vec_env)
        try:
            model = spec.algorithm_class().load(
                checkpoint.model_path, env=envs, device=str(run_config["torch_device"])
            )
            if checkpoint.replay_buffer_path is not None:
                model.load_replay_buffer(checkpoint.replay_buffer_path)  # type: ignore[attr-defined]
        except Exception as error:  # a damaged file of any kind: try the previous checkpoint
            logger.warning("%s does not load (%r), skipped", checkpoint.model_path, error)
            envs.close()
            continue
        return model, checkpoint
    raise ValueError(f"{run.path}: none of the {len(checkpoints)} checkpoints loads")


def _learn(
    run: RunDirectory,
    run_config: dict[str, Any],
    spec: LearnerSpec,
    model: BaseAlgorithm,
    probe: SplitComputingEnv,
    extra_callbacks: Sequence[BaseCallback],
    progress_bar: bool,
    resuming: bool,
) -> TrainResult:
    """Train ``model`` to the run's target, then save it; also on ``KeyboardInterrupt``."""
    model.set_logger(configure(str(run.tensorboard_dir), ["tensorboard"]))
    callbacks: list[BaseCallback] = [
        SplitMetricsCallback(probe.actions, int(run_config["log_freq"]))
    ]
    if run_config["checkpoint_freq"] > 0:
        callbacks.append(
            PeriodicCheckpoint(run, run_config, int(run_config["checkpoint_freq"]), spec.off_policy)
        )
    if run_config["eval_freq"] > 0:
        callbacks.append(_validation_callback(spec, run, run_config, resuming))
    progress = ProgressBarCallback() if progress_bar else None
    if progress is not None:
        callbacks.append(progress)
    callbacks.extend(extra_callbacks)
    interrupted = False
    try:
        model.learn(
            total_timesteps=int(run_config["timesteps"]) - model.num_timesteps,
            callback=callbacks,
            reset_num_timesteps=not resuming,
        )
    except KeyboardInterrupt:
        interrupted = True
        if progress is not None and hasattr(progress, "pbar"):
            progress.pbar.close()
    finally:
        model.logger.close()
    run.save_checkpoint(model, with_replay_buffer=spec.off_policy)
    run.save_model(model, run.model_path)
    _close(model.env)
    run_config.update(
        status="interrupted" if interrupted else "finished", num_timesteps=model.num_timesteps
    )
    run.write_config(run_config)
    return TrainResult(run, model, model.num_timesteps, interrupted)


def _validation_callback(
    spec: LearnerSpec, run: RunDirectory, run_config: dict[str, Any], resuming: bool
) -> ValidationCallback:
    """Periodic greedy evaluation on the run's validation episodes; keeps ``best_model.zip``.

    The episodes are ``eval_seed .. eval_seed + n_eval_episodes - 1``, the same at every
    evaluation; a resumed run continues the evaluation log and the best model.
    """
    scenario = training_scenario(run.scenario(), _reward_correctness(run_config))
    first = int(run_config["eval_seed"])
    callback = ValidationCallback(
        spec,
        SplitComputingEnv(scenario),
        range(first, first + int(run_config["n_eval_episodes"])),
        int(run_config["eval_freq"]),
        run.best_model_path,
        run.eval_dir / EVALUATIONS_FILE,
    )
    if resuming and (run.eval_dir / EVALUATIONS_FILE).exists():
        callback.restore(run.eval_dir / EVALUATIONS_FILE)
    return callback


def _reward_correctness(run_config: dict[str, Any]) -> str:
    """The training reward's correctness rule of a run (runs written before the option: sample)."""
    return str(run_config.get("reward_correctness", "sample"))


def _close(envs: VecEnv | None) -> None:
    """Close ``envs``; subprocess workers may already have exited on Ctrl-C."""
    if envs is None:
        return
    try:
        envs.close()
    except (BrokenPipeError, EOFError):
        pass


def _plain(data: Any) -> Any:
    """``data`` as plain YAML-safe types (tuples become lists)."""
    if isinstance(data, dict):
        return {str(key): _plain(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_plain(value) for value in data]
    if isinstance(data, np.generic):
        return data.item()
    return data
