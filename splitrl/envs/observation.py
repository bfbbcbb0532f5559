"""What the device knows before it decides, and how that becomes the observation vector.

The device learns the uplink throughput from its own transfers (bytes sent over the time they
took) and from the link rate its radio reports (:mod:`splitrl.envs.link_quality`, noisy), the
end-to-end latency and the server load only from replies that have arrived, and its own backlog from
its queue. It never sees the true current capacity: the oracle baselines do, the agent does not.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

#: log10 of the throughput scale, in bit/s: features are log10(throughput / 1 Mbit/s) / 3
_LOG_MBPS_RANGE = 3.0
_MAX_LATENCY_RATIO = 10.0
_MAX_BACKLOG_FRAMES = 10.0

#: version of the observation (that of ``splitrl/SplitComputing-v1``); exported policies carry it
OBSERVATION_VERSION = 1


@dataclass(frozen=True)
class ObservationLayout:
    """Names and bounds of the observation features.

    :param history_length: how many throughput measurements are observed (newest first)
    :param link_quality: whether the radio's link-rate report is observed (after the throughputs)
    """

    history_length: int = 4
    link_quality: bool = True

    @property
    def names(self) -> list[str]:
        """Feature names, in order."""
        rates = [f"throughput_{k}" for k in range(self.history_length)]
        if self.link_quality:
            rates.append("link_quality")
        return [*rates, "estimate_age", "last_latency", "server_load", "backlog"]

    def space(self) -> spaces.Box:
        """The observation space."""
        n_rates = self.history_length + int(self.link_quality)
        low = [-1.0] * n_rates + [0.0, 0.0, 0.0, 0.0]
        high = [1.0] * n_rates + [1.0, _MAX_LATENCY_RATIO, 1.0, _MAX_BACKLOG_FRAMES]
        return spaces.Box(np.array(low, np.float32), np.array(high, np.float32), dtype=np.float32)


def scale_throughput(bps: float) -> float:
    """Throughput feature: ``log10(bps / 1e6) / 3`` clipped to ``[-1, 1]`` (1 kbit/s .. 1 Gbit/s)."""
    # conditional expressions instead of min/max: this runs in every step
    value = (math.log10(bps if bps > 1.0 else 1.0) - 6.0) / _LOG_MBPS_RANGE
    return -1.0 if value < -1.0 else 1.0 if value > 1.0 else value


def scale_age(age_s: float) -> float:
    """Estimate-age feature: ``age / (age + 1)`` of an age in seconds (1 for no measurement yet)."""
    return age_s / (age_s + 1.0) if math.isfinite(age_s) else 1.0


def unscale_throughput(feature: float) -> float:
    """Inverse of :func:`scale_throughput`, in bit/s."""
    return 1e6 * 10.0 ** (feature * _LOG_MBPS_RANGE)


class DeviceKnowledge:
    """The device's view of the world, updated from its own transfers and the replies it receives.

    :param layout: the observation layout
    :param prior_bps: throughput assumed before the first transfer (the link's nominal rate)
    :param deadline_s: latencies are observed in units of the deadline
    :param frame_interval_s: the backlog is observed in frames
    """

    def __init__(
        self,
        layout: ObservationLayout,
        prior_bps: float,
        deadline_s: float,
        frame_interval_s: float,
    ) -> None:
        self.layout = layout
        self._observes_link_quality = layout.link_quality
        self.prior_bps = prior_bps
        self.deadline_s = deadline_s
        self.frame_interval_s = frame_interval_s
        self.reset()

    def reset(self) -> None:
        """Forget everything: the start of an episode."""
        self.throughputs: deque[float] = deque(
            [self.prior_bps] * self.layout.history_length, maxlen=self.layout.history_length
        )
        # the same history as observation features, kept beside it so observe() does no math
        self._scaled: deque[float] = deque(
            [scale_throughput(self.prior_bps)] * self.layout.history_length,
            maxlen=self.layout.history_length,
        )
        self.last_transfer_end = -math.inf
        self.last_latency_s = 0.0
        self.server_load = 0.0
        #: the radio's link-rate report at the last decision (``None`` when it is not observed)
        self.link_quality_bps: float | None = None
        # replies in flight: (arrival time at the device, latency, server load it reports or None)
        self._pending: list[tuple[float, float, float | None]] = []

    @property
    def throughput_estimate_bps(self) -> float:
        """The most recent throughput measurement (the prior before any transfer)."""
        return self.throughputs[0]

    def record_transfer(self, n_bytes: int, duration_s: float, end_time: float) -> None:
        """The device finished sending ``n_bytes`` in ``duration_s``, at ``end_time``."""
        if duration_s > 0.0:
            throughput = 8.0 * n_bytes / duration_s
            self.throughputs.appendleft(throughput)
            self._scaled.appendleft(scale_throughput(throughput))
            self.last_transfer_end = end_time

    def record_completion(
        self, done_time: float, latency_s: float, server_load: float | None
    ) -> None:
        """A request will complete at ``done_time``; the device learns its outcome then."""
        self._pending.append((done_time, latency_s, server_load))

    def observe(
        self, now: float, backlog_s: float, link_quality_bps: float | None = None
    ) -> np.ndarray:
        """The observation at decision time ``now`` with the request having waited ``backlog_s``.

        :param link_quality_bps: the radio's link-rate report at ``now``; required when the layout
            observes link quality, ignored otherwise
        """
        if self._pending:
            arrived = [p for p in self._pending if p[0] <= now]
            if arrived:
                self._pending = [p for p in self._pending if p[0] > now]
                for _, latency, load in sorted(arrived):
                    self.last_latency_s = latency
                    if load is not None:
                        self.server_load = load
        rates = [*self._scaled]
        if self._observes_link_quality:
            if link_quality_bps is None:
                raise ValueError("the layout observes link quality; pass link_quality_bps")
            self.link_quality_bps = link_quality_bps
            rates.append(scale_throughput(link_quality_bps))
        return np.array(
            [
                *rates,
                scale_age(now - self.last_transfer_end),
                min(self.last_latency_s / self.deadline_s, _MAX_LATENCY_RATIO),
                self.server_load,
                min(backlog_s / self.frame_interval_s, _MAX_BACKLOG_FRAMES),
            ],
            dtype=np.float32,
        )
