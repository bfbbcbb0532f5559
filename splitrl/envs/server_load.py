"""Load of the shared edge server and its effect on the time to serve one request."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from splitrl.envs.channels.base import ChannelError, PiecewiseConstantChannel
from splitrl.envs.markov_chain import MarkovChain

_T = TypeVar("_T", float, np.ndarray)

SERVER_DISCIPLINES = ("processor-sharing", "fcfs")
DEFAULT_LOAD_LEVELS = (0.1, 0.5, 0.9)
DEFAULT_LOAD_TRANSITIONS = (
    (0.95, 0.05, 0.0),
    (0.05, 0.9, 0.05),
    (0.0, 0.1, 0.9),
)


class ServerLoad:
    """Markov-modulated utilization ``rho(t)`` of the edge server by other tenants.

    The utilization follows a discrete-time Markov chain
    (:class:`~splitrl.envs.markov_chain.MarkovChain`) over ``levels`` with one transition per
    ``slot_s`` seconds (the defaults, 0.1 / 0.5 / 0.9 per 1 s slot, spend 40 / 40 / 20 % of the
    time at each level with mean sojourns of 20 / 10 / 10 s; mean load 0.42).

    How the load delays a request of service time ``S`` (its compute time on an idle server)
    follows the M/M/1 queue with the request's peers having the same mean service time, under
    one of two disciplines with the same mean response time ``S / (1 - rho)``:

    * ``"processor-sharing"`` (default; a GPU or CPU time-shared by all requests): the request
      runs ``1 / (1 - rho)`` times slower and does not queue. Deterministic given ``rho``.
    * ``"fcfs"`` (one inference worker, first come first served): the request runs at full
      speed after waiting ``W``, with ``P(W > 0) = rho`` and ``W | W > 0`` exponential with mean
      ``S / (1 - rho)``, so ``E[W] = rho S / (1 - rho)``.

    Only one of the two effects is non-trivial for a given discipline, so an environment applies
    both :meth:`compute_slowdown` and :meth:`queueing_delay` without counting the load twice.
    The utilization is capped at ``1 - 1 / max_slowdown`` so that the mean response time stays
    below ``max_slowdown x S`` (an admission-controlled server).

    :param levels: utilization of each state, in [0, 1)
    :param transition_matrix: per-slot transition probabilities (row-stochastic, irreducible, no
        absorbing state)
    :param slot_s: slot length in seconds
    :param discipline: one of :data:`SERVER_DISCIPLINES`
    :param max_slowdown: cap on the mean response time relative to ``S`` (greater than 1)
    """

    def __init__(
        self,
        levels: Sequence[float] = DEFAULT_LOAD_LEVELS,
        transition_matrix: Sequence[Sequence[float]] | np.ndarray = DEFAULT_LOAD_TRANSITIONS,
        slot_s: float = 1.0,
        discipline: str = "processor-sharing",
        max_slowdown: float = 10.0,
    ) -> None:
        if not all(0.0 <= level < 1.0 for level in levels):
            raise ValueError(f"load levels must lie in [0, 1), got {tuple(levels)}")
        if discipline not in SERVER_DISCIPLINES:
            raise ValueError(
                f"unknown discipline {discipline!r}; expected one of {', '.join(SERVER_DISCIPLINES)}"
            )
        if not (math.isfinite(max_slowdown) and max_slowdown > 1.0):
            raise ValueError(f"max_slowdown must be greater than 1, got {max_slowdown}")
        self.chain = MarkovChain(levels, transition_matrix, slot_s)
        self._trajectory = _Trajectory(self.chain)
        self.discipline = discipline
        self.max_slowdown = float(max_slowdown)
        self._max_load = 1.0 - 1.0 / self.max_slowdown
        self._processor_sharing = discipline == "processor-sharing"
        self._was_reset = False

    @property
    def levels(self) -> tuple[float, ...]:
        """Utilization of each state."""
        return self.chain.levels

    @property
    def mean_load(self) -> float:
        """Long-run mean utilization."""
        return self.chain.mean_level

    def reset(self, rng: np.random.Generator) -> None:
        """Start a new load trajectory, its first state drawn from the stationary distribution.

        :param rng: the environment's generator; one number is drawn from it to seed the
            trajectory's own stream
        """
        self._trajectory.reset(rng)
        self._was_reset = True

    def load(self, t: float) -> float:
        """Utilization at time ``t``.

        :param t: seconds since the episode start
        :return: utilization in [0, 1)
        """
        return self._look_up(self._trajectory.capacity, t)

    def loads(self, t: np.ndarray) -> np.ndarray:
        """:meth:`load` at many times at once (numpy)."""
        return self._look_up(self._trajectory.capacities, t)

    def _look_up(self, lookup: Callable[[_T], _T], t: _T) -> _T:
        try:
            return lookup(t)
        except ChannelError:
            if not self._was_reset:
                raise ChannelError("ServerLoad: call reset(rng) before load()") from None
            raise

    def compute_slowdown(self, load: float) -> float:
        """Factor by which the load stretches a request's compute time.

        :param load: utilization in [0, 1)
        :return: ``1 / (1 - min(load, 1 - 1 / max_slowdown))`` under processor sharing, 1.0 under
            FCFS
        """
        if not self._processor_sharing:
            return 1.0
        return 1.0 / (1.0 - min(load, self._max_load))

    def queueing_delay(self, load: float, service_time: float, u: float | None = None) -> float:
        """Time a request waits before its service starts.

        The random part is an explicit uniform variate so that an environment can draw it once
        per request and evaluate every action of that request with the same draw.

        :param load: utilization when the request reaches the server (see :meth:`load`)
        :param service_time: the request's compute time on an idle server, in seconds
        :param u: a uniform variate in [0, 1) for a sampled FCFS wait; ``None`` returns its mean
            ``rho S / (1 - rho)`` instead
        :return: waiting time in seconds (always 0.0 under processor sharing)
        """
        if self._processor_sharing:
            return 0.0
        rho = min(load, self._max_load)
        if u is None:
            return rho * service_time / (1.0 - rho)
        if u >= rho:
            return 0.0
        # Given u < rho, u / rho is uniform on [0, 1): one variate decides both cases.
        return -service_time / (1.0 - rho) * math.log1p(-u / rho)

    def __repr__(self) -> str:
        return (
            f"ServerLoad(levels={self.levels}, slot_s={self.chain.slot_s:g}, "
            f"discipline={self.discipline!r}, max_slowdown={self.max_slowdown:g})"
        )


class _Trajectory(PiecewiseConstantChannel):
    """One realization of the utilization, kept as the channels keep their capacity: piecewise
    constant over the chain's sojourns, generated as lookups move forward, one bisect per lookup
    (its :meth:`capacity` is the utilization)."""

    def __init__(self, chain: MarkovChain) -> None:
        super().__init__()
        self._chain = chain

    def _start(self, rng: np.random.Generator) -> None:
        self._chain.start(rng)

    def _generate_segments(self, rng: np.random.Generator) -> tuple[list[float], list[float]]:
        return self._chain.sojourns(rng)
