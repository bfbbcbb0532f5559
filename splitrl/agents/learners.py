"""The learners that ``splitrl train`` can run: SACD and Stable-Baselines3 comparison algorithms.

Each :class:`LearnerSpec` says how the algorithm sees the env's ``MultiDiscrete([exits, splits, bits])``
action, its default hyperparameters, and how a trained model becomes a
:class:`~splitrl.agents.policy_interface.Policy`:

| name | algorithm | action seen by the learner | masks |
|---|---|---|---|
| ``sacd`` | :class:`splitrl.agents.sacd.SACD` (ours) | ``MultiDiscrete`` | yes |
| ``ppo`` | SB3 ``PPO`` | ``MultiDiscrete`` (one categorical per component) | no |
| ``maskable-ppo`` | sb3-contrib ``MaskablePPO`` | ``Discrete(n_actions)`` (flat index) | yes |
| ``dqn`` | SB3 ``DQN`` | ``Discrete(n_actions)`` (flat index) | no |
| ``sac`` | SB3 ``SAC`` | ``Box([-1, 1]^3)``, binned per component | no |

Learners without masks may pick a non-canonical action; the env executes it as its canonical form.
MaskablePPO sees the flat action because the canonical actions do not factor per component (which
bit-widths are allowed depends on the exit and the split), and sb3-contrib masks a ``MultiDiscrete``
space per component only.

Algorithm classes are imported when first needed, so listing the learners stays cheap.
"""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from splitrl.agents.policy_interface import ModelPolicy

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

ActionView = Literal["multi-discrete", "flat", "box"]

#: constructor arguments that the training command sets itself (from its flags)
RESERVED_HYPERPARAMETERS = {
    "env": "the env is built from --scenario and its overrides",
    "seed": "use --seed",
    "device": "use --device",
    "tensorboard_log": "TensorBoard logs go to the run directory",
    "verbose": "the training command sets the verbosity",
    "_init_setup_model": "internal to Stable-Baselines3",
}

#: activation functions a config file may name in ``policy_kwargs.activation_fn`` (torch.nn classes)
ACTIVATION_FUNCTIONS = {
    "relu": "ReLU",
    "tanh": "Tanh",
    "elu": "ELU",
    "leaky_relu": "LeakyReLU",
    "gelu": "GELU",
    "silu": "SiLU",
}


class FlatAction:
    """Maps a flat action index to ``(exit, split, bits)`` in C order over ``nvec``.

    :param nvec: the sizes of the action components
    """

    def __init__(self, nvec: Sequence[int]) -> None:
        self.nvec = tuple(int(n) for n in nvec)

    def __call__(self, action: Any) -> np.ndarray:
        """The ``(e, s, b)`` triple of a flat index (a scalar or a one-element array)."""
        index = int(np.asarray(action).reshape(-1)[0])
        return np.array(np.unravel_index(index, self.nvec), dtype=np.int64)


class BinnedAction:
    """Maps a point of ``[-1, 1]^3`` to ``(exit, split, bits)`` by equal-width bins per component.

    Component ``i`` with ``n_i`` choices takes choice ``floor((a_i + 1) / 2 * n_i)``, clipped to
    ``[0, n_i - 1]``: ``[-1, 1]`` is cut into ``n_i`` bins of equal width, in index order.

    :param nvec: the sizes of the action components
    """

    def __init__(self, nvec: Sequence[int]) -> None:
        self.nvec = np.array(nvec, dtype=np.int64)

    def __call__(self, action: Any) -> np.ndarray:
        """The ``(e, s, b)`` triple of a continuous action."""
        point = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        bins = np.floor((point + 1.0) / 2.0 * self.nvec).astype(np.int64)
        return np.minimum(bins, self.nvec - 1)


class FlatActionWrapper(gym.ActionWrapper[np.ndarray, np.int64, np.ndarray]):
    """Presents the env's ``MultiDiscrete`` action as ``Discrete(n_actions)`` (flat index, C order).

    ``action_masks()`` is the env's mask over the same flat indices.
    """

    def __init__(self, env: gym.Env[np.ndarray, np.ndarray]) -> None:
        super().__init__(env)
        nvec = _multi_discrete_nvec(env.action_space)
        self.to_triple = FlatAction(nvec)
        self.action_space = spaces.Discrete(int(np.prod(nvec)))

    def action(self, action: np.int64) -> np.ndarray:
        """The ``(e, s, b)`` triple of a flat index."""
        return self.to_triple(action)

    def action_masks(self) -> np.ndarray:
        """Canonical actions over the flat indices."""
        masks: np.ndarray = self.env.get_wrapper_attr("action_masks")()
        return masks


class BoxActionWrapper(gym.ActionWrapper[np.ndarray, np.ndarray, np.ndarray]):
    """Presents the env's ``MultiDiscrete`` action as ``Box([-1, 1]^3)``, binned per component.

    A continuous relaxation for continuous-action learners; see :class:`BinnedAction`.
    """

    def __init__(self, env: gym.Env[np.ndarray, np.ndarray]) -> None:
        super().__init__(env)
        nvec = _multi_discrete_nvec(env.action_space)
        self.to_triple = BinnedAction(nvec)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(len(nvec),), dtype=np.float32)

    def action(self, action: np.ndarray) -> np.ndarray:
        """The ``(e, s, b)`` triple of a continuous action."""
        return self.to_triple(action)


def _multi_discrete_nvec(space: gym.Space[Any]) -> tuple[int, ...]:
    if not isinstance(space, spaces.MultiDiscrete):
        raise ValueError(f"expected a MultiDiscrete action space, got {space}")
    return tuple(int(n) for n in space.nvec)


_WRAPPERS: dict[ActionView, type[gym.ActionWrapper[Any, Any, Any]] | None] = {
    "multi-discrete": None,
    "flat": FlatActionWrapper,
    "box": BoxActionWrapper,
}
_ADAPTERS: dict[ActionView, Callable[[Sequence[int]], Callable[[Any], np.ndarray]] | None] = {
    "multi-discrete": None,
    "flat": FlatAction,
    "box": BinnedAction,
}


@dataclass(frozen=True)
class LearnerSpec:
    """How one learning algorithm is trained on the split-computing env and used afterwards.

    :param name: the name used by ``--algo`` and in run directories
    :param algorithm: ``"module:Class"`` of the Stable-Baselines3-style algorithm
    :param description: one line for people
    :param source: the paper the algorithm comes from
    :param action_view: how the learner sees the action: ``"multi-discrete"`` (as the env),
        ``"flat"`` (``Discrete`` over flat indices) or ``"box"`` (binned ``[-1, 1]^3``)
    :param uses_masks: whether the algorithm uses ``action_masks()`` (training and evaluation)
    :param default_hyperparameters: constructor keywords used unless a config overrides them
    :param predicted_values: whether the learner observes, besides the env's observation, the
        predicted value of every flat action (:mod:`splitrl.agents.features`)
    """

    name: str
    algorithm: str
    description: str
    source: str
    action_view: ActionView
    uses_masks: bool
    default_hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    predicted_values: bool = False

    def algorithm_class(self) -> type[BaseAlgorithm]:
        """The algorithm class (imported now)."""
        module_name, class_name = self.algorithm.split(":")
        algorithm: type[BaseAlgorithm] = getattr(importlib.import_module(module_name), class_name)
        return algorithm

    @property
    def off_policy(self) -> bool:
        """Whether the algorithm learns from a replay buffer (which checkpoints then include)."""
        from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

        return issubclass(self.algorithm_class(), OffPolicyAlgorithm)

    def wrap_env(self, env: gym.Env[Any, Any]) -> gym.Env[Any, Any]:
        """``env`` as the learner sees it: with the predicted-value features and the action wrapper
        its spec asks for."""
        if self.predicted_values:
            from splitrl.agents.features import PredictedValuesObservation

            env = PredictedValuesObservation(env)
        wrapper = _WRAPPERS[self.action_view]
        return env if wrapper is None else wrapper(env)

    def action_adapter(self, nvec: Sequence[int]) -> Callable[[Any], np.ndarray] | None:
        """Maps the trained model's raw action to ``(exit, split, bits)``; ``None`` for identity."""
        adapter = _ADAPTERS[self.action_view]
        return None if adapter is None else adapter(nvec)

    def hyperparameter_names(self) -> list[str]:
        """Keywords a config may set: the algorithm's constructor arguments, less the reserved ones."""
        parameters = inspect.signature(self.algorithm_class().__init__).parameters
        return sorted(
            name
            for name, parameter in parameters.items()
            if name not in RESERVED_HYPERPARAMETERS
            and name != "self"
            and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        )

    def check_hyperparameters(self, hyperparameters: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming every key the algorithm's constructor does not accept."""
        reserved = sorted(set(hyperparameters) & set(RESERVED_HYPERPARAMETERS))
        if reserved:
            reasons = "; ".join(f"{key}: {RESERVED_HYPERPARAMETERS[key]}" for key in reserved)
            raise ValueError(f"{self.name}: hyperparameters {reserved} cannot be set ({reasons})")
        known = self.hyperparameter_names()
        unknown = sorted(set(hyperparameters) - set(known))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown hyperparameters {unknown}; "
                f"{self.algorithm.split(':')[1]} accepts: {', '.join(known)}"
            )
        policy_kwargs = hyperparameters.get("policy_kwargs")
        if policy_kwargs is not None and not isinstance(policy_kwargs, Mapping):
            raise ValueError(f"{self.name}: policy_kwargs must be a mapping, got {policy_kwargs!r}")

    def resolved_hyperparameters(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The defaults updated by ``overrides`` (checked); plain data, as stored in run configs."""
        self.check_hyperparameters(overrides)
        return copy.deepcopy({**self.default_hyperparameters, **overrides})

    def build_model(
        self,
        env: Any,
        hyperparameters: Mapping[str, Any],
        *,
        seed: int | None = None,
        device: str = "cpu",
        verbose: int = 0,
    ) -> BaseAlgorithm:
        """A new model of this algorithm on ``env`` (a VecEnv of envs wrapped by :meth:`wrap_env`).

        :param hyperparameters: constructor keywords (plain data: ``policy_kwargs.activation_fn``
            names a function of :data:`ACTIVATION_FUNCTIONS`, ``train_freq`` may be a list)
        :raises ValueError: for hyperparameters the algorithm rejects
        """
        self.check_hyperparameters(hyperparameters)
        # Algorithms add entries to the policy_kwargs they are given: never hand them shared dicts.
        kwargs = _constructor_values(copy.deepcopy(dict(hyperparameters)))
        policy = kwargs.pop("policy", "MlpPolicy")
        try:
            return self.algorithm_class()(
                policy, env, seed=seed, device=device, verbose=verbose, **kwargs
            )
        except (TypeError, ValueError, AssertionError, KeyError) as error:
            raise ValueError(f"{self.name}: invalid hyperparameters: {error}") from error

    def load_model(self, path: str | Path, device: str = "cpu") -> BaseAlgorithm:
        """Load a saved model of this algorithm."""
        return self.algorithm_class().load(path, device=device)

    def as_policy(self, model: Any, nvec: Sequence[int], name: str | None = None) -> ModelPolicy:
        """A trained model as a :class:`~splitrl.agents.policy_interface.Policy` acting greedily.

        :param nvec: the env's action component sizes ``(n_exits, n_splits, n_bits)``
        :param name: name in tables (default: the learner's name)
        """
        features = None
        if self.predicted_values:
            from splitrl.agents.features import PredictedActionValues

            features = PredictedActionValues()
        return ModelPolicy(
            model, name or self.name, action_adapter=self.action_adapter(nvec), features=features
        )


def _constructor_values(hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """Turn the plain data of a config into the objects the constructors take."""
    if isinstance(hyperparameters.get("train_freq"), list):
        hyperparameters["train_freq"] = tuple(hyperparameters["train_freq"])
    policy_kwargs = hyperparameters.get("policy_kwargs")
    if policy_kwargs and isinstance(policy_kwargs.get("activation_fn"), str):
        from torch import nn

        name = policy_kwargs["activation_fn"]
        if name not in ACTIVATION_FUNCTIONS:
            raise ValueError(
                f"unknown activation_fn {name!r}; known: {', '.join(ACTIVATION_FUNCTIONS)}"
            )
        activation = getattr(nn, ACTIVATION_FUNCTIONS[name])
        hyperparameters["policy_kwargs"] = {**policy_kwargs, "activation_fn": activation}
    return hyperparameters


_NET = {"net_arch": [64, 64]}

#: the learners of ``splitrl train --algo``, by name (the defaults are tuned in this one place)
#: PPO and MaskablePPO share their defaults: they differ only in the action view and masks
_PPO_DEFAULTS: dict[str, Any] = {
    "learning_rate": 3e-4,
    "n_steps": 1_024,
    "batch_size": 64,
    "n_epochs": 10,
    "gamma": 0.9,
    "gae_lambda": 0.95,
    "ent_coef": 0.01,
    "policy_kwargs": _NET,
}

#: SACD and SB3's SAC share their settings, so the comparison is about the action space alone
_SOFT_ACTOR_CRITIC_DEFAULTS: dict[str, Any] = {
    "learning_rate": 3e-4,
    "buffer_size": 50_000,
    "learning_starts": 1_000,
    "batch_size": 128,
    "gamma": 0.9,
    "tau": 0.005,
    "train_freq": 1,
    "gradient_steps": 1,
    "ent_coef": "auto",
    "policy_kwargs": _NET,
}

LEARNERS: dict[str, LearnerSpec] = {
    spec.name: spec
    for spec in (
        LearnerSpec(
            name="sacd",
            algorithm="splitrl.agents.sacd:SACD",
            description="Soft Actor-Critic for discrete actions with action masks (ours)",
            source="Christodoulou, 'Soft Actor-Critic for Discrete Action Settings', arXiv:1910.07207, 2019",
            action_view="multi-discrete",
            uses_masks=True,
            default_hyperparameters={**_SOFT_ACTOR_CRITIC_DEFAULTS, "target_entropy_ratio": 0.3},
        ),
        LearnerSpec(
            name="sacd-prior",
            algorithm="splitrl.agents.sacd:SACD",
            description="SACD that also observes robust-mpc's predicted value of every action, "
            "with a critic residual and actor logits on that prior",
            source="Christodoulou, arXiv:1910.07207, 2019; the prior: Yin et al., SIGCOMM 2015",
            action_view="multi-discrete",
            uses_masks=True,
            default_hyperparameters={
                **_SOFT_ACTOR_CRITIC_DEFAULTS,
                "target_entropy_ratio": 0.3,
                "policy_kwargs": {**_NET, "action_prior": True},
            },
            predicted_values=True,
        ),
        LearnerSpec(
            name="ppo",
            algorithm="stable_baselines3:PPO",
            description="Proximal Policy Optimization, one categorical per action component",
            source="Schulman et al., 'Proximal Policy Optimization Algorithms', arXiv:1707.06347, 2017",
            action_view="multi-discrete",
            uses_masks=False,
            default_hyperparameters=_PPO_DEFAULTS,
        ),
        LearnerSpec(
            name="maskable-ppo",
            algorithm="sb3_contrib:MaskablePPO",
            description="PPO with invalid-action masking over the flat action index",
            source="Huang and Ontañón, 'A Closer Look at Invalid Action Masking in Policy Gradient Algorithms', FLAIRS 2022",
            action_view="flat",
            uses_masks=True,
            default_hyperparameters=_PPO_DEFAULTS,
        ),
        LearnerSpec(
            name="dqn",
            algorithm="stable_baselines3:DQN",
            description="Deep Q-Network over the flat action index (no masks)",
            source="Mnih et al., 'Human-level control through deep reinforcement learning', Nature 2015",
            action_view="flat",
            uses_masks=False,
            default_hyperparameters={
                "learning_rate": 3e-4,
                "buffer_size": 50_000,
                "learning_starts": 1_000,
                "batch_size": 128,
                "gamma": 0.9,
                "train_freq": 1,
                "gradient_steps": 1,
                "target_update_interval": 1_000,
                "exploration_fraction": 0.2,
                "exploration_final_eps": 0.05,
                "policy_kwargs": _NET,
            },
        ),
        LearnerSpec(
            name="sac",
            algorithm="stable_baselines3:SAC",
            description="Soft Actor-Critic on a continuous relaxation of the action, binned",
            source="Haarnoja et al., 'Soft Actor-Critic Algorithms and Applications', arXiv:1812.05905, 2018",
            action_view="box",
            uses_masks=False,
            default_hyperparameters=_SOFT_ACTOR_CRITIC_DEFAULTS,
        ),
    )
}


def get_learner(name: str) -> LearnerSpec:
    """The learner called ``name``."""
    if name not in LEARNERS:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(LEARNERS)}")
    return LEARNERS[name]


def load_policy(
    run_dir: str | Path, which: Literal["final", "best"] = "final", device: str = "cpu"
) -> ModelPolicy:
    """The trained policy of a run directory written by ``splitrl train``.

    :param run_dir: the run directory (holds ``config.yaml`` and the models)
    :param which: ``"final"`` (``model.zip``: the end of training, or where it was interrupted) or
        ``"best"`` (``best_model.zip``: the best evaluation during training)
    :param device: torch device to load the model on
    :raises FileNotFoundError: when the run directory or the model is missing
    :raises ValueError: when the run's config is malformed
    """
    from splitrl.training.run_dir import RunDirectory

    run = RunDirectory(Path(run_dir))
    config = run.read_config()
    spec = get_learner(str(config["algo"]))
    paths = {"final": run.model_path, "best": run.best_model_path}
    if which not in paths:
        raise ValueError(f"which must be 'final' or 'best', got {which!r}")
    path = paths[which]
    if not path.exists():
        raise FileNotFoundError(f"{run.path}: no {which} model ({path.name} is missing)")
    model = spec.load_model(path, device=device)
    return spec.as_policy(model, config["action_nvec"], name=spec.name)
