"""Truncation bootstraps, termination does not: in the replay buffer and in what SACD learns.

An episode cut by a time limit (``truncated``) has a future the critic must bootstrap from; one that
ended (``terminated``) has none. The buffer keeps both as ``done`` but samples ``dones = 0`` for a
truncated transition, so the critic target adds ``gamma x V(s')`` for it only.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from splitrl.agents.sacd import SACD, MaskableReplayBuffer

OBSERVATION_SPACE = spaces.Box(0.0, 10.0, shape=(1,), dtype=np.float32)


def test_a_truncated_transition_is_sampled_as_not_done_and_a_terminated_one_as_done() -> None:
    buffer = MaskableReplayBuffer(8, OBSERVATION_SPACE, spaces.Discrete(3), device="cpu")
    endings = {1.0: (True, {"TimeLimit.truncated": True}), 2.0: (True, {}), 3.0: (False, {})}
    for marker, (done, info) in endings.items():
        buffer.stage_action_masks(np.array([[True, False, True]]), np.array([[True, True, False]]))
        buffer.add(
            np.array([[marker]]),
            np.array([[marker + 0.5]]),
            np.array([[0]]),
            np.array([1.0]),
            np.array([done]),
            [info],
        )
    np.random.seed(0)  # noqa: NPY002 (the buffer samples with the global generator, as SB3 does)
    batch = buffer.sample(64)
    markers = batch.observations[:, 0].numpy()
    dones = batch.dones[:, 0].numpy()
    assert set(markers) == {1.0, 2.0, 3.0}
    assert np.all(dones[markers == 1.0] == 0.0)  # truncated: bootstraps
    assert np.all(dones[markers == 2.0] == 1.0)  # terminated: does not
    assert np.all(dones[markers == 3.0] == 0.0)  # the episode goes on
    np.testing.assert_array_equal(batch.next_observations[:, 0].numpy(), markers + 0.5)
    assert batch.action_masks.numpy().tolist() == [[True, False, True]] * 64
    assert batch.next_action_masks.numpy().tolist() == [[True, True, False]] * 64


class OneStepEpisodes(gym.Env):
    """One state, one action, reward 1, and every episode ends after one step.

    :param truncate: end episodes by a time limit (the state goes on) instead of terminating them
    """

    observation_space = OBSERVATION_SPACE
    action_space = spaces.Discrete(1)

    def __init__(self, truncate: bool) -> None:
        self.truncate = truncate

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        return np.ones(1, dtype=np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        return np.ones(1, dtype=np.float32), 1.0, not self.truncate, self.truncate, {}


@pytest.mark.parametrize(("truncate", "value"), [(True, 2.0), (False, 1.0)])
def test_the_critic_learns_the_bootstrapped_value_of_a_truncated_episode_only(
    truncate: bool, value: float, one_torch_thread: None
) -> None:
    # with gamma 0.5 and reward 1 per step: a state whose episodes are only cut by a time limit
    # is worth 1 / (1 - 0.5) = 2; a state whose episodes end after one step is worth 1
    model = SACD(
        "MlpPolicy",
        OneStepEpisodes(truncate),
        gamma=0.5,
        ent_coef=0.0,
        tau=1.0,
        learning_rate=3e-2,
        learning_starts=16,
        batch_size=16,
        policy_kwargs=dict(net_arch=[16]),
        seed=0,
    )
    model.learn(150)
    q_values = model.critic(model.policy.obs_to_tensor(np.ones(1, dtype=np.float32))[0])
    for q in q_values:
        assert q.item() == pytest.approx(value, abs=0.05)


class ShiftingMasks(gym.Env):
    """Three actions, a different one forbidden at each of the three steps of an episode."""

    observation_space = OBSERVATION_SPACE
    action_space = spaces.Discrete(3)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, dtype=np.float32), {}

    def action_masks(self) -> np.ndarray:
        return np.arange(3) != self.t % 3

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.t += 1
        return np.array([self.t], dtype=np.float32), 0.0, False, self.t == 3, {}


def test_a_truncated_transition_keeps_masks_for_its_final_observation(
    one_torch_thread: None,
) -> None:
    model = SACD("MlpPolicy", ShiftingMasks(), learning_starts=100, seed=0)
    model.learn(30)
    buffer = model.replay_buffer
    assert isinstance(buffer, MaskableReplayBuffer)
    n = buffer.pos
    masks, next_masks = buffer.action_masks[:n, 0], buffer.next_action_masks[:n, 0]
    truncated = buffer.timeouts[:n, 0].astype(bool)
    assert truncated.sum() == 10 and np.all(buffer.dones[:n, 0][truncated] == 1.0)
    # within an episode the next masks are the next step's; at the cut, where the env has already
    # reset, the masks of the state the step started from stand in for the final observation's
    np.testing.assert_array_equal(next_masks[~truncated], masks[1:][~truncated[:-1]])
    np.testing.assert_array_equal(next_masks[truncated], masks[truncated])
    assert np.all(next_masks.any(axis=1))
