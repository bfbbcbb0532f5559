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

Only training uses them: the values read the future, so no policy may observe them.
:class:`HindsightValuesInfo` puts them in the ``info`` of each step, where
:class:`~splitrl.agents.sacd.SACD` with ``hindsight="actor"`` (or ``"critic"``) takes them into its
replay buffer.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from splitrl.agents.baselines.backlog import DEFAULT_BACKLOG_HORIZON, check_horizon
from splitrl.agents.baselines.oracles import clairvoyant_values
from splitrl.agents.baselines.spread import LatencySpread
from splitrl.agents.features import SplitComputingWrapper, relative_flat_values
from splitrl.agents.sacd.buffers import HINDSIGHT_INFO_KEY
from splitrl.envs.split_computing import SplitComputingEnv


class HindsightActionValues:
    """Every flat action's true reward minus its backlog cost, for the current request.

    Entry ``i`` belongs to flat action ``i`` (C order over ``(exit, split, bits)``), relative to the
    best action (which has 0, the others a negative value); actions that are not canonical get 0.
    The reward's correctness is the action's accuracy in the profile, not this sample's label, as
    for ``clairvoyant-lookahead``: knowing the label is luck, not a property of the channel.

    :param horizon: next requests the backlog cost counts
    """

    def __init__(self, horizon: int = DEFAULT_BACKLOG_HORIZON) -> None:
        self.horizon = check_horizon(horizon)
        self.spread = LatencySpread()
        self._spread_env: SplitComputingEnv | None = None

    def __call__(self, env: SplitComputingEnv) -> np.ndarray:
        """The values of the current request, ``(n_actions,)`` float32; call before the step."""
        if env is not self._spread_env:
            # the spread's draws depend on the env's RTT and server models only, not the episode
            self.spread.reset(env)
            self._spread_env = env
        actions, values = clairvoyant_values(env, self.spread, self.horizon)
        return relative_flat_values(env, actions, values)


class HindsightValuesInfo(SplitComputingWrapper):
    """Adds :class:`HindsightActionValues` of the request a step served to that step's ``info``
    (key ``"hindsight_values"``). The observation is unchanged: the policy never sees them.

    :param env: a ``SplitComputingEnv``, possibly wrapped
    :param horizon: next requests the backlog cost counts
    """

    def __init__(self, env: gym.Env[Any, Any], horizon: int = DEFAULT_BACKLOG_HORIZON) -> None:
        super().__init__(env, "hindsight values")
        if self.split_env.mode != "replay":
            raise ValueError(
                "hindsight values need a replay env: in live mode every action of every request "
                "would run the real model and codec"
            )
        self.values = HindsightActionValues(horizon)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        values = self.values(self.split_env)
        observation, reward, terminated, truncated, info = self.env.step(action)
        return (
            observation,
            float(reward),
            terminated,
            truncated,
            {**info, HINDSIGHT_INFO_KEY: values},
        )
