"""References that know what no device can: the channel now, or the channel over the transfer and every draw.

None of them is realizable; they measure what knowing more is worth. They read the env's internals
through :meth:`~splitrl.envs.SplitComputingEnv.evaluate_actions` (``clairvoyant``,
``clairvoyant-lookahead``) or the true channel (``oracle-now``).
"""

from __future__ import annotations

import numpy as np

from splitrl.agents.baselines.backlog import (
    DEFAULT_BACKLOG_HORIZON,
    backlog_cost,
    best_with_backlog,
    check_horizon,
)
from splitrl.agents.baselines.spread import DEFAULT_SPREAD_DRAWS, LatencySpread
from splitrl.envs.split_computing import SplitComputingEnv

#: the capacity ``oracle-now`` assumes in an outage (bit/s): the forecast needs a positive rate, and
#: at this one every offload misses its deadline, so the rule stays local, as it should
OUTAGE_CAPACITY_BPS = 1.0


class OracleNowPolicy:
    """The device's predictor, told the true capacity at decision time, with the backlog priced.

    Everything else is ``mpc``'s rule (``robust-mpc`` without its discount): ``env.predict_actions``
    at the true capacity of the uplink when the request starts
    (``env.channel.capacity(env.request_start_s)``, :data:`OUTAGE_CAPACITY_BPS` in an outage), averaged over the
    RTT and queueing spread (:class:`~splitrl.agents.baselines.spread.LatencySpread`), minus
    :func:`~splitrl.agents.baselines.backlog.backlog_cost`. It does not know how the capacity moves
    during the transfer, the payload of this very request, nor its RTT and queueing draws. The gap
    between it and ``mpc`` is what a perfect link estimate is worth.

    :param horizon: next requests the backlog cost counts
    :param spread_draws: draws of the RTT and queueing spread per prediction
    """

    name = "oracle-now"
    causal = False
    knows = "the true capacity at decision time; otherwise the device's own estimates"

    def __init__(
        self, horizon: int = DEFAULT_BACKLOG_HORIZON, spread_draws: int = DEFAULT_SPREAD_DRAWS
    ) -> None:
        self.horizon = check_horizon(horizon)
        self.spread = LatencySpread(spread_draws)

    def reset(self, env: SplitComputingEnv) -> None:
        """Draw the RTT and queueing spread for ``env``."""
        self.spread.reset(env)

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """The best action at the true current capacity, backlog priced."""
        capacity = env.channel.capacity(env.request_start_s)
        predicted = env.predict_actions(max(capacity, OUTAGE_CAPACITY_BPS))
        rewards = self.spread.expected_rewards(predicted, env)
        return best_with_backlog(
            predicted, env, self.horizon, rewards, latency_spread=self.spread.offsets(env)
        )


class ClairvoyantPolicy:
    """The action of highest true reward for this request, myopic.

    It calls ``env.evaluate_actions()``, which knows, for this request: the channel capacity over
    the actual transfer of each action, its payload in bytes, its RTT draw, the server's true load
    when it arrives and its queueing draw. Correctness is the action's accuracy in the profile, not
    this sample's label. It is myopic: it does not weigh what its choice does to the backlog of the
    next requests, so it is not an upper bound (``clairvoyant-lookahead`` is the upper reference).
    """

    name = "clairvoyant"
    causal = False
    knows = (
        "the capacity over the actual transfer, this request's payload, RTT, server load and "
        "queueing draws"
    )

    def reset(self, env: SplitComputingEnv) -> None:
        """Nothing to reset."""

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """The action of highest true reward."""
        return env.evaluate_actions().best()


def clairvoyant_parts(
    env: SplitComputingEnv, spread: LatencySpread, horizon: int = DEFAULT_BACKLOG_HORIZON
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every canonical action's true reward and the cost of the backlog it leaves, apart.

    The reward is ``env.evaluate_actions()``: this request's exact outcome. The backlog's cost
    (:func:`~splitrl.agents.baselines.backlog.backlog_cost`) forecasts the next requests from the
    same channel, payloads and load, but not from this request's RTT and queueing draws, which say
    nothing about theirs: at the mean draws (``evaluate_actions(draws="mean")``) with ``spread``'s
    offsets around them.

    :param env: the env, at the request to value
    :param spread: the RTT and queueing spread, reset for ``env``
    :param horizon: next requests the backlog cost counts
    :return: the canonical actions ``(n, 3)``, their rewards ``(n,)`` and backlog costs ``(n,)``
    """
    outcomes = env.evaluate_actions()
    cost = backlog_cost(
        env.evaluate_actions(draws="mean"),
        env.frame_interval_s,
        env.reward_spec,
        horizon,
        spread.offsets(env),
    )
    return outcomes.actions, outcomes.reward, cost


def clairvoyant_values(
    env: SplitComputingEnv, spread: LatencySpread, horizon: int = DEFAULT_BACKLOG_HORIZON
) -> tuple[np.ndarray, np.ndarray]:
    """Every canonical action's true reward minus the cost of the backlog it leaves
    (:func:`clairvoyant_parts`): the value ``clairvoyant-lookahead`` maximizes, and the hindsight
    values ``sacd-hindsight`` learns from.

    :param env: the env, at the request to value
    :param spread: the RTT and queueing spread, reset for ``env``
    :param horizon: next requests the backlog cost counts
    :return: the canonical actions ``(n, 3)`` and their values ``(n,)``
    """
    actions, reward, cost = clairvoyant_parts(env, spread, horizon)
    return actions, reward - cost


class ClairvoyantLookaheadPolicy:
    """``clairvoyant``, plus the cost its backlog puts on the next requests: the upper reference.

    The action maximizes :func:`clairvoyant_values`: the true reward of this request
    (``env.evaluate_actions()``) minus :func:`~splitrl.agents.baselines.backlog.backlog_cost` over
    the next ``horizon`` requests, which are forecast to meet the capacity, payloads and load this
    request meets, with the RTT's and the queueing's spread instead of this request's draws. Not
    realizable.

    :param horizon: next requests the backlog cost counts
    :param spread_draws: draws of the RTT and queueing spread of the next requests
    """

    name = "clairvoyant-lookahead"
    causal = False
    knows = "what clairvoyant knows, and the backlog's cost on the next requests forecast from it"

    def __init__(
        self, horizon: int = DEFAULT_BACKLOG_HORIZON, spread_draws: int = DEFAULT_SPREAD_DRAWS
    ) -> None:
        self.horizon = check_horizon(horizon)
        self.spread = LatencySpread(spread_draws)

    def reset(self, env: SplitComputingEnv) -> None:
        """Draw the RTT and queueing spread for ``env``."""
        self.spread.reset(env)

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """The action of highest true reward minus backlog cost."""
        actions, values = clairvoyant_values(env, self.spread, self.horizon)
        return actions[int(np.argmax(values))].copy()
