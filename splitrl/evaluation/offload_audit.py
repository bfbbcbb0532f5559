"""Where a policy's gain over a rule comes from: its offloads, and what they do to the requests after.

A policy that offloads differs from a local rule in two ways: on the requests it offloads, which
earn another reward than the rule's action would have, and on the requests after them, which
start from another state (a device held longer or shorter by the transfer, another backlog,
other throughput measurements). Three runs on the same seeded episodes tell these apart:

* the policy;
* the fallback rule alone;
* the policy with every request it offloads given to the fallback instead
  (:class:`OffloadsReplaced`): its local decisions, without its offloads.

While the policy plays, every request it offloads is also valued in hindsight
(:meth:`~splitrl.envs.SplitComputingEnv.evaluate_actions`, with this request's own draws and
labels): the reward it got, and the reward the fallback's action would have got from the same
state. That is the gain *on* the offloaded requests. What the offloads add to the policy's gain
beyond it is their effect *after*: on the later requests, through the state they leave.

Beside these parts, the audit gives the effect after the offloads as a learner's hindsight values
price it (``backlog="replayed"``, :class:`~splitrl.agents.hindsight.BacklogReplays`): each offload
is charged what the fallback's action would have changed on the following requests, served with
the actions the policy actually took from the device-free time that action would have left, until
the device is free when it actually was or ``replay_horizon`` requests have passed. The replay
holds the later actions fixed, where the policy would have chosen them from another state; set
beside the measured effect after, it shows how far the training target's credit for what an
offload does to the device is from what the closed loop gets.

The measured effect after is that of all the offloads at once; the replays credit each offload on
its own, the later offloads kept. With ``branch_rate`` the audit also measures a sample of single
offloads in the closed loop: the env and the policy are copied at the offload, one copy served
with the offload and the other with the fallback's action, and the policy then acts on both for
the next ``replay_horizon`` requests on the same draws. The difference in their rewards is that
offload's own effect after it, set beside its replay credit (per offload, with their correlation).

Every figure is a reward per request, paired per episode, with its 95% t-interval over episodes::

    from splitrl.evaluation.offload_audit import audit_offloads

    audit = audit_offloads(learner, fallback, env, seeds=range(1_000_000, 1_000_040))
    print(audit.table())

``splitrl audit-offloads RUN --trace FILE`` does the same from the command line.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from splitrl.agents.baselines.backlog import DEFAULT_BACKLOG_HORIZON
from splitrl.agents.hindsight import BacklogReplays
from splitrl.agents.policy_interface import Policy
from splitrl.agents.rollout import Rollout
from splitrl.envs.split_computing import SplitComputingEnv
from splitrl.evaluation.metrics import episode_rewards
from splitrl.evaluation.runner import evaluate_policies
from splitrl.statistics import t_interval


def is_offload(env: SplitComputingEnv, action: np.ndarray) -> bool:
    """Whether ``action`` sends the request to the server (part of it runs there)."""
    return not env.actions.is_device_only(int(action[0]), int(action[1]))


class OffloadsReplaced:
    """A policy whose offloads are given to a fallback rule; its local decisions are kept.

    The fallback is asked on every request, so that a fallback with state (a throughput history)
    follows the episode as it would on its own.

    :param policy: the policy whose local decisions are kept
    :param fallback: the rule that serves every request ``policy`` would offload
    """

    def __init__(self, policy: Policy, fallback: Policy) -> None:
        self.policy = policy
        self.fallback = fallback
        self.name = f"{policy.name} (offloads to {fallback.name})"

    def reset(self, env: SplitComputingEnv) -> None:
        """Reset both policies."""
        self.policy.reset(env)
        self.fallback.reset(env)

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """The policy's action where it stays on the device, the fallback's where it offloads."""
        action = self.policy.act(env, observation)
        fallback = self.fallback.act(env, observation)
        return fallback if is_offload(env, action) else action


class _OffloadValuer:
    """Acts as ``policy`` and values each of its offloads, and the fallback's action in its place,
    in hindsight: per episode, the sums of both rewards over the offloaded requests, their number,
    and what the replays of the fallback's device-free time changed on the requests after them;
    and, for a ``branch_rate`` share of the offloads, their own effect in the closed loop."""

    def __init__(
        self,
        policy: Policy,
        fallback: Policy,
        replay_horizon: int,
        replay_rechoose: bool,
        branch_rate: float,
        branch_seed: int,
    ) -> None:
        self.policy = policy
        self.fallback = fallback
        self.replays = BacklogReplays(replay_horizon, rechoose=replay_rechoose)
        self.name = policy.name
        self.offloaded: list[float] = []
        self.instead: list[float] = []
        self.count: list[int] = []
        self.replayed_after: list[float] = []
        self.branch_rate = branch_rate
        self._branch_rng = np.random.default_rng(branch_seed)
        #: per branched offload: its closed-loop effect after, its replay credit, its own gain
        self.branches: list[list[float]] = []
        self._step = 0
        self._branched: dict[int, int] = {}  # this episode's branched steps -> their row

    def reset(self, env: SplitComputingEnv) -> None:
        self.policy.reset(env)
        self.fallback.reset(env)
        self.offloaded.append(0.0)
        self.instead.append(0.0)
        self.count.append(0)
        self.replayed_after.append(0.0)
        self.replays.clear()
        self._step = 0
        self._branched.clear()

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        action = self.policy.act(env, observation)
        fallback = self.fallback.act(env, observation)
        start = env.request_start_s
        reward, free = env.evaluate_action_from(action, start)
        # each change is what the fallback's later start would have made of this request
        for back, change in self.replays.advance(env, action, reward, free):
            self.replayed_after[-1] -= float(change[0])
            row = self._branched.get(self._step - back)
            if row is not None:
                self.branches[row][1] -= float(change[0])
        instead_free = np.empty(0)
        if is_offload(env, action):
            # with this request's labels, as the step's own reward counts them
            outcomes = env.evaluate_actions(know_labels=True)
            self.offloaded[-1] += float(outcomes.reward[_row(env, outcomes.actions, action)])
            self.instead[-1] += float(outcomes.reward[_row(env, outcomes.actions, fallback)])
            self.count[-1] += 1
            instead_free = np.array([env.evaluate_action_from(fallback, start)[1]])
            if self.branch_rate > 0 and self._branch_rng.random() < self.branch_rate:
                self._branch(env, observation, action, fallback)
        self.replays.start(instead_free, free)
        self._step += 1
        return action

    def _branch(
        self,
        env: SplitComputingEnv,
        observation: np.ndarray,
        action: np.ndarray,
        fallback: np.ndarray,
    ) -> None:
        """Measure this offload's own effect in the closed loop, against the fallback's action."""
        own, after = _closed_loop(env, self.policy, observation, action, self.replays.horizon)
        own_instead, after_instead = _closed_loop(
            env, self.policy, observation, fallback, self.replays.horizon
        )
        self._branched[self._step] = len(self.branches)
        self.branches.append([float(after.sum() - after_instead.sum()), 0.0, own - own_instead])


def _closed_loop(
    env: SplitComputingEnv, policy: Policy, observation: np.ndarray, first: np.ndarray, count: int
) -> tuple[float, np.ndarray]:
    """On copies of ``env`` and ``policy``: the reward of ``first``, and those of the next
    ``count`` requests (fewer where the episode ends) with the policy acting."""
    env, policy = copy.deepcopy((env, policy))
    observation, reward, terminated, truncated, _ = env.step(first)
    after: list[float] = []
    while len(after) < count and not (terminated or truncated):
        observation, later, terminated, truncated, _ = env.step(policy.act(env, observation))
        after.append(float(later))
    return float(reward), np.array(after)


def _row(env: SplitComputingEnv, actions: np.ndarray, action: np.ndarray) -> int:
    """The row of ``actions`` (canonical) that holds ``action``'s canonical form."""
    canonical = env.actions.canonical(*env.actions.validate(action))
    return int(np.flatnonzero((actions == canonical).all(axis=1))[0])


@dataclass(frozen=True)
class Component:
    """One part of the gain: its mean per request over episodes and its 95% t-interval.

    :param label: what it measures
    :param per_episode: the part per episode, a reward per request
    """

    label: str
    per_episode: np.ndarray

    @property
    def mean(self) -> float:
        """Mean over episodes."""
        return t_interval(self.per_episode)[0]

    @property
    def ci95(self) -> float:
        """Half-width of the 95% t-interval (``nan`` for one episode)."""
        return t_interval(self.per_episode)[1]


@dataclass(frozen=True)
class OffloadAudit:
    """A policy's gain over a fallback rule, split by where it comes from.

    Every array has one entry per episode, in reward per request; ``total`` is the sum of
    ``local_decisions``, ``on_offloads`` and ``after_offloads``.

    :param policy: the policy's run
    :param fallback: the fallback's run
    :param replaced: the run of the policy with its offloads given to the fallback
    :param offloaded_reward: the reward the policy's offloaded requests earned, summed and divided
        by the episode's requests
    :param fallback_reward: the reward the fallback's action would have earned on those requests,
        from the same states, in hindsight, summed and divided likewise
    :param offloads: how many requests the policy chose to offload (an exit gate may still have
        answered some of them on the device)
    :param replayed_after: the effect after the offloads as the replays price it (module
        docstring), summed and divided by the episode's requests; not a part of ``total``
    :param replay_horizon: the most following requests each replay counted
    :param replay_rechoose: whether the replays re-chose the later actions where their backlog
        changes the lookahead rule's choice (:class:`~splitrl.agents.hindsight.BacklogReplays`)
    :param branches: ``(n, 3)``, per offload measured in the closed loop (``branch_rate``): its
        effect on the next ``replay_horizon`` requests, its replay credit and its gain on its own
        request, each a reward summed over those requests (not per request of the episode)
    :param branch_rate: the share of the offloads measured so
    """

    policy: Rollout
    fallback: Rollout
    replaced: Rollout
    offloaded_reward: np.ndarray
    fallback_reward: np.ndarray
    offloads: np.ndarray
    replayed_after: np.ndarray
    replay_horizon: int
    replay_rechoose: bool = False
    branches: np.ndarray = field(default_factory=lambda: np.empty((0, 3)))
    branch_rate: float = 0.0

    @property
    def offload_share(self) -> float:
        """The share of the policy's requests it chose to offload."""
        return float(self.offloads.sum() / self.policy.reward.size)

    @property
    def total(self) -> np.ndarray:
        """The policy's gain over the fallback."""
        return episode_rewards(self.policy) - episode_rewards(self.fallback)

    @property
    def local_decisions(self) -> np.ndarray:
        """The gain of the policy's local decisions alone: its offloads given to the fallback."""
        return episode_rewards(self.replaced) - episode_rewards(self.fallback)

    @property
    def from_offloads(self) -> np.ndarray:
        """What the offloads add to the gain: the policy against its local decisions alone."""
        return self.total - self.local_decisions

    @property
    def on_offloads(self) -> np.ndarray:
        """The gain on the offloaded requests themselves, over the fallback's action on them."""
        return self.offloaded_reward - self.fallback_reward

    @property
    def after_offloads(self) -> np.ndarray:
        """What the offloads add on the requests after them (the state they leave behind)."""
        return self.from_offloads - self.on_offloads

    def components(self) -> list[Component]:
        """The parts of the gain, in the order of :meth:`table`."""
        return [
            Component("total gain over the fallback", self.total),
            Component("local decisions alone (offloads to the fallback)", self.local_decisions),
            Component("from the offloads", self.from_offloads),
            Component("  on the offloaded requests", self.on_offloads),
            Component("  on the requests after them", self.after_offloads),
        ]

    def replayed_components(self) -> list[Component]:
        """The effect after the offloads as the replays price it, and its error against the
        measured effect (paired per episode): beside the parts, not among them."""
        return [
            Component("after them, as the replays price it (not a part)", self.replayed_after),
            Component("  the replays' error (replayed minus measured)", self.replay_error),
        ]

    @property
    def replay_error(self) -> np.ndarray:
        """How much more the replays credit the offloads with after them than they measured."""
        return self.replayed_after - self.after_offloads

    def branch_components(self) -> list[Component]:
        """Per offload measured in the closed loop: its effect after it, its replay credit and
        the credit's error (each entry one offload, not one episode)."""
        after, credit = self.branches[:, 0], self.branches[:, 1]
        return [
            Component("closed-loop effect after one offload", after),
            Component("its replay credit", credit),
            Component("  the credit's error (credit minus effect)", credit - after),
        ]

    @property
    def branch_correlation(self) -> float:
        """The correlation of the measured offloads' replay credits with their closed-loop effect
        after them (``nan`` for fewer than two, or a constant)."""
        if len(self.branches) < 2 or (np.ptp(self.branches[:, :2], axis=0) == 0).any():
            return float("nan")
        return float(np.corrcoef(self.branches[:, 0], self.branches[:, 1])[0, 1])

    def table(self) -> str:
        """The components as a markdown table, with the offload share in its title."""
        lines = [
            f"{self.policy.name} against {self.fallback.name}, {self.policy.episodes} episodes; "
            f"offloads {self.offload_share:.1%} of the requests",
            "",
            "| part | gain per request | 95% interval |",
            "|---|---|---|",
        ]
        rows = [*self.components(), *self.replayed_components()]
        lines += [f"| {c.label} | {c.mean:+.4f} | ± {c.ci95:.4f} |" for c in rows]
        if len(self.branches):
            lines += [
                "",
                f"{len(self.branches)} offloads measured in the closed loop (about "
                f"{self.branch_rate:.0%} of them), over the next {self.replay_horizon} requests; "
                f"correlation of credit and effect {self.branch_correlation:+.2f}",
                "",
                "| per offload | reward | 95% interval |",
                "|---|---|---|",
            ]
            lines += [
                f"| {c.label} | {c.mean:+.4f} | ± {c.ci95:.4f} |" for c in self.branch_components()
            ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        """The audit as JSON-safe numbers."""
        return {
            "policy": self.policy.name,
            "fallback": self.fallback.name,
            "seeds": list(self.policy.seeds),
            "offload_share": self.offload_share,
            "components": {
                c.label.strip(): {"mean": c.mean, "ci95": c.ci95} for c in self.components()
            },
            "replayed_after": {
                "horizon": self.replay_horizon,
                "rechoose": self.replay_rechoose,
                **{
                    key: {"mean": c.mean, "ci95": c.ci95}
                    for key, c in zip(("credit", "error"), self.replayed_components(), strict=True)
                },
            },
            "branches": {
                "rate": self.branch_rate,
                "count": len(self.branches),
                "correlation": self.branch_correlation,
                **self._branch_summary(),
            },
        }

    def _branch_summary(self) -> dict[str, dict[str, float]]:
        """The branch components' means and intervals by JSON key (none without branches)."""
        if not len(self.branches):
            return {}
        keys = ("effect_after", "credit", "error")
        return {
            key: {"mean": c.mean, "ci95": c.ci95}
            for key, c in zip(keys, self.branch_components(), strict=True)
        }


def audit_offloads(
    policy: Policy,
    fallback: Policy,
    env: SplitComputingEnv,
    seeds: Sequence[int],
    *,
    replay_horizon: int = DEFAULT_BACKLOG_HORIZON,
    replay_rechoose: bool = False,
    branch_rate: float = 0.0,
    branch_seed: int = 0,
    progress: bool = False,
) -> OffloadAudit:
    """Run ``policy``, ``fallback`` and the policy with its offloads given to the fallback on the
    same seeded episodes, and split the policy's gain (see the module docstring).

    :param policy: the policy to audit
    :param fallback: a rule to compare with; usually one that stays on the device
        (``channel-blind``), so that the offloads are the policy's own decisions to adapt
    :param env: the env to play in (reset with each seed)
    :param seeds: the episodes' reset seeds (at least two for the intervals)
    :param replay_horizon: the most following requests a replay of an offload counts (the
        training's default for hindsight values)
    :param replay_rechoose: whether the replays re-choose the later actions where their backlog
        changes the lookahead rule's choice, as the ``-rechosen`` learners' hindsight values do
        (``False``: the actions the policy took, held fixed)
    :param branch_rate: the share of the offloads, drawn at random, whose own effect after them
        is also measured in the closed loop (module docstring; each costs two runs of
        ``replay_horizon`` requests); 0: none
    :param branch_seed: seeds the draw of those offloads
    :param progress: show a progress bar over the three runs' episodes
    :raises ValueError: for fewer than two seeds, a fallback that is the policy itself or has
        its name, a replay horizon below 1 or a branch rate outside [0, 1]
    """
    if len(seeds) < 2:
        raise ValueError(f"an offload audit needs at least 2 episodes, got {len(seeds)}")
    if fallback is policy or fallback.name == policy.name:
        raise ValueError(
            f"the fallback must be another policy than the audited one ({policy.name})"
        )
    if not 0.0 <= branch_rate <= 1.0:
        raise ValueError(f"the branch rate must be in [0, 1], got {branch_rate}")
    valuer = _OffloadValuer(
        policy, fallback, replay_horizon, replay_rechoose, branch_rate, branch_seed
    )
    played, alone, replaced = evaluate_policies(
        [valuer, fallback, OffloadsReplaced(policy, fallback)],
        env,
        seeds,
        progress=progress,
        description=f"auditing {policy.name}'s offloads",
    )
    return OffloadAudit(
        policy=played,
        fallback=alone,
        replaced=replaced,
        offloaded_reward=np.array(valuer.offloaded) / env.horizon,
        fallback_reward=np.array(valuer.instead) / env.horizon,
        offloads=np.array(valuer.count),
        replayed_after=np.array(valuer.replayed_after) / env.horizon,
        replay_horizon=valuer.replays.horizon,
        replay_rechoose=replay_rechoose,
        branches=np.array(valuer.branches, dtype=float).reshape(-1, 3),
        branch_rate=branch_rate,
    )
