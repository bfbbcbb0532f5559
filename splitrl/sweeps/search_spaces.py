"""Hyperparameter search spaces per learner, in the style of RL Baselines3 Zoo's
``hyperparams_opt.py``: one sampler per algorithm that asks an ``optuna.Trial`` for each value
(define-by-run), and one function that turns the sampled values into the learner's constructor
keywords (what ``splitrl train --conf-file`` reads).

The ranges are the Zoo's, narrowed where this env's scale needs it: the env's reward is per
request and an episode holds hundreds to thousands of requests, so short horizons (``gamma`` up to
0.99) and replay buffers of up to 10^5 steps cover the useful choices.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

#: network sizes by name (the Zoo's ``net_arch`` choices)
NET_ARCHS: dict[str, list[int]] = {"small": [64, 64], "medium": [256, 256], "large": [400, 300]}


def _common_off_policy(trial: optuna.Trial) -> None:
    trial.suggest_categorical("gamma", [0.8, 0.9, 0.95, 0.98, 0.99])
    trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True)
    trial.suggest_categorical("batch_size", [32, 64, 128, 256, 512])
    trial.suggest_categorical("buffer_size", [10_000, 50_000, 100_000])
    trial.suggest_categorical("learning_starts", [0, 500, 1_000, 5_000])
    trial.suggest_categorical("train_freq", [1, 4, 8, 16])
    trial.suggest_categorical("net_arch", list(NET_ARCHS))


def sample_sacd_params(trial: optuna.Trial) -> None:
    """SACD: the Zoo's SAC space, with the discrete target entropy ratio."""
    _common_off_policy(trial)
    trial.suggest_categorical("tau", [0.001, 0.005, 0.01, 0.02, 0.05])
    trial.suggest_float("target_entropy_ratio", 0.05, 0.98)
    trial.suggest_categorical("ent_coef", ["auto", "auto_0.1", "auto_0.01"])


def sample_sacd_prior_params(trial: optuna.Trial) -> None:
    """``sacd-prior``: the Zoo's SAC space, with the KL trust region around the prior (and the
    temperature that holds it) in place of the target entropy."""
    _common_off_policy(trial)
    trial.suggest_categorical("tau", [0.001, 0.005, 0.01, 0.02, 0.05])
    trial.suggest_float("target_kl", 0.005, 1.0, log=True)
    trial.suggest_categorical("ent_coef", ["auto", "auto_0.1"])


def sample_dqn_params(trial: optuna.Trial) -> None:
    """DQN: the Zoo's space."""
    _common_off_policy(trial)
    trial.suggest_float("exploration_fraction", 0.0, 0.5)
    trial.suggest_float("exploration_final_eps", 0.0, 0.2)
    trial.suggest_categorical("target_update_interval", [1, 1_000, 5_000, 10_000])


def sample_ppo_params(trial: optuna.Trial) -> None:
    """PPO (and MaskablePPO): the Zoo's space."""
    trial.suggest_categorical("batch_size", [32, 64, 128, 256])
    trial.suggest_categorical("n_steps", [256, 512, 1_024, 2_048])
    trial.suggest_categorical("gamma", [0.8, 0.9, 0.95, 0.98, 0.99])
    trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True)
    trial.suggest_float("ent_coef", 1e-8, 0.1, log=True)
    trial.suggest_categorical("clip_range", [0.1, 0.2, 0.3, 0.4])
    trial.suggest_categorical("n_epochs", [1, 5, 10, 20])
    trial.suggest_categorical("gae_lambda", [0.8, 0.9, 0.92, 0.95, 0.98, 1.0])
    trial.suggest_categorical("max_grad_norm", [0.3, 0.5, 0.7, 1.0, 2.0, 5.0])
    trial.suggest_float("vf_coef", 0.0, 1.0)
    trial.suggest_categorical("net_arch", list(NET_ARCHS))


#: the sampler of every learner ``splitrl tune`` can search
SAMPLERS: dict[str, Callable[[optuna.Trial], None]] = {
    "sacd": sample_sacd_params,
    "sacd-prior": sample_sacd_prior_params,
    "sacd-hindsight": sample_sacd_prior_params,
    "dqn": sample_dqn_params,
    "ppo": sample_ppo_params,
    "maskable-ppo": sample_ppo_params,
}


def sampler(algo: str) -> Callable[[optuna.Trial], None]:
    """The search space of ``algo``.

    :raises ValueError: for a learner without one
    """
    if algo not in SAMPLERS:
        raise ValueError(f"no search space for {algo!r}; searchable: {', '.join(SAMPLERS)}")
    return SAMPLERS[algo]


def hyperparameters(algo: str, sampled: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor keywords of ``algo`` for the sampled values.

    ``net_arch`` becomes ``policy_kwargs.net_arch`` (kept beside the learner's other default
    ``policy_kwargs``, such as ``sacd-prior``'s ``action_prior``); a PPO ``batch_size`` larger
    than ``n_steps`` is cut to it (SB3 needs the rollout to hold a batch).
    """
    from splitrl.agents import get_learner

    values = dict(sampled)
    if "net_arch" in values:
        defaults = dict(get_learner(algo).default_hyperparameters.get("policy_kwargs") or {})
        values["policy_kwargs"] = {**defaults, "net_arch": NET_ARCHS[values.pop("net_arch")]}
    if "n_steps" in values and "batch_size" in values:
        values["batch_size"] = min(values["batch_size"], values["n_steps"])
    return values
