"""Agents that learn or hand-code split-computing decisions: SACD, comparison learners, baselines."""

from splitrl.agents.baselines import BASELINES, make_baseline
from splitrl.agents.learners import LEARNERS, get_learner
from splitrl.agents.policy_interface import ModelPolicy, Policy
from splitrl.agents.sacd import SACD

__all__ = [
    "BASELINES",
    "LEARNERS",
    "SACD",
    "ModelPolicy",
    "Policy",
    "get_learner",
    "make_baseline",
]
