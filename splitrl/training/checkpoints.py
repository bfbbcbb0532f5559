"""Periodic checkpoints of a training run, on a fixed grid of timesteps.

Stable-Baselines3's ``CheckpointCallback`` counts its own calls, so after a resume its grid shifts
(a run resumed at 4,390 steps saved at 5,390), and it saves an off-policy model before the step's
transition is stored (the checkpoint of step 1,000 held 999 transitions). :class:`PeriodicCheckpoint`
saves when the timestep count crosses a multiple of the frequency, at the end of a rollout, when
every transition of the steps counted is in the replay buffer.
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from splitrl.training.run_dir import RunDirectory, fault_point


class PeriodicCheckpoint(BaseCallback):
    """Save a checkpoint (model and replay buffer) every ``freq`` timesteps, and record it.

    After each checkpoint the run config's ``num_timesteps`` is updated, so the config always
    names a step count that a checkpoint holds.

    :param run: the run directory
    :param run_config: the run's configuration (updated and rewritten after each checkpoint)
    :param freq: timesteps between checkpoints (at multiples of ``freq``)
    :param with_replay_buffer: save the replay buffer too (off-policy learners)
    """

    def __init__(
        self, run: RunDirectory, run_config: dict[str, Any], freq: int, with_replay_buffer: bool
    ) -> None:
        super().__init__()
        if freq < 1:
            raise ValueError(f"checkpoint frequency must be at least 1, got {freq}")
        self.run = run
        self.run_config = run_config
        self.freq = freq
        self.with_replay_buffer = with_replay_buffer
        self._saved_at = 0

    def _on_training_start(self) -> None:
        self._saved_at = self.num_timesteps

    def _on_step(self) -> bool:
        fault_point("env-step", self.num_timesteps)
        return True

    def _on_rollout_end(self) -> None:
        if self.num_timesteps // self.freq > self._saved_at // self.freq:
            self.run.save_checkpoint(self.model, self.with_replay_buffer)
            self._saved_at = self.num_timesteps
            self.run_config["num_timesteps"] = self.num_timesteps
            self.run.write_config(self.run_config)
