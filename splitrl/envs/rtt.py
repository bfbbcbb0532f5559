"""Round-trip time between the device and the edge server."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from splitrl.envs.channels.base import private_generator

JITTER_DISTRIBUTIONS = ("exponential", "lognormal", "none")


class RTTModel:
    """Round-trip time as a fixed base plus a random, non-negative jitter.

    ``RTT = base_s + J`` where ``J`` is exponential with mean ``jitter_mean_s`` (the default;
    memoryless queueing in the network), log-normal with mean ``jitter_mean_s`` and log-standard
    deviation ``jitter_sigma`` (heavier tail), or zero (``"none"``). Without an explicit generator,
    samples are drawn in blocks from a private stream seeded from the ``rng`` given to
    :meth:`reset`, so a sample costs a list pop.

    :param base_s: propagation and processing part of the RTT in seconds
    :param jitter_mean_s: mean of the jitter in seconds
    :param jitter: one of :data:`JITTER_DISTRIBUTIONS`
    :param jitter_sigma: standard deviation of ``log J`` for the log-normal jitter
    """

    _BLOCK = 1024

    def __init__(
        self,
        base_s: float = 0.02,
        jitter_mean_s: float = 0.005,
        jitter: str = "exponential",
        jitter_sigma: float = 0.5,
    ) -> None:
        if not (math.isfinite(base_s) and base_s >= 0.0):
            raise ValueError(f"base_s must be non-negative, got {base_s}")
        if not (math.isfinite(jitter_mean_s) and jitter_mean_s >= 0.0):
            raise ValueError(f"jitter_mean_s must be non-negative, got {jitter_mean_s}")
        if jitter not in JITTER_DISTRIBUTIONS:
            raise ValueError(
                f"unknown jitter {jitter!r}; expected one of {', '.join(JITTER_DISTRIBUTIONS)}"
            )
        if not (math.isfinite(jitter_sigma) and jitter_sigma > 0.0):
            raise ValueError(f"jitter_sigma must be positive, got {jitter_sigma}")
        self.base_s = float(base_s)
        self.jitter_mean_s = float(jitter_mean_s) if jitter != "none" else 0.0
        self.jitter = jitter
        self.jitter_sigma = float(jitter_sigma)
        self._rng: np.random.Generator | None = None
        self._buffer: list[float] = []

    @property
    def mean_s(self) -> float:
        """Mean round-trip time in seconds."""
        return self.base_s + self.jitter_mean_s

    def reset(self, rng: np.random.Generator) -> None:
        """Start a new realization.

        :param rng: the environment's generator; one number is drawn from it to seed the model's
            own stream
        """
        self._rng = private_generator(rng)
        self._buffer = []

    def sample(self, rng: np.random.Generator | None = None) -> float:
        """Draw one round-trip time in seconds.

        :param rng: draw from this generator instead of the model's own stream (e.g. a stream the
            environment keeps per request); ``None`` uses the stream seeded in :meth:`reset`
        """
        if rng is not None:
            return self.base_s + self._jitter(rng, None)
        if not self._buffer:
            self._refill()
        return self._buffer.pop()

    def _refill(self) -> None:
        if self._rng is None:
            raise RuntimeError("RTTModel: call reset(rng) before sample(), or pass a generator")
        self._buffer = (self.base_s + self._jitter(self._rng, self._BLOCK)).tolist()

    def _jitter(self, rng: np.random.Generator, size: int | None) -> Any:
        """``size`` jitter draws (an array), or one float when ``size`` is ``None``."""
        if self.jitter_mean_s == 0.0:
            return 0.0 if size is None else np.zeros(size)
        if self.jitter == "exponential":
            return rng.exponential(self.jitter_mean_s, size)
        mu = math.log(self.jitter_mean_s) - 0.5 * self.jitter_sigma**2
        return rng.lognormal(mu, self.jitter_sigma, size)

    def __repr__(self) -> str:
        return (
            f"RTTModel(base_s={self.base_s:g}, jitter_mean_s={self.jitter_mean_s:g}, "
            f"jitter={self.jitter!r})"
        )
