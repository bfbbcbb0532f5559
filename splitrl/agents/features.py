"""What the device predicts for every action, as observation features a learner can use.

The device knows its profile, its presets and its own estimates, so it can predict the outcome of
every action before it decides: ``robust-mpc`` and ``mpc`` do exactly that (predicted reward over
the latency spread, minus the cost of the backlog the action leaves). :class:`PredictedActionValues`
turns one of their predictions into one feature per flat action; :class:`PredictedValuesObservation` appends
them to the env's observation for training, and :class:`~splitrl.agents.policy_interface.ModelPolicy` appends
the same features when the trained policy acts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from splitrl.agents.baselines.link_forecast import LinkForecast, QuantileMPCPolicy
from splitrl.agents.baselines.robust_mpc import GeometricMPCPolicy, MPCPolicy, RobustMPCPolicy
from splitrl.agents.link_memory import N_MEMORY_FEATURES, LinkMemory, memory_space_bounds
from splitrl.envs.forecast import DeviceForecast, ForecastView
from splitrl.envs.split_computing import SplitComputingEnv

#: the causal rules whose predicted action values a learner can observe, by name
PREDICTORS: dict[str, type[RobustMPCPolicy]] = {
    RobustMPCPolicy.name: RobustMPCPolicy,
    MPCPolicy.name: MPCPolicy,
    GeometricMPCPolicy.name: GeometricMPCPolicy,
    QuantileMPCPolicy.name: QuantileMPCPolicy,
}


def check_predictor(name: str) -> str:
    """``name`` if it names one of :data:`PREDICTORS`, else ``ValueError`` listing them."""
    if name not in PREDICTORS:
        raise ValueError(f"unknown predictor {name!r}; known: {', '.join(PREDICTORS)}")
    return name


def acts_on_link_forecast(name: str) -> bool:
    """Whether the predictor ``name`` acts on a learned link forecast (``mpc-quantile``), which an
    exported policy then carries."""
    return PREDICTORS[check_predictor(name)] is QuantileMPCPolicy


def flat_values(env: ForecastView, actions: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` of the canonical ``actions`` as one float32 entry per flat action; actions that
    are not canonical get 0."""
    result = np.zeros(env.actions.n_actions, dtype=np.float32)
    result[np.ravel_multi_index(tuple(actions.T), env.actions.nvec)] = values
    return result


def relative_flat_values(env: ForecastView, actions: np.ndarray, values: np.ndarray) -> np.ndarray:
    """:func:`flat_values` relative to the best action (which gets 0)."""
    return flat_values(env, actions, values - values.max())


class PredictedActionValues:
    """A causal rule's value of every flat action for the current request, relative to the best.

    Entry ``i`` is the predicted reward minus backlog cost of flat action ``i`` (C order over
    ``(exit, split, bits)``) minus that of the best action, so the best action has 0 and the others
    a negative value; actions that are not canonical (masked) get 0. Causal: it reads only the
    device's knowledge (:meth:`RobustMPCPolicy.action_values`). ``env`` is the env in training and
    evaluation, and a :class:`~splitrl.envs.forecast.DeviceForecast` on a real device (the device
    runtime), so both compute the same features from the same knowledge.

    With ``context`` rules, the features are the values of each context rule, in order, and then
    ``predictor``'s: the prior a SACD actor reads (the observation's last ``n_actions`` entries)
    stays ``predictor``'s, and the network also sees where the other rules disagree with it.

    :param predictor: the rule that predicts (:data:`PREDICTORS`): ``"robust-mpc"`` (its forecast
        divided by ``1 + max error``), ``"mpc"`` (the harmonic mean as it is),
        ``"mpc-geometric"`` (the geometric mean) or ``"mpc-quantile"`` (averaged over the learned
        link forecast's quantiles)
    :param link_forecast: for ``"mpc-quantile"`` (as ``predictor`` or in ``context``), the
        forecast (default: the shipped one)
    :param context: other rules of :data:`PREDICTORS` whose values come first
    :param memory: whether :class:`~splitrl.agents.link_memory.LinkMemory`'s slow statistics of
        the link come first of all
    """

    def __init__(
        self,
        predictor: str = RobustMPCPolicy.name,
        link_forecast: LinkForecast | None = None,
        context: Sequence[str] = (),
        memory: bool = False,
    ) -> None:
        names = [*context, predictor]
        for name in names:
            check_predictor(name)
        if len(set(names)) != len(names):
            raise ValueError(f"each rule may be observed once, got {', '.join(names)}")
        if link_forecast is not None and not any(map(acts_on_link_forecast, names)):
            raise ValueError(f"predictor {predictor!r} acts on no link forecast")
        self.names = tuple(names)
        self.predictors = [
            QuantileMPCPolicy(link_forecast)
            if link_forecast is not None and acts_on_link_forecast(name)
            else PREDICTORS[name]()
            for name in names
        ]
        self.memory = LinkMemory() if memory else None

    @property
    def predictor(self) -> RobustMPCPolicy:
        """The rule whose values come last (the prior's)."""
        return self.predictors[-1]

    @property
    def n_rules(self) -> int:
        """How many rules' values the features hold (``n_actions`` entries each)."""
        return len(self.predictors)

    @property
    def n_memory(self) -> int:
        """How many link-memory features come first (0 without them)."""
        return 0 if self.memory is None else N_MEMORY_FEATURES

    def reset(self, env: ForecastView) -> None:
        """Forget the previous episode's prediction errors and link memory."""
        for predictor in self.predictors:
            predictor.reset(env)
        if self.memory is not None:
            self.memory.reset(env)

    def __call__(self, env: ForecastView) -> np.ndarray:
        """The features of the current request, ``(n_memory + n_rules * n_actions,)`` float32;
        call once per request."""
        values = [
            relative_flat_values(env, *predictor.action_values(env))
            for predictor in self.predictors
        ]
        if self.memory is not None:
            values.insert(0, self.memory(env))
        return np.concatenate(values)

    def extend(self, env: ForecastView, observation: np.ndarray) -> np.ndarray:
        """``observation`` with the features of the current request appended."""
        return np.concatenate([observation, self(env)]).astype(np.float32, copy=False)


class DeviceActionValues:
    """:class:`PredictedActionValues` on a real device, appended to the observation its runtime builds.

    The device runtime's :class:`~splitrl.envs.observation.DeviceKnowledge` is the forecast's
    knowledge, and each request's arrival and start times (the device's own clock) place the
    request, so the features are computed by the same code as in training, from what the device
    measured.

    :param forecast: the device's forecast (:class:`~splitrl.envs.forecast.DeviceForecast`)
    :param predictor: the rule the policy was trained with (:data:`PREDICTORS`)
    :param link_forecast: for ``"mpc-quantile"``, the forecast it was trained with (the one an
        export carries; default: the shipped one)
    :param context: the other rules it observes (:class:`PredictedActionValues`)
    :param memory: whether it observes the link memory (:class:`PredictedActionValues`)
    """

    def __init__(
        self,
        forecast: DeviceForecast,
        predictor: str = RobustMPCPolicy.name,
        link_forecast: LinkForecast | None = None,
        context: Sequence[str] = (),
        memory: bool = False,
    ) -> None:
        self.forecast = forecast
        self.values = PredictedActionValues(predictor, link_forecast, context, memory)

    def reset(self) -> None:
        """A new run: forget the previous prediction errors (after the knowledge's own reset)."""
        self.values.reset(self.forecast)

    def extend(self, observation: np.ndarray, arrival_s: float, start_s: float) -> np.ndarray:
        """``observation`` with the features of the request that arrived at ``arrival_s`` and
        starts at ``start_s`` appended; call once per request."""
        self.forecast.at_request(arrival_s, start_s)
        return self.values.extend(self.forecast, observation)


def extended_observation_space(
    env: SplitComputingEnv, n_rules: int = 1, n_memory: int = 0
) -> spaces.Box:
    """The env's observation space with ``n_memory`` link-memory features (0 or
    :data:`~splitrl.agents.link_memory.N_MEMORY_FEATURES`) and ``n_rules`` predicted-value
    features per flat action appended."""
    space = env.observation_space
    assert isinstance(space, spaces.Box)
    n_actions = env.actions.n_actions * n_rules
    memory_low, memory_high = memory_space_bounds() if n_memory else (np.zeros(0), np.zeros(0))
    return spaces.Box(
        low=np.concatenate(
            [space.low, memory_low, np.full(n_actions, -np.inf, dtype=np.float32)]
        ).astype(np.float32),
        high=np.concatenate(
            [space.high, memory_high, np.zeros(n_actions, dtype=np.float32)]
        ).astype(np.float32),
        dtype=np.float32,
    )


class SplitComputingWrapper(gym.Wrapper[np.ndarray, Any, np.ndarray, Any]):
    """A wrapper that needs the :class:`SplitComputingEnv` under ``env`` (as ``split_env``) and
    passes its action masks through.

    :param env: a ``SplitComputingEnv``, possibly wrapped (e.g. by ``Monitor``)
    :param needs: what needs the env, for the error message when ``env`` is not one
    """

    def __init__(self, env: gym.Env[np.ndarray, Any], needs: str) -> None:
        super().__init__(env)
        unwrapped = env.unwrapped
        if not isinstance(unwrapped, SplitComputingEnv):
            raise ValueError(f"{needs} need a SplitComputingEnv, got {type(unwrapped).__name__}")
        self.split_env = unwrapped

    def action_masks(self) -> np.ndarray:
        """The env's masks of canonical actions."""
        masks: np.ndarray = self.env.get_wrapper_attr("action_masks")()
        return masks


class PredictedValuesObservation(SplitComputingWrapper):
    """Appends :class:`PredictedActionValues` to every observation of a split-computing env.

    :param env: a ``SplitComputingEnv``, possibly wrapped (e.g. by ``Monitor``)
    :param predictor: the rule that predicts (:data:`PREDICTORS`)
    :param context: the other rules whose values come first (:class:`PredictedActionValues`)
    :param memory: whether the link memory's features come first of all
    """

    def __init__(
        self,
        env: gym.Env[np.ndarray, Any],
        predictor: str = RobustMPCPolicy.name,
        context: Sequence[str] = (),
        memory: bool = False,
    ) -> None:
        super().__init__(env, "predicted-value features")
        self.features = PredictedActionValues(predictor, context=context, memory=memory)
        self.observation_space = extended_observation_space(
            self.split_env, self.features.n_rules, self.features.n_memory
        )

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        self.features.reset(self.split_env)
        return self.features.extend(self.split_env, observation), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        return (
            self.features.extend(self.split_env, observation),
            float(reward),
            terminated,
            truncated,
            info,
        )
