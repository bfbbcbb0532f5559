"""Replay of a measured bandwidth trace."""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from splitrl.envs.channels.base import PiecewiseConstantChannel
from splitrl.envs.traces import Trace


class TraceChannel(PiecewiseConstantChannel):
    """Capacity replayed from a :class:`~splitrl.envs.traces.Trace`, looping at its end.

    Each realization starts at an offset drawn uniformly from ``[0, duration)``, so episodes see
    different parts of the trace; the episode's ``t = 0`` is that offset.

    :param trace: the trace to replay
    :param scale: factor applied to every rate (e.g. to use a downlink trace as a slower uplink)
    :param random_start: draw the start offset from the generator; ``False`` always starts at 0
    :param kwargs: :class:`PiecewiseConstantChannel` options
    """

    def __init__(
        self,
        trace: Trace,
        scale: float = 1.0,
        random_start: bool = True,
        **kwargs: float,
    ) -> None:
        super().__init__(**kwargs)
        if not (np.isfinite(scale) and scale > 0.0):
            raise ValueError(f"scale must be positive and finite, got {scale}")
        self.trace = trace
        self.scale = float(scale)
        self.random_start = random_start
        self._durations = list(trace.durations_s)
        self._scaled_rates = [rate * self.scale for rate in trace.rates_bps]
        self._offset_s = 0.0
        self._started = False

    @property
    def offset_s(self) -> float:
        """Position in the trace that the current realization started from, in seconds."""
        return self._offset_s

    def _start(self, rng: np.random.Generator) -> None:
        duration = self.trace.duration_s
        self._offset_s = float(rng.uniform(0.0, duration)) if self.random_start else 0.0
        self._started = False

    def _generate_segments(self, rng: np.random.Generator) -> tuple[list[float], list[float]]:
        if self._started:
            return self._durations, self._scaled_rates
        # The first block runs from the offset to the end of the trace, starting mid-segment.
        self._started = True
        boundaries = self.trace.boundaries_s
        k = min(bisect_right(boundaries, self._offset_s) - 1, len(self._durations) - 1)
        durations = [boundaries[k + 1] - self._offset_s, *self._durations[k + 1 :]]
        return durations, self._scaled_rates[k:]

    def __repr__(self) -> str:
        return f"TraceChannel(trace={self.trace!r}, scale={self.scale:g})"
