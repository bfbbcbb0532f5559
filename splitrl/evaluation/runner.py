"""Evaluate several policies on the same seeded episodes (common random numbers).

The rollout loop itself is :func:`splitrl.agents.rollout.run_episodes`, the one loop that every
baseline fit, validation and evaluation uses.
"""

from __future__ import annotations

from collections.abc import Sequence

from tqdm.auto import tqdm

from splitrl.agents.policy_interface import Policy
from splitrl.agents.rollout import LOCAL_BITS, Rollout, run_episodes
from splitrl.envs.split_computing import SplitComputingEnv

__all__ = ["LOCAL_BITS", "Rollout", "evaluate_policies", "run_episodes"]


def evaluate_policies(
    policies: Sequence[Policy],
    env: SplitComputingEnv,
    seeds: Sequence[int],
    *,
    progress: bool = True,
    description: str = "evaluating",
) -> list[Rollout]:
    """Run every policy on the same seeded episodes (common random numbers).

    :param policies: the decision makers, each with a distinct ``name``
    :param env: the env of the evaluation condition
    :param seeds: reset seeds, one episode each
    :param progress: show a progress bar over all episodes
    :param description: the progress bar's label
    """
    names = [policy.name for policy in policies]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"policy names must be distinct, repeated: {duplicates}")
    with tqdm(
        total=len(policies) * len(seeds), desc=description, unit="episode", disable=not progress
    ) as bar:
        return [
            run_episodes(policy, env, seeds, on_episode=lambda: bar.update(1))
            for policy in policies
        ]
