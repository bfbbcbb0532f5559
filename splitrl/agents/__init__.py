"""Agents that learn or hand-code split-computing decisions: SACD, comparison learners, baselines.

The names below are imported on first use, so that the numpy-only parts (the baselines, the
predicted-value features) load without torch, as the device runtime needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from splitrl.agents.baselines import BASELINES, make_baseline
    from splitrl.agents.learners import LEARNERS, get_learner
    from splitrl.agents.policy_interface import ModelPolicy, Policy
    from splitrl.agents.sacd import SACD

_MODULE_OF = {
    "BASELINES": "splitrl.agents.baselines",
    "make_baseline": "splitrl.agents.baselines",
    "LEARNERS": "splitrl.agents.learners",
    "get_learner": "splitrl.agents.learners",
    "ModelPolicy": "splitrl.agents.policy_interface",
    "Policy": "splitrl.agents.policy_interface",
    "SACD": "splitrl.agents.sacd",
}

__all__ = [
    "BASELINES",
    "LEARNERS",
    "SACD",
    "ModelPolicy",
    "Policy",
    "get_learner",
    "make_baseline",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'splitrl.agents' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
