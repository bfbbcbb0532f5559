"""Training callbacks: split-computing metrics for TensorBoard."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from splitrl.envs.actions import ActionTable

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
        triples = np.array(np.unravel_index(flat, self.actions.nvec)).T
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
