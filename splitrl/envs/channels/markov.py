"""Finite-state Markov channel over bandwidth levels, and its fit to a trace."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

import numpy as np

from splitrl.envs.channels.base import PiecewiseConstantChannel
from splitrl.envs.traces import MAX_RATE_BPS, MAX_TRACE_SEGMENTS, MIN_SEGMENT_S, Trace

DEFAULT_LEVELS_BPS = (1e6, 3e6, 6e6, 10e6, 15e6)
DEFAULT_TRANSITION_MATRIX = (
    (0.9, 0.1, 0.0, 0.0, 0.0),
    (0.1, 0.8, 0.1, 0.0, 0.0),
    (0.0, 0.1, 0.8, 0.1, 0.0),
    (0.0, 0.0, 0.1, 0.8, 0.1),
    (0.0, 0.0, 0.0, 0.1, 0.9),
)


class MarkovChannel(PiecewiseConstantChannel):
    """Capacity follows a discrete-time Markov chain over bandwidth levels.

    The chain makes one transition per slot of ``slot_s`` seconds with probabilities
    ``transition_matrix[i][j]``; the capacity in state ``i`` is ``levels_bps[i]``. Segments are
    whole sojourns: the number of slots spent in state ``i`` is geometric with success probability
    ``1 - P[i][i]`` and the next state is drawn from row ``i`` without the diagonal, which is the
    same process as slot-by-slot simulation at a fraction of the cost. Each realization starts in a
    state drawn from the stationary distribution.

    The defaults are five levels from 1 to 15 Mbit/s (an LTE-uplink-like range) with a
    birth-death matrix that moves one level up or down with probability 0.1 per 0.5 s slot: a
    uniform stationary distribution, mean 7 Mbit/s, mean sojourn 5 s at the extreme levels and
    2.5 s in between.

    :param levels_bps: capacity of each state in bit/s (non-negative, at least one positive)
    :param transition_matrix: row-stochastic matrix of per-slot transition probabilities; no
        state may be absorbing (``P[i][i] < 1``) and the chain must be irreducible
    :param slot_s: slot length in seconds
    :param kwargs: :class:`PiecewiseConstantChannel` options
    """

    _BLOCK = 128

    def __init__(
        self,
        levels_bps: Sequence[float] = DEFAULT_LEVELS_BPS,
        transition_matrix: Sequence[Sequence[float]] | np.ndarray = DEFAULT_TRANSITION_MATRIX,
        slot_s: float = 0.5,
        **kwargs: float,
    ) -> None:
        super().__init__(**kwargs)
        levels = np.asarray(levels_bps, dtype=np.float64)
        matrix = np.asarray(transition_matrix, dtype=np.float64)
        n = len(levels)
        if levels.ndim != 1 or n < 2:
            raise ValueError(f"levels_bps must list at least two levels, got {levels_bps!r}")
        if not (np.all(np.isfinite(levels)) and np.all(levels >= 0.0) and np.any(levels > 0.0)):
            raise ValueError("levels_bps must be finite, non-negative and not all zero")
        if levels.max() > MAX_RATE_BPS:
            raise ValueError(
                f"levels_bps reach {levels.max():g} bit/s, above the limit of {MAX_RATE_BPS:g}"
            )
        if matrix.shape != (n, n):
            raise ValueError(f"transition_matrix must be {n}x{n}, got shape {matrix.shape}")
        if np.any(matrix < 0.0) or not np.allclose(matrix.sum(axis=1), 1.0, atol=1e-6):
            raise ValueError("transition_matrix rows must be non-negative and sum to 1")
        absorbing = np.flatnonzero(np.diag(matrix) >= 1.0)
        if absorbing.size:
            raise ValueError(
                f"state {int(absorbing[0])} of the transition matrix is never left (P[i][i] = 1); "
                "use ConstantChannel for a fixed rate"
            )
        if not (math.isfinite(slot_s) and slot_s >= MIN_SEGMENT_S):
            raise ValueError(f"slot_s must be at least {MIN_SEGMENT_S:g} s, got {slot_s}")
        matrix = matrix / matrix.sum(axis=1, keepdims=True)
        self.slot_s = float(slot_s)
        self._levels = levels
        self._matrix = matrix
        self._stationary = _stationary_distribution(matrix)
        self._level_list: list[float] = levels.tolist()
        stay = np.diag(matrix)
        self._log_stay = [math.log(p) if p > 0.0 else -math.inf for p in stay.tolist()]
        self._jump_targets: list[list[int]] = []
        self._jump_cdf: list[list[float]] = []
        for i in range(n):
            targets = [j for j in range(n) if j != i and matrix[i, j] > 0.0]
            cdf = np.cumsum(matrix[i, targets]) / (1.0 - stay[i])
            cdf[-1] = 1.0
            self._jump_targets.append(targets)
            self._jump_cdf.append(cdf.tolist())
        self._stationary_cdf = np.cumsum(self._stationary).tolist()
        self._state = 0

    @property
    def levels_bps(self) -> tuple[float, ...]:
        """Capacity of each state in bit/s."""
        return tuple(self._level_list)

    @property
    def transition_matrix(self) -> np.ndarray:
        """Per-slot transition probabilities (a copy)."""
        return self._matrix.copy()

    @property
    def stationary_distribution(self) -> np.ndarray:
        """Long-run fraction of slots spent in each state (a copy)."""
        return self._stationary.copy()

    @property
    def mean_rate_bps(self) -> float:
        """Long-run mean capacity in bit/s."""
        return float(self._stationary @ self._levels)

    def _start(self, rng: np.random.Generator) -> None:
        u = float(rng.random())
        self._state = min(bisect_right(self._stationary_cdf, u), len(self._level_list) - 1)

    def _generate_segments(self, rng: np.random.Generator) -> tuple[list[float], list[float]]:
        slot_s = self.slot_s
        durations: list[float] = []
        rates: list[float] = []
        state = self._state
        stay_draws = rng.random(self._BLOCK).tolist()
        jump_draws = rng.random(self._BLOCK).tolist()
        for u_stay, u_jump in zip(stay_draws, jump_draws, strict=True):
            # Inverse CDF of the geometric sojourn: P(slots > k) = P[i][i] ** k.
            slots = 1 + int(math.log1p(-u_stay) / self._log_stay[state])
            durations.append(slots * slot_s)
            rates.append(self._level_list[state])
            state = self._jump_targets[state][bisect_right(self._jump_cdf[state], u_jump)]
        self._state = state
        return durations, rates

    @classmethod
    def fit(
        cls,
        trace: Trace,
        n_levels: int = 8,
        slot_s: float = 0.5,
        smoothing: float = 0.1,
        **kwargs: float,
    ) -> MarkovChannel:
        """Learn a Markov channel from a trace.

        1. The trace is cut into slots of ``slot_s`` seconds and each slot's mean rate is taken.
        2. Initial levels are the slot-rate quantiles at the centres of ``n_levels`` equal-mass
           bins, ``(k + 0.5) / n_levels``; each slot joins its nearest level; every level's rate
           becomes the mean of its slots (so the fitted chain keeps the trace's mean rate), and
           levels left without slots (ties in a trace with few distinct rates) are dropped.
        3. Transitions between consecutive slots are counted and ``smoothing`` is added to every
           cell before normalizing rows (additive smoothing: Laplace's rule for ``smoothing=1``,
           Lidstone's for smaller values), so transitions never seen in a short trace keep a
           small probability and no state is absorbing. The default 0.1 keeps the memory of
           short traces: on the 140 s Verizon LTE uplink trace (8 levels, 0.5 s slots) the lag-1
           autocorrelation of 1 s throughput is 0.71 with 0.1 and 0.53 with 1.0 (trace: 0.75).

        :param trace: the trace to learn from (at least two slots long)
        :param n_levels: number of bandwidth levels to try
        :param slot_s: slot length in seconds (also the slot of the fitted chain)
        :param smoothing: pseudo-count added to every transition count (non-negative)
        :param kwargs: :class:`PiecewiseConstantChannel` options
        :return: the fitted channel
        """
        if n_levels < 2:
            raise ValueError(f"n_levels must be at least 2, got {n_levels}")
        if not (math.isfinite(smoothing) and smoothing >= 0.0):
            raise ValueError(f"smoothing must be non-negative, got {smoothing}")
        if not (math.isfinite(slot_s) and slot_s >= MIN_SEGMENT_S):
            raise ValueError(f"slot_s must be at least {MIN_SEGMENT_S:g} s, got {slot_s}")
        n_slots = int(trace.duration_s / slot_s + 1e-9)
        if n_slots > MAX_TRACE_SEGMENTS:
            raise ValueError(
                f"trace {trace.name!r} holds {n_slots} slots of {slot_s:g} s, above the limit "
                f"of {MAX_TRACE_SEGMENTS}"
            )
        if n_slots < 2:
            raise ValueError(
                f"trace {trace.name!r} lasts {trace.duration_s:g} s: too short for two slots of "
                f"{slot_s:g} s"
            )
        boundaries = np.asarray(trace.boundaries_s)
        cumulative_bits = np.concatenate(([0.0], np.cumsum(trace.rates_bps * np.diff(boundaries))))
        slot_edges = np.arange(n_slots + 1) * slot_s
        slot_rates = np.diff(np.interp(slot_edges, boundaries, cumulative_bits)) / slot_s

        centres = np.unique(np.quantile(slot_rates, (np.arange(n_levels) + 0.5) / n_levels))
        nearest = np.abs(slot_rates[:, None] - centres[None, :]).argmin(axis=1)
        used, states = np.unique(nearest, return_inverse=True)
        if len(used) < 2:
            raise ValueError(
                f"trace {trace.name!r} has a single rate level ({slot_rates[0]:g} bit/s per "
                f"{slot_s:g} s slot); a ConstantChannel models it"
            )
        levels = np.array([slot_rates[states == k].mean() for k in range(len(used))])

        counts = np.full((len(used), len(used)), float(smoothing))
        np.add.at(counts, (states[:-1], states[1:]), 1.0)
        row_sums = counts.sum(axis=1, keepdims=True)
        if np.any(row_sums == 0.0):
            raise ValueError(
                f"a level of trace {trace.name!r} occurs only in its last slot, so its "
                "transitions are unknown; use smoothing > 0"
            )
        return cls(levels.tolist(), counts / row_sums, slot_s, **kwargs)

    def __repr__(self) -> str:
        levels = ", ".join(f"{level / 1e6:.3g}" for level in self._level_list)
        return f"{type(self).__name__}(levels_Mbps=[{levels}], slot_s={self.slot_s:g})"


def _stationary_distribution(matrix: np.ndarray) -> np.ndarray:
    """Solve ``pi P = pi`` with ``sum(pi) = 1``; raise for a reducible chain."""
    n = len(matrix)
    system = matrix.T - np.eye(n)
    system[-1, :] = 1.0
    rhs = np.zeros(n)
    rhs[-1] = 1.0
    try:
        pi = np.linalg.solve(system, rhs)
    except np.linalg.LinAlgError:
        raise ValueError(
            "transition_matrix is reducible (no unique stationary distribution)"
        ) from None
    return np.clip(pi, 0.0, None) / np.clip(pi, 0.0, None).sum()
