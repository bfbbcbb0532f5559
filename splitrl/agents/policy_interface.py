"""One interface for every decision maker: learned models, baselines and the clairvoyant references.

A :class:`Policy` picks the action for the env's current request. Baselines need more than the
observation (the device's throughput estimate, the predicted or true outcome of every action), so
``act`` receives the env itself; a policy must only use what its docstring says it uses: the learned
ones and the causal baselines see the observation and the device's own knowledge, only the
references that know more (``oracle-now``, ``clairvoyant``, ``clairvoyant-lookahead``) read the
channel or call :meth:`~splitrl.envs.SplitComputingEnv.evaluate_actions`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from splitrl.agents.features import PredictedActionValues
    from splitrl.envs.split_computing import SplitComputingEnv


@runtime_checkable
class Policy(Protocol):
    """Chooses ``(exit, split, bits)`` for each request.

    :ivar name: short name used in tables and plots
    """

    name: str

    def reset(self, env: SplitComputingEnv) -> None:
        """Called after ``env.reset()``, before the first ``act`` of an episode."""

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """The action for the env's current request, an int array ``(exit, split, bits)``."""
        ...


class ModelPolicy:
    """A trained Stable-Baselines3-style model (``predict``) as a :class:`Policy`, acting greedily.

    Masks of canonical actions are passed to models that accept ``action_masks`` (SACD,
    MaskablePPO).

    :param model: an object with ``predict(observation, deterministic=True, ...)``
    :param name: name in tables
    :param action_adapter: maps the model's raw action to ``(exit, split, bits)`` (for learners on a
        relaxed or flattened action space); identity by default
    :param features: for a model trained on observations extended with the predicted value of
        every action (:class:`~splitrl.agents.features.PredictedActionValues`), a new instance that
        computes them; None for the env's observation as it is
    """

    def __init__(
        self,
        model: Any,
        name: str,
        action_adapter: Any = None,
        features: PredictedActionValues | None = None,
    ) -> None:
        self.model = model
        self.name = name
        self.action_adapter = action_adapter
        self.features = features
        self._takes_masks = "action_masks" in _parameters(model.predict)

    def reset(self, env: SplitComputingEnv) -> None:
        """Reset the features' predictor, if any: the model itself is stateless."""
        if self.features is not None:
            self.features.reset(env)

    def observation_shape(self, env: SplitComputingEnv) -> tuple[int, ...]:
        """The shape of what the model observes in ``env``: the env's observation, extended by
        the features when there are any."""
        if self.features is None:
            return tuple(env.observation_space.shape or ())
        from splitrl.agents.features import extended_observation_space

        return tuple(
            extended_observation_space(env, self.features.n_rules, self.features.n_memory).shape
            or ()
        )

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """The model's deterministic action."""
        if self.features is not None:
            observation = self.features.extend(env, observation)
        if self._takes_masks:
            action, _ = self.model.predict(
                observation, deterministic=True, action_masks=env.action_masks()
            )
        else:
            action, _ = self.model.predict(observation, deterministic=True)
        if self.action_adapter is not None:
            action = self.action_adapter(action)
        return np.asarray(action, dtype=np.int64).reshape(3)


def _parameters(function: Any) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return set()
