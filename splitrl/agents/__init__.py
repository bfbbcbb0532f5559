"""Agents that learn or hand-code split-computing decisions."""

from splitrl.agents.sacd import SACD

__all__ = ["SACD"]
