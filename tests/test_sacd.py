"""Tests of SACD: Soft Actor-Critic for discrete and MultiDiscrete actions, with action masks."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import IdentityEnv
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv

from splitrl.agents import SACD
from splitrl.agents.sacd import MaskableReplayBuffer, SACDPolicy
from splitrl.agents.sacd.buffers import MaskableReplayBufferSamples
from splitrl.agents.sacd.policies import action_nvec, joint_action_masks

# Small networks and an early start keep every learning test to a few seconds on a CPU.
FAST: dict[str, Any] = dict(
    learning_starts=100,
    batch_size=64,
    learning_rate=1e-3,
    policy_kwargs=dict(net_arch=[64, 64]),
)


@pytest.fixture(autouse=True, scope="module")
def single_torch_thread() -> Iterator[None]:
    """Such small networks run fastest on one thread; more only contend for a shared CPU."""
    threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(threads)


#: reward of each joint action (of ``MultiDiscrete([2, 3])``) in each of four contexts; the best
#: action is 0, 5, 3 and 1, worth 1.0, and the second best is worth 0.6
BANDIT_REWARDS = np.array(
    [
        [1.0, 0.6, 0.2, 0.0, 0.3, 0.1],
        [0.0, 0.2, 0.3, 0.1, 0.6, 1.0],
        [0.3, 0.0, 0.6, 1.0, 0.2, 0.1],
        [0.6, 1.0, 0.0, 0.3, 0.1, 0.2],
    ]
)


class ContextualBanditEnv(gym.Env):
    """One-step episodes: observe one of four contexts (one-hot), get ``BANDIT_REWARDS[context, a]``."""

    observation_space = spaces.Box(0.0, 1.0, shape=(4,), dtype=np.float32)
    action_space = spaces.MultiDiscrete([2, 3])

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.context = int(self.np_random.integers(4))
        return np.eye(4, dtype=np.float32)[self.context], {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        index = int(np.ravel_multi_index(tuple(action), (2, 3)))
        reward = float(BANDIT_REWARDS[self.context, index])
        return np.eye(4, dtype=np.float32)[self.context], reward, True, False, {}


class MaskedBanditEnv(gym.Env):
    """
    Reward grows with the joint action index, so the last action is the best; ``action_masks()``
    forbids it, and in context 1 also forbids the second best. Counts the forbidden actions taken.

    :param action_space: ``Discrete`` or ``MultiDiscrete``
    :param per_dimension: give masks in the MaskablePPO layout (per dimension, concatenated)
    """

    observation_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)

    def __init__(
        self, action_space: spaces.Space, per_dimension: bool = False, ep_length: int = 50
    ):
        self.action_space = action_space
        self.nvec = action_nvec(action_space)
        n_actions = int(np.prod(self.nvec))
        self.rewards = np.linspace(0.0, 1.0, n_actions)
        if per_dimension:
            last_value = [np.arange(n) == n - 1 for n in self.nvec]
            self.masks = np.stack(
                [
                    np.concatenate([~last_value[0], np.ones(self.nvec[1], bool)]),
                    np.concatenate([np.ones(self.nvec[0], bool), ~last_value[1]]),
                ]
            )
        else:
            self.masks = np.ones((2, n_actions), dtype=bool)
            self.masks[:, -1] = False
            self.masks[1, -2] = False
        self.ep_length = ep_length
        self.invalid_actions = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.steps = 0
        self.context = int(self.np_random.integers(2))
        return np.array([self.context], dtype=np.float32), {}

    def action_masks(self) -> np.ndarray:
        return self.masks[self.context]

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        index = int(np.ravel_multi_index(np.atleast_1d(action), self.nvec))
        self.invalid_actions += int(
            not joint_action_masks(self.action_masks(), self.nvec)[0, index]
        )
        reward = float(self.rewards[index])
        self.steps += 1
        self.context = int(self.np_random.integers(2))
        truncated = self.steps >= self.ep_length
        return np.array([self.context], dtype=np.float32), reward, False, truncated, {}

    def best_allowed_actions(self) -> list[int]:
        """The best allowed joint action index per context."""
        joint = joint_action_masks(self.masks, self.nvec)
        return [int(np.argmax(np.where(allowed, self.rewards, -np.inf))) for allowed in joint]


MASKED_ENVS: dict[str, Callable[[], MaskedBanditEnv]] = {
    "discrete": lambda: MaskedBanditEnv(spaces.Discrete(5)),
    "multidiscrete-joint": lambda: MaskedBanditEnv(spaces.MultiDiscrete([2, 3])),
    "multidiscrete-per-dimension": lambda: MaskedBanditEnv(
        spaces.MultiDiscrete([2, 3]), per_dimension=True
    ),
}


class StepRecorder(BaseCallback):
    """Records the temperature at every step and whether training started and ended."""

    def __init__(self) -> None:
        super().__init__()
        self.log_ent_coefs: list[float] = []
        self.started = self.ended = False

    def _on_training_start(self) -> None:
        self.started = True

    def _on_step(self) -> bool:
        assert isinstance(self.model, SACD) and self.model.log_ent_coef is not None
        self.log_ent_coefs.append(self.model.log_ent_coef.item())
        return True

    def _on_training_end(self) -> None:
        self.ended = True


def buffer_contents(buffer: MaskableReplayBuffer) -> tuple[np.ndarray, ...]:
    """Stored joint actions, masks, next masks and dones, env by env, in order of storage."""
    n = buffer.buffer_size if buffer.full else buffer.pos
    nvec = action_nvec(buffer.action_space)
    actions = buffer.actions[:n].astype(np.int64)
    indices = np.ravel_multi_index(tuple(np.moveaxis(actions, -1, 0)), nvec)
    return indices, buffer.action_masks[:n], buffer.next_action_masks[:n], buffer.dones[:n]


def test_joint_index_follows_numpy_c_order() -> None:
    nvec = np.array([3, 4, 2])
    space = spaces.MultiDiscrete(nvec)
    policy = SACDPolicy(space, space, lr_schedule=lambda _: 1e-3, net_arch=[8])
    indices = th.arange(int(np.prod(nvec)))
    actions = policy.index_to_action(indices).numpy()
    np.testing.assert_array_equal(actions, np.stack(np.unravel_index(indices.numpy(), nvec), 1))
    np.testing.assert_array_equal(policy.action_to_index(th.as_tensor(actions)), indices)


def test_per_dimension_masks_become_their_outer_product() -> None:
    nvec = np.array([2, 3])
    per_dimension = np.array([[True, False, True, False, True]])
    expected = [np.ravel_multi_index((0, b), nvec) for b in (0, 2)]
    assert np.flatnonzero(joint_action_masks(per_dimension, nvec)).tolist() == expected


@pytest.mark.parametrize(
    ("mask", "message"),
    [(np.ones(7, dtype=bool), "length 6"), (np.zeros(6, dtype=bool), "allows no action")],
)
def test_bad_masks_are_rejected(mask: np.ndarray, message: str) -> None:
    model = SACD("MlpPolicy", MaskedBanditEnv(spaces.MultiDiscrete([2, 3])))
    with pytest.raises(ValueError, match=message):
        model.predict(np.zeros(1, dtype=np.float32), action_masks=mask)


@pytest.mark.parametrize(
    ("env", "kwargs", "message"),
    [
        (IdentityEnv(space=spaces.Box(-1, 1, (1,))), {}, "action space"),
        (IdentityEnv(4), dict(target_entropy_ratio=1.5), "target_entropy_ratio"),
        (IdentityEnv(4), dict(ent_coef="fixed"), "ent_coef"),
        (IdentityEnv(4), dict(replay_buffer_class=ReplayBuffer), "MaskableReplayBuffer"),
        (IdentityEnv(4), dict(critic_loss="l1"), "critic_loss"),
        (IdentityEnv(4), dict(actor_averaging=0.0), "actor_averaging"),
    ],
)
def test_bad_arguments_are_rejected(env: gym.Env, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SACD("MlpPolicy", env, **kwargs)


@pytest.fixture(scope="module")
def trained_on_bandit() -> SACD:
    model = SACD("MlpPolicy", ContextualBanditEnv(), seed=0, **{**FAST, "learning_rate": 1e-2})
    model.learn(400)
    return model


def test_critics_learn_the_reward_of_every_action_of_a_bandit(trained_on_bandit: SACD) -> None:
    # one-step episodes: the soft Q-value of an action is its reward, nothing more
    with th.no_grad():
        for q in trained_on_bandit.critic(th.eye(4)):
            np.testing.assert_allclose(q.numpy(), BANDIT_REWARDS, atol=0.02)


def test_the_greedy_policy_takes_the_best_action_of_every_context(
    trained_on_bandit: SACD,
) -> None:
    actions, _ = trained_on_bandit.predict(np.eye(4, dtype=np.float32), deterministic=True)
    taken = np.ravel_multi_index(tuple(actions.T), (2, 3))
    assert taken.tolist() == BANDIT_REWARDS.argmax(axis=1).tolist()


def test_the_policy_is_the_soft_optimum_at_its_target_entropy(trained_on_bandit: SACD) -> None:
    # the actor's fixed point is softmax(Q / alpha), and alpha settles where the entropy meets
    # its target, target_entropy_ratio x log(6)
    model = trained_on_bandit
    assert model.log_ent_coef is not None
    alpha = model.log_ent_coef.exp().item()
    with th.no_grad():
        probs, _ = model.actor(th.eye(4))
    soft_optimum = th.softmax(th.as_tensor(BANDIT_REWARDS) / alpha, dim=1).numpy()
    np.testing.assert_allclose(probs.numpy(), soft_optimum, atol=0.02)
    entropy = -(soft_optimum * np.log(soft_optimum)).sum(axis=1)
    np.testing.assert_allclose(entropy, model.target_entropy_ratio * np.log(6), atol=0.05)


@pytest.mark.parametrize("env_name", list(MASKED_ENVS))
def test_never_takes_a_masked_action(env_name: str) -> None:
    env = MASKED_ENVS[env_name]()
    model = SACD("MlpPolicy", env, seed=0, **FAST)
    model.learn(600)

    assert env.invalid_actions == 0
    assert isinstance(model.replay_buffer, MaskableReplayBuffer)
    indices, masks, next_masks, dones = buffer_contents(model.replay_buffer)
    assert np.take_along_axis(masks, indices[..., None], axis=-1).all()
    # The next observation's masks are the masks of the following step within an episode
    continuing = dones[:-1, 0] == 0
    np.testing.assert_array_equal(next_masks[:-1][continuing], masks[1:][continuing])

    contexts = np.array([[0.0], [1.0]], dtype=np.float32)
    masks_by_context = env.masks
    for deterministic in (True, False):
        for _ in range(20):
            actions, _ = model.predict(
                contexts, deterministic=deterministic, action_masks=masks_by_context
            )
            taken = np.ravel_multi_index(tuple(np.atleast_2d(actions.T)), env.nvec)
            allowed = joint_action_masks(masks_by_context, env.nvec)
            assert allowed[[0, 1], taken].all()
    greedy, _ = model.predict(contexts, deterministic=True, action_masks=masks_by_context)
    greedy_indices = np.ravel_multi_index(tuple(np.atleast_2d(greedy.T)), env.nvec)
    assert greedy_indices.tolist() == env.best_allowed_actions()


def test_save_load_round_trip(tmp_path: Path) -> None:
    env = MASKED_ENVS["multidiscrete-joint"]()
    model = SACD("MlpPolicy", env, seed=0, **FAST)
    model.learn(300)
    model.save(tmp_path / "sacd.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")

    loaded = SACD.load(tmp_path / "sacd.zip", env=env)
    observations = np.array([[0.0], [1.0]], dtype=np.float32)
    for deterministic in (True, False):
        th.manual_seed(1)
        expected, _ = model.predict(
            observations, deterministic=deterministic, action_masks=env.masks
        )
        th.manual_seed(1)
        actual, _ = loaded.predict(
            observations, deterministic=deterministic, action_masks=env.masks
        )
        np.testing.assert_array_equal(actual, expected)
    obs_tensor = th.as_tensor(observations)
    th.testing.assert_close(loaded.actor(obs_tensor)[0], model.actor(obs_tensor)[0])
    assert model.log_ent_coef is not None and loaded.log_ent_coef is not None
    assert loaded.log_ent_coef.item() == model.log_ent_coef.item()

    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    assert isinstance(loaded.replay_buffer, MaskableReplayBuffer)
    assert isinstance(model.replay_buffer, MaskableReplayBuffer)
    for restored, original in zip(
        buffer_contents(loaded.replay_buffer), buffer_contents(model.replay_buffer), strict=True
    ):
        np.testing.assert_array_equal(restored, original)
    loaded.learn(50, reset_num_timesteps=False)
    assert loaded.num_timesteps == 350


def test_averaged_actor_follows_the_actor_and_makes_the_greedy_decisions(tmp_path: Path) -> None:
    env = ContextualBanditEnv()
    first = SACD("MlpPolicy", env, seed=0, actor_averaging=0.1, **FAST)
    averaged = first.policy.averaged_actor
    assert averaged is not None and first.policy.greedy_actor is averaged
    first.learn(FAST["learning_starts"] + 10)
    before = [p.detach().clone() for p in averaged.parameters()]
    actor_before = [p.detach().clone() for p in first.actor.parameters()]
    first.train(gradient_steps=1, batch_size=FAST["batch_size"])
    # after an actor step the average moves a tenth of the way to the new actor
    for old, old_actor, new, actor in zip(
        before, actor_before, averaged.parameters(), first.actor.parameters(), strict=True
    ):
        assert not th.equal(actor.detach(), old_actor)
        th.testing.assert_close(new.detach(), 0.9 * old + 0.1 * actor.detach())
    first.learn(300)
    observations = th.eye(4)
    with th.no_grad():
        greedy = averaged.sample(observations, None, deterministic=True)
    predicted, _ = first.predict(observations.numpy(), deterministic=True)
    np.testing.assert_array_equal(predicted, first.policy.index_to_action(greedy).numpy())
    assert any(
        not th.equal(a.detach(), b.detach())
        for a, b in zip(averaged.parameters(), first.actor.parameters(), strict=True)
    )
    first.save(tmp_path / "averaged.zip")
    loaded = SACD.load(tmp_path / "averaged.zip", env=env)
    assert loaded.policy.averaged_actor is not None
    for a, b in zip(loaded.policy.averaged_actor.parameters(), averaged.parameters(), strict=True):
        th.testing.assert_close(a, b)
    np.testing.assert_array_equal(
        loaded.predict(observations.numpy(), deterministic=True)[0], predicted
    )
    plain = SACD("MlpPolicy", env, seed=0, **FAST)
    assert plain.policy.averaged_actor is None and plain.policy.greedy_actor is plain.actor


def test_vectorized_envs_callbacks_progress_bar_and_tensorboard(tmp_path: Path) -> None:
    vec_env = make_vec_env(MASKED_ENVS["discrete"], n_envs=2, seed=0, vec_env_cls=DummyVecEnv)
    recorder = StepRecorder()
    model = SACD("MlpPolicy", vec_env, seed=0, tensorboard_log=str(tmp_path), **FAST)
    model.learn(400, callback=recorder, progress_bar=True)

    assert recorder.started and recorder.ended
    assert recorder.n_calls == 200  # one call per vectorized step of 2 envs
    assert vec_env.get_attr("invalid_actions") == [0, 0]
    assert isinstance(model.replay_buffer, MaskableReplayBuffer)
    indices, masks, _, _ = buffer_contents(model.replay_buffer)
    assert indices.shape == (200, 2)
    assert np.take_along_axis(masks, indices[..., None], axis=-1).all()
    assert list(tmp_path.glob("SACD_1/events.out.tfevents.*"))


@pytest.mark.parametrize("ent_coef", ["auto", 0.05])
def test_logs_training_values(tmp_path: Path, ent_coef: str | float) -> None:
    model = SACD("MlpPolicy", MASKED_ENVS["discrete"](), ent_coef=ent_coef, seed=0, **FAST)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(300, log_interval=1)

    header, *rows = (tmp_path / "progress.csv").read_text().splitlines()
    columns = header.split(",")
    for key in ("actor_loss", "critic_loss", "ent_coef", "entropy", "q_values"):
        assert f"train/{key}" in columns
    assert ("train/ent_coef_loss" in columns) == (ent_coef == "auto")
    cells = [row.split(",")[columns.index("train/ent_coef")] for row in rows]
    logged = [float(cell) for cell in cells if cell]
    assert logged
    if ent_coef == "auto":
        assert all(0.0 < value < 1.0 for value in logged)
    else:
        assert logged == pytest.approx([0.05] * len(logged))


def fixed_batch(
    rewards: list[float], actions: list[int], dones: list[float], masks: np.ndarray
) -> MaskableReplayBufferSamples:
    """A batch of the ``MASKED_ENVS["discrete"]`` env with the given rewards, actions and dones."""
    n = len(rewards)
    observations = th.tensor([[0.0], [1.0], [0.0], [1.0]][:n])
    masks_tensor = th.as_tensor(masks[:n])
    return MaskableReplayBufferSamples(
        observations=observations,
        actions=th.tensor(actions, dtype=th.float32).reshape(n, 1),
        next_observations=1.0 - observations,
        dones=th.tensor(dones).reshape(n, 1),
        rewards=th.tensor(rewards).reshape(n, 1),
        action_masks=masks_tensor,
        next_action_masks=masks_tensor.flip(0),
    )


def hand_critic_loss(model: SACD, batch: MaskableReplayBufferSamples, offset: float) -> float:
    """The critic loss of one batch, written out with numpy from the networks' outputs."""
    with th.no_grad():
        logits = model.actor.logits_net(batch.next_observations).numpy()
        next_q = np.minimum(*(q.numpy() for q in model.critic_target(batch.next_observations)))
        current_q = [q.numpy() for q in model.critic(batch.observations)]
    allowed = batch.next_action_masks.numpy()
    alpha, gamma = 0.1, model.gamma
    loss = 0.0
    for row in range(len(logits)):
        z = logits[row][allowed[row]]
        probs = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        soft_v = float((probs * (next_q[row][allowed[row]] - alpha * np.log(probs))).sum())
        target = float(batch.rewards[row]) - offset + gamma * (1 - float(batch.dones[row])) * soft_v
        action = int(batch.actions[row, 0])
        loss += 0.5 * sum((q[row, action] - target) ** 2 for q in current_q) / len(logits)
    return loss


def test_critic_target_with_reward_centering_matches_a_hand_computation() -> None:
    env = MASKED_ENVS["discrete"]()
    masks = np.ones((4, 5), dtype=bool)
    masks[1, 3:] = False
    masks[3, 0] = False
    model = SACD(
        "MlpPolicy",
        env,
        ent_coef=0.1,
        reward_centering=0.25,
        learning_rate=0.0,
        seed=0,
        **{key: value for key, value in FAST.items() if key != "learning_rate"},
    )
    model.set_logger(configure(None, []))
    batches = [
        fixed_batch([1.0, 0.5, 0.0, 0.25], [0, 2, 4, 1], [0.0, 1.0, 0.0, 0.0], masks),
        fixed_batch([2.0, 1.0, 0.5, 1.5], [1, 0, 3, 4], [0.0, 0.0, 1.0, 0.0], masks),
    ]
    assert model.replay_buffer is not None
    model.replay_buffer.sample = lambda *args, **kwargs: batches.pop(0)  # type: ignore[method-assign,assignment]
    # The running mean starts at the first batch's mean (0.4375) and moves a quarter of the way
    # to the second's (1.25): offsets 0.4375 and 0.640625.
    expected = [
        hand_critic_loss(model, batch, offset)
        for batch, offset in zip(list(batches), [0.4375, 0.640625], strict=True)
    ]
    model.train(gradient_steps=2, batch_size=4)

    assert model.reward_offset == pytest.approx(0.640625)
    logged = model.logger.name_to_value["train/critic_loss"]
    assert logged == pytest.approx(np.mean(expected), rel=1e-5)


def prior_policy(**kwargs: Any) -> SACDPolicy:
    """A small SACD policy over ``MultiDiscrete([2, 3])`` whose observation is two features and a
    prior value of each of the 6 joint actions, at ``prior_scale=10``."""
    observation_space = spaces.Box(-np.inf, np.inf, shape=(2 + 6,), dtype=np.float32)
    return SACDPolicy(
        observation_space,
        spaces.MultiDiscrete([2, 3]),
        lambda _: 1e-3,
        net_arch=[8],
        action_prior=True,
        prior_scale=10.0,
        **kwargs,
    )


def test_action_prior_is_the_starting_point_of_critics_and_actor() -> None:
    policy = prior_policy()
    for network in (policy.actor.logits_net, *policy.critic.q_networks):
        assert isinstance(network, th.nn.Sequential)
        last = network[-1]
        assert isinstance(last, th.nn.Linear)
        th.nn.init.zeros_(last.weight)
        th.nn.init.zeros_(last.bias)
    prior = th.tensor([[0.0, -0.1, -0.3, 0.0, -0.2, -1.0]])
    obs = th.cat([th.tensor([[0.5, 2.0]]), prior], dim=1)
    mask = th.tensor([[True, True, True, False, True, True]])

    for q in policy.critic(obs):
        th.testing.assert_close(q, prior)
    probs, _ = policy.actor(obs, mask)
    expected = th.softmax(th.where(mask, 10.0 * prior, -th.inf), dim=1)
    th.testing.assert_close(probs, expected)


def test_action_prior_needs_room_in_the_observation() -> None:
    with pytest.raises(ValueError, match="action_prior needs a flat Box observation ending with 6"):
        SACDPolicy(
            spaces.Box(0.0, 1.0, shape=(3,), dtype=np.float32),
            spaces.MultiDiscrete([2, 3]),
            lambda _: 1e-3,
            action_prior=True,
        )


class DriftingBanditEnv(ContextualBanditEnv):
    """The contextual bandit whose contexts are scaled by 1 + episode count / 50: observations
    grow during training, so their recorded range is known."""

    observation_space = spaces.Box(0.0, np.inf, shape=(4,), dtype=np.float32)
    episodes = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        observation, info = super().reset(seed=seed)
        self.episodes += 1
        return self.drift(observation), info

    def drift(self, observation: np.ndarray) -> np.ndarray:
        """The observation of this episode."""
        return observation * (1.0 + self.episodes / 50)


def test_clipped_inputs_record_the_training_range_and_hold_the_network_inside_it(
    tmp_path: Path,
) -> None:
    env = DriftingBanditEnv()
    settings = {**FAST, "policy_kwargs": {**FAST["policy_kwargs"], "clip_inputs": True}}
    model = SACD("MlpPolicy", env, seed=0, actor_averaging=0.5, **settings)
    actor = model.policy.actor
    outside = th.tensor([[9.0, 0.0, -3.0, 0.5]])
    with th.no_grad():  # nothing recorded yet: the network reads the observation as it is
        th.testing.assert_close(
            actor.masked_logits(outside),
            actor.logits_net(actor.extract_features(outside, actor.features_extractor)),
        )
    model.learn(120)
    buffer = model.replay_buffer
    assert isinstance(buffer, MaskableReplayBuffer)
    seen = buffer.observations[: buffer.pos].reshape(-1, 4)
    # every observation acted on was recorded (the buffer's, plus the one the last step left)
    np.testing.assert_array_equal(actor.input_low.numpy(), seen.min(axis=0))
    assert np.all(actor.input_high.numpy() >= seen.max(axis=0))
    assert actor.input_high.numpy().max() > 2.0  # the drift was recorded
    averaged = model.policy.averaged_actor
    assert averaged is not None
    th.testing.assert_close(averaged.input_low, actor.input_low)
    clipped = th.minimum(th.maximum(outside, actor.input_low), actor.input_high)
    assert not th.equal(clipped, outside)
    with th.no_grad():
        th.testing.assert_close(actor.masked_logits(outside), actor.masked_logits(clipped))
    model.save(tmp_path / "clipped.zip")
    loaded = SACD.load(tmp_path / "clipped.zip")
    th.testing.assert_close(loaded.policy.actor.input_high, actor.input_high)
    np.testing.assert_array_equal(
        loaded.predict(outside.numpy(), deterministic=True)[0],
        model.predict(outside.numpy(), deterministic=True)[0],
    )


class ShrinkingBanditEnv(DriftingBanditEnv):
    """The contextual bandit whose observations are ``(one-hot + 1) / (1 + episode count / 50)``:
    every episode's observation lies below the range recorded before it."""

    observation_space = spaces.Box(0.0, 2.0, shape=(4,), dtype=np.float32)

    def drift(self, observation: np.ndarray) -> np.ndarray:
        """The observation of this episode."""
        return (observation + 1.0) / (1.0 + self.episodes / 50)


def test_range_guard_keeps_to_its_actions_below_the_recorded_range() -> None:
    policy = prior_policy(clip_inputs=True, range_guard={"input": 1, "actions": [2, 0]})
    actor = policy.actor
    values = [0.0, 0.3, -0.1, 0.2, 0.1, -0.2]  # the prior's first choice is 1, never allowed
    inside = np.array([[0.5, 1.0, *values]], dtype=np.float32)
    below = th.tensor([[0.5, 0.2, *values]])
    with th.no_grad():  # nothing recorded yet: no range, no guard
        assert th.isfinite(actor.masked_logits(below)).all()
    policy.record_inputs(np.concatenate([inside, inside + 0.5]))
    with th.no_grad():
        assert th.isfinite(actor.masked_logits(th.as_tensor(inside))).all()
        assert th.isfinite(actor.masked_logits(th.tensor([[0.5, 9.0, *values]]))).all()
        guarded = actor.masked_logits(below)
        assert th.isfinite(guarded[0, [0, 2]]).all()
        assert th.isinf(guarded[0, [1, 3, 4, 5]]).all()
        # with masks too: what either forbids is forbidden
        masks = th.tensor([[False, True, True, True, True, True]])
        assert th.isfinite(actor.masked_logits(below, masks)).sum() == 1
        with policy.unguarded():
            assert th.isfinite(actor.masked_logits(below)).all()
        assert actor.guarding
    action, _ = policy.predict(below.numpy(), deterministic=True)
    assert int(np.ravel_multi_index(tuple(action[0]), (2, 3))) == 0
    action, _ = policy.predict(inside, deterministic=True)
    assert int(np.ravel_multi_index(tuple(action[0]), (2, 3))) == 1


def test_range_guard_expires_where_its_entry_reaches_the_threshold() -> None:
    guard = {"input": 1, "actions": [0], "expires": {"input": 0, "at": 0.5}}
    policy = prior_policy(clip_inputs=True, range_guard=guard)
    inside = np.array([[0.0, 1.0, 0.0, 0.3, -0.1, 0.2, 0.1, -0.2]], dtype=np.float32)
    policy.record_inputs(inside)
    fresh = th.tensor([[0.2, 0.2, 0.0, 0.3, -0.1, 0.2, 0.1, -0.2]])
    stale = th.tensor([[0.5, 0.2, 0.0, 0.3, -0.1, 0.2, 0.1, -0.2]])
    actor = policy.actor
    with th.no_grad():
        assert th.isfinite(actor.masked_logits(fresh)).sum() == 1
        assert th.isfinite(actor.masked_logits(stale)).all()
    np.testing.assert_array_equal(actor.outside_range(th.cat([fresh, stale])), [True, False])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"range_guard": {"input": 0, "actions": [0]}}, "needs clip_inputs"),
        ({"clip_inputs": True, "range_guard": {"input": 8, "actions": [0]}}, "observation entry"),
        ({"clip_inputs": True, "range_guard": {"input": 0, "actions": []}}, "at least one"),
        ({"clip_inputs": True, "range_guard": {"input": 0, "actions": [6]}}, r"\[0, 6\)"),
        ({"clip_inputs": True, "range_guard": {"input": 0}}, "'input', 'actions'"),
        (
            {
                "clip_inputs": True,
                "range_guard": {"input": 0, "actions": [0], "expires": {"at": 1}},
            },
            "expires must be a mapping",
        ),
        (
            {
                "clip_inputs": True,
                "range_guard": {"input": 0, "actions": [0], "expires": {"input": 0, "at": "x"}},
            },
            "finite number",
        ),
    ],
)
def test_range_guard_is_checked(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        prior_policy(**settings)


def test_range_guard_leaves_training_unchanged_and_guards_the_trained_policy(
    tmp_path: Path,
) -> None:
    """While SACD learns, every observation is below the range recorded before it, and a guard
    would forbid most actions: the guard is off, so training is that of the unguarded policy."""
    guard = {"input": 0, "actions": [4]}
    models = []
    for range_guard in (None, guard):
        kwargs = {**FAST["policy_kwargs"], "clip_inputs": True, "range_guard": range_guard}
        model = SACD("MlpPolicy", ShrinkingBanditEnv(), seed=0, **{**FAST, "policy_kwargs": kwargs})
        models.append(model.learn(300))
    plain, guarded = models
    for name, weights in plain.policy.actor.state_dict().items():
        th.testing.assert_close(guarded.policy.actor.state_dict()[name], weights)
    plain_buffer, guarded_buffer = plain.replay_buffer, guarded.replay_buffer
    assert plain_buffer is not None and guarded_buffer is not None
    np.testing.assert_array_equal(guarded_buffer.actions, plain_buffer.actions)
    taken = guarded_buffer.actions[: guarded_buffer.pos].reshape(-1, 2)
    assert (np.ravel_multi_index(taken.T, (2, 3)) != 4).any()
    below = (np.eye(4, dtype=np.float32)[[0, 1, 2, 3]] + 1.0) * 0.01
    assert guarded.policy.actor.guarding
    actions, _ = guarded.predict(below, deterministic=True)
    np.testing.assert_array_equal(np.ravel_multi_index(actions.T, (2, 3)), [4, 4, 4, 4])
    guarded.save(tmp_path / "guarded.zip")
    loaded = SACD.load(tmp_path / "guarded.zip")
    assert loaded.policy.actor.range_guard == guard
    np.testing.assert_array_equal(loaded.predict(below, deterministic=True)[0], actions)


def test_clipped_inputs_leave_the_prior_term_raw() -> None:
    policy = prior_policy(clip_inputs=True)
    inside = np.array([[0.5, 1.0, 0.0, -0.1, -0.2, -0.3, -0.4, -0.5]], dtype=np.float32)
    policy.record_inputs(np.concatenate([inside, inside - 0.1]))
    actor = policy.actor
    raw = th.tensor([[0.5, 5.0, 0.0, -9.0, -0.2, -0.3, -0.4, -0.5]])
    inner = th.tensor([[0.5, 1.0, 0.0, -0.2, -0.2, -0.3, -0.4, -0.5]])
    with th.no_grad():
        network = actor.logits_net(actor.extract_features(inner, actor.features_extractor))
        th.testing.assert_close(actor.masked_logits(raw), network + 10.0 * raw[:, 2:])
