"""A channel with a fixed capacity, for tests and hand checks."""

from __future__ import annotations

import numpy as np

from splitrl.envs.channels.base import PiecewiseConstantChannel
from splitrl.envs.traces import MAX_RATE_BPS


class ConstantChannel(PiecewiseConstantChannel):
    """Uplink with the same capacity at all times: a transfer of ``n`` bytes takes
    ``8 n / rate_bps`` seconds.

    :param rate_bps: capacity in bit/s (positive)
    :param kwargs: :class:`PiecewiseConstantChannel` options
    """

    _SEGMENT_S = 3600.0

    def __init__(self, rate_bps: float, **kwargs: float) -> None:
        super().__init__(**kwargs)
        if not (np.isfinite(rate_bps) and 0.0 < rate_bps <= MAX_RATE_BPS):
            raise ValueError(
                f"rate_bps must be positive and at most {MAX_RATE_BPS:g}, got {rate_bps}"
            )
        self.rate_bps = float(rate_bps)

    def _generate_segments(self, rng: np.random.Generator) -> tuple[list[float], list[float]]:
        return [self._SEGMENT_S], [self.rate_bps]

    def __repr__(self) -> str:
        return f"ConstantChannel(rate_bps={self.rate_bps:g})"
