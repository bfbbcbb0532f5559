"""The split-computing environment, its scenarios, channels, server load and time model.

Importing this package, which ``import splitrl`` does, registers ``splitrl/SplitComputing-v1`` (the
default scenario) and one id per named scenario, ``splitrl/SplitComputing-<scenario>-v1``, with
Gymnasium::

    import gymnasium as gym
    import splitrl

    env = gym.make("splitrl/SplitComputing-v1")
"""

import gymnasium

from splitrl.envs.actions import ActionTable
from splitrl.envs.link_quality import LinkQualityModel
from splitrl.envs.reward import REWARD_PRESETS, RewardSpec, get_reward_spec
from splitrl.envs.scenarios import SCENARIOS, Scenario, get_scenario, resolve_scenario
from splitrl.envs.split_computing import ActionOutcomes, SplitComputingEnv

ENV_ID = "splitrl/SplitComputing-v1"


def scenario_env_id(scenario: str) -> str:
    """The Gymnasium id of a named scenario."""
    return ENV_ID if scenario == "default" else f"splitrl/SplitComputing-{scenario}-v1"


def _register() -> None:
    for name in SCENARIOS:
        env_id = scenario_env_id(name)
        if env_id not in gymnasium.registry:
            gymnasium.register(
                id=env_id,
                entry_point="splitrl.envs.split_computing:SplitComputingEnv",
                kwargs={"scenario": name},
            )


_register()

__all__ = [
    "ENV_ID",
    "REWARD_PRESETS",
    "SCENARIOS",
    "ActionOutcomes",
    "ActionTable",
    "LinkQualityModel",
    "RewardSpec",
    "Scenario",
    "SplitComputingEnv",
    "get_reward_spec",
    "get_scenario",
    "resolve_scenario",
    "scenario_env_id",
]
