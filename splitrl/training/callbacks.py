"""Training callbacks: split-computing metrics for TensorBoard, and the validation that keeps the
best model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from splitrl.agents.learners import LearnerSpec
from splitrl.agents.rollout import run_episodes
from splitrl.envs.actions import ActionTable, action_components
from splitrl.envs.split_computing import SplitComputingEnv
from splitrl.files import atomic_write
from splitrl.statistics import PairedDifference, t_interval

#: the validation log in a run's ``eval/`` folder
EVALUATIONS_FILE = "evaluations.npz"
#: logger outputs that cannot show a histogram
_NOT_HISTOGRAM_OUTPUTS = ("stdout", "log", "json", "csv")


class SplitMetricsCallback(BaseCallback):
    """Logs what the requests served during training achieved, from the env's ``info`` of every step.

    Every ``log_freq`` env steps (summed over the vectorized envs) it records the means over the
    requests since the last record and writes them to the logger (TensorBoard):

    * ``split/latency_ms``, ``split/latency_p95_ms``: end-to-end latency
    * ``split/accuracy``: fraction of correct answers
    * ``split/deadline_miss_rate``: fraction of requests over the deadline
    * ``split/energy_mj``: device energy per request
    * ``split/payload_bytes``, ``split/offload_rate``: bytes sent per request, fraction offloaded
    * ``split/reward``: reward per request
    * ``actions/exit_<e>``, ``actions/split_<s>``, ``actions/bits_<option>``: how often each value
      of each component was chosen (canonical actions; ``split_<k_e>`` with no bits for device-only)
    * ``actions/flat_index``: histogram of the canonical actions' flat indices

    :param actions: the env's action table
    :param log_freq: env steps between records
    """

    def __init__(self, actions: ActionTable, log_freq: int = 1_000) -> None:
        super().__init__()
        if log_freq < 1:
            raise ValueError(f"log_freq must be at least 1, got {log_freq}")
        self.actions = actions
        self.log_freq = log_freq
        self._last_record = 0
        self._reset_window()

    def _reset_window(self) -> None:
        self._latency: list[float] = []
        self._correct: list[float] = []
        self._missed: list[bool] = []
        self._energy: list[float] = []
        self._payload: list[int] = []
        self._reward: list[float] = []
        self._flat: list[int] = []

    def _on_training_start(self) -> None:
        self._last_record = self.num_timesteps
        self._reset_window()

    def _on_step(self) -> bool:
        rewards = np.asarray(self.locals.get("rewards", []), dtype=np.float64).reshape(-1)
        for k, info in enumerate(self.locals.get("infos", [])):
            if "latency_s" not in info:
                continue
            self._latency.append(float(info["latency_s"]))
            self._correct.append(float(info["correct"]))
            self._missed.append(bool(info["deadline_missed"]))
            self._energy.append(float(info["energy_j"]))
            self._payload.append(int(info["payload_bytes"]))
            if k < len(rewards):
                self._reward.append(float(rewards[k]))
            e, s, b = (int(v) for v in info["canonical_action"])
            self._flat.append(self.actions.flat_index(e, s, b))
        if self.num_timesteps - self._last_record >= self.log_freq and self._latency:
            self.record_window()
            self.logger.dump(self.num_timesteps)
        return True

    def record_window(self) -> None:
        """Record the means over the requests since the last record, and start a new window."""
        latency_ms = np.array(self._latency) * 1e3
        self.logger.record("split/latency_ms", float(latency_ms.mean()))
        self.logger.record("split/latency_p95_ms", float(np.percentile(latency_ms, 95)))
        self.logger.record("split/accuracy", float(np.mean(self._correct)))
        self.logger.record("split/deadline_miss_rate", float(np.mean(self._missed)))
        self.logger.record("split/energy_mj", float(np.mean(self._energy)) * 1e3)
        payload = np.array(self._payload)
        self.logger.record("split/payload_bytes", float(payload.mean()))
        self.logger.record("split/offload_rate", float(np.mean(payload > 0)))
        if self._reward:
            self.logger.record("split/reward", float(np.mean(self._reward)))
        flat = np.array(self._flat, dtype=np.int64)
        triples = action_components(flat, self.actions.strides, np.array(self.actions.nvec))
        device_only = triples[:, 1] >= np.asarray(self.actions.exit_stages)[triples[:, 0]]
        for e in range(self.actions.nvec[0]):
            self.logger.record(f"actions/exit_{e}", float(np.mean(triples[:, 0] == e)))
        for s in range(self.actions.nvec[1]):
            self.logger.record(f"actions/split_{s}", float(np.mean(triples[:, 1] == s)))
        for b, option in enumerate(self.actions.bit_options):
            chosen = (triples[:, 2] == b) & ~device_only
            self.logger.record(f"actions/bits_{option}", float(np.mean(chosen)))
        self.logger.record("actions/flat_index", flat, exclude=_NOT_HISTOGRAM_OUTPUTS)
        self._last_record = self.num_timesteps
        self._reset_window()


@dataclass(frozen=True)
class ValidationLog:
    """The evaluations of a run's validation (``eval/evaluations.npz``).

    :param timesteps: when each evaluation ran
    :param results: evaluations x episodes: each validation episode's mean reward per request
    :param best_timesteps: the timesteps of the model kept as ``best_model.zip``
    """

    timesteps: list[int]
    results: np.ndarray
    best_timesteps: int

    @property
    def curve(self) -> list[tuple[int, float]]:
        """``(timesteps, mean reward per request)`` of every evaluation."""
        return [(t, float(r.mean())) for t, r in zip(self.timesteps, self.results, strict=True)]


def load_validation_log(path: Path) -> ValidationLog:
    """Read the validation log a :class:`ValidationCallback` wrote."""
    with np.load(path) as logged:
        return ValidationLog(
            [int(t) for t in logged["timesteps"]],
            np.asarray(logged["results"], dtype=np.float64),
            int(logged["best_timesteps"]),
        )


class ValidationCallback(BaseCallback):
    """Evaluates the greedy policy every ``every`` env steps on fixed validation episodes and keeps
    the best model: the one best-model mechanism of training.

    Every evaluation plays the same episodes (common random numbers), so successive policies are
    compared on the same channel and requests. A policy becomes the new best only when its paired
    gain over the current best, per episode, has a 95% t-interval above zero. Keeping the highest
    mean of about ten noisy evaluations would select noise (the winner's curse): a later policy
    that is no better replaces the earlier one about half of the time.

    The first evaluation is of the untrained model, before the first step of a fresh run, and it
    is the first best. For a learner that starts from a rule (``sacd-hindsight-mpc`` is ``mpc``
    until it learns), the kept model is therefore never one that the validation shows to be
    worse than the rule: training has to beat its starting point to replace it.

    The log (``log_path``, NumPy ``.npz``, read by :func:`load_validation_log`) holds
    ``timesteps`` (one per evaluation), ``results`` (evaluations x episodes: each episode's mean
    reward per request) and ``best_timesteps``; a resumed run continues it (:meth:`restore`).

    :param learner: the learner being trained (turns the model into a policy)
    :param env: an env of the training scenario (reset with the validation seeds)
    :param seeds: reset seeds of the validation episodes, apart from training and evaluation seeds
    :param every: env steps between evaluations
    :param best_path: where the best model is saved
    :param log_path: where the evaluations are logged (``None``: not written)
    :ivar curve: ``(timesteps, mean reward per request)`` of every evaluation
    :ivar best_timesteps: the timesteps of the best model so far (``None`` before the first)
    :ivar last_gain: the latest evaluation's paired gain over the best before it
    """

    def __init__(
        self,
        learner: LearnerSpec,
        env: SplitComputingEnv,
        seeds: Sequence[int],
        every: int,
        best_path: Path,
        log_path: Path | None = None,
    ) -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        if len(seeds) < 2:
            raise ValueError(f"validation needs at least 2 episodes, got {len(seeds)}")
        self.learner = learner
        self.env = env
        self.seeds = [int(seed) for seed in seeds]
        self.every = every
        self.best_path = best_path
        self.log_path = log_path
        self.curve: list[tuple[int, float]] = []
        self.best_timesteps: int | None = None
        self.last_gain: PairedDifference | None = None
        self._results: list[np.ndarray] = []
        self._best_rewards: np.ndarray | None = None
        self._next_evaluation = every

    def restore(self, log_path: Path) -> None:
        """Continue the evaluations logged at ``log_path`` by an earlier part of the run."""
        log = load_validation_log(log_path)
        if log.results.size and log.results.shape[1] != len(self.seeds):
            raise ValueError(
                f"{log_path} holds evaluations of {log.results.shape[1]} episodes, "
                f"but this validation plays {len(self.seeds)}"
            )
        self.curve = log.curve
        self._results = list(log.results)
        if log.timesteps:
            self.best_timesteps = log.best_timesteps
            self._best_rewards = log.results[log.timesteps.index(log.best_timesteps)]

    def _on_training_start(self) -> None:
        if self.num_timesteps == 0 and not self.curve:
            self.evaluate()
        self._next_evaluation = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next_evaluation:
            self._next_evaluation = (self.num_timesteps // self.every + 1) * self.every
            self.evaluate()
        return True

    def evaluate(self) -> None:
        """Evaluate the current policy now; save it when it beats the best one."""
        policy = self.learner.as_policy(self.model, self.env.actions.nvec)
        rewards = run_episodes(policy, self.env, self.seeds).reward.mean(axis=1)
        mean = float(rewards.mean())
        self.curve.append((self.num_timesteps, mean))
        self._results.append(rewards)
        self.logger.record("eval/mean_reward", mean)
        if self._best_rewards is None:
            self._keep(rewards)
        else:
            gain, half_width = t_interval(rewards - self._best_rewards)
            self.last_gain = PairedDifference("best", gain, half_width)
            self.logger.record("eval/gain_over_best", gain)
            if self.last_gain.is_positive():
                self._keep(rewards)
        self._write_log()

    def _keep(self, rewards: np.ndarray) -> None:
        self.best_timesteps = self.num_timesteps
        self._best_rewards = rewards
        self.best_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.best_path, self.model.save)

    def _write_log(self) -> None:
        if self.log_path is None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(
            self.log_path,
            lambda file: np.savez(
                file,
                timesteps=np.array([t for t, _ in self.curve], dtype=np.int64),
                results=np.array(self._results),
                best_timesteps=np.int64(self.best_timesteps or 0),
            ),
        )
