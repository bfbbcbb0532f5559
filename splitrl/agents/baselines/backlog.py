"""The cost a backlog puts on the next requests: one lookahead shared by the backlog-aware baselines.

A slow action keeps the device busy past the next frame's arrival, so the next request waits, and
a long enough wait makes it miss its deadline whatever it then does. A per-request argmax ignores
this (see ``greedy``). :func:`backlog_cost` prices it by a lookahead:

* **Forecast.** The next requests are assumed to have the outcomes of the current one, as the
  caller sees them (``robust-mpc`` its prediction, ``oracle-now`` the prediction at the true
  capacity, ``clairvoyant-lookahead`` this request's exact outcomes at the mean RTT and queueing
  draws): once it starts, action
  ``c`` answers after ``L_c`` seconds and keeps the device busy for ``D_c`` seconds, with the same
  correctness and energy. A request arriving ``T`` (the frame interval) after one that waited ``w``
  waits ``max(0, w + D_c - T)``.
* **Continuation.** The next requests act optimally under that forecast: dynamic programming on a
  grid of waits (64 steps up to the deadline, 16 more up to the reward's latency cap, where the
  reward stops changing; linear in between), over as many requests as it takes the price of a wait
  to stop changing (at most ``horizon``). Values are kept relative to an idle device, so the
  iteration is relative value iteration: what it converges to is the price of a backlog under an
  endless run of such requests, the terminal value a short horizon lacks. A horizon of 8 requests
  saw only the first frames of a backlog that takes tens of frames to drain at 100 frames/s, and
  ranked slow, accurate actions as nearly free. Actions no better than another in accuracy,
  ``L``, ``D`` and energy are left out first, which keeps it cheap.
* **Spread.** An offloaded request's latency is not known in advance: the RTT's jitter and the
  server's queueing are drawn per request. Given that spread (``latency_spread``, offsets added to
  the latency of every offloaded action of the forecast), the continuation values each next
  request by its expected reward over the spread. Without it, a draining offload that finishes just
  before the deadline counts as safe, the backlog looks nearly free to drain, and a rule keeps a
  standing backlog that it never drains: with a 100 ms deadline and a 50 ms round trip that costs
  ``robust-mpc`` about 0.02 per request (``docs/evaluation.md``).
* **Cost.** The reward of the counted requests after an idle device minus their reward after the
  wait the current action leaves: never negative, undiscounted.
"""

from __future__ import annotations

import dataclasses
import functools
from types import ModuleType

import numpy as np

from splitrl.envs.forecast import ActionOutcomes, ForecastView
from splitrl.envs.reward import RewardSpec

#: most requests after the current one whose reward the backlog cost counts (0.53 s at 120 fps):
#: enough for the price of any backlog that drains in the default scenario to converge
DEFAULT_BACKLOG_HORIZON = 64
#: change of the relative values (reward per request) below which the lookahead has converged
_CONVERGED = 1e-6
#: grid points of the wait from 0 to the deadline, and from the deadline to the latency cap
_FINE_POINTS, _COARSE_POINTS = 65, 17


def _load_compiled() -> ModuleType | None:
    try:
        from splitrl.agents.baselines import _backlog
    except ImportError:
        return None
    return _backlog


_compiled = _load_compiled()


def check_horizon(horizon: int) -> int:
    """``horizon`` if it is at least 1, else a ``ValueError``."""
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1, got {horizon}")
    return horizon


def backlog_cost(
    outcomes: ActionOutcomes,
    frame_interval_s: float,
    reward_spec: RewardSpec,
    horizon: int = DEFAULT_BACKLOG_HORIZON,
    latency_spread: np.ndarray | None = None,
) -> np.ndarray:
    """The reward the next requests lose to the wait each action leaves behind.

    :param outcomes: the current request's outcomes, also the forecast of the next requests
    :param frame_interval_s: time between request arrivals
    :param reward_spec: the reward of a request from its correctness, latency and energy
    :param horizon: the most next requests counted (at least 1); fewer once the price converges
    :param latency_spread: offsets in seconds (one per draw, mean about 0) added to the latency of
        the offloaded actions of the next requests, whose reward is then averaged over them
        (:meth:`~splitrl.agents.baselines.spread.LatencySpread.offsets`); ``None``: their latency is
        exactly ``outcomes.latency_s``
    :return: one non-negative cost per action, like ``outcomes.reward``
    """
    check_horizon(horizon)
    terms = LookaheadTerms.of(outcomes, frame_interval_s, reward_spec, latency_spread)
    value = relative_values(terms.now, terms.below, terms.weight, horizon)
    return terms.cost(outcomes, frame_interval_s, value)


@dataclasses.dataclass(frozen=True)
class LookaheadTerms:
    """One request's part in the lookahead: what each of its actions, undominated, earns after
    each wait of the grid, and the wait it leaves to the request after it.

    :param waits: the wait grid (seconds)
    :param now: ``(points, actions)`` reward of each kept action after each wait
    :param below: ``(points, actions)`` grid index below the wait each action leaves the next
        request
    :param weight: ``(points, actions)`` interpolation weight of the index above
    """

    waits: np.ndarray
    now: np.ndarray
    below: np.ndarray
    weight: np.ndarray

    @classmethod
    def of(
        cls,
        outcomes: ActionOutcomes,
        frame_interval_s: float,
        reward_spec: RewardSpec,
        latency_spread: np.ndarray | None = None,
    ) -> LookaheadTerms:
        """The terms of a request with ``outcomes`` (arguments as for :func:`backlog_cost`)."""
        service_s = outcomes.latency_s - outcomes.wait_s
        busy_s = outcomes.device_free_s - outcomes.wait_s
        offloaded = outcomes.offloaded.astype(float)
        # With a spread, an offloaded action is riskier than a local one of the same mean
        # latency: being local becomes a fifth criterion of dominance.
        keep = _undominated(
            outcomes.correct,
            service_s,
            busy_s,
            outcomes.energy_j,
            *(() if latency_spread is None else (offloaded,)),
        )
        correct, service_s, busy_s = outcomes.correct[keep], service_s[keep], busy_s[keep]
        energy_j = outcomes.energy_j[keep]
        waits = _wait_grid(reward_spec.deadline_s, reward_spec.latency_cap)
        after = np.maximum(waits[:, None] + busy_s - frame_interval_s, 0.0)
        # linear interpolation of the value at ``after``, as fixed grid indices and weights
        position = np.interp(after, waits, np.arange(len(waits), dtype=float))
        below = np.minimum(position.astype(np.int64), len(waits) - 2)
        now = reward_spec.rewards(correct, waits[:, None] + service_s, energy_j)
        if latency_spread is not None:
            spread = offloaded[keep] > 0
            now[:, spread] = reward_spec.expected_rewards(
                correct[spread],
                waits[:, None] + service_s[spread],
                energy_j[spread],
                latency_spread,
            )
        return cls(waits=waits, now=now, below=below, weight=position - below)

    def step_back(self, value: np.ndarray) -> np.ndarray:
        """The best value on the grid of this request's wait, given ``value`` on the grid of the
        next request's: one step of the lookahead's dynamic programming."""
        return best_after(self.now, self.below, self.weight, value)

    def cost(
        self, outcomes: ActionOutcomes, frame_interval_s: float, value: np.ndarray
    ) -> np.ndarray:
        """What each action of the request with ``outcomes`` costs the next requests, ``value``
        being their best reward on the grid of the next request's wait: never negative."""
        next_wait = np.maximum(outcomes.device_free_s - frame_interval_s, 0.0)
        return np.maximum(value[0] - np.interp(next_wait, self.waits, value), 0.0)


def relative_values(
    now: np.ndarray, below: np.ndarray, weight: np.ndarray, horizon: int
) -> np.ndarray:
    """The lookahead's relative value iteration on the wait grid.

    ``value[i]`` is the best reward of the requests still to come when the next one waits
    ``waits[i]``, relative to an idle device (``value[0] = 0``), so that it converges however long
    the horizon. The compiled kernel (``_backlog``, built by ``setup.py`` where a compiler exists)
    runs the same operations in the same order and returns the same values bit for bit; without
    it, :func:`relative_values_numpy` runs.

    :param now: ``(points, actions)`` reward of each action after each wait
    :param below: ``(points, actions)`` grid index below the wait each action leaves
    :param weight: ``(points, actions)`` interpolation weight of the index above
    :param horizon: most iterations (requests counted)
    """
    if _compiled is None:
        return relative_values_numpy(now, below, weight, horizon)
    value = np.zeros(now.shape[0])
    _compiled.relative_values(
        np.ascontiguousarray(now, dtype=np.float64),
        np.ascontiguousarray(below, dtype=np.int64),
        np.ascontiguousarray(weight, dtype=np.float64),
        now.shape[0],
        now.shape[1],
        horizon,
        _CONVERGED,
        value,
    )
    return value


def relative_values_numpy(
    now: np.ndarray, below: np.ndarray, weight: np.ndarray, horizon: int
) -> np.ndarray:
    """:func:`relative_values` in numpy: the reference of the compiled kernel."""
    value = np.zeros(now.shape[0])
    for _ in range(horizon):
        relative = best_after(now, below, weight, value)
        relative -= relative[0]
        converged = np.abs(relative - value).max() <= _CONVERGED
        value = relative
        if converged:
            break
    return value


def best_after(
    now: np.ndarray, below: np.ndarray, weight: np.ndarray, value: np.ndarray
) -> np.ndarray:
    """One step of the lookahead: the best reward of this request and those after it, on the wait
    grid, given ``value`` of the requests after it on the grid of the next one's wait (arguments as
    for :func:`relative_values`)."""
    continuation = value[below] * (1.0 - weight) + value[below + 1] * weight
    return np.asarray((now + continuation).max(axis=1))


@functools.lru_cache(maxsize=16)
def _wait_grid(deadline_s: float, latency_cap: float) -> np.ndarray:
    """The waits the lookahead values: fine up to the deadline, coarse up to the latency cap."""
    grid = np.concatenate(
        [
            np.linspace(0.0, deadline_s, _FINE_POINTS),
            np.linspace(deadline_s, latency_cap * deadline_s, _COARSE_POINTS)[1:],
        ]
    )
    grid.flags.writeable = False
    return grid


def _undominated(
    correct: np.ndarray, service_s: np.ndarray, busy_s: np.ndarray, *costs: np.ndarray
) -> np.ndarray:
    """Mask of the actions no other action matches or beats on every criterion (the first of equals
    kept): accuracy, service time, busy time and each of ``costs`` (smaller is better).

    The compiled kernel returns the same mask as :func:`undominated_numpy`; without it, that runs.
    """
    criteria = np.stack([-correct, service_s, busy_s, *costs]).astype(np.float64, copy=False)
    if _compiled is None:
        return undominated_numpy(criteria)
    keep = np.empty(criteria.shape[1], dtype=bool)
    _compiled.undominated(np.ascontiguousarray(criteria), *criteria.shape, keep)
    return keep


def undominated_numpy(criteria: np.ndarray) -> np.ndarray:
    """The dominance filter of :func:`_undominated` in numpy, over ``(criteria, actions)`` rows
    where smaller is better: the reference of the compiled kernel."""
    no_worse = np.ones((criteria.shape[1], criteria.shape[1]), dtype=bool)
    better = np.zeros_like(no_worse)
    # [i, j]: action i against action j, one criterion at a time (smaller is better)
    for cost in criteria:
        no_worse &= cost[:, None] <= cost[None, :]
        better |= cost[:, None] < cost[None, :]
    index = np.arange(criteria.shape[1])
    dominates = no_worse & (better | (index[:, None] < index[None, :]))
    return np.asarray(~dominates.any(axis=0))


def best_rows_at_waits(
    outcomes: ActionOutcomes,
    frame_interval_s: float,
    reward_spec: RewardSpec,
    waits_s: np.ndarray,
    horizon: int = DEFAULT_BACKLOG_HORIZON,
) -> np.ndarray:
    """Per wait, the row of ``outcomes.actions`` of highest reward minus :func:`backlog_cost` had
    the request waited that long before it started (ties go to the lowest row).

    The same ranking as :func:`best_with_backlog` (without a latency spread), moved to other
    waits: each action keeps its service and busy time, and the backlog it leaves is priced on the
    lookahead's value of the next request's wait.

    :param outcomes: the request's outcomes (at any wait: only their service and busy times count)
    :param waits_s: ``(n,)`` waits to rank the actions after (seconds)
    :return: ``(n,)`` row indices into ``outcomes.actions``
    """
    terms = LookaheadTerms.of(outcomes, frame_interval_s, reward_spec)
    value = relative_values(terms.now, terms.below, terms.weight, horizon)
    service_s = outcomes.latency_s - outcomes.wait_s
    busy_s = outcomes.device_free_s - outcomes.wait_s
    waits = np.asarray(waits_s, dtype=float)[:, None]
    rewards = reward_spec.rewards(outcomes.correct, waits + service_s, outcomes.energy_j)
    next_wait = np.maximum(waits + busy_s - frame_interval_s, 0.0)
    return np.asarray(np.argmax(rewards + np.interp(next_wait, terms.waits, value), axis=1))


def best_with_backlog(
    outcomes: ActionOutcomes,
    env: ForecastView,
    horizon: int = DEFAULT_BACKLOG_HORIZON,
    rewards: np.ndarray | None = None,
    *,
    latency_spread: np.ndarray | None = None,
) -> np.ndarray:
    """The action of highest reward minus :func:`backlog_cost` (ties go to the lowest flat index).

    :param outcomes: the current request's outcomes as the policy sees them
    :param env: the env or a device's view of it (its frame interval and reward)
    :param horizon: requests the backlog cost counts
    :param rewards: the rewards to rank instead of ``outcomes.reward`` (e.g. expected over a spread)
    :param latency_spread: the spread of the next requests' offloaded latency (see
        :func:`backlog_cost`)
    """
    reward = outcomes.reward if rewards is None else rewards
    cost = backlog_cost(
        outcomes,
        env.frame_interval_s,
        env.reward_spec,
        horizon,
        latency_spread,
    )
    return outcomes.actions[int(np.argmax(reward - cost))].copy()
