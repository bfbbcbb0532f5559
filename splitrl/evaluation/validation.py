"""A learning curve on fixed validation episodes, recorded during training."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stable_baselines3.common.callbacks import BaseCallback

from splitrl.agents.learners import LearnerSpec
from splitrl.agents.rollout import run_episodes
from splitrl.envs.split_computing import SplitComputingEnv


class ValidationCallback(BaseCallback):
    """Evaluates the greedy policy every ``every`` steps on the same validation episodes.

    The episodes are the same at every evaluation (common random numbers), so the learning curve
    compares the successive policies on the same channel and requests, not on fresh luck; the best
    of them is saved to ``best_path``.

    :param learner: the learner being trained (turns the model into a policy)
    :param env: an env of the training scenario
    :param seeds: reset seeds of the validation episodes (apart from training and test seeds)
    :param every: env steps between evaluations
    :param best_path: where the best model is saved
    :ivar curve: ``(timesteps, mean reward per request)`` of every evaluation
    """

    def __init__(
        self,
        learner: LearnerSpec,
        env: SplitComputingEnv,
        seeds: Sequence[int],
        every: int,
        best_path: Path,
    ) -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.learner = learner
        self.env = env
        self.seeds = list(seeds)
        self.every = every
        self.best_path = best_path
        self.curve: list[tuple[int, float]] = []

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            policy = self.learner.as_policy(self.model, self.env.actions.nvec)
            reward = float(run_episodes(policy, self.env, self.seeds).reward.mean())
            if not self.curve or reward > max(value for _, value in self.curve):
                self.best_path.parent.mkdir(parents=True, exist_ok=True)
                self.model.save(self.best_path)
            self.curve.append((self.num_timesteps, reward))
        return True
