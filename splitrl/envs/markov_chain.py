"""A finite-state Markov chain over levels, simulated one sojourn at a time.

Two processes of the environment follow one: the uplink capacity of a
:class:`~splitrl.envs.channels.markov.MarkovChannel` (levels in bit/s) and the utilization of the
edge server (:class:`~splitrl.envs.server_load.ServerLoad`, levels in [0, 1)).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

import numpy as np

from splitrl.envs.traces import MIN_SEGMENT_S


class MarkovChain:
    """A discrete-time Markov chain over ``levels`` with one transition per ``slot_s`` seconds.

    The chain moves from state ``i`` to state ``j`` with probability ``transition_matrix[i][j]``
    per slot. Sojourns are simulated whole: the number of slots spent in state ``i`` is geometric
    with success probability ``1 - P[i][i]`` and the next state is drawn from row ``i`` without the
    diagonal, which is the same process as slot-by-slot simulation at a fraction of the cost. Each
    realization starts in a state drawn from the stationary distribution.

    :param levels: the value of each state (at least two, finite)
    :param transition_matrix: row-stochastic matrix of per-slot transition probabilities; no state
        may be absorbing (``P[i][i] < 1``) and the chain must be irreducible
    :param slot_s: slot length in seconds
    """

    #: sojourns generated per call of :meth:`sojourns`
    BLOCK = 128

    def __init__(
        self,
        levels: Sequence[float] | np.ndarray,
        transition_matrix: Sequence[Sequence[float]] | np.ndarray,
        slot_s: float,
    ) -> None:
        values = np.asarray(levels, dtype=np.float64)
        matrix = np.asarray(transition_matrix, dtype=np.float64)
        n = len(values)
        if values.ndim != 1 or n < 2:
            raise ValueError(f"a Markov chain needs at least two levels, got {levels!r}")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"the levels of a Markov chain must be finite, got {levels!r}")
        if matrix.shape != (n, n):
            raise ValueError(f"transition_matrix must be {n}x{n}, got shape {matrix.shape}")
        if np.any(matrix < 0.0) or not np.allclose(matrix.sum(axis=1), 1.0, atol=1e-6):
            raise ValueError("transition_matrix rows must be non-negative and sum to 1")
        absorbing = np.flatnonzero(np.diag(matrix) >= 1.0)
        if absorbing.size:
            raise ValueError(
                f"state {int(absorbing[0])} of the transition matrix is never left (P[i][i] = 1)"
            )
        if not (math.isfinite(slot_s) and slot_s >= MIN_SEGMENT_S):
            raise ValueError(f"slot_s must be at least {MIN_SEGMENT_S:g} s, got {slot_s}")
        matrix = matrix / matrix.sum(axis=1, keepdims=True)
        self.slot_s = float(slot_s)
        self._values = values
        self._matrix = matrix
        self._stationary = _stationary_distribution(matrix)
        self._level_list: list[float] = values.tolist()
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
    def levels(self) -> tuple[float, ...]:
        """The value of each state."""
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
    def mean_level(self) -> float:
        """Long-run mean of the level."""
        return float(self._stationary @ self._values)

    def start(self, rng: np.random.Generator) -> None:
        """Draw the first state of a realization from the stationary distribution."""
        u = float(rng.random())
        self._state = min(bisect_right(self._stationary_cdf, u), len(self._level_list) - 1)

    def sojourns(self, rng: np.random.Generator) -> tuple[list[float], list[float]]:
        """The next :attr:`BLOCK` sojourns as ``(durations_s, levels)``, continuing the realization."""
        slot_s = self.slot_s
        durations: list[float] = []
        levels: list[float] = []
        state = self._state
        stay_draws = rng.random(self.BLOCK).tolist()
        jump_draws = rng.random(self.BLOCK).tolist()
        for u_stay, u_jump in zip(stay_draws, jump_draws, strict=True):
            # Inverse CDF of the geometric sojourn: P(slots > k) = P[i][i] ** k.
            slots = 1 + int(math.log1p(-u_stay) / self._log_stay[state])
            durations.append(slots * slot_s)
            levels.append(self._level_list[state])
            state = self._jump_targets[state][bisect_right(self._jump_cdf[state], u_jump)]
        self._state = state
        return durations, levels


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
