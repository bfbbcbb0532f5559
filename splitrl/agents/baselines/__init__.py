"""Baselines and references: every one a :class:`~splitrl.agents.policy_interface.Policy` that says what it knows.

Each baseline class declares ``causal`` (``True`` iff it decides only from what the device knows:
its observation, ``env.knowledge`` and :meth:`~splitrl.envs.SplitComputingEnv.predict_actions`)
and ``knows`` (one line). The causal ones are what a learned policy must beat; the others
(``oracle-now``, ``oracle-ahead``, ``clairvoyant``, ``clairvoyant-lookahead``,
``clairvoyant-link``, ``mpc-geometric-gated``) measure what knowing more is worth.

* fixed actions (:mod:`.fixed`): ``device-only``, ``device-only-first-exit``, ``edge-only``,
  ``best-static``, ``random``
* ``channel-blind`` (:mod:`.channel_blind`): the best backlog-aware local rule
* the published per-request rules (:mod:`.heuristics`): ``neurosurgeon``, ``edgent``, ``greedy``
* ``robust-mpc`` (:mod:`.robust_mpc`): a cautious throughput forecast, the deadline-miss risk of
  the RTT and server-queue spread (:mod:`.spread`), and the backlog priced (:mod:`.backlog`);
  ``mpc``, the same without the forecast's discount; ``mpc-geometric``, ``mpc`` with the geometric
  mean of the last throughputs instead of their harmonic mean
* ``mpc-quantile`` (:mod:`.link_forecast`): ``mpc-geometric`` whose values are averaged over the
  quantiles of a link forecast learned offline on synthetic channels
* references that know more (:mod:`.oracles`): ``oracle-now``, ``oracle-ahead`` (``oracle-now``
  told the mean capacity over the next 50 ms), ``clairvoyant``,
  ``clairvoyant-lookahead``, ``clairvoyant-link`` (``clairvoyant-lookahead`` without the request's
  own RTT and queueing draws), and ``mpc-geometric-gated`` (a confidence gate at the early exits,
  reading the request's own confidences)

Build one by name with :func:`make_baseline`; :data:`BASELINES` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from splitrl.agents.baselines.backlog import DEFAULT_BACKLOG_HORIZON, backlog_cost
from splitrl.agents.baselines.channel_blind import ChannelBlindPolicy
from splitrl.agents.baselines.fixed import (
    BestStaticPolicy,
    DeviceOnlyPolicy,
    EdgeOnlyPolicy,
    RandomPolicy,
    lossless_bit_index,
)
from splitrl.agents.baselines.heuristics import EdgentPolicy, GreedyPolicy, NeurosurgeonPolicy
from splitrl.agents.baselines.link_forecast import QuantileMPCPolicy
from splitrl.agents.baselines.oracles import (
    ClairvoyantLinkPolicy,
    ClairvoyantLookaheadPolicy,
    ClairvoyantPolicy,
    ConfidenceGatePolicy,
    OracleAheadPolicy,
    OracleNowPolicy,
)
from splitrl.agents.baselines.robust_mpc import GeometricMPCPolicy, MPCPolicy, RobustMPCPolicy
from splitrl.agents.policy_interface import Policy
from splitrl.envs.split_computing import SplitComputingEnv


@runtime_checkable
class Baseline(Policy, Protocol):
    """A :class:`~splitrl.agents.policy_interface.Policy` that says what it knows.

    :ivar causal: whether it decides only from what the device knows
    :ivar knows: what it knows, in one line
    """

    causal: bool
    knows: str


@runtime_checkable
class FittedBaseline(Baseline, Protocol):
    """A baseline tuned on training episodes before it acts (``best-static``, ``channel-blind``)."""

    def fit(
        self, env_factory: Callable[[], SplitComputingEnv], episodes: int = ..., seed: int = ...
    ) -> Any:
        """Tune on the seeded episodes ``seed ..`` of ``env_factory``'s env; returns ``self``."""


#: baseline name -> factory; keyword arguments of :func:`make_baseline` go to the factory
BASELINES: dict[str, Callable[..., Baseline]] = {
    "device-only": lambda: DeviceOnlyPolicy("final"),
    "device-only-first-exit": lambda: DeviceOnlyPolicy("first"),
    "edge-only": EdgeOnlyPolicy,
    "best-static": BestStaticPolicy,
    "channel-blind": ChannelBlindPolicy,
    "neurosurgeon": NeurosurgeonPolicy,
    "edgent": EdgentPolicy,
    "greedy": GreedyPolicy,
    "robust-mpc": RobustMPCPolicy,
    "mpc": MPCPolicy,
    "mpc-geometric": GeometricMPCPolicy,
    "mpc-quantile": QuantileMPCPolicy,
    "oracle-now": OracleNowPolicy,
    "oracle-ahead": OracleAheadPolicy,
    "clairvoyant": ClairvoyantPolicy,
    "clairvoyant-lookahead": ClairvoyantLookaheadPolicy,
    "clairvoyant-link": ClairvoyantLinkPolicy,
    "mpc-geometric-gated": ConfidenceGatePolicy,
    "random": RandomPolicy,
}

_FIT_ARGUMENTS = ("env_factory", "episodes", "seed")


def learned_baselines() -> list[str]:
    """Names of the rules that act on a model learned offline (``mpc-quantile``).

    The evaluations that run every baseline or every causal one unless told otherwise
    (``--baselines all``, the demo, a sweep without ``baselines``) leave them out: each would pay
    about five times ``mpc-geometric``'s time for it. Name one to compare with it.
    """
    return [name for name, factory in BASELINES.items() if getattr(factory(), "learned", False)]


def causal_baselines(learned: bool = False) -> list[str]:
    """Names of the baselines that decide only from what the device knows.

    :param learned: also the causal rules that act on a model learned offline
        (:func:`learned_baselines`), left out by default
    """
    left_out = [] if learned else learned_baselines()
    return [
        name for name, factory in BASELINES.items() if factory().causal and name not in left_out
    ]


def fitted_baselines() -> list[str]:
    """Names of the baselines that must be fitted (``make_baseline(name, env_factory=...)``)."""
    return [name for name, factory in BASELINES.items() if isinstance(factory(), FittedBaseline)]


def make_baseline(name: str, **kwargs: Any) -> Baseline:
    """Build the baseline called ``name``.

    :param name: a key of :data:`BASELINES`
    :param kwargs: passed to its factory (``seed`` for ``"random"``, ``horizon`` for the
        backlog-aware ones, ``deadline_fraction`` for ``"channel-blind"``, ``window_s`` for
        ``"oracle-ahead"``, ``threshold`` for ``"mpc-geometric-gated"``, ``action`` for
        ``"best-static"``); for a fitted baseline (:func:`fitted_baselines`), ``env_factory`` with
        optional ``episodes`` and ``seed`` fits it right away
    :return: the policy
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    fit_kwargs: dict[str, Any] = {}
    if "env_factory" in kwargs:
        if name not in fitted_baselines():
            raise ValueError(f"baseline {name!r} is not fitted: env_factory does not apply")
        fit_kwargs = {key: kwargs.pop(key) for key in _FIT_ARGUMENTS if key in kwargs}
    try:
        policy = BASELINES[name](**kwargs)
    except TypeError as error:
        raise ValueError(f"baseline {name!r}: {error}") from error
    if fit_kwargs:
        assert isinstance(policy, FittedBaseline)
        policy.fit(**fit_kwargs)
    return policy


__all__ = [
    "BASELINES",
    "DEFAULT_BACKLOG_HORIZON",
    "Baseline",
    "BestStaticPolicy",
    "ChannelBlindPolicy",
    "ClairvoyantLinkPolicy",
    "ClairvoyantLookaheadPolicy",
    "ClairvoyantPolicy",
    "ConfidenceGatePolicy",
    "DeviceOnlyPolicy",
    "EdgeOnlyPolicy",
    "EdgentPolicy",
    "FittedBaseline",
    "GeometricMPCPolicy",
    "GreedyPolicy",
    "MPCPolicy",
    "NeurosurgeonPolicy",
    "OracleAheadPolicy",
    "OracleNowPolicy",
    "QuantileMPCPolicy",
    "RandomPolicy",
    "RobustMPCPolicy",
    "backlog_cost",
    "causal_baselines",
    "fitted_baselines",
    "learned_baselines",
    "lossless_bit_index",
    "make_baseline",
]
