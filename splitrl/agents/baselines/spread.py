"""The part of a request's latency a device cannot predict, as a spread: RTT jitter and server queueing.

A device knows the distribution of its round-trip time (it measures it) and the server's service
model at the load the server reports, but not this request's draws. A point prediction at their
means ranks an action that finishes just before the deadline as safe, while the jitter and the
queueing tail make it miss; with a miss penalty the expected reward of such actions is lower.
:class:`LatencySpread` averages the predicted reward over fixed draws from those models.
"""

from __future__ import annotations

import numpy as np

from splitrl.envs.forecast import ActionOutcomes, ForecastView

#: draws of the RTT and the queueing per prediction
DEFAULT_SPREAD_DRAWS = 64


class LatencySpread:
    """The expected reward of predicted outcomes over the RTT's and the server queue's spread.

    At :meth:`reset`, ``draws`` round-trip times are drawn from the env's RTT model with this
    object's own generator (seeded by ``seed`` at every reset, so every episode uses the same
    draws), and as many stratified uniform variates for the server's queueing model; the env's own
    draws are never read.

    :param draws: draws per prediction (at least 1)
    :param seed: seed of the draws
    """

    def __init__(self, draws: int = DEFAULT_SPREAD_DRAWS, seed: int = 0) -> None:
        if draws < 1:
            raise ValueError(f"draws must be at least 1, got {draws}")
        self.draws = draws
        self.seed = seed
        self._rtt_shift = np.zeros(draws)
        self._queue_u: list[float] = []
        self._queue_shift: dict[float, np.ndarray] = {}
        self._server_job_s = 0.0

    def reset(self, env: ForecastView) -> None:
        """Draw the RTTs and queueing variates for ``env``'s models."""
        rng = np.random.default_rng(self.seed)
        rtt = np.array([env.rtt.sample(rng) for _ in range(self.draws)])
        self._rtt_shift = rtt - env.rtt.mean_s
        self._queue_u = rng.permutation((np.arange(self.draws) + 0.5) / self.draws).tolist()
        self._queue_shift = {}
        self._server_job_s = env.server_job_s

    def offsets(self, env: ForecastView) -> np.ndarray:
        """The latency an offloaded request adds to its predicted latency, one per draw (seconds):
        the RTT's and the queueing's draws minus their means, at the load the server last reported.
        """
        if not self._queue_u:
            raise RuntimeError("LatencySpread: call reset(env) before using the spread")
        load = env.knowledge.server_load
        if load not in self._queue_shift:
            mean = env.server_load.queueing_delay(load, self._server_job_s)
            self._queue_shift[load] = (
                np.array(
                    [
                        env.server_load.queueing_delay(load, self._server_job_s, u)
                        for u in self._queue_u
                    ]
                )
                - mean
            )
        return self._rtt_shift + self._queue_shift[load]

    def expected_rewards(self, predicted: ActionOutcomes, env: ForecastView) -> np.ndarray:
        """The reward of each action averaged over the draws, from ``env.predict_actions`` outcomes.

        :param predicted: outcomes predicted at the mean RTT and the mean queueing delay of the
            load the server last reported
        :param env: the env (the server's service model and the reward)
        """
        spec = env.reward_spec
        rewards = spec.rewards(predicted.correct, predicted.latency_s, predicted.energy_j)
        offloaded = predicted.offloaded
        rewards[offloaded] = spec.expected_rewards(
            predicted.correct[offloaded],
            predicted.latency_s[offloaded],
            predicted.energy_j[offloaded],
            self.offsets(env),
        )
        return np.asarray(rewards)
