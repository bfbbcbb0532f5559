"""Hyperparameters as plain data (config files, run configs) and as the algorithm constructors take
them.

:func:`constructor_values` turns the plain data into constructor arguments (an activation function's
name into the ``torch.nn`` class, a ``train_freq`` list into a tuple). Names are checked against the
algorithm's constructor by :meth:`splitrl.agents.learners.LearnerSpec.check_hyperparameters`, values
by :func:`splitrl.training.config.validate_hyperparameters`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


def constructor_values(hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """The plain data of a config turned into the objects the constructors take (a new dict).

    :raises ValueError: for an ``activation_fn`` not in :data:`ACTIVATION_FUNCTIONS`
    """
    values = dict(hyperparameters)
    if isinstance(values.get("train_freq"), list):
        values["train_freq"] = tuple(values["train_freq"])
    policy_kwargs = values.get("policy_kwargs")
    if policy_kwargs and isinstance(policy_kwargs.get("activation_fn"), str):
        from torch import nn

        name = policy_kwargs["activation_fn"]
        if name not in ACTIVATION_FUNCTIONS:
            raise ValueError(
                f"unknown activation_fn {name!r}; known: {', '.join(ACTIVATION_FUNCTIONS)}"
            )
        activation = getattr(nn, ACTIVATION_FUNCTIONS[name])
        values["policy_kwargs"] = {**policy_kwargs, "activation_fn": activation}
    return values
