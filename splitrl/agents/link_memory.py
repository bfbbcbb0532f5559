"""What the device remembers about its link over many transfers, as observation features.

The observation holds the last few throughputs, and the causal rules forecast from those: enough
to follow a link that drifts, too little to tell a link that drops out for seconds now and then
from one that never does. :class:`LinkMemory` keeps slow statistics of every throughput the
device measured in the episode (exponentially weighted over transfers, not over time, so that a
stretch of local decisions does not erase them): the level and spread of the log throughput, how
often a transfer fell far below that level (a drop: an outage or a transfer given up at the
timeout), and how long ago the last drop was. A learner that observes them
(``LearnerSpec.link_memory``) can make a correction depend on the kind of link it is on, where
the last four throughputs look alike.

It reads only :class:`~splitrl.envs.observation.DeviceKnowledge` (the newest throughput and when
its transfer ended) and the request's start, so a device computes the same features.
"""

from __future__ import annotations

import math

import numpy as np

from splitrl.envs.forecast import ForecastView
from splitrl.envs.observation import scale_throughput

#: how many features :class:`LinkMemory` gives
N_MEMORY_FEATURES = 4
#: weight of the newest transfer in the running statistics (about the last 20 transfers count)
DEFAULT_DECAY = 0.05
#: a transfer is a drop when its throughput is below this fraction of the running level
DEFAULT_DROP_RATIO = 0.25
#: the time scale of the time-since-drop feature, in seconds
_DROP_AGE_SCALE_S = 10.0
_LN10 = math.log(10.0)


class LinkMemory:
    """Slow statistics of the device's throughput measurements in the current episode.

    Features, in order: the running level of the throughput (the mean of its log, scaled like the
    throughput features), the running spread of ``log10`` throughput (a standard deviation in
    decades, clipped to 1), the running fraction of transfers that were drops, and the time since
    the last drop ``t / (t + 10 s)`` (1 when there was none).

    :param decay: weight of each new transfer in the running statistics, in ``(0, 1]``
    :param drop_ratio: a transfer is a drop when its throughput is below ``drop_ratio`` times the
        running level, in ``(0, 1)``
    """

    def __init__(
        self, decay: float = DEFAULT_DECAY, drop_ratio: float = DEFAULT_DROP_RATIO
    ) -> None:
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"link memory decay must be in (0, 1], got {decay}")
        if not 0.0 < drop_ratio < 1.0:
            raise ValueError(f"link memory drop_ratio must be in (0, 1), got {drop_ratio}")
        self.decay = decay
        self._log_drop_ratio = math.log(drop_ratio)
        self._level = 0.0
        self._variance = 0.0
        self._drop_rate = 0.0
        self._last_drop_s = -math.inf
        self._seen_end = -math.inf

    def reset(self, env: ForecastView) -> None:
        """Forget the previous episode: the level starts at the device's prior throughput."""
        knowledge = env.knowledge
        self._level = math.log(max(knowledge.prior_bps, 1.0))
        self._variance = 0.0
        self._drop_rate = 0.0
        self._last_drop_s = -math.inf
        self._seen_end = knowledge.last_transfer_end

    def __call__(self, env: ForecastView) -> np.ndarray:
        """The features at the current request, ``(N_MEMORY_FEATURES,)`` float32; call once per
        request (a transfer that ended since the last call enters the statistics)."""
        knowledge = env.knowledge
        if knowledge.last_transfer_end != self._seen_end:
            self._seen_end = knowledge.last_transfer_end
            self._record(math.log(max(knowledge.throughputs[0], 1.0)), self._seen_end)
        age = env.request_start_s - self._last_drop_s
        return np.array(
            [
                scale_throughput(math.exp(self._level)),
                min(math.sqrt(self._variance) / _LN10, 1.0),
                self._drop_rate,
                age / (age + _DROP_AGE_SCALE_S) if math.isfinite(age) else 1.0,
            ],
            dtype=np.float32,
        )

    def _record(self, log_throughput: float, end_s: float) -> None:
        drop = log_throughput < self._level + self._log_drop_ratio
        if drop:
            self._last_drop_s = end_s
        deviation = log_throughput - self._level
        self._level += self.decay * deviation
        self._variance = (1.0 - self.decay) * (self._variance + self.decay * deviation**2)
        self._drop_rate += self.decay * (float(drop) - self._drop_rate)


def memory_space_bounds() -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of :class:`LinkMemory`'s features."""
    return (
        np.array([-1.0, 0.0, 0.0, 0.0], dtype=np.float32),
        np.ones(N_MEMORY_FEATURES, dtype=np.float32),
    )
