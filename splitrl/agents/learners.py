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
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from splitrl.agents.action_views import ActionView, action_adapter, action_wrapper
from splitrl.agents.baselines.backlog import DEFAULT_BACKLOG_HORIZON
from splitrl.agents.hyperparameters import RESERVED_HYPERPARAMETERS, constructor_values
from splitrl.agents.link_memory import N_MEMORY_FEATURES
from splitrl.agents.policy_interface import ModelPolicy
from splitrl.envs.observation import scale_age

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

    from splitrl.envs.split_computing import SplitComputingEnv

#: ``policy_kwargs={"range_guard": "link"}`` for a SACD learner: its trained policy stays local
#: where the newest link throughput is below the range recorded in training; ``"link:SECONDS"``:
#: only while that measurement is younger than ``SECONDS`` (:func:`link_range_guard`;
#: docs/sacd.md, Not offloading below the training range)
LINK_RANGE_GUARD = "link"


def link_guard_expiry(value: str) -> float | None:
    """The expiry in seconds that a ``range_guard`` of ``"link"`` (``None``) or
    ``"link:SECONDS"`` names; ``ValueError`` for another string."""
    name, colon, seconds = value.partition(":")
    if name != LINK_RANGE_GUARD:
        raise ValueError(f"range_guard must be 'link', 'link:SECONDS' or a mapping, got {value!r}")
    if not colon:
        return None
    try:
        expiry = float(seconds)
    except ValueError:
        expiry = float("nan")
    if not (np.isfinite(expiry) and expiry > 0):
        raise ValueError(f"range_guard {value!r}: SECONDS must be a positive number")
    return expiry


def link_range_guard(
    env: SplitComputingEnv, expires_after_s: float | None = None
) -> dict[str, Any]:
    """The SACD ``range_guard`` that :data:`LINK_RANGE_GUARD` stands for on ``env``: the
    observation entry of the newest throughput measurement, and the flat indices of the actions
    that run entirely on the device; with ``expires_after_s``, the guard lifts once that
    measurement is that old."""
    actions = env.actions
    local = [
        actions.flat_index(e, s, b)
        for e, s, b in np.ndindex(*actions.nvec)
        if actions.is_device_only(e, s)
    ]
    guard: dict[str, Any] = {"input": env.layout.names.index("throughput_0"), "actions": local}
    if expires_after_s is not None:
        age = env.layout.names.index("estimate_age")
        guard["expires"] = {"input": age, "at": scale_age(expires_after_s)}
    return guard


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
    :param predicted_values: the causal rule (``"robust-mpc"``, ``"mpc"``, ``"mpc-geometric"`` or
        ``"mpc-quantile"``,
        :data:`~splitrl.agents.features.PREDICTORS`) whose predicted value of every flat action the
        learner observes besides the env's observation (:mod:`splitrl.agents.features`); ``None``:
        it observes the env's observation only
    :param context_values: other rules of :data:`~splitrl.agents.features.PREDICTORS` whose
        predicted values the learner also observes, before ``predicted_values``' (which stay the
        prior: the observation's last ``n_actions`` entries)
    :param link_memory: whether the learner also observes the link memory's slow statistics
        (:class:`~splitrl.agents.link_memory.LinkMemory`), before the predicted values
    :param hindsight_values: how the training envs' hindsight value of every flat action, put in
        each step's info (:mod:`splitrl.agents.hindsight`), prices the backlog: ``"lookahead"``,
        ``"replayed"``, ``"ahead"`` or ``"rechosen"``
        (:data:`~splitrl.agents.hindsight.BACKLOG_PRICES`);
        ``None``: no hindsight values. The policy never sees them
    :param hindsight_draws: how those values read each request's own RTT and queueing draws:
        ``"exact"`` or ``"mean"`` (their spread; :data:`~splitrl.agents.hindsight.HINDSIGHT_DRAWS`)
    :param hindsight_horizon: the most following requests the backlog price of those values
        counts (:class:`~splitrl.agents.hindsight.HindsightValuesInfo`)
    """

    name: str
    algorithm: str
    description: str
    source: str
    action_view: ActionView
    uses_masks: bool
    default_hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    predicted_values: str | None = None
    context_values: tuple[str, ...] = ()
    link_memory: bool = False
    hindsight_values: str | None = None
    hindsight_draws: str = "exact"
    hindsight_horizon: int = DEFAULT_BACKLOG_HORIZON

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
        """``env`` as the learner trains on it: with the hindsight values, the predicted-value
        features and the action wrapper its spec asks for."""
        if self.hindsight_values:
            from splitrl.agents.hindsight import HindsightValuesInfo

            env = HindsightValuesInfo(
                env,
                horizon=self.hindsight_horizon,
                backlog=self.hindsight_values,
                draws=self.hindsight_draws,
            )
        if self.predicted_values:
            from splitrl.agents.features import PredictedValuesObservation

            env = PredictedValuesObservation(
                env, self.predicted_values, self.context_values, self.link_memory
            )
        wrapper = action_wrapper(self.action_view)
        return env if wrapper is None else wrapper(env)

    def action_adapter(self, nvec: Sequence[int]) -> Callable[[Any], np.ndarray] | None:
        """Maps the trained model's raw action to ``(exit, split, bits)``; ``None`` for identity."""
        return action_adapter(self.action_view, nvec)

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
        guard = (policy_kwargs or {}).get("range_guard")
        if isinstance(guard, str):
            try:
                link_guard_expiry(guard)
            except ValueError as error:
                raise ValueError(f"{self.name}: policy_kwargs {error}") from None
        rules = self.rule_blocks
        prior_rules = (policy_kwargs or {}).get("prior_rules", 1)
        if prior_rules != 1 and not (isinstance(prior_rules, int) and 1 <= prior_rules <= rules):
            raise ValueError(
                f"{self.name}: policy_kwargs prior_rules must be an integer from 1 to {rules} "
                f"(the rules whose values it observes), got {prior_rules!r}"
            )

    @property
    def rule_blocks(self) -> int:
        """How many rules' predicted values the learner observes (its context rules and its
        prior's rule; 0 without predicted values)."""
        return len(self.context_values) + 1 if self.predicted_values else 0

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

        :param hyperparameters: constructor keywords (plain data, see
            :func:`~splitrl.agents.hyperparameters.constructor_values`)
        :raises ValueError: for hyperparameters the algorithm rejects
        """
        self.check_hyperparameters(hyperparameters)
        # Algorithms add entries to the policy_kwargs they are given: never hand them shared dicts.
        kwargs = constructor_values(copy.deepcopy(dict(hyperparameters)))
        policy_kwargs = kwargs.get("policy_kwargs") or {}
        if isinstance(policy_kwargs.get("range_guard"), str):
            expiry = link_guard_expiry(policy_kwargs["range_guard"])
            base_env = env.get_attr("unwrapped", [0])[0]
            policy_kwargs["range_guard"] = link_range_guard(base_env, expiry)
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

            features = PredictedActionValues(
                self.predicted_values, context=self.context_values, memory=self.link_memory
            )
        return ModelPolicy(
            model, name or self.name, action_adapter=self.action_adapter(nvec), features=features
        )


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

#: sacd-hindsight's settings (docs/sacd.md, Ablations), whichever rule gives its prior
_SACD_HINDSIGHT_DEFAULTS: dict[str, Any] = {
    **_SOFT_ACTOR_CRITIC_DEFAULTS,
    "hindsight": "actor",
    "target_kl": 0.05,
    "policy_kwargs": {
        **_NET,
        "action_prior": True,
        "clip_inputs": True,
        "optimizer_kwargs": {"weight_decay": 1e-3},
    },
}


def _sacd_hindsight(
    name: str,
    description: str,
    predicted_values: str,
    backlog: str = "lookahead",
    draws: str = "exact",
    horizon: int = DEFAULT_BACKLOG_HORIZON,
    hyperparameters: Mapping[str, Any] | None = None,
    context: tuple[str, ...] = (),
    link_memory: bool = False,
    gated: bool = False,
    gate_inputs: int | None = None,
) -> LearnerSpec:
    """A SACD whose actor learns from hindsight values, with a causal rule's values as features
    and prior, ``context`` rules' values and the link memory as features too (docs/sacd.md,
    Hindsight values, What the variants change); ``gated``: its prior is a learned per-state
    mixture of the policies of every rule it observes (``prior_rules``), its gate reading the
    ``gate_inputs`` entries before the rules' values alone if given; ``hyperparameters`` replace
    its defaults."""
    defaults = dict(_SACD_HINDSIGHT_DEFAULTS)
    if gated:
        defaults["policy_kwargs"] = {**defaults["policy_kwargs"], "prior_rules": len(context) + 1}
        if gate_inputs is not None:
            defaults["policy_kwargs"]["gate_inputs"] = gate_inputs
    return LearnerSpec(
        name=name,
        algorithm="splitrl.agents.sacd:SACD",
        description=description,
        source="Christodoulou, arXiv:1910.07207, 2019; hindsight learning: Sinclair et al., "
        "ICML 2023; the prior: Yin et al., SIGCOMM 2015",
        action_view="multi-discrete",
        uses_masks=True,
        default_hyperparameters={**defaults, **(hyperparameters or {})},
        predicted_values=predicted_values,
        context_values=context,
        link_memory=link_memory,
        hindsight_values=backlog,
        hindsight_draws=draws,
        hindsight_horizon=horizon,
    )


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
            "with a critic residual and actor logits on that prior, regularized toward it (KL)",
            source="Christodoulou, arXiv:1910.07207, 2019; the prior: Yin et al., SIGCOMM 2015",
            action_view="multi-discrete",
            uses_masks=True,
            # The KL trust region and centering: docs/sacd-experiments.md (The first ablation,
            # Entropy versus KL); with the entropy regularizer instead, the policy leaves the prior
            # and builds a backlog.
            default_hyperparameters={
                **_SOFT_ACTOR_CRITIC_DEFAULTS,
                "reward_centering": 0.01,
                "target_kl": 0.05,
                "policy_kwargs": {**_NET, "action_prior": True},
            },
            predicted_values="robust-mpc",
        ),
        _sacd_hindsight(
            "sacd-hindsight",
            "sacd-prior whose actor learns from every action's hindsight value (what it would "
            "have earned on the same channel) in place of a learned critic",
            predicted_values="robust-mpc",
        ),
        _sacd_hindsight(
            "sacd-hindsight-mpc",
            "sacd-hindsight whose features and prior are mpc's predicted values (the "
            "harmonic-mean forecast without robust-mpc's discount)",
            predicted_values="mpc",
        ),
        _sacd_hindsight(
            "sacd-hindsight-mpc-geometric",
            "sacd-hindsight whose features and prior are mpc-geometric's predicted values (mpc "
            "with the geometric mean of the last throughputs)",
            predicted_values="mpc-geometric",
        ),
        _sacd_hindsight(
            "sacd-hindsight-mpc-geometric-anchored",
            "sacd-hindsight-mpc-geometric that fills its replay buffer with its own greedy "
            "decisions, at a temperature fixed at 0.5: it stays at its prior "
            "(docs/sacd-experiments.md, Collecting with its own greedy decisions)",
            predicted_values="mpc-geometric",
            hyperparameters={"behavior": "greedy", "ent_coef": 0.5},
        ),
        _sacd_hindsight(
            "sacd-hindsight-mpc-quantile",
            "sacd-hindsight whose features and prior are mpc-quantile's predicted values "
            "(mpc-geometric averaged over the quantiles of a link forecast learned offline on "
            "synthetic channels)",
            predicted_values="mpc-quantile",
        ),
        _sacd_hindsight(
            "sacd-hindsight-mpc-quantile-anchored",
            "sacd-hindsight-mpc-geometric-anchored whose features and prior are mpc-quantile's "
            "predicted values",
            predicted_values="mpc-quantile",
            hyperparameters={"behavior": "greedy", "ent_coef": 0.5},
        ),
        _sacd_hindsight(
            "sacd-hindsight-mpc-quantile-robust",
            "sacd-hindsight-mpc-quantile that also observes robust-mpc's predicted values, so "
            "that it can tell where the cautious rule and the learned forecast disagree",
            predicted_values="mpc-quantile",
            context=("robust-mpc",),
        ),
        _sacd_hindsight(
            "sacd-hindsight-mpc-quantile-memory",
            "sacd-hindsight-mpc-quantile that also observes slow statistics of the link over the "
            "episode (its level, spread and how often it dropped out), so that its correction can "
            "depend on the kind of link it is on",
            predicted_values="mpc-quantile",
            link_memory=True,
        ),
        _sacd_hindsight(
            "sacd-hindsight-mpc-quantile-gated",
            "sacd-hindsight-mpc-quantile whose prior is a learned per-state mixture of the "
            "policies of mpc-quantile, robust-mpc and mpc-geometric (all three rules' values "
            "observed): it learns which rule to trust where, and corrects the mixture",
            predicted_values="mpc-quantile",
            context=("robust-mpc", "mpc-geometric"),
            gated=True,
        ),
        _sacd_hindsight(
            "sacd-hindsight-mpc-quantile-gated-memory",
            "sacd-hindsight-mpc-quantile-gated whose gate and correction also observe the link "
            "memory, so that which rule it trusts can depend on the kind of link it is on (a link "
            "that fades from one that drops out)",
            predicted_values="mpc-quantile",
            context=("robust-mpc", "mpc-geometric"),
            link_memory=True,
            gated=True,
        ),
        _sacd_hindsight(
            "sacd-hindsight-mpc-quantile-gated-by-memory",
            "sacd-hindsight-mpc-quantile-gated-memory whose gate reads the link memory alone: "
            "which rule it trusts depends on the kind of link, not on states of the training "
            "channels that look like those of other links (docs/sacd-experiments.md, What a gate "
            "can read)",
            predicted_values="mpc-quantile",
            context=("robust-mpc", "mpc-geometric"),
            link_memory=True,
            gated=True,
            gate_inputs=N_MEMORY_FEATURES,
        ),
        _sacd_hindsight(
            "sacd-hindsight-mpc-replayed",
            "sacd-hindsight-mpc whose hindsight values price each action's backlog by what it "
            "cost the following requests, replayed with the actions taken",
            predicted_values="mpc",
            backlog="replayed",
        ),
        _sacd_hindsight(
            "sacd-hindsight-mpc-geometric-replayed",
            "sacd-hindsight-mpc-replayed whose features and prior are mpc-geometric's predicted "
            "values",
            predicted_values="mpc-geometric",
            backlog="replayed",
        ),
        _sacd_hindsight(
            "sacd-hindsight-mpc-quantile-replayed",
            "sacd-hindsight-mpc-replayed whose features and prior are mpc-quantile's predicted "
            "values",
            predicted_values="mpc-quantile",
            backlog="replayed",
        ),
        _sacd_hindsight(
            "sacd-hindsight-mpc-quantile-replayed-h256",
            "sacd-hindsight-mpc-quantile-replayed whose replays charge an action's backlog to up "
            "to 256 following requests instead of 64: on a device that stays busy, a later start "
            "can last longer than 64 requests",
            predicted_values="mpc-quantile",
            backlog="replayed",
            horizon=256,
        ),
        _sacd_hindsight(
            "sacd-hindsight-mpc-quantile-replayed-h16",
            "sacd-hindsight-mpc-quantile-replayed whose replays charge an action's backlog to up "
            "to 16 following requests instead of 64: the replays hold the later actions fixed, "
            "and a shorter replay holds them over fewer requests (docs/sacd-experiments.md, "
            "Where EVDO is lost)",
            predicted_values="mpc-quantile",
            backlog="replayed",
            horizon=16,
        ),
        _sacd_hindsight(
            "sacd-hindsight-mpc-quantile-rechosen",
            "sacd-hindsight-mpc-quantile-replayed whose replays serve a later request with "
            "another action where their wait changes the device's lookahead choice, instead of "
            "holding the actions taken fixed (docs/sacd-experiments.md, Where EVDO is lost)",
            predicted_values="mpc-quantile",
            backlog="rechosen",
        ),
        _sacd_hindsight(
            "sacd-hindsight-mpc-geometric-ahead",
            "sacd-hindsight-mpc-geometric whose hindsight values price each action's backlog by "
            "the lookahead over the requests that actually followed (their own channel, payloads "
            "and load) instead of a forecast that they meet this request's",
            predicted_values="mpc-geometric",
            backlog="ahead",
        ),
        _sacd_hindsight(
            "sacd-hindsight-mpc-geometric-spread",
            "sacd-hindsight-mpc-geometric-replayed whose hindsight values take each request's "
            "own reward over the RTT and queueing spread instead of at its draws",
            predicted_values="mpc-geometric",
            backlog="replayed",
            draws="mean",
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
