"""The channel contract and the shared piecewise-constant implementation.

A channel gives the uplink capacity (bit/s) as a function of the time ``t`` in seconds since the
episode start. Every model here is piecewise constant: a sequence of segments ``(duration,
rate)`` generated lazily, so that capacity lookups and transfer times over any number of capacity
changes and outages cost one binary search each.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from bisect import bisect_left, bisect_right
from typing import Protocol, runtime_checkable

import numpy as np

_SEED_BOUND = 2**63


class ChannelError(RuntimeError):
    """A channel cannot answer a query (used before ``reset``, time outside its history, or no
    capacity for longer than its outage bound)."""


@runtime_checkable
class Channel(Protocol):
    """What the environment needs from an uplink model."""

    def reset(self, rng: np.random.Generator) -> None:
        """Start a new realization; all randomness comes from ``rng``."""

    def capacity(self, t: float) -> float:
        """Uplink capacity in bit/s at time ``t`` (seconds since the episode start)."""

    def transfer_time(self, n_bytes: int, t0: float) -> float:
        """Seconds needed to push ``n_bytes`` through the uplink starting at ``t0``."""

    def mean_throughput(self, t0: float, t1: float) -> float:
        """Capacity averaged over ``[t0, t1]`` in bit/s."""


def private_generator(rng: np.random.Generator) -> np.random.Generator:
    """Derive an independent generator from one draw of ``rng``.

    A component that keeps its own stream has a realization that depends only on the episode seed,
    not on how often other components (driven by the agent's actions) consumed ``rng``, so two
    policies evaluated with the same seed see the same channel.

    :param rng: the environment's generator
    :return: a new generator seeded from a single draw of ``rng``
    """
    return np.random.default_rng(int(rng.integers(_SEED_BOUND)))


class PiecewiseConstantChannel(ABC):
    """Base class of channels whose capacity is constant over generated segments.

    Subclasses implement :meth:`_generate_segments` (the next block of segments) and, when they
    carry state, :meth:`_start` (the initial state of a realization). This class keeps the segment
    start times, rates and the cumulative number of bits delivered at each segment start in plain
    Python lists, extends them lazily as queries move forward in time, and answers every query
    with one ``bisect``.

    Memory stays bounded on long episodes: when the lists grow past a threshold, the segments that
    ended more than ``history_s`` before the time being queried are dropped. Queries for times
    before the retained history raise :class:`ChannelError`; the environment only looks back over
    its last few transfers, far less than the default of 300 s.

    :param history_s: how far (seconds) before the current query the segments are kept
    :param max_outage_s: a transfer that finds no capacity for this long (seconds of simulated
        time) raises :class:`ChannelError` instead of generating segments forever
    """

    _COMPACT_MIN_SEGMENTS = 4096

    def __init__(self, *, history_s: float = 300.0, max_outage_s: float = 3600.0) -> None:
        if not history_s > 0.0:
            raise ValueError(f"history_s must be positive, got {history_s}")
        if not max_outage_s > 0.0:
            raise ValueError(f"max_outage_s must be positive, got {max_outage_s}")
        self.history_s = float(history_s)
        self.max_outage_s = float(max_outage_s)
        self._rng: np.random.Generator | None = None
        self._starts: list[float] = [0.0]
        self._cum_bits: list[float] = [0.0]
        self._rates: list[float] = []
        # Before reset every query lands in _make_available, which reports the missing reset.
        self._origin = 0.0
        self._end = -math.inf
        self._compact_at = self._COMPACT_MIN_SEGMENTS

    def reset(self, rng: np.random.Generator) -> None:
        """Start a new realization.

        :param rng: the environment's generator; one number is drawn from it to seed the channel's
            own stream (see :func:`private_generator`)
        """
        self._rng = private_generator(rng)
        self._starts = [0.0]
        self._cum_bits = [0.0]
        self._rates = []
        self._origin = 0.0
        self._end = 0.0
        self._compact_at = self._COMPACT_MIN_SEGMENTS
        self._start(self._rng)

    def _start(self, rng: np.random.Generator) -> None:  # noqa: B027 (optional hook)
        """Draw the initial state of a realization (stateless models need nothing)."""

    @abstractmethod
    def _generate_segments(self, rng: np.random.Generator) -> tuple[list[float], list[float]]:
        """Return the next block of segments as ``(durations_s, rates_bps)``.

        A block holds at least one segment; every duration is positive and every rate is
        non-negative. Generating many segments per call amortizes numpy's per-call overhead.
        """

    def capacity(self, t: float) -> float:
        """Uplink capacity at time ``t``.

        :param t: seconds since the episode start
        :return: capacity in bit/s (0.0 during an outage)
        """
        if not self._origin <= t < self._end:
            self._make_available(t)
        return self._rates[bisect_right(self._starts, t) - 1]

    def transfer_time(self, n_bytes: int, t0: float) -> float:
        """Time to push ``n_bytes`` starting at ``t0``, integrating the time-varying capacity.

        The transfer ends at the first time ``t1`` where the bits delivered since ``t0`` reach
        ``8 * n_bytes``; it may span any number of capacity changes and outages.

        :param n_bytes: payload size in bytes (0 gives 0.0)
        :param t0: start of the transfer, seconds since the episode start
        :return: duration of the transfer in seconds
        """
        if n_bytes <= 0:
            if n_bytes == 0:
                return 0.0
            raise ValueError(f"n_bytes must be non-negative, got {n_bytes}")
        if not self._origin <= t0 < self._end:
            self._make_available(t0)
        starts = self._starts
        cum_bits = self._cum_bits
        rates = self._rates
        i = bisect_right(starts, t0) - 1
        target = cum_bits[i] + rates[i] * (t0 - starts[i]) + 8.0 * n_bytes
        if target > cum_bits[-1]:
            self._extend_to_bits(target, t0)
        # Segment j is the one in which the cumulative bits cross the target; it has a positive
        # rate because the cumulative count grows inside it.
        j = bisect_left(cum_bits, target) - 1
        return starts[j] + (target - cum_bits[j]) / rates[j] - t0

    def capacities(self, t: np.ndarray) -> np.ndarray:
        """:meth:`capacity` at many times at once (numpy), equal to it elementwise.

        :param t: times, seconds since the episode start
        """
        t = np.asarray(t, dtype=float)
        if t.size == 0:
            return np.zeros(t.shape)
        self._cover(float(t.min()), float(t.max()))
        starts = np.asarray(self._starts)
        return np.asarray(self._rates)[np.searchsorted(starts, t, side="right") - 1]

    def transfer_times(self, n_bytes: int | np.ndarray, t0: np.ndarray) -> np.ndarray:
        """:meth:`transfer_time` of many transfers at once (numpy), equal to it elementwise: what
        a request would take from each of several device-free times, or what each of several
        payloads would take.

        :param n_bytes: payload size in bytes, or sizes broadcast against ``t0``
        :param t0: start times of the transfer, seconds since the episode start
        """
        sizes = np.asarray(n_bytes)
        t0, sizes = np.broadcast_arrays(np.asarray(t0, dtype=float), sizes)
        if sizes.size and sizes.min() < 0:
            raise ValueError(f"n_bytes must be non-negative, got {sizes.min():g}")
        if t0.size == 0 or not sizes.any():
            return np.zeros(t0.shape)
        first = float(t0.min())
        self._cover(first, float(t0.max()))
        starts = np.asarray(self._starts)
        i = np.searchsorted(starts, t0, side="right") - 1
        target = (
            np.asarray(self._cum_bits)[i]
            + np.asarray(self._rates)[i] * (t0 - starts[i])
            + 8.0 * sizes
        )
        last = float(target.max())
        if last > self._cum_bits[-1]:
            self._extend_to_bits(last, first)
        # as in transfer_time: the segment in which the cumulative bits cross each target
        starts = np.asarray(self._starts)
        cum_bits = np.asarray(self._cum_bits)
        j = np.searchsorted(cum_bits, target, side="left") - 1
        with np.errstate(divide="ignore", invalid="ignore"):
            # an empty payload (answered 0 below) may meet a segment without capacity
            seconds = starts[j] + (target - cum_bits[j]) / np.asarray(self._rates)[j] - t0
        return np.where(sizes > 0, seconds, 0.0)

    def _cover(self, first: float, last: float) -> None:
        """Make the segments from ``first`` to ``last`` available, keeping the history before
        ``first``."""
        if not self._origin <= first < self._end:
            self._make_available(first)
        if not last < self._end:
            self._make_available(last, keep_from=first)

    def mean_throughput(self, t0: float, t1: float) -> float:
        """Capacity averaged over ``[t0, t1]``; the capacity at ``t0`` when the interval is empty.

        :param t0: start of the interval, seconds since the episode start
        :param t1: end of the interval (``t1 >= t0``)
        :return: mean capacity in bit/s
        """
        if t1 < t0:
            raise ValueError(f"mean_throughput needs t0 <= t1, got t0={t0}, t1={t1}")
        if t1 == t0:
            return self.capacity(t0)
        bits_at_t0 = self._bits_at(t0)
        return (self._bits_at(t1) - bits_at_t0) / (t1 - t0)

    def _bits_at(self, t: float) -> float:
        """Bits the channel could have delivered between the episode start and ``t``."""
        if not self._origin <= t < self._end:
            self._make_available(t)
        i = bisect_right(self._starts, t) - 1
        return self._cum_bits[i] + self._rates[i] * (t - self._starts[i])

    def _make_available(self, t: float, keep_from: float | None = None) -> None:
        """Generate segments up to ``t``, or explain why ``t`` cannot be answered.

        :param keep_from: keep the history before this time instead of before ``t``
        """
        if not (t >= 0.0 and math.isfinite(t)):
            raise ValueError(f"time must be a finite, non-negative number of seconds, got {t}")
        if t < self._origin:
            raise ChannelError(
                f"{type(self).__name__}: t={t:g} s precedes the retained history "
                f"(starts at {self._origin:g} s; history_s={self.history_s:g})"
            )
        if self._rng is None:
            raise ChannelError(f"{type(self).__name__}: call reset(rng) before querying it")
        while self._end <= t:
            self._compact(t if keep_from is None else keep_from)
            self._append_block()

    def _extend_to_bits(self, target: float, t0: float) -> None:
        stall_since = self._end
        while self._cum_bits[-1] < target:
            self._compact(t0)
            bits_before = self._cum_bits[-1]
            self._append_block()
            if self._cum_bits[-1] > bits_before:
                stall_since = self._end
            elif self._end - stall_since > self.max_outage_s:
                raise ChannelError(
                    f"{type(self).__name__}: no capacity for more than {self.max_outage_s:g} s of "
                    f"simulated time after t={stall_since:g} s; the transfer started at "
                    f"t0={t0:g} s can never finish"
                )

    def _append_block(self) -> None:
        assert self._rng is not None
        durations, rates = self._generate_segments(self._rng)
        starts = self._starts
        cum_bits = self._cum_bits
        t = starts[-1]
        bits = cum_bits[-1]
        for duration, rate in zip(durations, rates, strict=True):
            t += duration
            bits += rate * duration
            starts.append(t)
            cum_bits.append(bits)
        self._rates.extend(rates)
        if not t > self._end:
            raise ChannelError(f"{type(self).__name__}: the segment generator produced no time")
        self._end = t

    def _compact(self, now: float) -> None:
        """Drop the segments that ended more than ``history_s`` before ``now``."""
        if len(self._rates) < self._compact_at:
            return
        keep_from = bisect_right(self._starts, now - self.history_s) - 1
        if keep_from > 0:
            del self._starts[:keep_from]
            del self._cum_bits[:keep_from]
            del self._rates[:keep_from]
            self._origin = self._starts[0]
        # Doubling the threshold keeps compaction amortized O(1) when the history is dense.
        self._compact_at = max(self._COMPACT_MIN_SEGMENTS, 2 * len(self._rates))
