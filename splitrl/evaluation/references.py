"""The references a policy is judged against, and what adapting is worth in a scenario.

* **Best causal baseline**: the baseline of highest mean reward on the evaluated episodes among
  those that decide only from what the device knows (the baseline's class says ``causal = True``).
  It is 0 on the normalized score: the bar a learned policy has to clear.
* **Upper reference**: ``clairvoyant-lookahead`` (it knows the channel over the transfer, every
  random draw, and prices the backlog over a horizon). It is 1 on the normalized score.
* **channel-blind**: the best backlog-aware rule that never looks at the channel; what a device gets
  without adapting to the link.
* **Link reference**: ``oracle-now``, the device's own rule (``mpc``'s: no discount, the spread and
  the backlog priced) told the true capacity at decision time. Its gain over the best causal
  baseline is what a perfect estimate of the link would be worth: the room a causal policy has by
  reading the link better. Where it is nil, a learned policy can gain only from what the rule's
  model leaves out (how the link moves during a transfer, the load and draws ahead).
* **Near-future reference**: ``oracle-ahead``, the same rule told the true mean capacity over the
  next 50 ms: what a perfect short-term forecast of the link would be worth to the rule.
* **Knowable reference**: ``clairvoyant-link``, ``clairvoyant-lookahead`` without this request's
  own RTT and queueing draws (it knows the link over the transfer, the payload and the load). Its
  gain over the best causal baseline bounds what reading anything but those draws better can add;
  its gap to the upper reference is room no policy that decides before its request is served can
  take.

The last two are not among the references every evaluation runs: ``splitrl evaluate`` runs them
with ``--baselines all`` or by name, and a sweep's room table shows them when the sweep file lists
them among its ``baselines``.

A scenario is worth learning in when adapting is worth something (:class:`AdaptationValue`): the
upper reference beats ``channel-blind`` by at least :data:`UPPER_GAIN_GOAL` reward per request, and
the best causal baseline other than ``channel-blind`` beats it with a paired 95% interval above
zero. These measures replace statistics of the oracle's actions: a spread of actions says nothing
about whether the spread is worth anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from splitrl.agents.baselines import causal_baselines, fitted_baselines, make_baseline
from splitrl.agents.policy_interface import Policy
from splitrl.agents.rollout import Rollout
from splitrl.envs.split_computing import SplitComputingEnv
from splitrl.evaluation.metrics import episode_rewards, paired_difference
from splitrl.evaluation.runner import evaluate_policies
from splitrl.statistics import PairedDifference

#: the upper reference of the normalized score
UPPER_REFERENCE = "clairvoyant-lookahead"
#: the device's rule at the true current capacity: what a perfect link estimate is worth
LINK_REFERENCE = "oracle-now"
#: the device's rule at the true mean capacity over the next 50 ms: a perfect short-term forecast
AHEAD_REFERENCE = "oracle-ahead"
#: ``clairvoyant-lookahead`` without the request's own RTT and queueing draws
KNOWABLE_REFERENCE = "clairvoyant-link"
#: the references whose gain over the best causal baseline is the room a sweep reports, in order
ROOM_REFERENCES = (LINK_REFERENCE, AHEAD_REFERENCE, KNOWABLE_REFERENCE, UPPER_REFERENCE)
#: the rule that ignores the channel: the zero of "adapting is worth something"
CHANNEL_BLIND = "channel-blind"
#: what ``clairvoyant-lookahead`` must win over ``channel-blind`` (reward per request) for a
#: scenario to be worth adapting in
UPPER_GAIN_GOAL = 0.05


def is_causal(policy: Policy) -> bool:
    """Whether ``policy`` decides only from what the device knows (learned policies do)."""
    return bool(getattr(policy, "causal", True))


def reference_names() -> list[str]:
    """The baselines every evaluation runs: the causal ones (to find the best) and the upper one."""
    return list(dict.fromkeys([*causal_baselines(), CHANNEL_BLIND, UPPER_REFERENCE]))


def make_baselines(
    names: Sequence[str],
    env_factory: Callable[[], SplitComputingEnv],
    fit_episodes: int,
    fit_seed: int,
) -> list[Policy]:
    """The baselines called ``names``; the fitted ones (``best-static``) are fitted on
    ``env_factory``'s episodes.

    :param names: baseline names (:data:`splitrl.agents.baselines.BASELINES`)
    :param env_factory: builds an env of the training channel (never the evaluation seeds)
    :param fit_episodes: episodes (per action, for ``best-static``) to fit on
    :param fit_seed: first seed of those episodes
    """
    fitted = set(fitted_baselines())
    return [
        make_baseline(name, env_factory=env_factory, episodes=fit_episodes, seed=fit_seed)
        if name in fitted
        else make_baseline(name)
        for name in names
    ]


def best_of(rollouts: Mapping[str, Rollout], names: Sequence[str]) -> str:
    """The name among ``names`` of highest mean reward per request (the first on a tie)."""
    if not names:
        raise ValueError("best_of needs at least one policy")
    means = [float(episode_rewards(rollouts[name]).mean()) for name in names]
    return names[int(np.argmax(means))]


@dataclass(frozen=True)
class AdaptationValue:
    """What adapting to the link is worth in one condition, paired on the same episodes.

    :param upper_gain: ``clairvoyant-lookahead`` minus ``channel-blind``
    :param best_causal: the best causal baseline other than ``channel-blind``
    :param causal_gain: ``best_causal`` minus ``channel-blind``
    """

    upper_gain: PairedDifference
    best_causal: str
    causal_gain: PairedDifference

    @property
    def upper_goal_met(self) -> bool:
        """Whether knowing everything buys at least :data:`UPPER_GAIN_GOAL` per request."""
        return self.upper_gain.mean >= UPPER_GAIN_GOAL

    @property
    def causal_goal_met(self) -> bool:
        """Whether a realizable rule that looks at the link beats ``channel-blind`` (paired CI)."""
        return self.causal_gain.is_positive()

    def summary(self) -> str:
        """One line for reports."""
        return (
            f"adapting is worth: {UPPER_REFERENCE} - {CHANNEL_BLIND} = "
            f"{self.upper_gain.mean:+.4f} ± {self.upper_gain.ci95:.4f} (goal >= "
            f"{UPPER_GAIN_GOAL}: {'met' if self.upper_goal_met else 'not met'}); "
            f"{self.best_causal} - {CHANNEL_BLIND} = {self.causal_gain.mean:+.4f} ± "
            f"{self.causal_gain.ci95:.4f} (goal: CI above 0: "
            f"{'met' if self.causal_goal_met else 'not met'})"
        )


def adaptation_value(rollouts: Mapping[str, Rollout], causal: Sequence[str]) -> AdaptationValue:
    """The adaptation value of one condition from rollouts on the same seeds.

    :param rollouts: by name; must hold ``channel-blind``, ``clairvoyant-lookahead`` and at least
        one other causal baseline
    :param causal: names of the causal baselines among ``rollouts``
    """
    missing = [name for name in (CHANNEL_BLIND, UPPER_REFERENCE) if name not in rollouts]
    if missing:
        raise ValueError(f"the adaptation value needs the rollouts of {missing}")
    others = [name for name in causal if name != CHANNEL_BLIND]
    best = best_of(rollouts, others)
    blind = rollouts[CHANNEL_BLIND]
    return AdaptationValue(
        upper_gain=paired_difference(rollouts[UPPER_REFERENCE], blind),
        best_causal=best,
        causal_gain=paired_difference(rollouts[best], blind),
    )


def reference_rollouts(
    env_factory: Callable[[], SplitComputingEnv],
    seeds: Sequence[int],
    *,
    fit_episodes: int,
    fit_seed: int,
    progress: bool = False,
) -> tuple[dict[str, Rollout], list[str]]:
    """Run every reference baseline (:func:`reference_names`) on the same seeds.

    :param env_factory: builds the env of the condition
    :param seeds: reset seeds, one episode each
    :param fit_episodes: episodes to fit the fitted baselines on (seeds from ``fit_seed``)
    :param fit_seed: first seed of those episodes
    :param progress: show a progress bar
    :return: the rollouts by name, and the names of the causal baselines among them
    """
    policies = make_baselines(reference_names(), env_factory, fit_episodes, fit_seed)
    env = env_factory()
    rollouts = evaluate_policies(policies, env, seeds, progress=progress)
    env.close()
    causal = [policy.name for policy in policies if is_causal(policy)]
    return {rollout.name: rollout for rollout in rollouts}, causal
