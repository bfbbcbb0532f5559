"""Cellular uplink as a doubly stochastic packet process: a wandering rate, packets, outages."""

from __future__ import annotations

import math

import numpy as np

from splitrl.envs.channels.base import PiecewiseConstantChannel
from splitrl.envs.traces import MAX_RATE_BPS, MIN_SEGMENT_S

#: the longest outage a realization draws, in seconds (the log-normal's tail is cut there)
MAX_OUTAGE_DURATION_S = 60.0


class CellularChannel(PiecewiseConstantChannel):
    """A cellular link as Sprout models it: Poisson packet deliveries at a rate that wanders,
    and outages.

    Winstein et al. (NSDI 2013) describe a cellular link as a doubly stochastic process: packets
    are delivered as a Poisson process whose rate does a random walk, and the link now and then
    goes silent. Here, per bin of ``bin_s`` seconds:

    * the log of the delivery rate follows an Ornstein-Uhlenbeck process (a random walk pulled
      back to its mean, so it stays in range) with stationary standard deviation ``log_std`` and
      correlation time ``correlation_s``:
      ``x_(k+1) = mu + a (x_k - mu) + sqrt(1 - a^2) log_std z``, ``a = exp(-bin_s /
      correlation_s)``, ``mu = log(mean_rate_bps) - log_std^2 / 2`` so that the rate's mean is
      ``mean_rate_bps``;
    * the bin's capacity is the number of packets of ``packet_bytes`` delivered in it (Poisson
      with mean ``rate * bin_s / (8 packet_bytes)``) times their bits over ``bin_s``: the
      texture of a packet-delivery trace (Mahimahi) binned as :class:`TraceChannel` bins it;
    * outages start as a Poisson process of ``outage_rate_per_s`` while the link is up and last
      a log-normal time with median ``median_outage_s`` and log standard deviation
      ``outage_log_std`` (cut at :data:`MAX_OUTAGE_DURATION_S`), in whole bins; an outage carries
      nothing. The rate keeps wandering underneath.

    Each realization starts with the link up, at a log rate drawn from the stationary
    distribution. The long-run mean capacity is ``mean_rate_bps`` times the share of time the
    link is up. The
    defaults (5 Mbit/s, log std 0.5, 2 s, an outage every 20 s of median 0.5 s with log std 1.0,
    so one in about 25 lasts over 2.5 s) are a generic LTE-like uplink; no trace was fitted.

    :param mean_rate_bps: mean delivery rate while the link is up, in bit/s
    :param log_std: stationary standard deviation of the log rate (0: a constant rate)
    :param correlation_s: correlation time of the log rate in seconds
    :param outage_rate_per_s: outages started per second of up time (0: none)
    :param median_outage_s: median outage duration in seconds
    :param outage_log_std: standard deviation of the log outage duration (0: all equal)
    :param bin_s: bin length in seconds: the capacity is constant over each bin
    :param packet_bytes: bytes per delivered packet
    :param kwargs: :class:`PiecewiseConstantChannel` options
    """

    _BLOCK = 256

    def __init__(
        self,
        mean_rate_bps: float = 5e6,
        log_std: float = 0.5,
        correlation_s: float = 2.0,
        outage_rate_per_s: float = 0.05,
        median_outage_s: float = 0.5,
        outage_log_std: float = 1.0,
        bin_s: float = 0.1,
        packet_bytes: int = 1500,
        **kwargs: float,
    ) -> None:
        super().__init__(**kwargs)
        if not (math.isfinite(mean_rate_bps) and 0.0 < mean_rate_bps <= MAX_RATE_BPS):
            raise ValueError(
                f"mean_rate_bps must be positive and at most {MAX_RATE_BPS:g}, got {mean_rate_bps}"
            )
        non_negative = {
            "log_std": log_std,
            "outage_rate_per_s": outage_rate_per_s,
            "outage_log_std": outage_log_std,
        }
        for name, value in non_negative.items():
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be finite and non-negative, got {value}")
        for name, value in {
            "correlation_s": correlation_s,
            "median_outage_s": median_outage_s,
        }.items():
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be positive, got {value}")
        if not (math.isfinite(bin_s) and bin_s >= MIN_SEGMENT_S):
            raise ValueError(f"bin_s must be at least {MIN_SEGMENT_S:g} s, got {bin_s}")
        if int(packet_bytes) != packet_bytes or packet_bytes < 1:
            raise ValueError(f"packet_bytes must be a positive integer, got {packet_bytes}")
        self.mean_rate_bps = float(mean_rate_bps)
        self.log_std = float(log_std)
        self.correlation_s = float(correlation_s)
        self.outage_rate_per_s = float(outage_rate_per_s)
        self.median_outage_s = float(median_outage_s)
        self.outage_log_std = float(outage_log_std)
        self.bin_s = float(bin_s)
        self.packet_bytes = int(packet_bytes)
        self._mu = math.log(self.mean_rate_bps) - self.log_std**2 / 2.0
        self._persistence = math.exp(-self.bin_s / self.correlation_s)
        self._start_probability = -math.expm1(-self.outage_rate_per_s * self.bin_s)
        self._log_rate = self._mu
        self._outage_bins_left = 0

    def _start(self, rng: np.random.Generator) -> None:
        self._log_rate = self._mu + self.log_std * float(rng.standard_normal())
        self._outage_bins_left = 0

    def _generate_segments(self, rng: np.random.Generator) -> tuple[list[float], list[float]]:
        n = self._BLOCK
        innovations = math.sqrt(1.0 - self._persistence**2) * self.log_std
        shocks = innovations * rng.standard_normal(n)
        starts = rng.random(n) < self._start_probability
        durations = np.minimum(
            self.median_outage_s * np.exp(self.outage_log_std * rng.standard_normal(n)),
            MAX_OUTAGE_DURATION_S,
        )
        log_rates = np.empty(n)
        up = np.empty(n, dtype=bool)
        log_rate, outage_left = self._log_rate, self._outage_bins_left
        for k in range(n):
            log_rate = self._mu + self._persistence * (log_rate - self._mu) + shocks[k]
            log_rates[k] = log_rate
            if outage_left == 0 and starts[k]:
                outage_left = max(1, round(durations[k] / self.bin_s))
            up[k] = outage_left == 0
            outage_left = max(0, outage_left - 1)
        self._log_rate, self._outage_bins_left = log_rate, outage_left
        packet_bits = 8.0 * self.packet_bytes
        mean_packets = np.exp(log_rates) * self.bin_s / packet_bits
        packets = rng.poisson(np.minimum(mean_packets, MAX_RATE_BPS * self.bin_s / packet_bits))
        rates = np.where(up, packets * packet_bits / self.bin_s, 0.0)
        return [self.bin_s] * n, rates.tolist()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(mean_Mbps={self.mean_rate_bps / 1e6:.3g}, "
            f"log_std={self.log_std:g}, correlation_s={self.correlation_s:g}, "
            f"outage_rate_per_s={self.outage_rate_per_s:g}, "
            f"median_outage_s={self.median_outage_s:g})"
        )
