"""One-step bandits for SACD's tests: every step ends the episode."""

from typing import Any

import gymnasium as gym
import numpy as np

from splitrl.agents.sacd import SACD


class OneStepBandit(gym.Env[np.ndarray, np.int64]):
    """A bandit whose every step ends the episode: a subclass draws the next observation
    (``_observation``) and scores the action taken at the current one (``_reward``)."""

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self._observation(), {}

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = self._reward(int(action))
        return self._observation(), reward, True, False, {}

    def _observation(self) -> np.ndarray:
        raise NotImplementedError

    def _reward(self, action: int) -> float:
        raise NotImplementedError


def bandit_sacd(env: gym.Env, policy_kwargs: dict[str, Any], **kwargs: Any) -> SACD:
    """A small seeded SACD with an action prior on ``env``, updating from its 64th step."""
    return SACD(
        "MlpPolicy",
        env,
        policy_kwargs={"net_arch": [16], "action_prior": True, **policy_kwargs},
        learning_starts=64,
        batch_size=32,
        seed=0,
        **kwargs,
    )
