"""Policies for SACD: a categorical actor over the joint action and critics with one Q-value per action.

A ``MultiDiscrete(nvec)`` action is handled as one categorical choice among ``prod(nvec)`` joint
actions. A joint index and its action tuple are related in C order (the first dimension is the most
significant), exactly as ``np.ravel_multi_index(action, nvec)`` and ``np.unravel_index(index, nvec)``:
the mapping of :mod:`splitrl.envs.actions` (``flat_indices``, ``action_components``).
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BaseModel, BasePolicy
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    FlattenExtractor,
    create_mlp,
    get_actor_critic_arch,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from splitrl.envs.actions import action_components, flat_indices, index_strides

#: the weight a gated prior (``prior_rules`` > 1) starts with on its last rule's block
GATE_START_WEIGHT = 0.9
#: a gated prior's default temperature of the rules' soft ranking, in units of value
#: (:meth:`CategoricalActor.gate_loss`)
DEFAULT_GATE_TEMPERATURE = 0.01


def action_nvec(action_space: spaces.Space) -> np.ndarray:
    """
    The number of choices per action dimension, with a ``Discrete`` space seen as one dimension.

    :param action_space: a ``Discrete`` or one-dimensional ``MultiDiscrete`` space starting at 0
    :return: the choices per dimension, shape ``(n_dims,)``
    :raises ValueError: for any other action space
    """
    if isinstance(action_space, spaces.Discrete) and action_space.start == 0:
        return np.array([action_space.n], dtype=np.int64)
    if (
        isinstance(action_space, spaces.MultiDiscrete)
        and action_space.nvec.ndim == 1
        and not np.any(action_space.start)
    ):
        return action_space.nvec.astype(np.int64)
    raise ValueError(
        "SACD needs a Discrete or one-dimensional MultiDiscrete action space starting at 0, "
        f"got {action_space}"
    )


def joint_action_masks(action_masks: np.ndarray, nvec: np.ndarray) -> np.ndarray:
    """
    Bring action masks to the joint form: one boolean per joint action, ``True`` where allowed.

    Two layouts are accepted along the last axis: the joint mask of length ``prod(nvec)``, and the
    sb3-contrib ``MaskablePPO`` layout for ``MultiDiscrete``, one mask per dimension concatenated
    (length ``sum(nvec)``), which becomes the outer product of the per-dimension masks. When both
    lengths are equal, the mask is read as joint.

    :param action_masks: masks of shape ``(n_actions,)`` or ``(batch, n_actions)``
    :param nvec: the choices per action dimension (see :func:`action_nvec`)
    :return: joint masks of shape ``(batch, prod(nvec))``
    :raises ValueError: when the length fits neither layout or a mask allows no action
    """
    masks = np.asarray(action_masks, dtype=bool)
    masks = masks.reshape(-1, masks.shape[-1]) if masks.ndim > 0 else masks.reshape(1, 1)
    n_joint, n_concatenated = int(np.prod(nvec)), int(np.sum(nvec))
    if masks.shape[1] == n_joint:
        joint = masks
    elif masks.shape[1] == n_concatenated:
        per_dimension = np.split(masks, np.cumsum(nvec)[:-1], axis=1)
        joint = per_dimension[0]
        for dimension_mask in per_dimension[1:]:
            joint = (joint[:, :, None] & dimension_mask[:, None, :]).reshape(len(masks), -1)
    else:
        raise ValueError(
            f"An action mask must have length {n_joint} (joint actions) or {n_concatenated} "
            f"(per-dimension masks concatenated) for nvec {nvec.tolist()}, got {masks.shape[1]}"
        )
    empty_rows = np.flatnonzero(~joint.any(axis=1))
    if len(empty_rows) > 0:
        raise ValueError(f"The action mask of row {empty_rows[0]} allows no action")
    return joint


def check_prior_space(observation_space: spaces.Space, n_actions: int) -> None:
    """Raise ``ValueError`` unless ``observation_space`` is a flat ``Box`` that can end with one
    prior value per joint action."""
    if not (
        isinstance(observation_space, spaces.Box)
        and len(observation_space.shape) == 1
        and observation_space.shape[0] >= n_actions
    ):
        raise ValueError(
            f"action_prior needs a flat Box observation ending with {n_actions} prior values "
            f"(one per joint action), got {observation_space}"
        )


def action_prior(obs: PyTorchObs, n_actions: int) -> th.Tensor:
    """The prior value of every joint action: the last ``n_actions`` entries of the observation."""
    assert isinstance(obs, th.Tensor)
    return obs[:, -n_actions:].float()


def rule_values(obs: PyTorchObs, n_actions: int, n_rules: int) -> th.Tensor:
    """The values of every joint action by each of the ``n_rules`` rules whose blocks of
    ``n_actions`` entries end the observation, ``(batch, n_rules, n_actions)``, in their order
    (the last block, the prior's rule, last)."""
    assert isinstance(obs, th.Tensor)
    return obs[:, -n_rules * n_actions :].float().reshape(-1, n_rules, n_actions)


def gate_ranking_loss(gate_logits: th.Tensor, payoffs: th.Tensor, temperature: float) -> th.Tensor:
    """
    The stake-weighted ranking loss of a gate over rules: per state, the cross-entropy from the
    gate's weights ``softmax(gate_logits)`` to ``softmax(payoffs / temperature)``, weighted by the
    stake ``max_k payoffs_k - min_k payoffs_k``, averaged over the batch
    (:meth:`CategoricalActor.gate_loss`).

    :param gate_logits: the gate's logits ``(batch, n_rules)``
    :param payoffs: the value of each rule's choice ``(batch, n_rules)``
    :param temperature: how sharply the target ranks the rules, in units of value (positive)
    """
    target = th.softmax(payoffs / temperature, dim=1)
    stake = payoffs.max(dim=1).values - payoffs.min(dim=1).values
    log_weights = th.log_softmax(gate_logits, dim=1)
    return -(stake * (target * log_weights).sum(dim=1)).mean()


def zero_output_layer(network: nn.Sequential) -> None:
    """Zero the weights and bias of ``network``'s last linear layer, so that a residual on a prior
    starts at exactly the prior: the untrained policy then acts as the prior does."""
    output = network[-1]
    assert isinstance(output, nn.Linear)
    nn.init.zeros_(output.weight)
    nn.init.zeros_(output.bias)


def checked_range_guard(
    guard: Mapping[str, Any], clip_inputs: bool, observation_space: spaces.Space, n_actions: int
) -> dict[str, Any]:
    """``guard`` (:class:`CategoricalActor`'s ``range_guard``) as plain data, or ``ValueError``
    naming what is wrong with it."""
    if not clip_inputs:
        raise ValueError(
            "range_guard needs clip_inputs=True: it reads the range recorded in training"
        )
    if not isinstance(guard, Mapping) or not {"input", "actions"} <= set(guard) <= {
        "input",
        "actions",
        "expires",
    }:
        raise ValueError(
            "range_guard must be a mapping with 'input', 'actions' and optionally 'expires', "
            f"got {guard!r}"
        )
    size = observation_space.shape[0] if observation_space.shape else 0
    entry = _observation_entry(guard["input"], size, "range_guard input")
    expires = guard.get("expires")
    if expires is not None:
        if not isinstance(expires, Mapping) or set(expires) != {"input", "at"}:
            raise ValueError(
                f"range_guard expires must be a mapping with 'input' and 'at', got {expires!r}"
            )
        at = expires["at"]
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not np.isfinite(at):
            raise ValueError(f"range_guard expires at must be a finite number, got {at!r}")
        expires = {
            "input": _observation_entry(expires["input"], size, "range_guard expires input"),
            "at": float(at),
        }
    actions = list(guard["actions"])
    if not actions or any(
        isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < n_actions for a in actions
    ):
        raise ValueError(
            f"range_guard actions must be flat action indices in [0, {n_actions}), at least one"
        )
    checked = {"input": entry, "actions": sorted(set(actions))}
    return checked if expires is None else {**checked, "expires": expires}


def _observation_entry(entry: Any, size: int, what: str) -> int:
    """``entry`` if it indexes an observation of ``size`` entries, else ``ValueError``."""
    if isinstance(entry, bool) or not isinstance(entry, int) or not 0 <= entry < size:
        raise ValueError(f"{what} must be an observation entry in [0, {size}), got {entry!r}")
    return entry


class CategoricalActor(BaseModel):
    """
    Actor network for SACD: logits over the joint actions, turned into masked probabilities.

    :param observation_space: Observation space
    :param action_space: Action space (``Discrete`` or ``MultiDiscrete``)
    :param net_arch: Hidden layer sizes
    :param features_extractor: Network to extract features
    :param features_dim: Number of features
    :param activation_fn: Activation function
    :param normalize_images: Whether to normalize images or not, dividing by 255.0
    :param prior_scale: with an action prior (the last ``n_actions`` observation entries, see
        :class:`SACDPolicy`), the logits are ``prior_scale * prior + network output``; 0 for none
    :param clip_inputs: the network reads every observation entry clipped to the range of the
        observations recorded in training (:meth:`record_inputs`), so that it never extrapolates
        beyond what it was trained on; the prior term reads the observation as it is. Before the
        first record it reads the observation as it is.
    :param prior_rules: how many rules' value blocks (``n_actions`` entries each) end the
        observation and make the prior. With more than one, the prior policy is the mixture of
        the rules' policies, ``sum_k w_k(s) softmax(prior_scale * values_k)``, with weights
        ``w(s) = softmax(gate(s))`` that a second network (of the same hidden sizes) computes from
        the observation: the actor chooses per state which rule to trust, and corrects the
        mixture. (A mixture of the rules' values instead would rank the actions by none of the
        rules: a cautious rule's low values for offloading pull every mixture towards staying
        local; docs/sacd-experiments.md, A gate that can change its mind.) The gate starts at the
        last block (weight :data:`GATE_START_WEIGHT`), so the untrained actor acts nearly as its
        prior's rule does.
        The actor's own loss does not move the gate: it learns from :meth:`gate_loss`, what each
        rule's own choice is worth, so that it trusts the rule whose decision is best rather
        than the mixture that makes the stochastic policy's average best.
    :param gate_temperature: with ``prior_rules`` > 1, how sharply the gate's target ranks the
        rules by the value of their choices, in units of value (:meth:`gate_loss`)
    :param gate_inputs: with ``prior_rules`` > 1, what the gate reads: ``None`` (the default) the
        network's features, like the rest of the actor; ``k`` only the ``k`` observation entries
        just before the rules' value blocks (the link memory's four with ``link_memory``), so that
        which rule it trusts depends on the kind of link alone. A gate that reads the whole
        observation learns which rule is best in states of the training channels that it cannot
        tell from states of other links where another rule is best (docs/sacd-experiments.md,
        What a gate can read)
    :param range_guard: ``None``, or ``{"input": i, "actions": [...]}``: where observation entry
        ``i`` lies below the range recorded in training (``clip_inputs``), only ``actions`` (flat
        indices) are allowed. With ``i`` the newest link throughput and ``actions`` the local
        ones, the policy does not offload on a link slower than any it trained on, where its
        prior and its correction both extrapolate (docs/sacd.md, Not offloading below the
        training range). With ``"expires": {"input": j, "at": v}`` the guard lifts where entry
        ``j`` is at least ``v`` (the measurement's age: a policy kept local takes no new
        measurement, and would otherwise stay local for good). It applies to the trained
        policy: SACD turns it off while it learns (:attr:`guarding`), when the range is still
        being recorded.
    """

    features_extractor: BaseFeaturesExtractor
    input_low: th.Tensor
    input_high: th.Tensor
    guard_allowed: th.Tensor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        prior_scale: float = 0.0,
        clip_inputs: bool = False,
        prior_rules: int = 1,
        gate_temperature: float = DEFAULT_GATE_TEMPERATURE,
        gate_inputs: int | None = None,
        range_guard: Mapping[str, Any] | None = None,
    ):
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        if not (isinstance(prior_rules, int) and prior_rules >= 1):
            raise ValueError(f"prior_rules must be a positive integer, got {prior_rules!r}")
        if prior_rules > 1 and not prior_scale:
            raise ValueError(f"prior_rules={prior_rules} needs an action prior (prior_scale > 0)")
        if isinstance(gate_temperature, bool) or not (
            isinstance(gate_temperature, (int, float)) and gate_temperature > 0
        ):
            raise ValueError(
                f"gate_temperature must be a positive number, got {gate_temperature!r}"
            )
        if gate_inputs is not None and (
            isinstance(gate_inputs, bool) or not isinstance(gate_inputs, int) or gate_inputs < 1
        ):
            raise ValueError(f"gate_inputs must be None or a positive integer, got {gate_inputs!r}")
        if gate_inputs is not None and prior_rules == 1:
            raise ValueError("gate_inputs needs a gated prior (prior_rules > 1)")
        self.net_arch = net_arch
        self.features_dim = features_dim
        self.activation_fn = activation_fn
        self.prior_scale = prior_scale
        self.clip_inputs = clip_inputs
        self.prior_rules = prior_rules
        self.gate_temperature = float(gate_temperature)
        self.gate_inputs = gate_inputs
        if clip_inputs:
            if not (
                isinstance(observation_space, spaces.Box) and len(observation_space.shape) == 1
            ):
                raise ValueError(
                    f"clip_inputs needs a flat Box observation, got {observation_space}"
                )
            size = observation_space.shape[0]
            # nothing recorded yet: low > high, and the network reads the raw observation
            self.register_buffer("input_low", th.full((size,), th.inf))
            self.register_buffer("input_high", th.full((size,), -th.inf))
        self.n_actions = int(np.prod(action_nvec(action_space)))
        self.range_guard = None
        #: whether :attr:`range_guard` applies (SACD turns it off while it learns)
        self.guarding = True
        if range_guard is not None:
            self.range_guard = checked_range_guard(
                range_guard, clip_inputs, observation_space, self.n_actions
            )
            allowed = th.zeros(self.n_actions, dtype=th.bool)
            allowed[self.range_guard["actions"]] = True
            # derived from the constructor's arguments: not saved with the weights
            self.register_buffer("guard_allowed", allowed, persistent=False)
        self.logits_net = nn.Sequential(
            *create_mlp(features_dim, self.n_actions, net_arch, activation_fn)
        )
        if prior_scale:
            zero_output_layer(self.logits_net)
        self.gate_net: nn.Sequential | None = None
        if prior_rules > 1:
            check_prior_space(observation_space, prior_rules * self.n_actions)
            assert isinstance(observation_space, spaces.Box)
            if observation_space.shape[0] < prior_rules * self.n_actions + (gate_inputs or 0):
                raise ValueError(
                    f"gate_inputs={gate_inputs} needs that many observation entries before the "
                    f"{prior_rules} rules' value blocks, got {observation_space}"
                )
            self.gate_net = nn.Sequential(
                *create_mlp(gate_inputs or features_dim, prior_rules, net_arch, activation_fn)
            )
            zero_output_layer(self.gate_net)
            output = self.gate_net[-1]
            assert isinstance(output, nn.Linear)
            with th.no_grad():
                # softmax(bias) puts GATE_START_WEIGHT on the last block, the rest evenly
                others = (1.0 - GATE_START_WEIGHT) / (prior_rules - 1)
                output.bias[-1] = float(np.log(GATE_START_WEIGHT / others))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                features_dim=self.features_dim,
                activation_fn=self.activation_fn,
                features_extractor=self.features_extractor,
                prior_scale=self.prior_scale,
                clip_inputs=self.clip_inputs,
                prior_rules=self.prior_rules,
                gate_temperature=self.gate_temperature,
                gate_inputs=self.gate_inputs,
                range_guard=self.range_guard,
            )
        )
        return data

    def record_inputs(self, obs: th.Tensor) -> None:
        """Widen the recorded input range to include the observations ``obs`` (``(batch, n)``)."""
        observations = obs.reshape(-1, self.input_low.shape[0]).float()
        self.input_low.copy_(th.minimum(self.input_low, observations.min(dim=0).values))
        self.input_high.copy_(th.maximum(self.input_high, observations.max(dim=0).values))

    def network_inputs(self, obs: PyTorchObs) -> PyTorchObs:
        """What the network reads: ``obs`` clipped to the recorded range with ``clip_inputs``
        (entries not yet recorded pass as they are), else ``obs`` itself."""
        if not self.clip_inputs:
            return obs
        assert isinstance(obs, th.Tensor)
        clipped = th.minimum(th.maximum(obs, self.input_low), self.input_high)
        return th.where(self.input_low <= self.input_high, clipped, obs)

    def masked_logits(self, obs: PyTorchObs, action_masks: th.Tensor | None = None) -> th.Tensor:
        """
        Logits of the joint actions, ``-inf`` where the mask forbids the action.

        :param obs: Observation batch
        :param action_masks: Joint boolean masks ``(batch, n_actions)``, or None for no masking
        :return: Logits ``(batch, n_actions)``
        """
        features = self.extract_features(self.network_inputs(obs), self.features_extractor)
        logits = self.logits_net(features)
        if self.prior_scale:
            logits = logits + self._prior_logits(obs, features, action_masks)
        if self.range_guard is not None and self.guarding:
            logits = th.where(
                self.outside_range(obs)[:, None] & ~self.guard_allowed, -th.inf, logits
            )
        if action_masks is None:
            return logits
        return th.where(action_masks, logits, -th.inf)

    def outside_range(self, obs: PyTorchObs) -> th.Tensor:
        """Per observation of the batch, whether :attr:`range_guard`'s entry lies below the range
        recorded in training (``False`` before anything is recorded)."""
        assert self.range_guard is not None and isinstance(obs, th.Tensor)
        observations = obs.reshape(-1, self.input_low.shape[0])
        entry = self.range_guard["input"]
        low, high = self.input_low[entry], self.input_high[entry]
        outside = (observations[:, entry] < low) & (low <= high)
        expires = self.range_guard.get("expires")
        if expires is None:
            return outside
        return outside & (observations[:, expires["input"]] < expires["at"])

    def _prior_logits(
        self,
        obs: PyTorchObs,
        features: th.Tensor | None = None,
        action_masks: th.Tensor | None = None,
    ) -> th.Tensor:
        """The prior policy's logits over the joint actions: ``prior_scale`` times the last block;
        with ``prior_rules``, the logarithm of the gate's mixture of the rules' policies,
        ``log sum_k w_k(s) softmax(prior_scale * values_k)`` over the allowed actions (0 where
        the mask forbids one), the gate reading ``features`` (computed when None) with its weights
        detached."""
        if self.gate_net is None:
            return self.prior_scale * action_prior(obs, self.n_actions)
        log_weights = th.log_softmax(self._gate_logits(obs, features), dim=-1).detach()
        scaled = self.prior_scale * rule_values(obs, self.n_actions, self.prior_rules)
        if action_masks is not None:
            scaled = th.where(action_masks.reshape(-1, 1, self.n_actions), scaled, -th.inf)
        mixture = th.logsumexp(log_weights.unsqueeze(-1) + th.log_softmax(scaled, dim=-1), dim=1)
        if action_masks is None:
            return mixture
        return th.where(action_masks, mixture, 0.0)

    def _gate_logits(self, obs: PyTorchObs, features: th.Tensor | None = None) -> th.Tensor:
        """The gate's logits ``(batch, prior_rules)``: from the network's ``features`` (computed
        when None), or with ``gate_inputs`` from those observation entries alone."""
        assert self.gate_net is not None
        if self.gate_inputs is not None:
            inputs = self.network_inputs(obs)
            assert isinstance(inputs, th.Tensor)
            end = inputs.shape[-1] - self.prior_rules * self.n_actions
            return self.gate_net(inputs[..., end - self.gate_inputs : end].float())
        if features is None:
            features = self.extract_features(self.network_inputs(obs), self.features_extractor)
        return self.gate_net(features)

    def rule_choices(self, obs: PyTorchObs, action_masks: th.Tensor | None = None) -> th.Tensor:
        """The joint action each rule of a gated prior ranks first among the allowed ones,
        ``(batch, prior_rules)``."""
        values = rule_values(obs, self.n_actions, self.prior_rules)
        if action_masks is not None:
            values = th.where(action_masks.unsqueeze(1), values, -th.inf)
        return values.argmax(dim=-1)

    def gate_loss(
        self, obs: PyTorchObs, action_masks: th.Tensor | None, action_values: th.Tensor
    ) -> th.Tensor:
        """
        The gate's loss, a stake-weighted classification of the best rule: in each state, the
        cross-entropy from the gate's weights to the rules' soft ranking
        ``q = softmax(Q(s, a_k(s)) / gate_temperature)``, weighted by the stake
        ``max_k Q(s, a_k(s)) - min_k Q(s, a_k(s))``, averaged over the batch, where ``a_k(s)`` is
        rule ``k``'s own choice (:meth:`rule_choices`). Every rule's choice is scored, so the gate
        learns from full information, as a contextual bandit over the rules; states where the
        rules agree (no stake) do not move it, and those where one rule's choice is far better
        move it most.

        The expected value ``sum_k w_k(s) Q(s, a_k(s))`` would be the direct objective, but its
        gradient ``w_k (Q_k - sum_j w_j Q_j)`` vanishes for the rules the gate has given up on:
        a gate that settles early on one rule never leaves it (docs/sacd-experiments.md, A gate
        that can change its mind). The cross-entropy's gradient ``stake * (w - q)`` does not vanish.

        :param action_values: the value of every joint action ``(batch, n_actions)``: the hindsight
            values, or the critics' estimate
        :raises ValueError: when the actor has no gate (``prior_rules`` is 1)
        """
        if self.gate_net is None:
            raise ValueError("the actor has no gate (prior_rules is 1)")
        payoffs = action_values.gather(1, self.rule_choices(obs, action_masks))
        return gate_ranking_loss(self._gate_logits(obs), payoffs, self.gate_temperature)

    def gate_weights(self, obs: PyTorchObs) -> th.Tensor:
        """The weight the prior gives each rule in ``obs`` (``(batch, prior_rules)``, the prior's
        own rule last): what the actor trusts where. A single-rule prior gives that rule 1."""
        if self.gate_net is None:
            assert isinstance(obs, th.Tensor)
            return th.ones(len(obs), 1, device=obs.device)
        return th.softmax(self._gate_logits(obs), dim=-1)

    def prior_log_probs(self, obs: PyTorchObs, action_masks: th.Tensor | None = None) -> th.Tensor:
        """
        Log-probabilities of the prior's policy, ``softmax(prior_scale * prior)`` over the allowed
        actions: the policy of the untrained actor (its output layer starts at zero). With
        ``prior_rules`` the prior is the gate's current mixture of the rules' policies.

        :param obs: Observation batch
        :param action_masks: Joint boolean masks ``(batch, n_actions)``, or None for no masking
        :return: Log-probabilities ``(batch, n_actions)``, 0 where the mask forbids the action
        :raises ValueError: when the actor has no action prior
        """
        if not self.prior_scale:
            raise ValueError("the actor has no action prior (prior_scale is 0)")
        logits = self._prior_logits(obs, action_masks=action_masks)
        if action_masks is None:
            return th.log_softmax(logits, dim=-1)
        log_probs = th.log_softmax(th.where(action_masks, logits, -th.inf), dim=-1)
        return th.where(action_masks, log_probs, 0.0)

    def forward(
        self, obs: PyTorchObs, action_masks: th.Tensor | None = None
    ) -> tuple[th.Tensor, th.Tensor]:
        """
        Action probabilities and their logarithms.

        A forbidden action has probability 0 and, so that ``p * log p`` is 0 rather than NaN in the
        expectations of the losses, a log-probability of 0.

        :param obs: Observation batch
        :param action_masks: Joint boolean masks ``(batch, n_actions)``, or None for no masking
        :return: ``(probs, log_probs)``, each ``(batch, n_actions)``
        """
        log_probs = th.log_softmax(self.masked_logits(obs, action_masks), dim=-1)
        probs = log_probs.exp()
        if action_masks is not None:
            log_probs = th.where(action_masks, log_probs, 0.0)
        return probs, log_probs

    def sample(
        self, obs: PyTorchObs, action_masks: th.Tensor | None = None, deterministic: bool = False
    ) -> th.Tensor:
        """
        Draw joint action indices from the (masked) policy.

        :param obs: Observation batch
        :param action_masks: Joint boolean masks ``(batch, n_actions)``, or None for no masking
        :param deterministic: Take the most probable allowed action instead of sampling
        :return: Joint action indices ``(batch,)``
        """
        logits = self.masked_logits(obs, action_masks)
        if deterministic:
            return logits.argmax(dim=-1)
        return th.multinomial(th.softmax(logits, dim=-1), num_samples=1).squeeze(-1)


class DiscreteCritic(BaseModel):
    """
    Critic networks for SACD: each outputs the Q-value of every joint action, ``Q(s, .)``.

    Two critics (clipped double Q-learning) are the default, as in SAC.

    :param observation_space: Observation space
    :param action_space: Action space (``Discrete`` or ``MultiDiscrete``)
    :param net_arch: Hidden layer sizes
    :param features_extractor: Network to extract features
    :param features_dim: Number of features
    :param activation_fn: Activation function
    :param normalize_images: Whether to normalize images or not, dividing by 255.0
    :param n_critics: Number of critic networks
    :param use_prior: add the action prior (the last ``n_actions`` observation entries) to every
        Q-value, so the networks learn a residual
    """

    features_extractor: BaseFeaturesExtractor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        n_critics: int = 2,
        use_prior: bool = False,
    ):
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        n_actions = int(np.prod(action_nvec(action_space)))
        self.n_actions = n_actions
        self.use_prior = use_prior
        self.n_critics = n_critics
        self.q_networks: list[nn.Module] = []
        for idx in range(n_critics):
            q_net = nn.Sequential(*create_mlp(features_dim, n_actions, net_arch, activation_fn))
            if use_prior:
                zero_output_layer(q_net)
            self.add_module(f"qf{idx}", q_net)
            self.q_networks.append(q_net)

    def forward(self, obs: PyTorchObs) -> tuple[th.Tensor, ...]:
        """
        :param obs: Observation batch
        :return: One ``(batch, n_actions)`` tensor of Q-values per critic
        """
        features = self.extract_features(obs, self.features_extractor)
        if not self.use_prior:
            return tuple(q_net(features) for q_net in self.q_networks)
        prior = action_prior(obs, self.n_actions)
        return tuple(q_net(features) + prior for q_net in self.q_networks)


class SACDPolicy(BasePolicy):
    """
    Policy class (actor, critics and target critics) for SACD.

    :param observation_space: Observation space
    :param action_space: Action space (``Discrete`` or ``MultiDiscrete``)
    :param lr_schedule: Learning rate schedule (could be constant)
    :param net_arch: Hidden layer sizes, shared by actor and critics (``[256, 256]`` by default),
        or ``dict(pi=[...], qf=[...])`` for separate sizes
    :param activation_fn: Activation function
    :param features_extractor_class: Features extractor to use
    :param features_extractor_kwargs: Keyword arguments to pass to the features extractor
    :param normalize_images: Whether to normalize images or not, dividing by 255.0
    :param optimizer_class: The optimizer to use, ``th.optim.Adam`` by default
    :param optimizer_kwargs: Additional keyword arguments, excluding the learning rate, to pass to
        the optimizer
    :param n_critics: Number of critic networks to create
    :param action_prior: whether the last ``n_actions`` entries of the (``Box``) observation are a
        prior value of every joint action (such as the predicted reward of
        :mod:`splitrl.agents.features`): the critics then learn a residual on it and the actor's
        logits start from ``prior_scale`` times it
    :param prior_scale: the actor's logits per unit of prior value (with ``action_prior``)
    :param prior_rules: with ``action_prior``, how many rules' value blocks end the observation
        and make the actor's prior, mixed by a learned gate (:class:`CategoricalActor`); the
        critics' residual stays on the last block
    :param gate_temperature: with ``prior_rules`` > 1, how sharply the gate's target ranks the
        rules (:meth:`CategoricalActor.gate_loss`)
    :param gate_inputs: with ``prior_rules`` > 1, ``None`` (the gate reads the actor's features)
        or how many observation entries just before the rules' value blocks the gate reads
        alone (:class:`CategoricalActor`)
    :param averaged_actor: keep a second actor, an average of the actor's weights that SACD
        updates (``actor_averaging``), for the deterministic decisions (:attr:`greedy_actor`)
    :param clip_inputs: the actor's network reads the observation clipped to the range SACD
        recorded in training (:meth:`record_inputs`), so that on states outside it (a faster or
        slower link than any in training) it does not extrapolate; with an action prior, the
        prior term still reads the raw values
    :param range_guard: with ``clip_inputs``, the actions the trained policy keeps to where an
        observation entry lies below its recorded range (:class:`CategoricalActor`); ``None``
        for none
    """

    actor: CategoricalActor
    critic: DiscreteCritic
    critic_target: DiscreteCritic
    index_strides: th.Tensor
    index_sizes: th.Tensor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        action_prior: bool = False,
        prior_scale: float = 30.0,
        prior_rules: int = 1,
        gate_temperature: float = DEFAULT_GATE_TEMPERATURE,
        gate_inputs: int | None = None,
        averaged_actor: bool = False,
        clip_inputs: bool = False,
        range_guard: Mapping[str, Any] | None = None,
    ):
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            normalize_images=normalize_images,
        )
        if net_arch is None:
            net_arch = [256, 256]
        actor_arch, critic_arch = get_actor_critic_arch(net_arch)

        self.net_arch = net_arch
        self.activation_fn = activation_fn
        self.n_critics = n_critics
        self.nvec = action_nvec(action_space)
        self.n_actions = int(np.prod(self.nvec))
        if action_prior:
            check_prior_space(observation_space, self.n_actions)
        self.action_prior = action_prior
        self.prior_scale = prior_scale
        self.prior_rules = prior_rules
        self.gate_temperature = gate_temperature
        self.gate_inputs = gate_inputs
        self.use_averaged_actor = averaged_actor
        self.clip_inputs = clip_inputs
        self.range_guard = range_guard
        self.action_shape = () if isinstance(action_space, spaces.Discrete) else (len(self.nvec),)
        self.register_buffer("index_strides", th.tensor(index_strides(self.nvec)), persistent=False)
        self.register_buffer("index_sizes", th.tensor(self.nvec), persistent=False)

        net_args = {
            "observation_space": self.observation_space,
            "action_space": self.action_space,
            "activation_fn": self.activation_fn,
            "normalize_images": normalize_images,
        }
        self.actor_kwargs = {
            **net_args,
            "net_arch": actor_arch,
            "prior_scale": prior_scale if action_prior else 0.0,
            "clip_inputs": clip_inputs,
            "prior_rules": prior_rules if action_prior else 1,
            "gate_temperature": gate_temperature,
            "gate_inputs": gate_inputs if action_prior else None,
            "range_guard": range_guard,
        }
        self.critic_kwargs = {
            **net_args,
            "net_arch": critic_arch,
            "n_critics": n_critics,
            "use_prior": action_prior,
        }
        self._build(lr_schedule)

    def _build(self, lr_schedule: Schedule) -> None:
        self.actor = self.make_actor()
        self.actor.optimizer = self.optimizer_class(
            self.actor.parameters(),
            lr=lr_schedule(1),  # type: ignore[call-arg]
            **self.optimizer_kwargs,
        )
        self.critic = self.make_critic()
        self.critic.optimizer = self.optimizer_class(
            self.critic.parameters(),
            lr=lr_schedule(1),  # type: ignore[call-arg]
            **self.optimizer_kwargs,
        )
        self.critic_target = self.make_critic()
        self.critic_target.load_state_dict(self.critic.state_dict())
        # Target networks should always be in eval mode
        self.critic_target.set_training_mode(False)
        self.averaged_actor: CategoricalActor | None = None
        if self.use_averaged_actor:
            self.averaged_actor = self.make_actor()
            self.averaged_actor.load_state_dict(self.actor.state_dict())
            self.averaged_actor.set_training_mode(False)

    @property
    def greedy_actor(self) -> CategoricalActor:
        """The actor whose most probable action is the policy's deterministic decision: the
        average of the actor's weights when the policy keeps one (``averaged_actor=True``), else
        the actor itself. Evaluation, validation and export use it."""
        return self.averaged_actor if self.averaged_actor is not None else self.actor

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                activation_fn=self.activation_fn,
                n_critics=self.n_critics,
                action_prior=self.action_prior,
                prior_scale=self.prior_scale,
                prior_rules=self.prior_rules,
                gate_temperature=self.gate_temperature,
                gate_inputs=self.gate_inputs,
                averaged_actor=self.use_averaged_actor,
                clip_inputs=self.clip_inputs,
                range_guard=self.range_guard,
                lr_schedule=self._dummy_schedule,  # not needed for loading the policy alone
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
            )
        )
        return data

    def record_inputs(self, obs: np.ndarray) -> None:
        """Widen the input range of the actors (``clip_inputs``) to include the observations
        ``obs``; SACD calls it for every observation it collects. Without ``clip_inputs``, nothing."""
        if not self.clip_inputs:
            return
        tensor = th.as_tensor(np.asarray(obs), device=self.device)
        for actor in (self.actor, self.averaged_actor):
            if actor is not None:
                actor.record_inputs(tensor)

    @contextmanager
    def unguarded(self) -> Iterator[None]:
        """Within the block, the actors ignore their ``range_guard`` (SACD learns in it: the range
        is still being recorded, and the guard is for the trained policy)."""
        actors = [actor for actor in (self.actor, self.averaged_actor) if actor is not None]
        for actor in actors:
            actor.guarding = False
        try:
            yield
        finally:
            for actor in actors:
                actor.guarding = True

    def make_actor(self) -> CategoricalActor:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs)
        return CategoricalActor(**actor_kwargs).to(self.device)

    def make_critic(self) -> DiscreteCritic:
        critic_kwargs = self._update_features_extractor(self.critic_kwargs)
        return DiscreteCritic(**critic_kwargs).to(self.device)

    def action_to_index(self, actions: th.Tensor) -> th.Tensor:
        """
        Joint indices of env actions, as ``np.ravel_multi_index(action, nvec)`` gives them.

        :param actions: Env actions, ``(batch,)`` for Discrete or ``(batch, n_dims)`` for
            MultiDiscrete (a trailing dimension of 1 for Discrete, as in the replay buffer, is fine)
        :return: Joint indices ``(batch,)`` as int64
        """
        return flat_indices(actions.long().reshape(-1, len(self.nvec)), self.index_strides)

    def index_to_action(self, indices: th.Tensor) -> th.Tensor:
        """
        Env actions of joint indices, as ``np.unravel_index(index, nvec)`` gives them.

        :param indices: Joint indices ``(batch,)``
        :return: Env actions ``(batch, *action_space.shape)``
        """
        actions = action_components(indices.long(), self.index_strides, self.index_sizes)
        return actions.reshape(-1, *self.action_shape)

    def forward(
        self,
        obs: PyTorchObs,
        deterministic: bool = False,
        action_masks: th.Tensor | None = None,
    ) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic, action_masks=action_masks)

    def _predict(
        self,
        observation: PyTorchObs,
        deterministic: bool = False,
        action_masks: th.Tensor | None = None,
    ) -> th.Tensor:
        """
        Env actions for a batch of observations.

        :param observation: Observation batch
        :param deterministic: Take the most probable allowed action instead of sampling
        :param action_masks: Joint boolean masks ``(batch, n_actions)``, or None for no masking
        :return: Env actions ``(batch, *action_space.shape)``
        """
        actor = self.greedy_actor if deterministic else self.actor
        indices = actor.sample(observation, action_masks, deterministic=deterministic)
        return self.index_to_action(indices)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        Get the policy action from an observation, with optional action masks.

        :param observation: the input observation (one, or a batch from a VecEnv)
        :param state: unused, kept for the SB3 interface
        :param episode_start: unused, kept for the SB3 interface
        :param deterministic: Take the most probable allowed action instead of sampling
        :param action_masks: ``True`` where an action is allowed: joint masks of length
            ``prod(nvec)`` or per-dimension masks concatenated (length ``sum(nvec)``), one row per
            observation (or one row for all); None for no masking
        :return: the action(s) and the unchanged ``state``
        """
        self.set_training_mode(False)
        obs_tensor, vectorized_env = self.obs_to_tensor(observation)
        masks = None
        if action_masks is not None:
            masks = th.as_tensor(joint_action_masks(action_masks, self.nvec), device=self.device)
            n_obs = len(obs_tensor)
            if len(masks) not in (1, n_obs):
                raise ValueError(f"Got {len(masks)} action masks for {n_obs} observations")
        with th.no_grad():
            actions = self._predict(obs_tensor, deterministic=deterministic, action_masks=masks)
        actions_np = actions.cpu().numpy().reshape((-1, *self.action_shape))
        if not vectorized_env:
            actions_np = actions_np.squeeze(axis=0)
        return actions_np, state

    def set_training_mode(self, mode: bool) -> None:
        """
        Put the policy in either training or evaluation mode.

        :param mode: if true, set to training mode, else set to evaluation mode
        """
        # ``predict`` calls this for every request; walking every module each time was a fifth of
        # a trained policy's time per decision.
        if self.training == mode and self.actor.training == mode and self.critic.training == mode:
            return
        self.actor.set_training_mode(mode)
        self.critic.set_training_mode(mode)
        self.training = mode


MlpPolicy = SACDPolicy
