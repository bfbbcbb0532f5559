"""SACD with an action prior: the untrained policy is the prior, and the KL regularizer toward it."""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from splitrl.agents.sacd import SACD
from tests.bandits import OneStepBandit, bandit_sacd

N_ACTIONS = 6


class PriorBandit(OneStepBandit):
    """A one-step bandit whose observation is a random context followed by one prior value per
    action; the reward is 1 for the last action, which the prior never ranks first, so improving on
    the prior pays."""

    observation_space = spaces.Box(-np.inf, np.inf, shape=(2 + N_ACTIONS,), dtype=np.float32)
    action_space = spaces.Discrete(N_ACTIONS)

    def _observation(self) -> np.ndarray:
        prior = -self.np_random.uniform(0.0, 0.05, N_ACTIONS)
        prior[self.np_random.integers(N_ACTIONS - 1)] = 0.0
        prior[-1] = -0.05
        self.prior = prior
        context = self.np_random.normal(size=2)
        return np.concatenate([context, prior]).astype(np.float32)

    def _reward(self, action: int) -> float:
        return 1.0 if action == N_ACTIONS - 1 else 0.0


def prior_model(**kwargs) -> SACD:
    return bandit_sacd(PriorBandit(), {"prior_scale": 30.0}, **kwargs)


def test_untrained_policy_is_the_prior(one_torch_thread: None) -> None:
    model = prior_model()
    env = PriorBandit()
    observation, _ = env.reset(seed=3)
    for _ in range(20):
        action, _ = model.predict(observation, deterministic=True)
        assert int(action) == int(np.argmax(observation[-N_ACTIONS:]))
        observation, *_ = env.step(action)
    obs = th.as_tensor(observation[None])
    probs, _ = model.actor(obs)
    expected = th.softmax(30.0 * obs[:, -N_ACTIONS:], dim=-1)
    assert th.allclose(probs, expected, atol=1e-6)
    q_values = model.critic(obs)
    for q in q_values:
        assert th.allclose(q, obs[:, -N_ACTIONS:], atol=1e-6)


def test_prior_log_probs_respect_masks(one_torch_thread: None) -> None:
    model = prior_model()
    obs = th.as_tensor(np.concatenate([[0.0, 0.0], [-0.01, 0.0, -0.02, -0.03, 0.0, -0.05]]))[None]
    masks = th.tensor([[True, False, True, True, False, True]])
    log_probs = model.actor.prior_log_probs(obs.float(), masks)
    logits = 30.0 * th.tensor([-0.01, -0.02, -0.03, -0.05])
    assert th.allclose(log_probs[0, masks[0]], th.log_softmax(logits, dim=-1), atol=1e-6)
    assert th.all(log_probs[0, ~masks[0]] == 0.0)


def test_kl_regularized_actor_loss_matches_a_hand_computation(one_torch_thread: None) -> None:
    """With target_kl, the actor minimizes sum_a pi (alpha (log pi - log pi0) - Q): at the untrained
    actor (pi = pi0) the KL term vanishes, so the loss is -E_pi0[Q]."""
    model = prior_model(target_kl=0.05, ent_coef=0.5)
    model.learn(64)  # fills the buffer with exactly learning_starts steps: no update yet
    assert model._n_updates == 0
    data = model.replay_buffer.sample(8)
    probs, log_probs = model.actor(data.observations, data.action_masks)
    prior = model.actor.prior_log_probs(data.observations, data.action_masks)
    assert th.allclose(log_probs, prior, atol=1e-6)
    kl = (probs * (log_probs - prior)).sum(dim=1)
    assert th.all(kl.abs() < 1e-6)


def test_kl_training_moves_toward_the_better_action(one_torch_thread: None) -> None:
    """On the bandit only the action the prior ranks last pays: the KL-regularized policy must learn
    to put more mass on it than the prior does, and the temperature must rise well above its start
    while the KL to the prior is above its target."""
    model = prior_model(target_kl=0.05, ent_coef="auto_0.01", learning_rate=3e-3)
    model.learn(1_500)
    env = PriorBandit()
    observation, _ = env.reset(seed=11)
    gains, kls = [], []
    for _ in range(50):
        obs = th.as_tensor(observation[None])
        with th.no_grad():
            probs, log_probs = model.actor(obs)
            prior_log_probs = model.actor.prior_log_probs(obs)
        gains.append(float(probs[0, -1] - prior_log_probs[0, -1].exp()))
        kls.append(float((probs * (log_probs - prior_log_probs)).sum()))
        observation, *_ = env.step(np.int64(0))
    assert np.mean(gains) > 0.05
    assert np.mean(kls) > 0.05
    assert model.log_ent_coef is not None
    assert float(model.log_ent_coef.detach().exp()) > 0.1


def test_target_kl_needs_an_action_prior() -> None:
    with pytest.raises(ValueError, match="target_kl needs a policy with an action prior"):
        SACD("MlpPolicy", PriorBandit(), target_kl=0.05, policy_kwargs={"net_arch": [8]})
    with pytest.raises(ValueError, match="target_kl must be positive"):
        prior_model(target_kl=0.0)


def test_a_prior_behavior_stores_the_priors_best_allowed_action(one_torch_thread: None) -> None:
    """With ``behavior="prior"`` every stored action is the prior's best allowed action at its
    observation, from the first step and after the actor has learned to leave the prior."""
    model = prior_model(behavior="prior", ent_coef=0.01, learning_rate=3e-3)
    model.learn(600)
    buffer = model.replay_buffer
    observations = buffer.observations[:600, 0]
    stored = buffer.actions[:600, 0, 0].astype(np.int64)
    prior = np.where(buffer.action_masks[:600, 0], observations[:, -N_ACTIONS:], -np.inf)
    np.testing.assert_array_equal(stored, prior.argmax(axis=1))
    assert not np.any(stored == N_ACTIONS - 1)


def test_a_prior_behavior_needs_an_action_prior() -> None:
    with pytest.raises(ValueError, match="behavior='prior' needs a policy with an action prior"):
        SACD("MlpPolicy", PriorBandit(), behavior="prior", policy_kwargs={"net_arch": [8]})
