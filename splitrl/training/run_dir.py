"""The run directory of one training run: its config, models, checkpoints and logs.

```
runs/<algo>_<scenario>_s<seed>_<YYYYmmdd-HHMMSS>/
    config.yaml                          the resolved configuration (see docs/training.md)
    model.zip                            the model at the end of training (or where it was interrupted)
    best_model.zip                       the best model of the periodic evaluations
    eval/evaluations.npz                 the periodic evaluations (Stable-Baselines3 EvalCallback)
    checkpoints/model_<N>_steps.zip      periodic checkpoints, N = timesteps trained
    checkpoints/model_replay_buffer_<N>_steps.pkl    their replay buffer (off-policy learners)
    tensorboard/events.out.tfevents.*    TensorBoard logs
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from splitrl.envs.scenarios import Scenario
from splitrl.envs.split_computing import SplitComputingEnv
from splitrl.training.config import scenario_from_dict

CONFIG_FILE = "config.yaml"
CHECKPOINT_PREFIX = "model"
_CHECKPOINT = re.compile(rf"^{CHECKPOINT_PREFIX}_(\d+)_steps\.zip$")


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

    def __init__(self, path: Path) -> None:
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
        """Write the configuration (plain data) as YAML, through a temporary file."""
        temporary = self.config_path.with_suffix(".yaml.tmp")
        temporary.write_text(yaml.safe_dump(config, sort_keys=False))
        temporary.replace(self.config_path)

    def read_config(self) -> dict[str, Any]:
        """The configuration of the run.

        :raises FileNotFoundError: when the directory or its config is missing
        :raises ValueError: when the config is not a YAML mapping with an ``algo``
        """
        if not self.path.is_dir():
            raise FileNotFoundError(f"run directory {self.path} not found")
        if not self.config_path.exists():
            raise FileNotFoundError(f"{self.path} is not a run directory: no {CONFIG_FILE}")
        try:
            config = yaml.safe_load(self.config_path.read_text())
        except yaml.YAMLError as error:
            raise ValueError(f"{self.config_path}: not valid YAML: {error}") from error
        if not isinstance(config, dict) or "algo" not in config:
            raise ValueError(f"{self.config_path}: not a splitrl run config (no 'algo')")
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

    def latest_checkpoint(self) -> Checkpoint | None:
        """The checkpoint with the most timesteps, or ``None`` if there is none."""
        if not self.checkpoints_dir.is_dir():
            return None
        steps = [
            int(match.group(1))
            for file in self.checkpoints_dir.iterdir()
            if (match := _CHECKPOINT.match(file.name))
        ]
        return self.checkpoint(max(steps)) if steps else None

    def save_checkpoint(self, model: Any, with_replay_buffer: bool) -> Checkpoint:
        """Save ``model`` (and its replay buffer) as a checkpoint at its current timestep count."""
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        steps = int(model.num_timesteps)
        model.save(self.checkpoint(steps).model_path)
        if with_replay_buffer:
            model.save_replay_buffer(self._replay_buffer_path(steps))
        return self.checkpoint(steps)
