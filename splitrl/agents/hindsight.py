"""Hindsight action values: what every action turned out to be worth, for training a policy.

The uplink's capacity, the round trip and the server's load are exogenous: the device's choice
does not change them. So once a request has been served in simulation, the env can say what every
other action would have earned on the very same channel, draws and load
(:meth:`~splitrl.envs.SplitComputingEnv.evaluate_actions`). :class:`HindsightActionValues` turns
that into one value per flat action, the true reward minus the cost of the backlog the action
leaves (:func:`~splitrl.agents.baselines.oracles.clairvoyant_values`, the value
``clairvoyant-lookahead`` maximizes). A policy that maximizes their expectation given the device's
observation is the best *causal* approximation of that reference: hindsight learning for MDPs
with exogenous inputs (Sinclair et al., ICML 2023). See ``docs/sacd.md``.

The backlog an action leaves is priced in one of four ways (:data:`BACKLOG_PRICES`):

* ``"lookahead"``: the clairvoyant lookahead's price, known at once (the next requests forecast
  from this one's channel, payloads and load, acting optimally under that forecast). Where this
  request meets a deep fade, the forecast keeps the next requests in it;
* ``"ahead"``: the same lookahead over the next requests' own outcomes (their channel, payloads
  and load, as they came), acting optimally knowing them: the price of the backlog to a device
  that then does its best on the channel that actually followed. (A backlog left in a deep fade
  costs about as much either way: the device's fastest action drains it, not the link;
  ``docs/sacd-experiments.md``, The geometric forecast.) :class:`BacklogAhead` prices a
  request once ``horizon`` more have been served (or the episode ends), so each step's values
  start as the request's true rewards and later steps send corrections to them, as for
  ``"replayed"``;
* ``"replayed"``: what the backlog actually cost. :class:`BacklogReplays` serves the following
  requests, with the actions actually taken, from the device-free time each other action would
  have left (:meth:`~splitrl.envs.SplitComputingEnv.evaluate_action_from`), until the device is
  free when it actually was or ``horizon`` requests have passed, and charges each action the change
  in their rewards. The price is complete only once those requests are served, so each step's
  values start as the request's true rewards and later steps send corrections to them;
* ``"rechosen"``: ``"replayed"`` where a replay serves a later request with another action than
  the one taken when its own wait changes the device's lookahead choice (:class:`BacklogReplays`
  with ``rechoose=True``): a device held longer than it was is no longer served only with actions
  chosen for a freer one.

Each request's own reward is read either at its RTT and queueing draws (``draws="exact"``, what
it earned) or as its expectation over their spread (``draws="mean"``, the value
``clairvoyant-link`` maximizes, :data:`HINDSIGHT_DRAWS`). The draws are independent of everything
a device observes, so the expectation has the same ranking in expectation and less noise: the
jitter of one round trip no longer decides, for every offload of that request at once, whether it
met the deadline.

Only training uses them: the values read the future, so no policy may observe them.
:class:`HindsightValuesInfo` puts them in the ``info`` of each step (with the corrections to
earlier steps' values), where :class:`~splitrl.agents.sacd.SACD` with ``hindsight="actor"`` (or
``"critic"``) takes them into its replay buffer.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from splitrl.agents.baselines.backlog import (
    DEFAULT_BACKLOG_HORIZON,
    LookaheadTerms,
    best_rows_at_waits,
    check_horizon,
    relative_values,
)
from splitrl.agents.baselines.oracles import clairvoyant_values
from splitrl.agents.baselines.spread import LatencySpread
from splitrl.agents.features import SplitComputingWrapper, flat_values, relative_flat_values
from splitrl.agents.sacd.buffers import HINDSIGHT_CORRECTIONS_KEY, HINDSIGHT_INFO_KEY
from splitrl.envs.forecast import ActionOutcomes
from splitrl.envs.reward import RewardSpec
from splitrl.envs.split_computing import SplitComputingEnv

#: how hindsight values price the backlog an action leaves (module docstring)
BACKLOG_PRICES = ("lookahead", "replayed", "ahead", "rechosen")
#: how hindsight values read each request's own RTT and queueing draws (module docstring)
HINDSIGHT_DRAWS = ("exact", "mean")
#: two device-free times closer than this (seconds) are the same: the replay has rejoined
_SAME_TIME_S = 1e-9


def check_backlog_price(price: str) -> str:
    """``price`` if it is one of :data:`BACKLOG_PRICES`, else ``ValueError`` listing them."""
    if price not in BACKLOG_PRICES:
        raise ValueError(f"unknown backlog price {price!r}; known: {', '.join(BACKLOG_PRICES)}")
    return price


def check_hindsight_draws(draws: str) -> Literal["exact", "mean"]:
    """``draws`` if it is one of :data:`HINDSIGHT_DRAWS`, else ``ValueError`` listing them."""
    if draws == "exact":
        return "exact"
    if draws == "mean":
        return "mean"
    raise ValueError(f"unknown hindsight draws {draws!r}; known: {', '.join(HINDSIGHT_DRAWS)}")


class HindsightActionValues:
    """Every flat action's true reward minus its backlog cost, for the current request.

    Entry ``i`` belongs to flat action ``i`` (C order over ``(exit, split, bits)``), relative to the
    best action (which has 0, the others a negative value); actions that are not canonical get 0.
    The reward's correctness is the action's accuracy in the profile, not this sample's label, as
    for ``clairvoyant-lookahead``: knowing the label is luck, not a property of the channel.

    :param horizon: next requests the backlog cost counts
    :param draws: the request's own reward at its RTT and queueing draws (``"exact"``) or over
        their spread (``"mean"``), :data:`HINDSIGHT_DRAWS`
    """

    def __init__(self, horizon: int = DEFAULT_BACKLOG_HORIZON, draws: str = "exact") -> None:
        self.horizon = check_horizon(horizon)
        self.draws = check_hindsight_draws(draws)
        self._spread = LatencySpread()
        self._spread_env: SplitComputingEnv | None = None

    def __call__(self, env: SplitComputingEnv) -> np.ndarray:
        """The values of the current request, ``(n_actions,)`` float32; call before the step."""
        actions, values = clairvoyant_values(env, self.spread(env), self.horizon, self.draws)
        return relative_flat_values(env, actions, values)

    def spread(self, env: SplitComputingEnv) -> LatencySpread:
        """The RTT and queueing spread of ``env``'s models, drawn once per env."""
        if env is not self._spread_env:
            # the spread's draws depend on the env's RTT and server models only, not the episode
            self._spread.reset(env)
            self._spread_env = env
        return self._spread


class BacklogReplays:
    """What each action's backlog actually cost the following requests of an episode.

    Per request, call :meth:`advance` with the action taken (it serves the request, as taken, from
    the device-free time of every replay still running, and returns what that changed for earlier
    requests' actions), then :meth:`start` with the device-free time every action would have left
    (actions that leave the device free at another time than the action taken start a replay).
    Replays that reach the same device-free time are served once: from there the same actions
    follow. A replay ends when the device is free when it actually was (nothing changes after
    that) or after ``horizon`` requests.

    Held fixed, the actions taken are those chosen for the device as it actually was: a device
    held longer is served with actions chosen for a freer one. With ``rechoose=True`` a replay
    serves a later request with another action where the backlog changes the device's own ranking:
    where the lookahead rule at the device's estimates (:func:`best_rows_at_waits`, the
    throughput estimate of :meth:`~splitrl.envs.SplitComputingEnv.predict_actions`) picks another
    action after the replay's wait than after the actual one, the replay serves that action;
    elsewhere the action taken. Every choice is causal: the device's estimates and the replay's
    own wait, never the request's draws.

    :param horizon: most following requests a replay charges its actions with
    :param rechoose: whether the replays re-choose the later actions where their backlog changes
        the lookahead rule's choice (``False``: the actions taken, held fixed)
    """

    def __init__(self, horizon: int = DEFAULT_BACKLOG_HORIZON, rechoose: bool = False) -> None:
        self.horizon = check_horizon(horizon)
        self.rechoose = rechoose
        self.clear()

    def clear(self) -> None:
        """Forget every replay: a new episode."""
        self._step = 0
        # the device-free times the replays serve the next request from (sorted, distinct), and
        # per earlier request still replayed, the one each of its actions follows (-1: none)
        self._starts = np.empty(0)
        self._follows: list[tuple[int, np.ndarray]] = []

    def advance(
        self, env: SplitComputingEnv, action: np.ndarray, reward: float, device_free_s: float
    ) -> list[tuple[int, np.ndarray]]:
        """Serve the current request with ``action`` from every replay's device-free time.

        :param action: the action taken
        :param reward: its true reward (from the request's actual start)
        :param device_free_s: when it actually leaves the device free
        :return: ``(requests back, change)`` per earlier request whose replays ran: the change in
            this request's reward, per action index of that request's :meth:`start`
        """
        if not self._follows:
            return []
        # every replay at once: one numpy evaluation over their device-free times
        rewards, frees = env.evaluate_action_from(action, self._starts)
        if self.rechoose:
            self._serve_rechosen(env, rewards, frees)
        change = np.append(rewards - reward, 0.0)  # index -1: an action no replay follows
        going_on = np.abs(frees - device_free_s) > _SAME_TIME_S
        starts, moved = np.unique(frees[going_on], return_inverse=True)
        follows_next = np.full(len(frees) + 1, -1)
        follows_next[np.flatnonzero(going_on)] = moved
        changes, follows = [], []
        for request, follow in self._follows:
            changes.append((self._step - request, change[follow]))
            if self._step - request < self.horizon:
                follow = follows_next[follow]
                if (follow >= 0).any():
                    follows.append((request, follow))
        self._starts, self._follows = starts, follows
        self._forget_unfollowed()
        return changes

    def _serve_rechosen(
        self, env: SplitComputingEnv, rewards: np.ndarray, frees: np.ndarray
    ) -> None:
        """Serve again, in place, the replays whose wait changes the lookahead rule's choice."""
        predicted = env.predict_actions()
        arrival = env.request_start_s - predicted.wait_s
        waits = np.maximum(np.append(self._starts, env.request_start_s) - arrival, 0.0)
        rows = best_rows_at_waits(predicted, env.frame_interval_s, env.reward_spec, waits)
        rows, actual = rows[:-1], rows[-1]
        for row in np.unique(rows[rows != actual]):
            at = rows == row
            rewards[at], frees[at] = env.evaluate_action_from(
                predicted.actions[row], self._starts[at]
            )

    def start(self, device_free_s: np.ndarray, taken_free_s: float) -> None:
        """Start the replays of the current request's actions, then move to the next request.

        :param device_free_s: when each action would leave the device free (episode time)
        :param taken_free_s: when the action taken leaves it free
        """
        replayed = np.abs(device_free_s - taken_free_s) > _SAME_TIME_S
        if replayed.any():
            starts = np.union1d(self._starts, device_free_s[replayed])
            index = np.append(np.searchsorted(starts, self._starts), -1)
            self._follows = [(request, index[follow]) for request, follow in self._follows]
            follow = np.where(replayed, np.searchsorted(starts, device_free_s), -1)
            self._follows.append((self._step, follow))
            self._starts = starts
        self._step += 1

    def _forget_unfollowed(self) -> None:
        """Drop the device-free times no request's replay follows any more (their requests
        reached the horizon)."""
        if not self._follows:
            self._starts = np.empty(0)
            return
        used = np.unique(np.concatenate([follow for _, follow in self._follows]))
        used = used[used >= 0]
        if len(used) == len(self._starts):
            return
        index = np.full(len(self._starts) + 1, -1)
        index[used] = np.arange(len(used))
        self._starts = self._starts[used]
        self._follows = [(request, index[follow]) for request, follow in self._follows]


class BacklogAhead:
    """What each action's backlog costs the next requests of an episode, acting on their own
    channel.

    Per request, call :meth:`push` with its outcomes at the mean RTT and queueing draws: it
    returns the prices of the request ``horizon`` back, now that the ``horizon`` requests after
    it are known. At the end of an episode :meth:`flush` prices the requests still waiting with
    those that followed them. A request's price is the lookahead of
    :func:`~splitrl.agents.baselines.backlog.backlog_cost` run backward over the requests that
    actually followed, each with its own outcomes (and the spread of the offloaded latency), and
    beyond the last of them the stationary price of that last one: the reward the following
    requests lose, acting at their best knowing their outcomes, to the wait each action leaves.

    :param horizon: following requests whose own outcomes price a request
    """

    def __init__(self, horizon: int = DEFAULT_BACKLOG_HORIZON) -> None:
        self.horizon = check_horizon(horizon)
        self.clear()

    def clear(self) -> None:
        """Forget the waiting requests: a new episode."""
        self._step = 0
        self._frame_interval_s = 0.0  # the env's, set by the first push
        #: per request not yet priced: its step, outcomes, lookahead terms and stationary values
        self._waiting: deque[tuple[int, ActionOutcomes, LookaheadTerms, np.ndarray]] = deque()

    def push(
        self,
        outcomes: ActionOutcomes,
        frame_interval_s: float,
        reward_spec: RewardSpec,
        latency_spread: np.ndarray | None,
    ) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Record the current request, then move to the next.

        :param outcomes: the request's outcomes at the mean draws
            (``evaluate_actions(draws="mean")``)
        :param frame_interval_s: time between request arrivals
        :param reward_spec: the env's reward
        :param latency_spread: the spread of offloaded latency (``LatencySpread.offsets``)
        :return: ``(requests back, canonical actions, cost per action)`` of the request priced
            now, if any
        """
        terms = LookaheadTerms.of(outcomes, frame_interval_s, reward_spec, latency_spread)
        stationary = relative_values(terms.now, terms.below, terms.weight, self.horizon)
        self._waiting.append((self._step, outcomes, terms, stationary))
        self._frame_interval_s = frame_interval_s
        self._step += 1
        if len(self._waiting) <= self.horizon:
            return []
        step, first, first_terms, _ = self._waiting.popleft()
        value = self._waiting[-1][3]
        for _, _, following, _ in reversed(self._waiting):
            value = following.step_back(value)
        cost = first_terms.cost(first, frame_interval_s, value)
        return [(self._step - 1 - step, first.actions, cost)]

    def flush(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Price every waiting request with the requests that followed it; forget them.

        :return: ``(requests back, canonical actions, cost per action)`` per request, the
            current one (0 back) included
        """
        priced = []
        if self._waiting:
            value = self._waiting[-1][3]
            for step, outcomes, terms, _ in reversed(self._waiting):
                priced.append(
                    (
                        self._step - 1 - step,
                        outcomes.actions,
                        terms.cost(outcomes, self._frame_interval_s, value),
                    )
                )
                value = terms.step_back(value)
        self._waiting.clear()
        return priced


class HindsightValuesInfo(SplitComputingWrapper):
    """Adds the hindsight value of every flat action of the request a step served to that step's
    ``info`` (key ``"hindsight_values"``). The observation is unchanged: the policy never sees
    them.

    With ``backlog="lookahead"`` they are :class:`HindsightActionValues`. With ``"replayed"`` (or
    ``"rechosen"``) they are the request's true rewards (relative to the best), and the ``info``
    also holds ``"hindsight_corrections"``: ``(steps back, change per flat action)`` for earlier
    steps of the episode, what their actions' backlogs turned out to cost this request
    (:class:`BacklogReplays`).
    :class:`~splitrl.agents.sacd.buffers.MaskableReplayBuffer` adds them to the values it stored.

    :param env: a ``SplitComputingEnv``, possibly wrapped
    :param horizon: next requests the backlog cost counts
    :param backlog: how the backlog is priced (:data:`BACKLOG_PRICES`)
    :param draws: how the request's own reward reads its RTT and queueing draws
        (:data:`HINDSIGHT_DRAWS`); the replays' corrections read the following requests' draws,
        the same on both sides of each difference
    """

    def __init__(
        self,
        env: gym.Env[Any, Any],
        horizon: int = DEFAULT_BACKLOG_HORIZON,
        backlog: str = "lookahead",
        draws: str = "exact",
    ) -> None:
        super().__init__(env, "hindsight values")
        if self.split_env.mode != "replay":
            raise ValueError(
                "hindsight values need a replay env: in live mode every action of every request "
                "would run the real model and codec"
            )
        self.backlog = check_backlog_price(backlog)
        self.values = HindsightActionValues(horizon, draws)
        self.replays = (
            BacklogReplays(horizon, rechoose=backlog == "rechosen")
            if backlog in ("replayed", "rechosen")
            else None
        )
        self.ahead = BacklogAhead(horizon) if backlog == "ahead" else None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        if self.replays is not None:
            self.replays.clear()
        if self.ahead is not None:
            self.ahead.clear()
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self.ahead is not None:
            return self._step_ahead(action, self.ahead)
        env = self.split_env
        extra: dict[str, Any] = {}
        if self.replays is None:
            values = self.values(env)
        else:
            outcomes = env.evaluate_actions()
            reward, free = env.evaluate_action_from(action, env.request_start_s)
            changes = self.replays.advance(env, action, reward, free)
            extra[HINDSIGHT_CORRECTIONS_KEY] = [
                (back, flat_values(env, outcomes.actions, change)) for back, change in changes
            ]
            arrival = env.request_start_s - outcomes.wait_s
            self.replays.start(outcomes.device_free_s + arrival, free)
            own = outcomes.reward
            if self.values.draws == "mean":
                own = self.values.spread(env).expected_rewards(
                    env.evaluate_actions(draws="mean"), env
                )
            values = relative_flat_values(env, outcomes.actions, own)
        observation, reward_, terminated, truncated, info = self.env.step(action)
        return (
            observation,
            float(reward_),
            terminated,
            truncated,
            {**info, HINDSIGHT_INFO_KEY: values, **extra},
        )

    def _step_ahead(
        self, action: Any, ahead: BacklogAhead
    ) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """A step whose values are the request's true rewards, corrected by :class:`BacklogAhead`:
        the request ``horizon`` back priced now, and at the episode's end every request left."""
        env = self.split_env
        at_mean_draws = env.evaluate_actions(draws="mean")
        spread = self.values.spread(env)
        if self.values.draws == "mean":
            own = spread.expected_rewards(at_mean_draws, env)
        else:
            own = env.evaluate_actions().reward
        values = relative_flat_values(env, at_mean_draws.actions, own)
        priced = ahead.push(
            at_mean_draws, env.frame_interval_s, env.reward_spec, spread.offsets(env)
        )
        observation, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            priced += ahead.flush()
        corrections = []
        for back, actions, cost in priced:
            change = flat_values(env, actions, -cost)
            if back == 0:
                values = values + change
            else:
                corrections.append((back, change))
        return (
            observation,
            float(reward),
            terminated,
            truncated,
            {**info, HINDSIGHT_INFO_KEY: values, HINDSIGHT_CORRECTIONS_KEY: corrections},
        )
