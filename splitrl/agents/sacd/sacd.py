"""Soft Actor-Critic for discrete actions (SACD), with action masking, as an SB3 algorithm."""

from collections.abc import Callable
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import get_parameters_by_name, polyak_update
from torch.nn import functional as F

from splitrl.agents.sacd.buffers import MaskableReplayBuffer, MaskableReplayBufferSamples
from splitrl.agents.sacd.policies import (
    CategoricalActor,
    DiscreteCritic,
    MlpPolicy,
    SACDPolicy,
    action_nvec,
    action_prior,
    joint_action_masks,
)

SelfSACD = TypeVar("SelfSACD", bound="SACD")

#: the critics' regression losses by ``critic_loss`` name; the absolute error's minimizer is the
#: median of the targets
CRITIC_LOSSES: dict[str, Callable[..., th.Tensor]] = {
    "mse": F.mse_loss,
    "huber": F.smooth_l1_loss,
    "median": F.l1_loss,
}


def _weighted_mean(losses: th.Tensor, weights: th.Tensor) -> th.Tensor:
    """The mean of ``losses`` weighted by ``weights`` (broadcast to them); 0 where all are 0."""
    weights = weights.expand_as(losses)
    return (losses * weights).sum() / weights.sum().clamp(min=1.0)


class SACD(OffPolicyAlgorithm):
    """
    Soft Actor-Critic for discrete actions (SACD), with invalid action masking.

    The actor is a categorical distribution over all joint actions (``prod(nvec)`` of them for a
    ``MultiDiscrete`` space); the twin critics output the Q-value of every joint action, so the
    soft value, the actor loss and the entropy are exact expectations over the action
    probabilities instead of sampled estimates. Discrete SAC: https://arxiv.org/abs/1910.07207

    If the env has an ``action_masks()`` method (the sb3-contrib ``MaskablePPO`` convention), the
    masks are queried at every collected step, stored in the replay buffer for both states of a
    transition, and applied in exploration, in the critic target, in the actor loss and in the
    entropy and temperature. See ``docs/sacd.md``.

    :param policy: The policy model to use (``"MlpPolicy"`` or a ``SACDPolicy`` subclass)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: learning rate for adam optimizer, the same for actor, critics and
        temperature; it can be a function of the current progress remaining (from 1 to 0)
    :param buffer_size: size of the replay buffer
    :param learning_starts: how many steps of the model to collect transitions for before learning
        starts; with ``behavior="sample"`` these steps take uniformly random allowed actions
    :param batch_size: Minibatch size for each gradient update
    :param tau: the soft update coefficient ("Polyak update", between 0 and 1)
    :param gamma: the discount factor
    :param train_freq: Update the model every ``train_freq`` steps. Alternatively pass a tuple of
        frequency and unit like ``(5, "step")`` or ``(2, "episode")``.
    :param gradient_steps: How many gradient steps to do after each rollout (see ``train_freq``).
        Set to ``-1`` means to do as many gradient steps as steps done in the environment
        during the rollout.
    :param replay_buffer_class: Replay buffer class to use, a ``MaskableReplayBuffer`` (subclass);
        ``None`` for ``MaskableReplayBuffer``
    :param replay_buffer_kwargs: Keyword arguments to pass to the replay buffer on creation.
    :param optimize_memory_usage: Enable a memory efficient variant of the replay buffer
        at a cost of more complexity.
    :param ent_coef: Entropy regularization coefficient (temperature, alpha). ``"auto"`` learns
        it, starting at 1.0 (``"auto_0.1"`` starts at 0.1); a float keeps it fixed.
    :param target_entropy_ratio: when learning ``ent_coef``, the target entropy of a state is this
        ratio of the largest possible entropy, ``log(number of allowed actions)``
    :param target_update_interval: update the target networks every ``target_update_interval``
        gradient steps
    :param max_grad_norm: clip the gradient norm of each network (and of the temperature) to this
        value; ``None`` for no clipping
    :param critic_loss: ``"mse"`` (squared TD error), ``"huber"`` (smooth L1, less sensitive to
        rare large rewards) or ``"median"`` (absolute error: the critics learn the median of
        their targets given the state, which a few extreme targets do not move; with
        ``hindsight="critic"``, the median hindsight value of every action)
    :param reward_centering: step size of the running mean reward that is subtracted from every
        reward in the critic target (reward centering, Naik et al., 2024); 0 turns it off. The
        mean starts at the first batch's mean reward and follows the sampled batches. Centering
        shifts every Q-value by the same constant, so the ranking of actions is unchanged, but the
        critics no longer spend their capacity on that constant.
    :param target_kl: with an action prior in the policy (``policy_kwargs=dict(action_prior=True)``),
        regularize toward the prior's policy ``pi0 = softmax(prior_scale * prior)`` instead of
        toward uniform: the entropy term ``alpha log pi`` becomes ``alpha (log pi - log pi0)`` in
        the soft value and the actor loss, and a learned temperature keeps the mean
        ``KL(pi || pi0)`` near ``target_kl`` nats instead of the entropy near its target. The
        untrained actor is ``pi0``, so training improves on the prior within a trust region
        instead of first unlearning it (KL-regularized RL, as in MPO: Abdolmaleki et al., 2018).
        ``None`` keeps the entropy regularizer.
    :param hindsight: learn from hindsight values, in an environment whose randomness is
        exogenous (the action does not change it): after each step the env tells what *every*
        action would have been worth on the same draws, in ``info["hindsight_values"]`` (one value
        per joint action, the future's cost included), and the replay buffer stores them.
        ``"critic"``: the critics regress ``Q_i(s, a)`` on those values for every allowed ``a``
        instead of the soft Bellman target, one label per action instead of one bootstrapped
        label per transition. ``"actor"``: the actor's loss takes the values of the sampled
        request in place of ``min_i Q_i(s, a)``, an exact counterfactual value of every action
        (the critics are not trained). Hindsight learning: Sinclair et al., ICML 2023. With
        either, ``gamma``, the target critics and ``reward_centering`` are not used; the
        temperature is unchanged. ``None``: the soft Bellman critics (default).
    :param hindsight_reference: with ``hindsight="critic"``, what the critics' labels are relative
        to: ``"best"`` (default), the values as the env gives them (relative to the best action
        of the request); ``"prior"``, each value minus that of the action the prior ranks first,
        so that a label is the paired gain of an action over the prior's choice on the same
        draws, and a ``"median"`` critic learns the typical gain of leaving the prior (needs
        ``policy_kwargs=dict(action_prior=True)``)
    :param critic_split: which transitions each critic learns from: ``None``, all of them
        (default); an integer ``L``, critic ``i`` of ``n`` only the stretches of ``L`` consecutive
        transitions whose number is ``i`` modulo ``n`` (every other stretch, with two critics).
        The critics then err independently, so ``min_i Q_i``, which the actor maximizes, is a
        conservative estimate: an action that one critic overrates on its stretches is not
        chosen unless the other, which did not see them, rates it as well (double estimation,
        van Hasselt, 2010). With hindsight labels, whose noise is mostly the channel of the
        moment, stretches longer than the channel's memory keep neighbouring stretches from
        sharing its luck (``docs/sacd-experiments.md``, A split critic, measures 2 s against
        0.2 s). Each critic sees ``1/n`` of the data.
    :param actor_averaging: Polyak coefficient of an average of the actor's weights, updated
        after every actor step (``avg <- (1 - c) avg + c actor``), that makes the deterministic
        decisions: evaluation, validation and export use it, while training samples from the
        actor itself. An average over the last ``~1/c`` updates damps the swings of the greedy
        action from one update to the next. ``None``: the actor decides (default).
    :param behavior: what fills the replay buffer: ``"sample"`` samples the masked policy (after
        ``learning_starts`` uniform steps; default); ``"greedy"`` takes the policy's deterministic
        decisions from the first step on; ``"prior"`` takes the action prior's best allowed action
        (the rule that gives the prior decides, so the actor learns on that rule's states; needs
        ``policy_kwargs=dict(action_prior=True)``). With ``hindsight`` every action of a stored
        state is labeled, so the behavior need not explore actions (docs/sacd.md).
    :param stats_window_size: Window size for the rollout logging, specifying the number of
        episodes to average the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: Verbosity level: 0 for no output, 1 for info messages (such as device or
        wrappers used), 2 for debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}
    policy: SACDPolicy
    actor: CategoricalActor
    critic: DiscreteCritic
    critic_target: DiscreteCritic

    def __init__(
        self,
        policy: str | type[SACDPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 100_000,
        learning_starts: int = 1000,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        replay_buffer_class: type[MaskableReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        ent_coef: str | float = "auto",
        target_entropy_ratio: float = 0.5,
        target_update_interval: int = 1,
        max_grad_norm: float | None = None,
        critic_loss: Literal["mse", "huber", "median"] = "mse",
        reward_centering: float = 0.0,
        target_kl: float | None = None,
        hindsight: Literal["critic", "actor"] | None = None,
        hindsight_reference: Literal["best", "prior"] = "best",
        critic_split: int | None = None,
        actor_averaging: float | None = None,
        behavior: Literal["sample", "greedy", "prior"] = "sample",
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        if env is not None and not isinstance(env, str):
            action_nvec(env.action_space)  # a clear error for an unsupported action space
        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size,
            learning_starts,
            batch_size,
            tau,
            gamma,
            train_freq,
            gradient_steps,
            replay_buffer_class=replay_buffer_class or MaskableReplayBuffer,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            sde_support=False,
            supported_action_spaces=(spaces.Discrete, spaces.MultiDiscrete),
            support_multi_env=True,
        )
        self.ent_coef = ent_coef
        self.target_entropy_ratio = target_entropy_ratio
        self.target_update_interval = target_update_interval
        self.max_grad_norm = max_grad_norm
        self.critic_loss = critic_loss
        self.reward_centering = reward_centering
        self.target_kl = target_kl
        self.hindsight = hindsight
        self.hindsight_reference = hindsight_reference
        self.critic_split = critic_split
        self.actor_averaging = actor_averaging
        self.behavior = behavior
        #: the running mean reward subtracted in the critic target (``None`` before the first update)
        self.reward_offset: float | None = None
        self.log_ent_coef: th.Tensor | None = None
        self.ent_coef_optimizer: th.optim.Adam | None = None
        self._last_action_masks: np.ndarray | None = None

        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        if isinstance(self.observation_space, spaces.Dict):
            raise ValueError("SACD supports Box and Discrete observation spaces, not Dict")
        if not issubclass(self.replay_buffer_class, MaskableReplayBuffer):  # type: ignore[arg-type]
            raise ValueError(
                f"replay_buffer_class must be a MaskableReplayBuffer, got {self.replay_buffer_class}"
            )
        if not 0.0 <= self.target_entropy_ratio <= 1.0:
            raise ValueError(
                f"target_entropy_ratio must lie in [0, 1], got {self.target_entropy_ratio}"
            )
        if self.critic_loss not in CRITIC_LOSSES:
            raise ValueError(
                f"critic_loss must be 'mse', 'huber' or 'median', got {self.critic_loss!r}"
            )
        if not 0.0 <= self.reward_centering <= 1.0:
            raise ValueError(f"reward_centering must lie in [0, 1], got {self.reward_centering}")
        if self.target_update_interval < 1:
            raise ValueError(
                f"target_update_interval must be at least 1, got {self.target_update_interval}"
            )
        if self.target_kl is not None and not self.target_kl > 0.0:
            raise ValueError(f"target_kl must be positive or None, got {self.target_kl}")
        if self.hindsight not in (None, "critic", "actor"):
            raise ValueError(f"hindsight must be 'critic', 'actor' or None, got {self.hindsight!r}")
        if self.hindsight_reference not in ("best", "prior"):
            raise ValueError(
                f"hindsight_reference must be 'best' or 'prior', got {self.hindsight_reference!r}"
            )
        if self.hindsight_reference != "best" and self.hindsight != "critic":
            raise ValueError(
                "hindsight_reference applies to the hindsight critic's labels only "
                f"(hindsight='critic'), got hindsight={self.hindsight!r}"
            )
        if self.critic_split is not None and not (
            isinstance(self.critic_split, int)
            and not isinstance(self.critic_split, bool)
            and self.critic_split >= 1
        ):
            raise ValueError(
                f"critic_split must be a positive number of transitions or None, "
                f"got {self.critic_split!r}"
            )
        if self.critic_split is not None and self.hindsight == "actor":
            raise ValueError(
                "critic_split needs trained critics; with hindsight='actor' there are none"
            )
        if self.behavior not in ("sample", "greedy", "prior"):
            raise ValueError(
                f"behavior must be 'sample', 'greedy' or 'prior', got {self.behavior!r}"
            )
        if self.hindsight is not None:
            self.replay_buffer_kwargs = {**self.replay_buffer_kwargs, "store_hindsight": True}
        if self.actor_averaging is not None:
            if not 0.0 < self.actor_averaging <= 1.0:
                raise ValueError(
                    f"actor_averaging must lie in (0, 1] or be None, got {self.actor_averaging}"
                )
            self.policy_kwargs = {**self.policy_kwargs, "averaged_actor": True}
        super()._setup_model()
        self._create_aliases()
        if self.target_kl is not None and not self.actor.prior_scale:
            raise ValueError(
                "target_kl needs a policy with an action prior "
                "(policy_kwargs=dict(action_prior=True))"
            )
        if self.hindsight_reference == "prior" and not self.actor.prior_scale:
            raise ValueError(
                "hindsight_reference='prior' needs a policy with an action prior "
                "(policy_kwargs=dict(action_prior=True))"
            )
        if self.behavior == "prior" and not self.actor.prior_scale:
            raise ValueError(
                "behavior='prior' needs a policy with an action prior "
                "(policy_kwargs=dict(action_prior=True))"
            )
        # Running mean and running var
        self.batch_norm_stats = get_parameters_by_name(self.critic, ["running_"])
        self.batch_norm_stats_target = get_parameters_by_name(self.critic_target, ["running_"])

        if isinstance(self.ent_coef, str):
            if not self.ent_coef.startswith("auto"):
                raise ValueError(
                    f"ent_coef must be 'auto', 'auto_<float>' or a float, got {self.ent_coef!r}"
                )
            init_value = float(self.ent_coef.split("_")[1]) if "_" in self.ent_coef else 1.0
            if init_value <= 0.0:
                raise ValueError(
                    f"The initial value of ent_coef must be positive, got {init_value}"
                )
            # As in SB3's SAC, the log of the temperature is optimized
            self.log_ent_coef = th.log(
                th.full((1,), init_value, device=self.device)
            ).requires_grad_()
            self.ent_coef_optimizer = th.optim.Adam([self.log_ent_coef], lr=self.lr_schedule(1))
        else:
            if self.ent_coef < 0.0:
                raise ValueError(f"ent_coef must not be negative, got {self.ent_coef}")
            self.ent_coef_tensor = th.tensor(float(self.ent_coef), device=self.device)

    def _create_aliases(self) -> None:
        self.actor = self.policy.actor
        self.critic = self.policy.critic
        self.critic_target = self.policy.critic_target

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        assert isinstance(self.replay_buffer, MaskableReplayBuffer)
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(optimizers)
        td_loss = CRITIC_LOSSES[self.critic_loss]

        actor_losses, critic_losses, ent_coef_losses, gate_losses = [], [], [], []
        ent_coefs, entropies, target_entropies, q_values, kls = [], [], [], [], []
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            actions = self.policy.action_to_index(data.actions).unsqueeze(1)
            if self.log_ent_coef is not None:
                ent_coef = th.exp(self.log_ent_coef.detach())
            else:
                ent_coef = self.ent_coef_tensor

            critic_loss: th.Tensor | None
            if self.hindsight == "actor":
                assert data.hindsight_values is not None
                critic_loss, current_q = None, [data.hindsight_values.gather(1, actions)]
            elif self.hindsight == "critic":
                critic_loss, current_q = self._hindsight_critic_loss(data, actions, td_loss)
            else:
                critic_loss, current_q = self._bellman_critic_loss(data, actions, ent_coef, td_loss)
            if critic_loss is not None:
                self._gradient_step(self.critic.optimizer, critic_loss)

            # Actor: minimize sum_a pi(a|s) [alpha log pi(a|s) - min_i Q_i(s, a)]
            # (with target_kl, log pi - log pi0 in place of log pi)
            probs, log_probs = self.actor(data.observations, data.action_masks)
            with th.no_grad():
                if self.hindsight == "actor":
                    assert data.hindsight_values is not None
                    min_q = data.hindsight_values
                else:
                    min_q = th.stack(self.critic(data.observations)).min(dim=0).values
            regularizer = log_probs
            if self.target_kl is not None:
                with th.no_grad():
                    prior_log_probs = self.actor.prior_log_probs(
                        data.observations, data.action_masks
                    )
                regularizer = log_probs - prior_log_probs
            actor_loss = (probs * (ent_coef * regularizer - min_q)).sum(dim=1).mean()
            # a gated prior: the gate learns which rule's own choice is worth most (the
            # actor's loss does not reach it, see CategoricalActor); one step for both
            step_loss = actor_loss
            if self.actor.gate_net is not None:
                gate_loss = self.actor.gate_loss(data.observations, data.action_masks, min_q)
                gate_losses.append(gate_loss.item())
                step_loss = actor_loss + gate_loss
            self._gradient_step(self.actor.optimizer, step_loss)
            if self.policy.averaged_actor is not None:
                assert self.actor_averaging is not None
                polyak_update(
                    self.actor.parameters(),
                    self.policy.averaged_actor.parameters(),
                    self.actor_averaging,
                )

            # Temperature: move the exact entropy of pi(.|s) toward its target
            # target(s) = target_entropy_ratio * log(number of allowed actions in s);
            # with target_kl, move KL(pi || pi0) toward target_kl (a larger KL raises alpha)
            entropy = -(probs * log_probs).sum(dim=1).detach()
            target_entropy = self.target_entropy_ratio * data.action_masks.sum(dim=1).float().log()
            kl = (probs * regularizer).sum(dim=1).detach() if self.target_kl is not None else None
            if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
                if kl is not None:
                    ent_coef_loss = (self.log_ent_coef * (self.target_kl - kl)).mean()
                else:
                    ent_coef_loss = (self.log_ent_coef * (entropy - target_entropy)).mean()
                self._gradient_step(self.ent_coef_optimizer, ent_coef_loss)
                ent_coef_losses.append(ent_coef_loss.item())

            self._n_updates += 1
            # the target critics serve only the Bellman target
            if self.hindsight is None and self._n_updates % self.target_update_interval == 0:
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                # Copy running stats, see SB3 GH issue #996
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)

            actor_losses.append(actor_loss.item())
            if critic_loss is not None:
                critic_losses.append(critic_loss.item())
            ent_coefs.append(ent_coef.item())
            entropies.append(entropy.mean().item())
            if kl is not None:
                kls.append(kl.mean().item())
            target_entropies.append(target_entropy.mean().item())
            q_values.append(th.cat(current_q).mean().item())

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/ent_coef", np.mean(ent_coefs))
        self.logger.record("train/actor_loss", np.mean(actor_losses))
        if critic_losses:
            self.logger.record("train/critic_loss", np.mean(critic_losses))
        self.logger.record("train/entropy", np.mean(entropies))
        self.logger.record("train/target_entropy", np.mean(target_entropies))
        if kls:
            self.logger.record("train/kl_to_prior", np.mean(kls))
        self.logger.record("train/q_values", np.mean(q_values))
        if len(ent_coef_losses) > 0:
            self.logger.record("train/ent_coef_loss", np.mean(ent_coef_losses))
        if len(gate_losses) > 0:
            self.logger.record("train/gate_loss", np.mean(gate_losses))
        if self.reward_offset is not None:
            self.logger.record("train/reward_offset", self.reward_offset)

    def _bellman_critic_loss(
        self,
        data: MaskableReplayBufferSamples,
        actions: th.Tensor,
        ent_coef: th.Tensor,
        td_loss: Callable[..., th.Tensor],
    ) -> tuple[th.Tensor, list[th.Tensor]]:
        """The critics' soft Bellman loss on the taken actions, and their Q of those actions."""
        # Reward centering: r_bar <- r_bar + eta (mean batch reward - r_bar)
        rewards = data.rewards
        if self.reward_centering > 0.0:
            batch_mean = data.rewards.mean().item()
            if self.reward_offset is None:
                self.reward_offset = batch_mean
            self.reward_offset += self.reward_centering * (batch_mean - self.reward_offset)
            rewards = data.rewards - self.reward_offset

        # Soft Bellman target with the exact expectation over the next policy
        # V(s') = sum_a pi(a|s') [min_i Q_targ_i(s', a) - alpha log pi(a|s')]
        with th.no_grad():
            next_probs, next_log_probs = self.actor(data.next_observations, data.next_action_masks)
            next_q = th.stack(self.critic_target(data.next_observations)).min(dim=0).values
            if self.target_kl is not None:
                next_log_probs = next_log_probs - self.actor.prior_log_probs(
                    data.next_observations, data.next_action_masks
                )
            next_v = (next_probs * (next_q - ent_coef * next_log_probs)).sum(dim=1, keepdim=True)
            target_q = rewards + (1 - data.dones) * self.gamma * next_v
        current_q = [q.gather(1, actions) for q in self.critic(data.observations)]
        losses = [
            _weighted_mean(td_loss(q, target_q, reduction="none"), weights)
            for q, weights in zip(
                current_q, self._critic_weights(data, len(current_q)), strict=True
            )
        ]
        return 0.5 * sum(losses, th.zeros(())), current_q

    def _hindsight_critic_loss(
        self,
        data: MaskableReplayBufferSamples,
        actions: th.Tensor,
        td_loss: Callable[..., th.Tensor],
    ) -> tuple[th.Tensor, list[th.Tensor]]:
        """The critics' regression loss on the hindsight value of every allowed action (mean over
        the allowed actions of the batch; with ``hindsight_reference="prior"``, each value minus
        that of the prior's first choice), and their Q of the taken actions."""
        assert data.hindsight_values is not None
        allowed = data.action_masks.float()
        labels = data.hindsight_values
        if self.hindsight_reference == "prior":
            prior = action_prior(data.observations, self.critic.n_actions)
            first = th.where(data.action_masks, prior, -th.inf).argmax(dim=1, keepdim=True)
            labels = labels - labels.gather(1, first)
        current_q = self.critic(data.observations)
        losses = [
            _weighted_mean(td_loss(q, labels, reduction="none"), allowed * weights)
            for q, weights in zip(
                current_q, self._critic_weights(data, len(current_q)), strict=True
            )
        ]
        return 0.5 * sum(losses, th.zeros(())), [q.gather(1, actions) for q in current_q]

    def _critic_weights(self, data: MaskableReplayBufferSamples, n_critics: int) -> list[th.Tensor]:
        """Each critic's weight ``(batch, 1)`` of every sampled transition: 1 for all of them, or
        with ``critic_split`` 1 on its own stretches and 0 on the others'."""
        if self.critic_split is None:
            return [th.ones_like(data.rewards)] * n_critics
        assert data.steps is not None
        stretches = data.steps // self.critic_split
        return [(stretches % n_critics == i).float() for i in range(n_critics)]

    def _gradient_step(self, optimizer: th.optim.Optimizer, loss: th.Tensor) -> None:
        """One optimizer step on ``loss``, with the gradient norm clipped to ``max_grad_norm``."""
        optimizer.zero_grad()
        loss.backward()
        if self.max_grad_norm is not None:
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
            th.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm)
        optimizer.step()

    def _env_action_masks(self) -> np.ndarray | None:
        """Joint action masks ``(n_envs, n_actions)`` of the current observations, if the env has them."""
        assert self.env is not None
        if not is_masking_supported(self.env):
            return None
        return joint_action_masks(get_action_masks(self.env), self.policy.nvec)

    def _sample_action(
        self,
        learning_starts: int,
        action_noise: ActionNoise | None = None,
        n_envs: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """
        The behavior's action: sampled from the masked policy, or uniformly among the allowed
        actions before ``learning_starts``; with ``behavior="greedy"``, the policy's
        deterministic action throughout; with ``behavior="prior"``, the action prior's best
        allowed action throughout (the rule that gives the prior decides what is collected).

        :param learning_starts: Number of steps before learning for the warm-up phase.
        :param action_noise: unused (exploration comes from the stochastic policy)
        :param n_envs: Number of parallel environments
        :return: the action to take in the env and the same action to store in the buffer
        """
        self._last_action_masks = self._env_action_masks()
        if self.num_timesteps < learning_starts and self.behavior == "sample":
            allowed = th.ones(n_envs, self.policy.n_actions, device=self.device)
            if self._last_action_masks is not None:
                allowed = th.as_tensor(
                    self._last_action_masks, dtype=th.float32, device=self.device
                )
            indices = th.multinomial(allowed, num_samples=1).squeeze(1)
            action = self.policy.index_to_action(indices).cpu().numpy()
        elif self.behavior == "prior":
            assert isinstance(self._last_obs, np.ndarray), "self._last_obs was not set"
            prior = np.asarray(self._last_obs, dtype=np.float64)[:, -self.policy.n_actions :]
            if self._last_action_masks is not None:
                prior = np.where(self._last_action_masks, prior, -np.inf)
            indices = th.as_tensor(prior.argmax(axis=1), device=self.device)
            action = self.policy.index_to_action(indices).cpu().numpy()
        else:
            assert self._last_obs is not None, "self._last_obs was not set"
            action, _ = self.predict(
                self._last_obs,
                deterministic=self.behavior == "greedy",
                action_masks=self._last_action_masks,
            )
        return action, action

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """
        Store a transition with the action masks of its observation and of its next observation.

        When an episode ends the VecEnv has already reset, so the env's masks belong to the first
        observation of the next episode; the masks of the observation the step started from are
        stored for the final observation instead (they only matter for a truncated episode, whose
        target bootstraps from it). The observation the step acted on widens the actor's input
        range (policy ``clip_inputs``).
        """
        if isinstance(self._last_obs, np.ndarray):
            self.policy.record_inputs(self._last_obs)
        next_action_masks = self._env_action_masks()
        if next_action_masks is not None and self._last_action_masks is not None:
            next_action_masks[dones] = self._last_action_masks[dones]
        assert isinstance(replay_buffer, MaskableReplayBuffer)
        replay_buffer.stage_action_masks(self._last_action_masks, next_action_masks)
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        Get the policy action from an observation, with optional action masks (``True`` where an
        action is allowed, as ``env.action_masks()`` returns them): :meth:`SACDPolicy.predict
        <splitrl.agents.sacd.policies.SACDPolicy.predict>`, whose arguments these are.

        :return: the action(s) and the unchanged ``state``
        """
        return self.policy.predict(
            observation, state, episode_start, deterministic, action_masks=action_masks
        )

    def learn(
        self: SelfSACD,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "SACD",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfSACD:
        # a policy_kwargs range_guard is for the trained policy: here the range is being recorded
        with self.policy.unguarded():
            return super().learn(
                total_timesteps=total_timesteps,
                callback=callback,
                log_interval=log_interval,
                tb_log_name=tb_log_name,
                reset_num_timesteps=reset_num_timesteps,
                progress_bar=progress_bar,
            )

    def _excluded_save_params(self) -> list[str]:
        excluded = ["actor", "critic", "critic_target", "_last_action_masks"]
        return super()._excluded_save_params() + excluded

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "actor.optimizer", "critic.optimizer"]
        if self.ent_coef_optimizer is not None:
            saved_pytorch_variables = ["log_ent_coef"]
            state_dicts.append("ent_coef_optimizer")
        else:
            saved_pytorch_variables = ["ent_coef_tensor"]
        return state_dicts, saved_pytorch_variables
