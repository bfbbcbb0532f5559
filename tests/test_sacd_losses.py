"""SACD's update against a hand computation on a three-transition batch.

The networks are set to output fixed numbers (zero weights, chosen biases in their last layer) and
the learning rate is 0, so one ``train`` step logs losses that follow from those numbers alone:
the soft Bellman target with its entropy term, the masks of the next states and the end of an
episode; the actor loss under the masks of the current states; the entropy, its masked target
``ratio x log(allowed actions)`` and the temperature loss.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.logger import configure
from torch import nn

from splitrl.agents.sacd import SACD
from splitrl.agents.sacd.buffers import MaskableReplayBufferSamples

ALPHA, GAMMA, RATIO = 0.2, 0.9, 0.7
ACTOR_LOGITS = [1.0, 0.0, -1.0]
CRITICS = [[1.0, 2.0, 0.5], [1.5, 1.0, 0.0]]
TARGET_CRITICS = [[0.5, 1.0, 2.0], [1.0, 0.0, 3.0]]

# the batch: action taken, reward, terminated, masks of the state, masks of the next state
ACTIONS = [0, 1, 2]
REWARDS = [1.0, 0.0, 0.5]
TERMINATED = [0.0, 1.0, 0.0]
MASKS = [[True, True, True], [True, True, True], [False, True, True]]
NEXT_MASKS = [[True, True, True], [True, False, True], [True, False, False]]


class ThreeActions(gym.Env):
    """A one-feature, three-action env: only its spaces matter here."""

    observation_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
    action_space = spaces.Discrete(3)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        return np.zeros(1, dtype=np.float32), 0.0, False, True, {}


def output_fixed(network: nn.Module, values: list[float]) -> None:
    """Make ``network`` output ``values`` whatever its input."""
    last = [module for module in network.modules() if isinstance(module, nn.Linear)][-1]
    with th.no_grad():
        last.weight.zero_()
        last.bias.copy_(th.tensor(values))


def fixed_model(
    learning_rate: float = 0.0,
    target_critics: list[list[float]] = TARGET_CRITICS,
    next_masks: list[list[bool]] = NEXT_MASKS,
) -> SACD:
    model = SACD(
        "MlpPolicy",
        ThreeActions(),
        learning_rate=learning_rate,
        gamma=GAMMA,
        ent_coef=f"auto_{ALPHA}",
        target_entropy_ratio=RATIO,
        policy_kwargs=dict(net_arch=[8]),
        seed=0,
    )
    output_fixed(model.actor, ACTOR_LOGITS)
    for network, values in zip(model.critic.q_networks, CRITICS, strict=True):
        output_fixed(network, values)
    for network, values in zip(model.critic_target.q_networks, target_critics, strict=True):
        output_fixed(network, values)
    batch = MaskableReplayBufferSamples(
        observations=th.tensor([[0.1], [0.2], [0.3]]),
        actions=th.tensor(ACTIONS, dtype=th.float32).reshape(3, 1),
        next_observations=th.tensor([[0.4], [0.5], [0.6]]),
        dones=th.tensor(TERMINATED).reshape(3, 1),
        rewards=th.tensor(REWARDS).reshape(3, 1),
        action_masks=th.tensor(MASKS),
        next_action_masks=th.tensor(next_masks),
    )
    assert model.replay_buffer is not None
    model.replay_buffer.sample = lambda *args, **kwargs: batch  # type: ignore[method-assign,assignment]
    model.set_logger(configure(None, []))
    return model


def masked_policy(mask: list[bool]) -> list[float]:
    """The actor's probabilities: a softmax over the allowed logits, 0 elsewhere."""
    weights = [
        math.exp(z) if allowed else 0.0 for z, allowed in zip(ACTOR_LOGITS, mask, strict=True)
    ]
    return [w / sum(weights) for w in weights]


def expected_sum(probs: list[float], values: list[float]) -> float:
    """``sum_a p(a) (values(a) - alpha log p(a))``, with ``0 log 0 = 0``."""
    return sum(p * (v - ALPHA * math.log(p)) for p, v in zip(probs, values, strict=True) if p > 0)


def entropy(probs: list[float]) -> float:
    return -sum(p * math.log(p) for p in probs if p > 0)


def hand_losses(
    target_critics: list[list[float]] = TARGET_CRITICS,
    next_masks: list[list[bool]] = NEXT_MASKS,
) -> dict[str, float]:
    """The logged quantities of one update, written out row by row."""
    min_target = [min(q1, q2) for q1, q2 in zip(*target_critics, strict=True)]
    min_critic = [min(q1, q2) for q1, q2 in zip(*CRITICS, strict=True)]  # [1, 1, 0]
    targets = []
    for reward, terminated, next_mask in zip(REWARDS, TERMINATED, next_masks, strict=True):
        soft_value = expected_sum(masked_policy(next_mask), min_target)
        targets.append(reward + GAMMA * (1.0 - terminated) * soft_value)
    # row 1 ended the episode: no bootstrap; row 2's next state allows one action (value 0.5)
    assert targets[1] == 0.0 and targets[2] == pytest.approx(0.5 + GAMMA * 0.5)
    critic_loss = 0.5 * sum(
        np.mean([(q[a] - y) ** 2 for a, y in zip(ACTIONS, targets, strict=True)]) for q in CRITICS
    )
    policies = [masked_policy(mask) for mask in MASKS]
    actor_loss = np.mean([-expected_sum(p, min_critic) for p in policies])
    entropies = [entropy(p) for p in policies]
    target_entropies = [RATIO * math.log(sum(mask)) for mask in MASKS]
    ent_coef_loss = np.mean(
        [math.log(ALPHA) * (h - t) for h, t in zip(entropies, target_entropies, strict=True)]
    )
    return {
        "train/critic_loss": float(critic_loss),
        "train/actor_loss": float(actor_loss),
        "train/entropy": float(np.mean(entropies)),
        "train/target_entropy": float(np.mean(target_entropies)),
        "train/ent_coef_loss": float(ent_coef_loss),
        "train/ent_coef": ALPHA,
    }


def test_one_update_logs_the_hand_computed_losses() -> None:
    model = fixed_model()
    model.train(gradient_steps=1, batch_size=3)
    logged = model.logger.name_to_value
    for key, expected in hand_losses().items():
        assert logged[key] == pytest.approx(expected, rel=1e-5), key


def test_a_forbidden_next_action_adds_nothing_to_the_target() -> None:
    # every next state forbids action 1, whose value the target critics put at a million
    target_critics = [[0.5, 1e6, 2.0], [1.0, 1e6, 3.0]]
    next_masks = [[True, False, True], [True, False, True], [True, False, False]]
    model = fixed_model(target_critics=target_critics, next_masks=next_masks)
    model.train(gradient_steps=1, batch_size=3)
    logged = model.logger.name_to_value["train/critic_loss"]
    assert logged == pytest.approx(hand_losses(target_critics, next_masks)["train/critic_loss"])
    assert logged < 10.0


def test_the_temperature_falls_when_the_policy_is_more_random_than_its_target() -> None:
    model = fixed_model(learning_rate=0.01)
    assert model.log_ent_coef is not None
    before = model.log_ent_coef.item()
    losses = hand_losses()
    assert losses["train/entropy"] > losses["train/target_entropy"]
    model.train(gradient_steps=1, batch_size=3)
    assert model.log_ent_coef.item() < before
