"""Hindsight action values and SACD's hindsight critic."""

import copy
import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from splitrl.agents.baselines.backlog import DEFAULT_BACKLOG_HORIZON
from splitrl.agents.baselines.oracles import ClairvoyantLookaheadPolicy
from splitrl.agents.hindsight import (
    BacklogAhead,
    BacklogReplays,
    HindsightActionValues,
    HindsightValuesInfo,
)
from splitrl.agents.learners import get_learner
from splitrl.agents.sacd import SACD, MaskableReplayBuffer
from splitrl.agents.sacd.buffers import HINDSIGHT_INFO_KEY
from splitrl.envs.scenarios import get_scenario
from splitrl.envs.split_computing import SplitComputingEnv
from splitrl.profiles import Profile
from splitrl.training.trainer import make_envs, training_scenario

N_ACTIONS = 5
N_CONTEXTS = 3


def test_values_rank_actions_as_clairvoyant_lookahead_does() -> None:
    env = SplitComputingEnv("default")
    env.reset(seed=4)
    values = HindsightActionValues()
    oracle = ClairvoyantLookaheadPolicy()
    oracle.reset(env)
    masks = env.action_masks()
    rng = np.random.default_rng(0)
    for _ in range(40):
        row = values(env)
        assert row.shape == (env.actions.n_actions,) and row.dtype == np.float32
        assert row.max() == 0.0 and np.all(row[~masks] == 0.0)
        best = np.unravel_index(int(np.argmax(np.where(masks, row, -np.inf))), env.actions.nvec)
        np.testing.assert_array_equal(best, oracle.act(env, np.zeros(0)))
        # a random allowed action, so that backlogs occur too
        env.step(np.array(np.unravel_index(rng.choice(np.flatnonzero(masks)), env.actions.nvec)))


def test_info_carries_the_values_of_the_request_the_step_served() -> None:
    env = HindsightValuesInfo(
        SplitComputingEnv(training_scenario(get_scenario("default"), "expected"))
    )
    env.reset(seed=7)
    twin = copy.deepcopy(env.unwrapped)
    action = np.array([1, 0, 2])
    expected = HindsightActionValues()(twin)
    _, reward, *_, info = env.step(action)
    np.testing.assert_array_equal(info[HINDSIGHT_INFO_KEY], expected)
    # the taken action's true reward is the one the step paid
    outcomes = twin.evaluate_actions()
    taken = np.flatnonzero((outcomes.actions == twin.actions.canonical(1, 0, 2)).all(axis=1))[0]
    assert outcomes.reward[taken] == pytest.approx(reward)
    assert np.asarray(env.action_masks()).shape == (env.unwrapped.actions.n_actions,)


def test_values_need_a_split_computing_env_in_replay_mode() -> None:
    with pytest.raises(ValueError, match="hindsight values need a SplitComputingEnv"):
        HindsightValuesInfo(gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match="hindsight values need a replay env"):
        HindsightValuesInfo(SplitComputingEnv("default", mode="live"))


class HindsightBandit(gym.Env[np.ndarray, np.int64]):
    """One-step contextual bandit: context ``c`` pays 1 for action ``c`` and 0 otherwise, and every
    step's info gives the value of every action. The behaviour policy in the tests is uniform, so
    the Bellman critic sees each label one time in ``N_ACTIONS``; the hindsight critic every time."""

    observation_space = spaces.Box(0.0, 1.0, shape=(N_CONTEXTS,), dtype=np.float32)
    action_space = spaces.Discrete(N_ACTIONS)

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self._observe(), {}

    def _observe(self) -> np.ndarray:
        self.context = int(self.np_random.integers(N_CONTEXTS))
        return np.eye(N_CONTEXTS, dtype=np.float32)[self.context]

    def values(self) -> np.ndarray:
        return (np.arange(N_ACTIONS) == self.context).astype(np.float32)

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict]:
        values = self.values()
        reward = float(values[int(action)])
        return self._observe(), reward, True, False, {HINDSIGHT_INFO_KEY: values}


def add_step(buffer: MaskableReplayBuffer, observation: np.ndarray, info: dict) -> None:
    """One terminal transition of ``HindsightBandit`` (action 0, reward 0) with ``info``."""
    obs = observation.astype(np.float32)
    buffer.add(obs, obs, np.array([[0]]), np.array([0.0]), np.array([True]), [info])


def test_the_buffer_stores_and_samples_the_values() -> None:
    buffer = MaskableReplayBuffer(
        8,
        HindsightBandit.observation_space,
        HindsightBandit.action_space,
        "cpu",
        store_hindsight=True,
    )
    for i in range(8):
        values = np.full(N_ACTIONS, float(i), dtype=np.float32)
        add_step(buffer, np.full((1, N_CONTEXTS), float(i)), {HINDSIGHT_INFO_KEY: values})
    sample = buffer.sample(16)
    assert sample.hindsight_values is not None
    # each transition's values belong to it
    assert th.equal(sample.hindsight_values[:, 0], sample.observations[:, 0])
    assert th.equal(sample.hindsight_values, sample.hindsight_values[:, :1].expand(-1, N_ACTIONS))
    obs = np.zeros((1, N_CONTEXTS))
    with pytest.raises(ValueError, match="has no 'hindsight_values'"):
        add_step(buffer, obs, {})
    with pytest.raises(ValueError, match="5 finite values"):
        add_step(buffer, obs, {HINDSIGHT_INFO_KEY: np.zeros(3)})


def test_without_the_option_nothing_is_stored() -> None:
    buffer = MaskableReplayBuffer(
        4, HindsightBandit.observation_space, HindsightBandit.action_space
    )
    assert buffer.hindsight_values is None
    add_step(buffer, np.zeros((1, N_CONTEXTS)), {})
    assert buffer.sample(2).hindsight_values is None


def hindsight_model(env: gym.Env | None = None, **kwargs) -> SACD:
    settings = {
        "policy_kwargs": {"net_arch": [32]},
        "learning_starts": 64,
        "batch_size": 32,
        "learning_rate": 3e-3,
        "seed": 0,
    }
    return SACD("MlpPolicy", env or HindsightBandit(), **{**settings, **kwargs})


def test_the_critic_loss_matches_a_hand_computation(one_torch_thread: None) -> None:
    """The loss is 1/2 sum_i mean over the allowed actions of (Q_i(s, a) - value(s, a))^2."""
    model = hindsight_model(hindsight="critic")
    model.learn(64)  # fills the buffer, no update yet
    data = model.replay_buffer.sample(16)
    assert data.hindsight_values is not None
    actions = model.policy.action_to_index(data.actions).unsqueeze(1)
    loss, taken_q = model._hindsight_critic_loss(data, actions, th.nn.functional.mse_loss)
    q1, q2 = model.critic(data.observations)
    expected = 0.5 * (
        ((q1 - data.hindsight_values) ** 2).mean() + ((q2 - data.hindsight_values) ** 2).mean()
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert th.equal(taken_q[0], q1.gather(1, actions))


class PriorBandit(HindsightBandit):
    """``HindsightBandit`` whose observation ends with a prior value of every action that ranks the
    paying action first."""

    observation_space = spaces.Box(-1.0, 1.0, shape=(N_CONTEXTS + N_ACTIONS,), dtype=np.float32)

    def _observe(self) -> np.ndarray:
        context = super()._observe()
        prior = -np.ones(N_ACTIONS, dtype=np.float32)
        prior[self.context] = 0.0
        return np.concatenate([context, prior])


def test_labels_relative_to_the_prior_are_paired_gains(one_torch_thread: None) -> None:
    """With ``hindsight_reference="prior"`` each label is the action's value minus the value of the
    prior's first choice on the same request: here the prior picks the paying action, so its label
    is 0 and every other action's is -1 (the values themselves are 1 and 0)."""
    model = hindsight_model(
        PriorBandit(),
        hindsight="critic",
        hindsight_reference="prior",
        policy_kwargs={"net_arch": [32], "action_prior": True},
    )
    model.learn(64)
    data = model.replay_buffer.sample(16)
    assert data.hindsight_values is not None
    actions = model.policy.action_to_index(data.actions).unsqueeze(1)
    loss, _ = model._hindsight_critic_loss(data, actions, th.nn.functional.mse_loss)
    contexts = data.observations[:, :N_CONTEXTS].argmax(dim=1)
    expected_labels = th.nn.functional.one_hot(contexts, N_ACTIONS).float() - 1.0
    q1, q2 = model.critic(data.observations)
    expected = 0.5 * (((q1 - expected_labels) ** 2).mean() + ((q2 - expected_labels) ** 2).mean())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="hindsight_reference='prior' needs a policy"):
        hindsight_model(hindsight="critic", hindsight_reference="prior")
    with pytest.raises(ValueError, match="hindsight_reference must be"):
        hindsight_model(hindsight="critic", hindsight_reference="taken")
    with pytest.raises(ValueError, match="hindsight_reference applies to the hindsight critic"):
        hindsight_model(
            PriorBandit(),
            hindsight="actor",
            hindsight_reference="prior",
            policy_kwargs={"net_arch": [32], "action_prior": True},
        )


def test_hindsight_critic_learns_every_action_from_a_uniform_behaviour(
    one_torch_thread: None,
) -> None:
    """With only the warm-up's uniform actions, the hindsight critic fits the value of every action
    in every context, and the greedy policy picks the paying action; the same budget of Bellman
    updates sees each label a fifth as often and fits worse."""
    errors = {}
    for hindsight in (True, False):
        model = hindsight_model(
            hindsight="critic" if hindsight else None,
            learning_starts=600,
            gamma=0.0,
            ent_coef=0.01,
        )
        model.learn(600 + 300)
        observations = th.eye(N_CONTEXTS)
        with th.no_grad():
            q1, q2 = model.critic(observations)
        truth = th.as_tensor(np.eye(N_CONTEXTS, N_ACTIONS), dtype=th.float32)
        errors[hindsight] = float(th.maximum((q1 - truth).abs(), (q2 - truth).abs()).max())
        if hindsight:
            actions, _ = model.predict(observations.numpy(), deterministic=True)
            np.testing.assert_array_equal(actions, np.arange(N_CONTEXTS))
    assert errors[True] < 0.1
    assert errors[True] < errors[False]


class LongShotBandit(HindsightBandit):
    """Action 1 is a long shot: worth -1 on 19 requests in 20 and +30 on the twentieth (mean +0.55,
    median -1); every other action is worth 0."""

    def values(self) -> np.ndarray:
        values = np.zeros(N_ACTIONS, dtype=np.float32)
        values[1] = 30.0 if self.np_random.random() < 0.05 else -1.0
        return values


@pytest.mark.parametrize(("critic_loss", "prefers_long_shot"), [("mse", True), ("median", False)])
def test_a_median_critic_is_not_swayed_by_rare_large_values(
    one_torch_thread: None, critic_loss: str, prefers_long_shot: bool
) -> None:
    """The squared error's critic learns the mean hindsight value, which a rare +30 puts above
    every other action; the median critic learns the typical value, -1."""
    model = hindsight_model(
        LongShotBandit(),
        hindsight="critic",
        critic_loss=critic_loss,
        learning_starts=2000,
        ent_coef=0.01,
    )
    model.learn(2000 + 1500)
    with th.no_grad():
        q_values = th.stack(model.critic(th.eye(N_CONTEXTS))).min(dim=0).values
    long_shot, safe = q_values[:, 1], q_values[:, 0]
    if prefers_long_shot:
        assert th.all(long_shot > safe + 0.2)
    else:
        assert th.all((long_shot + 1.0).abs() < 0.2) and th.all(long_shot < safe - 0.5)


STRETCH = 50


class StretchBandit(HindsightBandit):
    """Action 1 is worth +1 in the even stretches of ``STRETCH`` steps and -1 in the odd ones (0 on
    average); every other action is worth 0. The stretches stand for the luck of a channel."""

    steps = 0

    def values(self) -> np.ndarray:
        values = np.zeros(N_ACTIONS, dtype=np.float32)
        values[1] = 1.0 if (self.steps // STRETCH) % 2 == 0 else -1.0
        self.steps += 1
        return values


def test_the_buffer_numbers_its_transitions_across_episodes() -> None:
    buffer = MaskableReplayBuffer(
        4, HindsightBandit.observation_space, HindsightBandit.action_space
    )
    for i in range(6):  # every transition ends an episode; the buffer wraps after 4
        add_step(buffer, np.full((1, N_CONTEXTS), float(i)), {})
    np.testing.assert_array_equal(buffer.steps[:, 0], [4, 5, 2, 3])
    sample = buffer.sample(16)
    assert sample.steps is not None
    assert th.equal(sample.steps[:, 0].float(), sample.observations[:, 0])


def test_split_critics_learn_from_their_own_stretches(one_torch_thread: None) -> None:
    """Each critic's loss covers its own stretches only: with ``critic_split`` the critic of the
    even stretches learns that action 1 is worth +1 and the other that it is worth -1, so the
    actor's ``min_i Q_i`` does not take it; critics that share the data both learn 0."""
    settings = {"hindsight": "critic", "learning_starts": 1000, "ent_coef": 0.01}
    split = hindsight_model(StretchBandit(), critic_split=STRETCH, **settings)
    split.learn(1000)  # fills the buffer, no update yet
    data = split.replay_buffer.sample(64)
    assert data.hindsight_values is not None and data.steps is not None
    actions = split.policy.action_to_index(data.actions).unsqueeze(1)
    loss, _ = split._hindsight_critic_loss(data, actions, th.nn.functional.mse_loss)
    own = [(data.steps // STRETCH) % 2 == i for i in range(2)]
    expected = 0.5 * sum(
        ((q - data.hindsight_values)[mine[:, 0]] ** 2).mean()
        for q, mine in zip(split.critic(data.observations), own, strict=True)
    )
    assert isinstance(expected, th.Tensor)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)

    split.learn(1500, reset_num_timesteps=False)
    shared = hindsight_model(StretchBandit(), **settings)
    shared.learn(1000 + 1500)
    with th.no_grad():
        even, odd = (q[:, 1] for q in split.critic(th.eye(N_CONTEXTS)))
        first, second = (q[:, 1] for q in shared.critic(th.eye(N_CONTEXTS)))
    assert th.all((even - 1.0).abs() < 0.3) and th.all((odd + 1.0).abs() < 0.3)
    assert th.all(first.abs() < 0.3) and th.all(second.abs() < 0.3)


def test_split_bellman_critics_learn_from_their_own_stretches(one_torch_thread: None) -> None:
    """The soft Bellman critics split the same way: every bandit step ends its episode, so the
    target is the reward, and each critic's loss is the mean over its own stretches."""
    model = hindsight_model(StretchBandit(), critic_split=STRETCH, learning_starts=500)
    model.learn(500)
    data = model.replay_buffer.sample(64)
    assert data.steps is not None and bool(data.dones.all())
    actions = model.policy.action_to_index(data.actions).unsqueeze(1)
    ent_coef = th.ones(())
    loss, taken_q = model._bellman_critic_loss(data, actions, ent_coef, th.nn.functional.mse_loss)
    own = [((data.steps // STRETCH) % 2 == i)[:, 0] for i in range(2)]
    expected = 0.5 * sum(
        ((q - data.rewards)[mine] ** 2).mean() for q, mine in zip(taken_q, own, strict=True)
    )
    assert isinstance(expected, th.Tensor)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"hindsight": "critic", "critic_split": 0}, "critic_split must be a positive number"),
        ({"hindsight": "critic", "critic_split": "episodes"}, "critic_split must be a positive"),
        ({"hindsight": "critic", "critic_split": True}, "critic_split must be a positive number"),
        ({"hindsight": "actor", "critic_split": 10}, "critic_split needs trained critics"),
    ],
)
def test_bad_critic_splits_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        hindsight_model(**settings)


def test_the_learner_trains_its_critic_on_the_env_values(one_torch_thread: None) -> None:
    spec = get_learner("sacd-hindsight")
    envs = make_envs(spec, get_scenario("default"), 1, 0)
    hyperparameters = spec.resolved_hyperparameters({"learning_starts": 32, "batch_size": 16})
    model = spec.build_model(envs, hyperparameters, seed=0)
    model.learn(64)
    buffer = model.replay_buffer
    assert isinstance(buffer, MaskableReplayBuffer) and buffer.hindsight_values is not None
    stored = buffer.hindsight_values[:64, 0]
    assert np.all(stored.max(axis=1) == 0.0) and np.all(stored.min(axis=1) < 0.0)
    assert np.all(stored[~buffer.action_masks[:64, 0]] == 0.0)
    logged = model.logger.name_to_value
    # the actor learns from the stored values: the critics are not trained
    assert "train/critic_loss" not in logged and "train/kl_to_prior" in logged
    # its network reads the observation clipped to the range it acted on (the learner's default)
    actor = model.policy.actor
    acted_on = buffer.observations[:64, 0]
    assert actor.clip_inputs
    np.testing.assert_array_equal(actor.input_low.numpy(), acted_on.min(axis=0))


def test_the_hindsight_actor_learns_every_context_from_a_uniform_behaviour(
    one_torch_thread: None,
) -> None:
    """With only the warm-up's uniform actions, the actor trained on the stored values picks the
    paying action in every context, and the critics stay as they were built."""
    model = hindsight_model(hindsight="actor", learning_starts=600, ent_coef=0.01)
    initial = [p.detach().clone() for p in model.critic.parameters()]
    model.learn(600 + 300)
    observations = th.eye(N_CONTEXTS)
    actions, _ = model.predict(observations.numpy(), deterministic=True)
    np.testing.assert_array_equal(actions, np.arange(N_CONTEXTS))
    with th.no_grad():
        probs, _ = model.actor(observations)
    assert float(probs[th.arange(N_CONTEXTS), th.arange(N_CONTEXTS)].min()) > 0.9
    assert all(th.equal(a, b) for a, b in zip(initial, model.critic.parameters(), strict=True))


def test_a_greedy_behavior_stores_the_policys_own_decisions(one_torch_thread: None) -> None:
    """With ``behavior="greedy"`` every stored action is the actor's deterministic action at its
    observation, warm-up included; the default samples, so one context sees several actions."""
    for behavior in ("greedy", "sample"):
        model = hindsight_model(hindsight="actor", learning_starts=10_000, behavior=behavior)
        model.learn(200)  # no update: the actor stays as built
        buffer = model.replay_buffer
        observations = buffer.observations[:200, 0]
        stored = buffer.actions[:200, 0, 0].astype(np.int64)
        greedy, _ = model.predict(observations, deterministic=True)
        if behavior == "greedy":
            np.testing.assert_array_equal(stored, greedy)
        else:
            assert len(np.unique(stored[observations[:, 0] == 1.0])) > 1


def test_the_hindsight_actor_learns_from_its_own_greedy_decisions(one_torch_thread: None) -> None:
    """Every action of a stored state is labeled, so a behavior that never explores still teaches
    the actor the paying action of every context."""
    model = hindsight_model(hindsight="actor", ent_coef=0.01, behavior="greedy")
    model.learn(600)
    actions, _ = model.predict(np.eye(N_CONTEXTS, dtype=np.float32), deterministic=True)
    np.testing.assert_array_equal(actions, np.arange(N_CONTEXTS))
    assert len(np.unique(model.replay_buffer.actions[:64, 0, 0])) < N_CONTEXTS


def test_an_unknown_behavior_is_refused() -> None:
    with pytest.raises(ValueError, match="behavior must be 'sample', 'greedy' or 'prior'"):
        hindsight_model(behavior="random")


def test_an_unknown_hindsight_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="hindsight must be 'critic', 'actor' or None"):
        hindsight_model(hindsight="both")


def queueing_env(profile: Profile, horizon: int = 30) -> SplitComputingEnv:
    """The tiny model on a device slow enough that a local final exit outlasts a frame: backlogs
    form and drain."""
    from splitrl.envs.reward import get_reward_spec
    from splitrl.profiles.presets import get_device_preset

    slow = dataclasses.replace(get_device_preset("stm32h7"), compute_gflops=0.001)
    return SplitComputingEnv(
        profile=profile,
        device=slow,
        horizon=horizon,
        frame_interval_s=0.006,
        deadline_s=0.02,
        reward=get_reward_spec("deadline", correctness="expected"),
    )


def test_replayed_prices_are_what_the_following_requests_lost(tiny_profile: Profile) -> None:
    """With ``backlog="replayed"``, an action's hindsight value (its step's value plus every later
    correction) minus the action taken's is what the episode would have earned from that request
    on, with that action and the same later actions, minus what it earned: a copy of the env is
    stepped both ways."""
    from splitrl.agents.baselines import make_baseline
    from splitrl.agents.sacd.buffers import HINDSIGHT_CORRECTIONS_KEY

    env = queueing_env(tiny_profile)
    wrapped = HindsightValuesInfo(env, horizon=64, backlog="replayed")
    policy = make_baseline("mpc")
    observation, _ = wrapped.reset(seed=3)
    policy.reset(env)
    values, immediate, snapshots, taken, earned = [], [], [], [], []
    done = False
    while not done:
        snapshots.append(copy.deepcopy(env))
        action = policy.act(env, observation)
        observation, reward, terminated, truncated, info = wrapped.step(action)
        values.append(info[HINDSIGHT_INFO_KEY].astype(np.float64))
        immediate.append(values[-1].copy())
        for back, change in info[HINDSIGHT_CORRECTIONS_KEY]:
            values[-1 - back] += change
        taken.append(action)
        earned.append(reward)
        done = terminated or truncated
    continued = 0  # comparisons where the following requests' rewards changed
    for t in (2, 9, 17):
        flat_taken = np.ravel_multi_index(tuple(taken[t]), env.actions.nvec)
        for other in env.evaluate_actions().actions[::5]:
            copy_env = copy.deepcopy(snapshots[t])
            rewards = [copy_env.step(other)[1]]
            rewards += [copy_env.step(later)[1] for later in taken[t + 1 :]]
            flat = np.ravel_multi_index(tuple(other), env.actions.nvec)
            expected = sum(rewards) - sum(earned[t:])
            assert values[t][flat] - values[t][flat_taken] == pytest.approx(expected, abs=1e-5)
            continued += abs(expected - (immediate[t][flat] - immediate[t][flat_taken])) > 1e-4
    assert continued > 0
    # the replays start over with every episode
    replays = BacklogReplays(horizon=4)
    replays.start(np.array([1.0, 2.0, 2.0]), taken_free_s=1.0)
    replays.clear()
    assert replays.advance(env, taken[0], 0.0, 0.0) == []
    with pytest.raises(ValueError, match="unknown backlog price 'oracle'"):
        HindsightValuesInfo(env, backlog="oracle")


@pytest.mark.parametrize("backlog", ["lookahead", "replayed"])
def test_spread_values_do_not_read_the_requests_rtt_and_queueing_draws(
    backlog: str, tiny_profile: Profile
) -> None:
    """With ``draws="mean"`` a step's values are the same whatever the request's own RTT and
    queueing draws were; with ``"exact"`` they move with them."""
    from splitrl.agents.baselines import GreedyPolicy
    from splitrl.envs.server_load import ServerLoad

    moved = {}
    for draws in ("mean", "exact"):
        env = SplitComputingEnv(
            profile=tiny_profile, horizon=30, frame_interval_s=0.006, deadline_s=0.02
        )
        env.server_load = ServerLoad(discipline="fcfs")  # a queueing draw per request
        wrapped = HindsightValuesInfo(env, backlog=backlog, draws=draws)
        observation, _ = wrapped.reset(seed=3)
        greedy = GreedyPolicy()
        greedy.reset(env)
        moved[draws] = False
        for _ in range(30):
            action = greedy.act(env, observation)
            twin = copy.deepcopy(wrapped)
            sample, rtt_s, _ = twin.unwrapped._draw
            twin.unwrapped._draw = (sample, rtt_s + 0.05, 0.999)
            late = twin.step(action)[-1][HINDSIGHT_INFO_KEY]
            observation, *_, info = wrapped.step(action)
            if draws == "mean":
                np.testing.assert_array_equal(info[HINDSIGHT_INFO_KEY], late)
            moved[draws] |= not np.array_equal(info[HINDSIGHT_INFO_KEY], late)
    assert not moved["mean"] and moved["exact"]


def test_spread_values_are_clairvoyant_links_values() -> None:
    from splitrl.agents.baselines.oracles import clairvoyant_values
    from splitrl.agents.baselines.spread import LatencySpread
    from splitrl.agents.features import relative_flat_values

    env = SplitComputingEnv("default")
    env.reset(seed=4)
    spread = LatencySpread()
    spread.reset(env)
    values = HindsightActionValues(draws="mean")
    for _ in range(10):
        actions, expected = clairvoyant_values(env, spread, draws="mean")
        np.testing.assert_array_equal(values(env), relative_flat_values(env, actions, expected))
        env.step(env.evaluate_actions().best())


def test_unknown_hindsight_draws_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown hindsight draws 'median'; known: exact, mean"):
        HindsightActionValues(draws="median")
    env = SplitComputingEnv("default")
    with pytest.raises(ValueError, match="unknown hindsight draws"):
        HindsightValuesInfo(env, draws="median")


def ahead_price(ahead: BacklogAhead, current: Any, following: list[Any], env: Any) -> np.ndarray:
    """What ``ahead`` charges ``current``'s actions when ``following`` are the requests after it."""
    ahead.clear()
    priced = []
    for outcomes in [current, *following]:
        priced += ahead.push(outcomes, env.frame_interval_s, env.reward_spec, None)
    priced += ahead.flush()
    (cost,) = [cost for back, _, cost in priced if back == len(following)]
    assert len(priced) == len(following) + 1  # every request priced once
    return np.asarray(cost)


def test_ahead_prices_a_steady_link_as_the_lookahead_does(tiny_profile: Profile) -> None:
    """When every following request meets the outcomes of the current one, the price of the
    backlog over them is the lookahead's, which forecasts exactly that."""
    from splitrl.agents.baselines import backlog_cost

    env = queueing_env(tiny_profile)
    env.reset(seed=0)
    outcomes = env.evaluate_actions(draws="mean")
    expected = backlog_cost(outcomes, env.frame_interval_s, env.reward_spec)
    assert expected.max() > 0.1  # some action leaves a backlog
    for following in (DEFAULT_BACKLOG_HORIZON, 3):
        price = ahead_price(BacklogAhead(), outcomes, [outcomes] * following, env)
        np.testing.assert_allclose(price, expected, atol=1e-4)


def test_ahead_reads_the_requests_that_actually_followed(tiny_profile: Profile) -> None:
    """A backlog costs less when the requests after it can drain it faster than the current one's
    outcomes would (the link got better), and the lookahead cannot know that."""
    from splitrl.agents.baselines import backlog_cost

    env = queueing_env(tiny_profile)
    env.reset(seed=0)
    slow = env.evaluate_actions(draws="mean")
    # the same request on a device that is free three times sooner after each action
    busy_s = slow.device_free_s - slow.wait_s
    fast = dataclasses.replace(slow, device_free_s=slow.wait_s + busy_s / 3)
    lookahead = backlog_cost(slow, env.frame_interval_s, env.reward_spec)
    on_slow = ahead_price(BacklogAhead(), slow, [slow] * 10, env)
    on_fast = ahead_price(BacklogAhead(), slow, [fast] * 10, env)
    assert np.all(on_fast <= on_slow + 1e-9) and np.all(on_fast >= 0.0)
    longest = int(np.argmax(slow.device_free_s))
    assert on_fast[longest] < on_slow[longest] - 0.5
    np.testing.assert_allclose(on_slow, lookahead, atol=1e-4)


def test_ahead_prices_every_request_once_and_forgets_between_episodes(
    tiny_profile: Profile,
) -> None:
    """Through the wrapper, each request of an episode is priced exactly once: ``horizon`` steps
    later, or by the last step of the episode; the values then are the request's own rewards
    minus the price, as a :class:`BacklogAhead` fed the same requests computes it."""
    from splitrl.agents.baselines import make_baseline
    from splitrl.agents.features import flat_values, relative_flat_values
    from splitrl.agents.sacd.buffers import HINDSIGHT_CORRECTIONS_KEY

    horizon, steps = 4, 12
    env = queueing_env(tiny_profile, horizon=steps)
    wrapped = HindsightValuesInfo(env, horizon=horizon, backlog="ahead")
    reference = BacklogAhead(horizon)
    spread = wrapped.values.spread(env)
    policy = make_baseline("mpc")
    for episode in range(2):
        observation, _ = wrapped.reset(seed=episode)
        policy.reset(env)
        reference.clear()
        values, expected, own_rows, done = [], [], [], False
        while not done:
            at_mean_draws = env.evaluate_actions(draws="mean")
            own = relative_flat_values(env, at_mean_draws.actions, env.evaluate_actions().reward)
            expected.append(own.astype(np.float64))
            own_rows.append(own)
            priced = reference.push(
                at_mean_draws, env.frame_interval_s, env.reward_spec, spread.offsets(env)
            )
            observation, _, terminated, truncated, info = wrapped.step(policy.act(env, observation))
            done = terminated or truncated
            for back, actions, cost in priced + (reference.flush() if done else []):
                expected[-1 - back] -= flat_values(env, actions, cost)
            values.append(info[HINDSIGHT_INFO_KEY].astype(np.float64))
            backs = [back for back, _ in info[HINDSIGHT_CORRECTIONS_KEY]]
            assert backs == [horizon] * (len(values) > horizon) + list(range(1, horizon)) * done
            for back, change in info[HINDSIGHT_CORRECTIONS_KEY]:
                assert np.all(change <= 0.0)
                values[-1 - back] += change
        assert len(values) == steps
        np.testing.assert_allclose(np.array(values), np.array(expected), atol=1e-5)
        assert any(np.any(row < own - 1e-6) for row, own in zip(values, own_rows, strict=True))


def test_a_learner_spec_sets_how_far_its_replays_charge_the_backlog() -> None:
    def replays(name: str) -> BacklogReplays:
        env = get_learner(name).wrap_env(SplitComputingEnv("default", horizon=8))
        replays = env.get_wrapper_attr("replays")
        assert isinstance(replays, BacklogReplays)
        return replays

    assert replays("sacd-hindsight-mpc-quantile-replayed").horizon == DEFAULT_BACKLOG_HORIZON
    assert replays("sacd-hindsight-mpc-quantile-replayed-h256").horizon == 256
    assert replays("sacd-hindsight-mpc-quantile-replayed-h16").horizon == 16
    assert not replays("sacd-hindsight-mpc-quantile-replayed").rechoose
    assert replays("sacd-hindsight-mpc-quantile-rechosen").rechoose


def test_the_rules_choice_after_another_wait_is_its_choice_had_the_request_waited() -> None:
    """:func:`best_rows_at_waits` ranks as :func:`best_with_backlog` does on the same request
    moved to each wait (its latency and device-free time shifted by the extra wait)."""
    from splitrl.agents.baselines.backlog import best_rows_at_waits, best_with_backlog

    env = SplitComputingEnv("mcu-lte-video-timeout-gate", horizon=20)
    env.reset(seed=3)
    spec = env.reward_spec
    waits = np.linspace(0.0, 2.0 * spec.deadline_s, 9)
    chosen = set()
    for _ in range(6):
        predicted = env.predict_actions()
        rows = best_rows_at_waits(predicted, env.frame_interval_s, spec, waits)
        for wait, row in zip(waits, rows, strict=True):
            shift = wait - predicted.wait_s
            latency = predicted.latency_s + shift
            moved = dataclasses.replace(
                predicted,
                latency_s=latency,
                device_free_s=predicted.device_free_s + shift,
                wait_s=wait,
                reward=spec.rewards(predicted.correct, latency, predicted.energy_j),
            )
            np.testing.assert_array_equal(best_with_backlog(moved, env), predicted.actions[row])
        chosen |= set(rows.tolist())
        env.step(predicted.actions[rows[0]])
    assert len(chosen) > 1  # the wait changed the choice


def test_rechosen_replays_change_the_corrections_not_the_requests_own_values() -> None:
    from splitrl.agents.baselines import make_baseline
    from splitrl.agents.sacd.buffers import HINDSIGHT_CORRECTIONS_KEY

    infos = {}
    for backlog in ("replayed", "rechosen"):
        env = SplitComputingEnv("default", horizon=30)
        wrapped = HindsightValuesInfo(env, backlog=backlog)
        policy = make_baseline("edge-only")  # a busy device: its replays run long
        observation, _ = wrapped.reset(seed=5)
        infos[backlog] = [wrapped.step(policy.act(env, observation))[-1] for _ in range(30)]
    differs = False
    for replayed, rechosen in zip(infos["replayed"], infos["rechosen"], strict=True):
        np.testing.assert_array_equal(replayed[HINDSIGHT_INFO_KEY], rechosen[HINDSIGHT_INFO_KEY])
        backs = [back for back, _ in replayed[HINDSIGHT_CORRECTIONS_KEY]]
        assert backs == [back for back, _ in rechosen[HINDSIGHT_CORRECTIONS_KEY]]
        for (_, fixed), (_, chosen) in zip(
            replayed[HINDSIGHT_CORRECTIONS_KEY], rechosen[HINDSIGHT_CORRECTIONS_KEY], strict=True
        ):
            differs |= not np.allclose(fixed, chosen)
    assert differs
