"""The run directory of one training run: its config, models, checkpoints and logs.

```
runs/<algo>_<scenario>_s<seed>_<YYYYmmdd-HHMMSS>/
    config.yaml                          the resolved configuration (see docs/training.md)
    model.zip                            the model at the end of training (or where it was interrupted)
    best_model.zip                       the model kept by the validation (ValidationCallback)
    eval/evaluations.npz                 the validation log (callbacks.load_validation_log)
    checkpoints/model_<N>_steps.zip      periodic checkpoints, N = timesteps trained
    checkpoints/model_replay_buffer_<N>_steps.pkl    their replay buffer (off-policy learners)
    tensorboard/events.out.tfevents.*    TensorBoard logs
    .lock                                held by the process that trains in the directory
```

Crash safety: every checkpoint file, ``model.zip`` and ``config.yaml`` is written to a temporary
file in the same folder, flushed to disk and renamed over its final name, so a kill at any moment
leaves either the previous file or the new one, never a truncated one. A checkpoint's replay buffer
is written before its model, so a checkpoint model file always has its buffer. The training process
holds an advisory lock on ``.lock``; a run whose config says ``running`` but whose lock nobody holds
was killed, and is reported as ``interrupted``.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

import yaml

from splitrl.agents.learners import LearnerSpec, get_learner
from splitrl.agents.policy_interface import ModelPolicy
from splitrl.envs.scenarios import Scenario, scenario_from_dict
from splitrl.envs.split_computing import SplitComputingEnv
from splitrl.files import TEMPORARY_MARK, atomic_write, read_yaml_mapping

CONFIG_FILE = "config.yaml"
LOCK_FILE = ".lock"
CHECKPOINT_PREFIX = "model"
_CHECKPOINT = re.compile(rf"^{CHECKPOINT_PREFIX}_(\d+)_steps\.zip$")
#: tests only: ``PHASE@STEPS`` kills the process with SIGKILL in that phase (see :func:`fault_point`)
FAULT_INJECTION_VARIABLE = "SPLITRL_FAULT_INJECTION"
#: the phases :func:`fault_point` knows
FAULT_PHASES = ("env-step", "replay-buffer-write", "model-write", "config-write")


def fault_point(phase: str, num_timesteps: int) -> None:
    """Kill this process with SIGKILL if :data:`FAULT_INJECTION_VARIABLE` names this moment.

    A fault-injection hook for the crash-safety tests: ``SPLITRL_FAULT_INJECTION=model-write@200``
    kills the process while the model of step 200 is being written (its temporary file holds the
    data, the final name does not exist yet). Unset, it does nothing.

    :param phase: one of :data:`FAULT_PHASES`
    :param num_timesteps: the timestep count of the moment
    """
    target = os.environ.get(FAULT_INJECTION_VARIABLE)
    if target and target == f"{phase}@{num_timesteps}":
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class Checkpoint:
    """A saved model and, for off-policy learners, its replay buffer.

    :param num_timesteps: timesteps trained when it was saved
    :param model_path: the model file
    :param replay_buffer_path: the replay buffer file, ``None`` if there is none
    """

    num_timesteps: int
    model_path: Path
    replay_buffer_path: Path | None


class RunDirectory:
    """Paths and files of one run directory.

    :param path: the run directory
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, root: str | Path, name: str) -> RunDirectory:
        """A new, empty run directory ``root/name_<timestamp>`` (with a suffix if it exists)."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(root) / f"{name}_{stamp}"
        path, suffix = base, 1
        while True:
            try:
                path.mkdir(parents=True)
                break
            except FileExistsError:
                suffix += 1
                path = base.with_name(f"{base.name}-{suffix}")
        return cls(path)

    @property
    def config_path(self) -> Path:
        """The resolved configuration."""
        return self.path / CONFIG_FILE

    @property
    def model_path(self) -> Path:
        """The final (or interrupted) model."""
        return self.path / "model.zip"

    @property
    def best_model_path(self) -> Path:
        """The best model of the periodic evaluations."""
        return self.path / "best_model.zip"

    @property
    def eval_dir(self) -> Path:
        """Where the periodic evaluations are logged."""
        return self.path / "eval"

    @property
    def checkpoints_dir(self) -> Path:
        """Periodic checkpoints."""
        return self.path / "checkpoints"

    @property
    def tensorboard_dir(self) -> Path:
        """TensorBoard event files."""
        return self.path / "tensorboard"

    def write_config(self, config: dict[str, Any]) -> None:
        """Write the configuration (plain data) as YAML, atomically (:func:`~splitrl.files.atomic_write`)."""
        text = yaml.safe_dump(config, sort_keys=False).encode()
        atomic_write(
            self.config_path,
            lambda file: file.write(text),
            before_sync=partial(fault_point, "config-write", int(config.get("num_timesteps", 0))),
        )

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's lock while training in it (released by the system if the process dies).

        :raises ValueError: when another process trains in the run
        """
        with open(self.path / LOCK_FILE, "a") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ValueError(f"{self.path} is in use by another training process") from None
            try:
                yield
            finally:
                fcntl.flock(file, fcntl.LOCK_UN)

    def remove_temporaries(self) -> list[Path]:
        """Delete the temporary files a killed writer left (call it while holding :meth:`lock`).

        :return: the files deleted
        """
        pattern = f".*{TEMPORARY_MARK}*"
        stale = [*self.path.glob(pattern), *self.path.glob(f"*/{pattern}")]
        for file in stale:
            file.unlink(missing_ok=True)
        return stale

    def _locked_elsewhere(self) -> bool:
        """Whether some process holds the run's lock."""
        lock_path = self.path / LOCK_FILE
        if not lock_path.exists():
            return False
        with open(lock_path, "rb") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(file, fcntl.LOCK_UN)
        return False

    def read_config(self) -> dict[str, Any]:
        """The configuration of the run.

        A run whose config says ``running`` while no process holds its lock was killed: its
        ``status`` reads ``interrupted``.

        :raises FileNotFoundError: when the directory or its config is missing
        :raises ValueError: when the config is not a YAML mapping with an ``algo``
        """
        if not self.path.is_dir():
            raise FileNotFoundError(f"run directory {self.path} not found")
        if not self.config_path.exists():
            raise FileNotFoundError(f"{self.path} is not a run directory: no {CONFIG_FILE}")
        config = read_yaml_mapping(self.config_path, CONFIG_FILE, "a splitrl run config")
        if "algo" not in config:
            raise ValueError(f"{self.config_path}: not a splitrl run config (no 'algo')")
        if config.get("status") == "running" and not self._locked_elsewhere():
            config["status"] = "interrupted"
        return config

    def scenario(self) -> Scenario:
        """The scenario the run trained in, with its overrides applied (``scenario_spec``)."""
        config = self.read_config()
        if not isinstance(config.get("scenario_spec"), dict):
            raise ValueError(f"{self.config_path}: no 'scenario_spec' mapping")
        return scenario_from_dict(config["scenario_spec"])

    def make_env(self, **kwargs: Any) -> SplitComputingEnv:
        """A new env of the run's scenario (for evaluation: seed it apart from the training seeds).

        :param kwargs: further keywords of :class:`~splitrl.envs.SplitComputingEnv`
        """
        return SplitComputingEnv(self.scenario(), **kwargs)

    def learner(self) -> LearnerSpec:
        """The learner the run trained."""
        return get_learner(str(self.read_config()["algo"]))

    def trained_model_path(self, which: Literal["final", "best"] = "final") -> Path:
        """The file of the run's final or best model.

        :param which: ``"final"`` (``model.zip``: the end of training, or where it was
            interrupted) or ``"best"`` (``best_model.zip``: the best evaluation during training)
        :raises ValueError: for another ``which``
        :raises FileNotFoundError: when that model is missing
        """
        paths = {"final": self.model_path, "best": self.best_model_path}
        if which not in paths:
            raise ValueError(f"which must be 'final' or 'best', got {which!r}")
        if not paths[which].exists():
            raise FileNotFoundError(
                f"{self.path}: no {which} model ({paths[which].name} is missing)"
            )
        return paths[which]

    def load_policy(
        self, which: Literal["final", "best"] = "final", device: str = "cpu"
    ) -> ModelPolicy:
        """The run's trained policy, acting greedily, named after its learner.

        :param which: the final or the best model (:meth:`trained_model_path`)
        :param device: torch device to load the model on
        :raises FileNotFoundError: when the run directory or the model is missing
        :raises ValueError: when the run's config is malformed
        """
        spec = self.learner()
        model = spec.load_model(self.trained_model_path(which), device=device)
        return spec.as_policy(model, self.read_config()["action_nvec"])

    def checkpoint(self, num_timesteps: int) -> Checkpoint:
        """The checkpoint saved at ``num_timesteps`` (Stable-Baselines3's ``CheckpointCallback`` names)."""
        buffer = self._replay_buffer_path(num_timesteps)
        return Checkpoint(
            num_timesteps,
            self.checkpoints_dir / f"{CHECKPOINT_PREFIX}_{num_timesteps}_steps.zip",
            buffer if buffer.exists() else None,
        )

    def _replay_buffer_path(self, num_timesteps: int) -> Path:
        name = f"{CHECKPOINT_PREFIX}_replay_buffer_{num_timesteps}_steps.pkl"
        return self.checkpoints_dir / name

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, the newest (most timesteps) first."""
        if not self.checkpoints_dir.is_dir():
            return []
        steps = [
            int(match.group(1))
            for file in self.checkpoints_dir.iterdir()
            if (match := _CHECKPOINT.match(file.name))
        ]
        return [self.checkpoint(n) for n in sorted(steps, reverse=True)]

    def latest_checkpoint(self) -> Checkpoint | None:
        """The checkpoint with the most timesteps, or ``None`` if there is none."""
        checkpoints = self.checkpoints()
        return checkpoints[0] if checkpoints else None

    def save_checkpoint(self, model: Any, with_replay_buffer: bool) -> Checkpoint:
        """Save ``model`` (and its replay buffer) as a checkpoint at its current timestep count.

        The replay buffer is written first and every file atomically, so a checkpoint model file
        is only ever seen complete and with its buffer.
        """
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        steps = int(model.num_timesteps)
        if with_replay_buffer:
            atomic_write(
                self._replay_buffer_path(steps),
                model.save_replay_buffer,
                before_sync=partial(fault_point, "replay-buffer-write", steps),
            )
        self.save_model(model, self.checkpoint(steps).model_path)
        return self.checkpoint(steps)

    def save_model(self, model: Any, path: Path) -> None:
        """Save ``model`` to ``path`` atomically."""
        steps = int(model.num_timesteps)
        atomic_write(path, model.save, before_sync=partial(fault_point, "model-write", steps))
