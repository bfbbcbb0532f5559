"""SACD with a gated prior (``prior_rules``): a learned per-state mixture of several rules' values."""

from pathlib import Path

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from splitrl.agents.sacd import SACD
from splitrl.agents.sacd.policies import GATE_START_WEIGHT, CategoricalActor
from tests.bandits import OneStepBandit, bandit_sacd

N_ACTIONS = 4


class TwoRuleBandit(OneStepBandit):
    """A one-step bandit whose observation is a sign followed by two rules' values of every
    action. Each rule ranks a different action first; the reward is 1 for the first rule's choice
    when the sign is positive and for the second rule's (the prior's own, last block) when it is
    negative, so a policy must trust each rule in its half of the states."""

    observation_space = spaces.Box(-np.inf, np.inf, shape=(1 + 2 * N_ACTIONS,), dtype=np.float32)
    action_space = spaces.Discrete(N_ACTIONS)

    def _observation(self) -> np.ndarray:
        self.sign = float(self.np_random.choice([-1.0, 1.0]))
        first, second = self.np_random.choice(N_ACTIONS, size=2, replace=False)
        values = np.full((2, N_ACTIONS), -0.05)
        values[0, first] = 0.0
        values[1, second] = 0.0
        self.correct = int(first if self.sign > 0 else second)
        return np.concatenate([[self.sign], values.ravel()]).astype(np.float32)

    def _reward(self, action: int) -> float:
        return 1.0 if action == self.correct else 0.0


def gated_model(**kwargs) -> SACD:
    return bandit_sacd(TwoRuleBandit(), {"prior_rules": 2}, **kwargs)


def gate_with_bias(bias: list[float]) -> tuple[CategoricalActor, th.nn.Linear]:
    """A gated actor whose gate outputs ``bias`` as its logits in every state, and its gate's
    output layer."""
    actor = gated_model().actor
    assert actor.gate_net is not None
    output = actor.gate_net[-1]
    assert isinstance(output, th.nn.Linear)
    with th.no_grad():
        output.bias.copy_(th.tensor(bias))
    return actor, output


def test_an_untrained_gate_starts_on_the_last_rule(one_torch_thread: None) -> None:
    model = gated_model()
    observation, _ = TwoRuleBandit().reset(seed=1)
    obs = th.as_tensor(observation[None])
    weights = model.actor.gate_weights(obs)
    assert th.allclose(weights, th.tensor([[1 - GATE_START_WEIGHT, GATE_START_WEIGHT]]))
    values = obs[:, 1:].reshape(2, N_ACTIONS)
    rule_policies = th.softmax(30.0 * values, dim=-1)
    mixture = (1 - GATE_START_WEIGHT) * rule_policies[0] + GATE_START_WEIGHT * rule_policies[1]
    probs, _ = model.actor(obs)
    assert th.allclose(probs[0], mixture, atol=1e-6)
    assert th.allclose(model.actor.prior_log_probs(obs).exp(), probs, atol=1e-6)
    masks = th.tensor([[True, True, False, True]])
    masked, _ = model.actor(obs, masks)
    allowed = th.softmax(th.where(masks[0], 30.0 * values, -th.inf), dim=-1)
    expected = (1 - GATE_START_WEIGHT) * allowed[0] + GATE_START_WEIGHT * allowed[1]
    assert th.allclose(masked[0], expected, atol=1e-6)
    assert th.allclose(model.actor.prior_log_probs(obs, masks).exp()[masks], masked[masks])


def test_the_gated_prior_mixes_the_rules_policies_not_their_values() -> None:
    """Where a cautious rule values every action low but keeps the same order, and the other
    rule's choice differs, the prior's greedy action is the choice of the rule the gate trusts
    most: a mixture of the values would pick an action of neither."""
    actor, _ = gate_with_bias([0.0, 1.0])  # 0.73 on the second rule
    # rule 0 (cautious) chooses action 2, rule 1 action 0 with action 1 close behind
    obs = th.tensor([[1.0, -1.0, -0.3, 0.0, -1.0, 0.0, -0.01, -0.6, -1.0]])
    values_mixture = 0.27 * obs[0, 1:5] + 0.73 * obs[0, 5:9]
    assert int(values_mixture.argmax()) == 1
    assert int(actor.prior_log_probs(obs).argmax()) == 0
    assert int(actor.sample(obs, deterministic=True)) == 0


def test_the_gate_learns_which_rule_to_trust_where(one_torch_thread: None) -> None:
    """Trained on the bandit, the gate must put most weight on the first rule where the sign is
    positive and on the second where it is negative, and the greedy policy must pick the right
    rule's choice in both halves (the untrained one is right only where the sign is negative).
    The KL target is to the gate's own mixture, so it holds back the correction, not the gate."""
    model = gated_model(target_kl=0.05, ent_coef="auto_0.01", learning_rate=3e-3)
    model.learn(2_000)
    env = TwoRuleBandit()
    observation, _ = env.reset(seed=5)
    right = {1.0: [], -1.0: []}
    first_weight = {1.0: [], -1.0: []}
    for _ in range(200):
        action, _ = model.predict(observation, deterministic=True)
        right[env.sign].append(int(action) == env.correct)
        with th.no_grad():
            weights = model.actor.gate_weights(th.as_tensor(observation[None]))
        first_weight[env.sign].append(float(weights[0, 0]))
        observation, *_ = env.step(action)
    assert np.mean(right[1.0]) > 0.9 and np.mean(right[-1.0]) > 0.9
    assert np.mean(first_weight[1.0]) > 0.9
    assert np.mean(first_weight[-1.0]) < 0.1


def test_a_saved_gate_loads_with_its_weights(one_torch_thread: None, tmp_path: Path) -> None:
    model = gated_model(ent_coef=0.01, learning_rate=3e-3)
    model.learn(300)
    model.save(tmp_path / "model.zip")
    loaded = SACD.load(tmp_path / "model.zip")
    observation, _ = TwoRuleBandit().reset(seed=2)
    obs = th.as_tensor(np.repeat(observation[None], 3, axis=0))
    assert loaded.actor.prior_rules == 2
    assert th.allclose(loaded.actor.gate_weights(obs), model.actor.gate_weights(obs))


@pytest.mark.parametrize(
    ("policy_kwargs", "match"),
    [
        ({"action_prior": True, "prior_rules": 0}, "prior_rules must be a positive integer"),
        ({"action_prior": True, "prior_rules": 1.5}, "prior_rules must be a positive integer"),
        ({"action_prior": True, "prior_rules": 3}, r"ending with 12 prior values"),
        (
            {"action_prior": True, "prior_rules": 2, "gate_temperature": 0.0},
            "gate_temperature must be a positive number",
        ),
        (
            {"action_prior": True, "prior_rules": 2, "gate_inputs": 0},
            "gate_inputs must be None or a positive integer",
        ),
        (
            {"action_prior": True, "prior_rules": 2, "gate_inputs": True},
            "gate_inputs must be None or a positive integer",
        ),
        ({"action_prior": True, "gate_inputs": 1}, r"gate_inputs needs a gated prior"),
        (
            {"action_prior": True, "prior_rules": 2, "gate_inputs": 2},
            r"gate_inputs=2 needs that many observation entries before the 2 rules' value blocks",
        ),
    ],
)
def test_a_gate_needs_rules_to_mix(policy_kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SACD("MlpPolicy", TwoRuleBandit(), policy_kwargs={"net_arch": [8], **policy_kwargs})


def test_the_gate_loss_scores_each_rules_own_choice(one_torch_thread: None) -> None:
    """The gate's loss is the stake-weighted cross-entropy from its weights to the soft ranking
    of each rule's best allowed action, and the actor's logits do not carry a gradient to the
    gate."""
    model = gated_model()
    actor = model.actor
    values = [[-0.05, 0.0, -0.05, -0.01], [0.0, -0.05, -0.02, -0.05]]
    obs = th.tensor([[1.0, *values[0], *values[1]]])
    masks = th.tensor([[True, False, True, True]])
    np.testing.assert_array_equal(actor.rule_choices(obs, masks).numpy(), [[3, 0]])
    action_values = th.tensor([[0.5, 9.0, 0.1, 0.2]])
    payoffs = th.tensor([0.2, 0.5])
    target = th.softmax(payoffs / actor.gate_temperature, dim=0)
    weights = th.tensor([1 - GATE_START_WEIGHT, GATE_START_WEIGHT])
    expected = -0.3 * float((target * weights.log()).sum())
    assert actor.gate_loss(obs, masks, action_values).item() == pytest.approx(expected, rel=1e-5)
    actor.zero_grad()
    actor.masked_logits(obs, masks)[masks].sum().backward()
    assert actor.gate_net is not None
    assert all(p.grad is None or not p.grad.any() for p in actor.gate_net.parameters())


def test_a_sure_gate_still_learns_it_is_wrong(one_torch_thread: None) -> None:
    """A gate that gives the worse rule nearly all its weight still gets a full-sized push toward
    the better one (the stake), where the expected value's gradient would nearly vanish; where
    the rules choose alike, it gets none."""
    actor, output = gate_with_bias([10.0, 0.0])  # 0.99995 on rule 0
    values = [[0.0, -1.0, -1.0, -1.0], [-1.0, 0.0, -1.0, -1.0]]
    obs = th.tensor([[1.0, *values[0], *values[1]]])
    stake = 0.4
    action_values = th.tensor([[0.1, 0.1 + stake, 0.0, 0.0]])
    actor.zero_grad()
    actor.gate_loss(obs, None, action_values).backward()
    assert output.bias.grad is not None
    assert float(output.bias.grad[1]) < -0.9 * stake
    same = th.tensor([[1.0, *values[0], *values[0]]])
    actor.zero_grad()
    actor.gate_loss(same, None, action_values).backward()
    assert not output.bias.grad.any()


def test_a_single_rule_prior_has_no_gate() -> None:
    model = SACD(
        "MlpPolicy", TwoRuleBandit(), policy_kwargs={"net_arch": [8], "action_prior": True}
    )
    obs = th.zeros(2, 1 + 2 * N_ACTIONS)
    assert model.actor.gate_net is None
    assert th.equal(model.actor.gate_weights(obs), th.ones(2, 1))
    with pytest.raises(ValueError, match="the actor has no gate"):
        model.actor.gate_loss(obs, None, th.zeros(2, N_ACTIONS))
