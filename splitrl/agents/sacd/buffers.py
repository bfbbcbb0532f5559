"""A replay buffer that also stores the action masks of both states of a transition."""

from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.vec_env import VecNormalize

from splitrl.agents.sacd.policies import action_nvec

#: the key of a step's ``info`` that holds the hindsight value of every joint action
HINDSIGHT_INFO_KEY = "hindsight_values"
#: the key of a step's ``info`` that holds changes to earlier steps' hindsight values:
#: ``(steps back, change of every joint action's value)`` pairs
HINDSIGHT_CORRECTIONS_KEY = "hindsight_corrections"


class MaskableReplayBufferSamples(NamedTuple):
    observations: th.Tensor
    actions: th.Tensor
    next_observations: th.Tensor
    dones: th.Tensor
    rewards: th.Tensor
    action_masks: th.Tensor
    next_action_masks: th.Tensor
    hindsight_values: th.Tensor | None = None
    steps: th.Tensor | None = None


class MaskableReplayBuffer(ReplayBuffer):
    """
    Replay buffer that stores, next to each transition, the joint action masks of the observation
    (``action_masks``) and of the next observation (``next_action_masks``).

    A transition added without masks is stored with every action allowed. Each transition also
    keeps its place in its env's stream of transitions (``steps``: 0, 1, 2, ... across episodes),
    so that a learner can give each of its critics different stretches of it.

    :param buffer_size: Max number of element in the buffer
    :param observation_space: Observation space
    :param action_space: Action space (``Discrete`` or ``MultiDiscrete``)
    :param device: PyTorch device
    :param n_envs: Number of parallel environments
    :param optimize_memory_usage: Enable a memory efficient variant of the replay buffer
        (observations only; the masks are always stored for both states)
    :param handle_timeout_termination: Handle timeout termination (due to timelimit)
        separately and treat the task as infinite horizon task.
    :param store_hindsight: also store the hindsight value of every joint action of each
        transition, from ``infos[i]["hindsight_values"]`` (in splitrl:
        :class:`~splitrl.agents.hindsight.HindsightValuesInfo`); a transition without them is
        rejected with a ``ValueError``. ``infos[i]["hindsight_corrections"]``, when present, adds
        changes to the values of the same env's transitions that many steps back
    """

    action_masks: np.ndarray
    next_action_masks: np.ndarray
    hindsight_values: np.ndarray | None
    steps: np.ndarray

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        store_hindsight: bool = False,
    ):
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=optimize_memory_usage,
            handle_timeout_termination=handle_timeout_termination,
        )
        n_actions = int(np.prod(action_nvec(action_space)))
        self.action_masks = np.ones((self.buffer_size, self.n_envs, n_actions), dtype=bool)
        self.next_action_masks = np.ones((self.buffer_size, self.n_envs, n_actions), dtype=bool)
        self.hindsight_values = (
            np.zeros((self.buffer_size, self.n_envs, n_actions), dtype=np.float32)
            if store_hindsight
            else None
        )
        self.steps = np.zeros((self.buffer_size, self.n_envs), dtype=np.int64)
        self._added = 0
        self._staged_masks: tuple[np.ndarray | None, np.ndarray | None] = (None, None)

    def stage_action_masks(
        self, action_masks: np.ndarray | None, next_action_masks: np.ndarray | None
    ) -> None:
        """
        Hand over the masks of the transition that the next call to :meth:`add` stores.

        ``OffPolicyAlgorithm`` calls :meth:`add` with the fixed ``ReplayBuffer`` signature, so the
        algorithm gives the masks just before.

        :param action_masks: Joint masks of the observations ``(n_envs, n_actions)``, or None
        :param next_action_masks: Joint masks of the next observations, or None
        """
        self._staged_masks = (action_masks, next_action_masks)

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        if self.hindsight_values is not None:
            self._correct_hindsight_values(infos)
            self.hindsight_values[self.pos] = _hindsight_values(
                infos, self.hindsight_values.shape[2]
            )
        action_masks, next_action_masks = self._staged_masks
        self.action_masks[self.pos] = True if action_masks is None else action_masks
        self.next_action_masks[self.pos] = True if next_action_masks is None else next_action_masks
        self._staged_masks = (None, None)
        self.steps[self.pos] = self._added
        self._added += 1
        super().add(obs, next_obs, action, reward, done, infos)

    def _correct_hindsight_values(self, infos: list[dict[str, Any]]) -> None:
        """Add each info's corrections to the stored values of its env's earlier transitions."""
        assert self.hindsight_values is not None
        stored = self.buffer_size if self.full else self.pos
        for env_index, info in enumerate(infos):
            for back, change in info.get(HINDSIGHT_CORRECTIONS_KEY, ()):
                back = int(back)
                if not 1 <= back <= stored:
                    raise ValueError(
                        f"{HINDSIGHT_CORRECTIONS_KEY} refer to the transition {back} steps back, "
                        f"but the buffer holds the last {stored}"
                    )
                row = (self.pos - back) % self.buffer_size
                self.hindsight_values[row, env_index] += np.asarray(change, dtype=np.float32)

    def sample(  # type: ignore[override]
        self, batch_size: int, env: VecNormalize | None = None
    ) -> MaskableReplayBufferSamples:
        """
        Sample transitions with their action masks.

        :param batch_size: Number of elements to sample
        :param env: associated VecNormalize, to normalize the observations and rewards
        :return: the sampled transitions
        """
        return super().sample(batch_size, env=env)  # type: ignore[return-value]

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> MaskableReplayBufferSamples:
        # The same global generator as ReplayBuffer.sample draws the batch indices from
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))  # noqa: NPY002

        if self.optimize_memory_usage:
            next_obs = self.observations[(batch_inds + 1) % self.buffer_size, env_indices, :]
        else:
            next_obs = self.next_observations[batch_inds, env_indices, :]

        # Only use dones that are not due to timeouts
        dones = self.dones[batch_inds, env_indices] * (1 - self.timeouts[batch_inds, env_indices])
        data = (
            self._normalize_obs(self.observations[batch_inds, env_indices, :], env),
            self.actions[batch_inds, env_indices, :],
            self._normalize_obs(next_obs, env),
            dones.reshape(-1, 1),
            self._normalize_reward(self.rewards[batch_inds, env_indices].reshape(-1, 1), env),
            self.action_masks[batch_inds, env_indices, :],
            self.next_action_masks[batch_inds, env_indices, :],
        )
        hindsight = (
            None
            if self.hindsight_values is None
            else self.to_torch(self.hindsight_values[batch_inds, env_indices, :])
        )
        samples = MaskableReplayBufferSamples(*tuple(map(self.to_torch, data)))
        steps = self.to_torch(self.steps[batch_inds, env_indices].reshape(-1, 1))
        return samples._replace(hindsight_values=hindsight, steps=steps)


def _hindsight_values(infos: list[dict[str, Any]], n_actions: int) -> np.ndarray:
    """The hindsight values of one step's transitions, ``(n_envs, n_actions)``, from their infos."""
    rows = []
    for info in infos:
        values = info.get(HINDSIGHT_INFO_KEY)
        if values is None:
            raise ValueError(
                f"the replay buffer stores hindsight values but a step's info has no "
                f"{HINDSIGHT_INFO_KEY!r} (in splitrl: wrap the training env in "
                "splitrl.agents.hindsight.HindsightValuesInfo)"
            )
        values = np.asarray(values, dtype=np.float32)
        if values.shape != (n_actions,) or not np.isfinite(values).all():
            raise ValueError(
                f"{HINDSIGHT_INFO_KEY} must be {n_actions} finite values, got shape {values.shape}"
            )
        rows.append(values)
    return np.stack(rows)
