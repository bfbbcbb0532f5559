"""A link forecast learned on synthetic channels, and the rule that averages its value over it.

Where a causal policy has room over the strongest rule, the room is the link's near future: told
the true mean capacity over the next 50 ms, ``mpc``'s rule gains +0.010 to +0.028 per request on
the fading channel and the LTE and EVDO traces of ``default-timeout`` (``oracle-ahead``,
``docs/evaluation.md``). ``mpc-geometric`` forecasts the link by the geometric mean of the last
throughputs and the link-rate report, as a point. This benchmark asks whether a forecast learned
from the device's own features on synthetic channels only, as a distribution, takes that room:

1. **Data.** ``mpc-geometric`` plays ``--train-episodes`` episodes of each training channel
   (synthetic models only; the traces are never seen). At each request it records the device's
   features (:func:`forecast_features`: the last throughputs and the link-rate report relative to
   their geometric mean, their spread, the age of the newest throughput, the reported load) and,
   from the simulator, the throughput a transfer of ``--payload-bytes`` starting then achieves
   (``channel.transfer_time``), relative to the geometric mean.
2. **Forecast.** A small network (:class:`QuantileForecast`) is fitted to the quantiles
   ``QUANTILES`` of that log ratio by the pinball loss; it acts as a
   :class:`~splitrl.agents.baselines.link_forecast.LinkForecast` (numpy, as on a device).
   ``--save-forecast`` writes it (the forecast splitrl ships is one).
3. **Rule.** ``mpc-quantile``
   (:class:`~splitrl.agents.baselines.link_forecast.QuantileMPCPolicy`) is ``mpc-geometric``
   whose value of every action is the mean of its values at the forecast's quantiles (the
   geometric mean times ``exp`` of each), an expectation over the forecast distribution instead of
   a value at one point. It is causal: the forecast reads only what the device knows.
4. **Gate.** :class:`GatedQuantileMPCPolicy` (``mpc-quantile-gated``) uses the forecast only
   where its :class:`ForecastGate` trusts it (every feature inside the central 99.8% of its
   training values, and a spread of the quantiles at most a width), and ``mpc-geometric``
   elsewhere. The width is chosen among ``SPREAD_PERCENTILES`` of the training data's spread, and
   "never", by the mean reward on ``--validation-episodes`` further episodes of each training
   channel (seeds from ``VALIDATION_SEED``): the choice sees no evaluation episode and no trace.
5. **Switch.** :class:`SwitchedQuantileMPCPolicy` (``mpc-quantile-switched``) follows the
   forecast rule or ``mpc-geometric``, whichever valued its actions better over the last seconds
   of the episode, scored at the link rate the radio reported afterwards (``--switch-memory-s``).
6. **Evaluation.** The forecast rules asked for (``--forecast-rules``, all three by default) and
   ``mpc-geometric``, ``mpc`` and ``robust-mpc`` (the best causal baselines of every condition of
   ``default-timeout``) play the evaluation episodes of the learner benchmark (seeds from
   1,000,000) on each condition; the table gives each forecast rule's paired gain over the best
   of them, with 95% t-intervals over episodes, the fraction of requests whose forecast the gate
   trusted, and the fraction whose action the switch changed from ``mpc-geometric``'s (the JSON
   adds the gains over ``mpc-geometric`` and every policy's offload fraction).

    python -m benchmarks.bench_link_forecast                   # 40 episodes, all three rules
    python -m benchmarks.bench_link_forecast --forecast-rules forecast gated   # 41 min, 2 cores
    python -m benchmarks.bench_link_forecast --forecast-rules switched         # 34 min
    python -m benchmarks.bench_link_forecast --episodes 10 --conditions fading \\
        trace:../shared/traces/Verizon-EVDO-driving.up

The traces are read from ``../shared/traces`` (``--traces DIR``); without them the trace
conditions are skipped with a message. Writes ``results/bench_link_forecast.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.bench_traces import TRACES_DIR
from benchmarks.common import print_table, write_results
from splitrl.agents.baselines import make_baseline
from splitrl.agents.baselines.link_forecast import (
    N_FEATURES,
    QUANTILES,
    LinkForecast,
    QuantileMPCPolicy,
    forecast_features,
)
from splitrl.agents.baselines.oracles import clairvoyant_values
from splitrl.agents.baselines.robust_mpc import GeometricMPCPolicy
from splitrl.agents.baselines.spread import DEFAULT_SPREAD_DRAWS, LatencySpread
from splitrl.agents.policy_interface import Policy
from splitrl.agents.rollout import run_episodes
from splitrl.envs.forecast import ForecastView
from splitrl.envs.scenarios import SCENARIO_CHANNELS, Scenario, get_scenario
from splitrl.envs.split_computing import SplitComputingEnv
from splitrl.statistics import t_interval
from splitrl.sweeps.cells import EVAL_SEED

#: synthetic channels the forecast is fitted on
TRAIN_CHANNELS = ("markov", "fading", "gilbert-elliott", "randomized")
#: the causal rules the forecast rule is paired with (the best of them on every condition)
RULES = ("mpc-geometric", "mpc", "robust-mpc")
#: the bytes of the transfer whose throughput is forecast: the median payload of an offload
DEFAULT_PAYLOAD_BYTES = 1024
#: the central share of each training feature's values that the gate trusts
FEATURE_COVERAGE = 0.998
#: percentiles of the training data's forecast spread that the gate's width is chosen among
SPREAD_PERCENTILES = (25.0, 50.0, 75.0, 90.0, 100.0)
#: first reset seed of the episodes on training channels that choose the gate's width
VALIDATION_SEED = 500_000
#: log offsets from the geometric mean below the forecast at which the switch also values actions:
#: a link 4.5 and 20 times slower, so that an outage is scored as one
LOW_OFFSETS = (-1.5, -3.0)
#: time constant of the switch's score: a few hundred requests, about two seconds of the channel
DEFAULT_SWITCH_MEMORY_S = 2.0
#: how the switch scores a request (:class:`SwitchedQuantileMPCPolicy`)
SWITCH_SCORES = ("measured", "report", "clairvoyant")


class QuantileForecast(torch.nn.Module):
    """Quantiles of the log ratio of the coming throughput to the geometric-mean forecast.

    Two hidden layers of 64 units; the quantiles are monotone by construction (the first, then
    softplus increments). Inputs are standardized by the training set's mean and spread.

    :param quantiles: the levels predicted, increasing
    """

    levels: torch.Tensor
    center: torch.Tensor
    scale: torch.Tensor

    def __init__(self, quantiles: Sequence[float] = QUANTILES) -> None:
        super().__init__()
        self.register_buffer("levels", torch.tensor(quantiles, dtype=torch.float32))
        self.register_buffer("center", torch.zeros(N_FEATURES))
        self.register_buffer("scale", torch.ones(N_FEATURES))
        self.body = torch.nn.Sequential(
            torch.nn.Linear(N_FEATURES, 64),
            torch.nn.Tanh(),
            torch.nn.Linear(64, 64),
            torch.nn.Tanh(),
            torch.nn.Linear(64, len(quantiles)),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The quantiles ``(..., len(quantiles))`` of each row of ``features``."""
        raw = self.body((features - self.center) / self.scale)
        steps = torch.nn.functional.softplus(raw[..., 1:])
        return torch.cat([raw[..., :1], raw[..., :1] + torch.cumsum(steps, dim=-1)], dim=-1)


def fit_forecast(
    features: np.ndarray, targets: np.ndarray, *, epochs: int = 30, seed: int = 0
) -> QuantileForecast:
    """A :class:`QuantileForecast` fitted by the pinball loss (Adam, batches of 512).

    :param features: ``(n, N_FEATURES)``
    :param targets: ``(n,)`` log ratios
    """
    torch.manual_seed(seed)
    x, y = torch.from_numpy(features), torch.from_numpy(targets)
    model = QuantileForecast()
    model.center.copy_(x.mean(dim=0))
    model.scale.copy_(x.std(dim=0) + 1e-3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    levels = model.levels
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 512):
            batch = order[start : start + 512]
            error = y[batch, None] - model(x[batch])
            loss = torch.maximum(levels * error, (levels - 1.0) * error).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


@dataclasses.dataclass(frozen=True)
class ForecastGate:
    """Where the forecast is trusted: features inside the range of its training data, and a spread
    of its quantiles (highest minus lowest) at most ``max_spread``.

    :param low: the smallest value of each feature that is trusted
    :param high: the largest value of each feature that is trusted
    :param max_spread: the widest forecast trusted (``-inf``: never trusted)
    """

    low: np.ndarray
    high: np.ndarray
    max_spread: float

    @classmethod
    def from_training(
        cls, features: np.ndarray, max_spread: float, coverage: float = FEATURE_COVERAGE
    ) -> ForecastGate:
        """The gate whose feature range holds the central ``coverage`` of each training feature."""
        tail = 100.0 * (1.0 - coverage) / 2.0
        low, high = np.percentile(features, [tail, 100.0 - tail], axis=0)
        return cls(low.astype(np.float32), high.astype(np.float32), max_spread)

    def trusts(self, features: np.ndarray, offsets: np.ndarray) -> bool:
        """Whether a forecast of ``offsets`` made from ``features`` is used."""
        inside = bool((features >= self.low).all() and (features <= self.high).all())
        return inside and float(offsets[-1] - offsets[0]) <= self.max_spread


class GatedQuantileMPCPolicy(QuantileMPCPolicy):
    """:class:`QuantileMPCPolicy` where its gate trusts the forecast, ``mpc-geometric`` elsewhere.

    :param offsets: the forecast, as for :class:`QuantileMPCPolicy`
    :param gate: where the forecast is trusted
    """

    name = "mpc-quantile-gated"

    def __init__(self, offsets: Callable[[np.ndarray], np.ndarray], gate: ForecastGate) -> None:
        super().__init__(offsets)
        self.gate = gate
        #: decisions made, and those that used the forecast
        self.decisions = 0
        self.trusted = 0

    def forecast_offsets(self, features: np.ndarray) -> np.ndarray:
        """The forecast's quantiles where the gate trusts them, else the geometric mean alone."""
        offsets = self.offsets(features)
        self.decisions += 1
        if self.gate.trusts(features, offsets):
            self.trusted += 1
            return offsets
        return np.zeros(1)


class SwitchedQuantileMPCPolicy(QuantileMPCPolicy):
    """:class:`QuantileMPCPolicy` or ``mpc-geometric``, whichever valued its actions better of late.

    A switch between two experts by their recent hindsight scores, made online within the episode:
    the channel the device is on decides, not a choice made beforehand on other channels. At every
    request both rules decide; where their actions differ, the value of each action is kept at a
    grid of link rates (the forecast's quantiles, the geometric mean, and ``LOW_OFFSETS`` below it,
    an outage). Each such request is scored at the rate it met, as well as the device can tell:
    the throughput of its own transfer where it offloaded (``score="measured"``), else the radio's
    report once that describes the capacity at the request's start (the report is the link-quality
    model's delay old). Both actions' values are read at that rate (interpolated in log rate, held
    at the grid's ends), and the forecast's lead is added to a score that decays with
    ``memory_s``. The forecast rule acts while the score is positive; ``mpc-geometric`` acts
    otherwise, and from the start of each episode. It reads only what the device knows: its
    features, the report and the time. Without a report (``link_quality=False``) it is
    ``mpc-geometric``.

    :param offsets: the forecast, as for :class:`QuantileMPCPolicy`
    :param memory_s: time constant in seconds of the score's decay
    :param score: ``"measured"`` (as above), ``"report"`` (every request at the report), or
        ``"clairvoyant"``: each action's true value (``clairvoyant_values`` over the RTT and
        queueing spread, what ``clairvoyant-link`` maximizes), read when the report describes the
        request. Not causal: what the switch could do with a perfect score
    """

    name = "mpc-quantile-switched"

    def __init__(
        self,
        offsets: Callable[[np.ndarray], np.ndarray],
        memory_s: float = DEFAULT_SWITCH_MEMORY_S,
        score: str = "measured",
    ) -> None:
        if not (math.isfinite(memory_s) and memory_s > 0.0):
            raise ValueError(f"memory_s must be positive and finite, got {memory_s}")
        if score not in SWITCH_SCORES:
            raise ValueError(f"score must be one of {SWITCH_SCORES}, got {score!r}")
        super().__init__(offsets)
        self.memory_s = memory_s
        self.scoring = score
        self.causal = score != "clairvoyant"
        self._truth = LatencySpread(DEFAULT_SPREAD_DRAWS)
        #: the newest transfer seen, and the start of the request decided last (its transfer's)
        self._seen_transfer_end = -math.inf
        self._previous_start = -math.inf
        #: the age of the radio's report, from the env's link-quality model at each reset
        self.report_delay_s = math.inf
        #: the forecast rule's recent lead in hindsight value (positive: it acts)
        self.score = 0.0
        self._scored_start = -math.inf
        #: requests whose two actions differed and await the rate they met (their transfer's or
        #: the report of their start): ``(start, log rates, forecast action's values, geometric
        #: action's values)``
        self._pending: deque[tuple[float, np.ndarray, np.ndarray, np.ndarray]] = deque()
        #: decisions made, those the forecast rule made, and those where it acted otherwise than
        #: ``mpc-geometric`` would have
        self.decisions = 0
        self.trusted = 0
        self.changed = 0

    def reset(self, env: ForecastView) -> None:
        """Forget the score and the pending requests: a new episode, maybe a new channel."""
        super().reset(env)
        assert isinstance(env, SplitComputingEnv)  # a benchmark rule: it runs in the simulator
        model = env.link_quality_model
        self.report_delay_s = math.inf if model is None else model.delay_s
        self.score = 0.0
        self._scored_start = -math.inf
        self._pending.clear()
        self._truth.reset(env)
        self._seen_transfer_end = env.knowledge.last_transfer_end
        self._previous_start = -math.inf

    def action_values(self, env: ForecastView) -> tuple[np.ndarray, np.ndarray]:
        """The forecast rule's values while its score is positive, else ``mpc-geometric``'s."""
        assert isinstance(env, SplitComputingEnv)  # a benchmark rule: it runs in the simulator
        now = env.request_start_s
        knowledge = env.knowledge
        if knowledge.last_transfer_end != self._seen_transfer_end:
            # the previous request's transfer: its own throughput scores it, if it is pending
            self._seen_transfer_end = knowledge.last_transfer_end
            if (
                self.scoring == "measured"
                and self._pending
                and self._pending[-1][0] == self._previous_start
            ):
                self._score_one(
                    self._pending.pop(), math.log(max(knowledge.throughput_estimate_bps, 1.0))
                )
        self._previous_start = now
        report = knowledge.link_quality_bps
        if report is not None:
            self._score(math.log(max(report, 1.0)), now)
        geometric, features = forecast_features(env)
        offsets = self.offsets(features)
        grid = np.concatenate([offsets, [0.0], LOW_OFFSETS])
        valued = [self.values_at(env, math.exp(geometric + float(offset))) for offset in grid]
        values = np.array([value for _, value in valued])
        forecast_values = values[: len(offsets)].mean(axis=0)
        geometric_values = values[len(offsets)]
        forecast_best, geometric_best = np.argmax(forecast_values), np.argmax(geometric_values)
        if forecast_best != geometric_best:
            order = np.argsort(grid)
            forecast_row, geometric_row = (
                values[order, forecast_best],
                values[order, geometric_best],
            )
            if self.scoring == "clairvoyant":
                _, truth = clairvoyant_values(env, self._truth, self.horizon, "mean")
                forecast_row = np.full(len(grid), truth[forecast_best])
                geometric_row = np.full(len(grid), truth[geometric_best])
            self._pending.append((now, geometric + grid[order], forecast_row, geometric_row))
        self.decisions += 1
        if self.score > 0.0:
            self.trusted += 1
            self.changed += int(forecast_best != geometric_best)
            return valued[0][0], forecast_values
        return valued[0][0], geometric_values

    def _score(self, log_rate: float, now: float) -> None:
        """Score every pending request that the report of ``now`` describes, at its rate."""
        described = now - self.report_delay_s
        while self._pending and self._pending[0][0] <= described:
            self._score_one(self._pending.popleft(), log_rate)

    def _score_one(
        self, pending: tuple[float, np.ndarray, np.ndarray, np.ndarray], log_rate: float
    ) -> None:
        """Add one request's lead at ``log_rate`` to the score, decayed since the last one."""
        start, logs, forecast_row, geometric_row = pending
        lead = float(np.interp(log_rate, logs, forecast_row)) - float(
            np.interp(log_rate, logs, geometric_row)
        )
        decay = math.exp(-max(start - self._scored_start, 0.0) / self.memory_s)
        self.score = self.score * decay + lead
        self._scored_start = max(start, self._scored_start)


class _Recorder(GeometricMPCPolicy):
    """``mpc-geometric`` that records each request's features and coming throughput."""

    def __init__(self, payload_bytes: int) -> None:
        super().__init__()
        self.payload_bytes = payload_bytes
        self.rows: list[np.ndarray] = []
        self.targets: list[float] = []

    def action_values(self, env: ForecastView) -> tuple[np.ndarray, np.ndarray]:
        assert isinstance(env, SplitComputingEnv)  # the simulator's channel is the target
        geometric, features = forecast_features(env)
        start = env.request_start_s
        seconds = env.channel.transfer_time(self.payload_bytes, start)
        self.rows.append(features)
        self.targets.append(math.log(max(8.0 * self.payload_bytes / seconds, 1.0)) - geometric)
        return super().action_values(env)


def collect(
    scenario: Scenario, channel: str, seeds: Sequence[int], payload_bytes: int
) -> np.ndarray:
    """``(n, N_FEATURES + 1)``: features and target of every request of one episode per reset
    seed of ``channel``, ``mpc-geometric`` acting."""
    recorder = _Recorder(payload_bytes)
    env = SplitComputingEnv(dataclasses.replace(scenario, channel=channel))
    run_episodes(recorder, env, seeds)
    return np.column_stack([np.array(recorder.rows), np.array(recorder.targets)]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SwitchSettings:
    """The settings of :class:`SwitchedQuantileMPCPolicy` a run evaluates it with."""

    memory_s: float = DEFAULT_SWITCH_MEMORY_S
    score: str = "measured"


#: the forecast rules a run can evaluate: flag value to policy name, and the prefix of its columns
FORECAST_RULES = {
    "forecast": (QuantileMPCPolicy.name, ""),
    "gated": (GatedQuantileMPCPolicy.name, "gated_"),
    "switched": (SwitchedQuantileMPCPolicy.name, "switched_"),
}


def _rule(
    policy: str,
    state: dict[str, Any] | None,
    gate: ForecastGate | None,
    switch: SwitchSettings = SwitchSettings(),
) -> Policy:
    """A rule by name, or a forecast rule of a fitted state: gated where ``gate`` is given,
    switched with ``switch`` where ``policy`` names it."""
    if state is None:
        return make_baseline(policy)
    forecast = LinkForecast.from_state_dict(state)
    if policy == SwitchedQuantileMPCPolicy.name:
        return SwitchedQuantileMPCPolicy(forecast, switch.memory_s, switch.score)
    if gate is None:
        return QuantileMPCPolicy(forecast)
    return GatedQuantileMPCPolicy(forecast, gate)


def _evaluate(
    scenario: Scenario,
    channel: str,
    policy: str,
    seeds: range,
    state: dict[str, Any] | None = None,
    gate: ForecastGate | None = None,
    switch: SwitchSettings = SwitchSettings(),
) -> tuple[np.ndarray, float, float]:
    """The mean reward per request of every episode of one policy on one channel, the fraction of
    its requests that it offloaded, and the fraction that the forecast decided: trusted by the
    gate, or acted on by the switch where its action differed from ``mpc-geometric``'s (``nan``
    for the other rules)."""
    torch.set_num_threads(1)
    rule = _rule(policy, state, gate, switch)
    env = SplitComputingEnv(dataclasses.replace(scenario, channel=channel))
    rollout = run_episodes(rule, env, seeds)
    trusted = math.nan
    if isinstance(rule, GatedQuantileMPCPolicy):
        trusted = rule.trusted / rule.decisions
    elif isinstance(rule, SwitchedQuantileMPCPolicy):
        trusted = rule.changed / rule.decisions
    return (
        np.asarray(rollout.reward.mean(axis=1)),
        float((rollout.payload_bytes > 0).mean()),
        trusted,
    )


def candidate_gates(forecast: QuantileForecast, features: np.ndarray) -> dict[str, ForecastGate]:
    """The gates the benchmark chooses among: never trusted (``mpc-geometric``), and trusted
    inside the training features' range up to each of ``SPREAD_PERCENTILES`` of the forecast's
    spread on the training data."""
    with torch.no_grad():
        quantiles = forecast(torch.from_numpy(features)).numpy()
    spreads = quantiles[:, -1] - quantiles[:, 0]
    never = ForecastGate.from_training(features, -math.inf)
    gates = {"never": never}
    for percentile in SPREAD_PERCENTILES:
        width = float(np.percentile(spreads, percentile))
        gates[f"spread<=p{percentile:g}"] = dataclasses.replace(never, max_spread=width)
    return gates


#: what one evaluation gives: rewards per episode, offload fraction, the forecast's fraction
Outcome = tuple[np.ndarray, float, float]


class _Runner:
    """Runs evaluation tasks, in processes or in this one, with a progress line per task."""

    def __init__(
        self,
        scenario: Scenario,
        state: dict[str, Any],
        jobs: int,
        started: float,
        switch: SwitchSettings = SwitchSettings(),
    ) -> None:
        self.scenario = scenario
        self.state = state
        self.jobs = jobs
        self.started = started
        self.switch = switch

    def __call__(
        self,
        tasks: dict[tuple[str, str], tuple[str, str, range, ForecastGate | None]],
        stage: str,
    ) -> dict[tuple[str, str], Outcome]:
        """:param tasks: key to ``(channel, policy, seeds, gate)``"""

        def arguments(channel: str, policy: str, seeds: range, gate: ForecastGate | None) -> Any:
            state = None if policy in RULES else self.state
            return self.scenario, channel, policy, seeds, state, gate, self.switch

        results: dict[tuple[str, str], Outcome] = {}

        def done(key: tuple[str, str]) -> None:
            seconds = time.perf_counter() - self.started
            print(
                f"{stage} [{len(results)}/{len(tasks)}] {key[1]} on {key[0]} ({seconds:.0f} s)",
                flush=True,
            )

        if self.jobs == 1:
            for key, task in tasks.items():
                results[key] = _evaluate(*arguments(*task))
                done(key)
            return results
        with ProcessPoolExecutor(self.jobs) as pool:
            futures = {
                pool.submit(_evaluate, *arguments(*task)): key for key, task in tasks.items()
            }
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                done(futures[future])
        return results


def _row(condition: str, outcomes: dict[str, Outcome], rules: Sequence[str]) -> dict[str, Any]:
    """One condition's table row: the paired gains of the forecast rules ``rules`` (keys of
    ``FORECAST_RULES``) over the best rule."""
    rewards = {policy: outcome[0] for policy, outcome in outcomes.items()}
    best = max(RULES, key=lambda rule: float(rewards[rule].mean()))
    row: dict[str, Any] = {
        "condition": condition,
        "best_rule": best,
        "best_rule_reward": float(rewards[best].mean()),
    }
    for rule in rules:
        policy, prefix = FORECAST_RULES[rule]
        own = rewards[policy]
        gain, half = t_interval(own - rewards[best])
        over, over_half = t_interval(own - rewards["mpc-geometric"])
        row |= {
            f"{prefix}reward": float(own.mean()),
            f"{prefix}gain": gain,
            f"{prefix}gain_ci95": half,
            f"{prefix}gain_over_mpc_geometric": over,
            f"{prefix}gain_over_mpc_geometric_ci95": over_half,
        }
        if rule == "gated":
            row["trusted_fraction"] = outcomes[policy][2]
        elif rule == "switched":
            row["switched_changed_fraction"] = outcomes[policy][2]
    row["offload_fraction"] = {policy: outcome[1] for policy, outcome in outcomes.items()}
    return row


def conditions(names: Sequence[str] | None, traces: Path) -> dict[str, str]:
    """Condition name to channel: the synthetic channels and every trace of ``traces`` by
    default; ``trace:PATH`` entries must exist."""
    if names is None:
        found = sorted(traces.glob("*")) if traces.is_dir() else []
        files = [path for path in found if path.is_file() and path.suffix != ".md"]
        if not files:
            print(f"no traces in {traces}: the trace conditions are skipped")
        names = ["markov", "fading", "gilbert-elliott", *(f"trace:{path}" for path in files)]
    channels = {}
    for name in names:
        if name.startswith("trace:"):
            path = Path(name[len("trace:") :])
            if not path.is_file():
                raise SystemExit(f"bench_link_forecast: trace file {path} not found")
            channels[f"trace:{path.name}"] = f"trace:{path}"
        else:
            channels[name] = name
    return channels


@dataclasses.dataclass(frozen=True)
class _GateChoice:
    """The candidate gates, their mean validation reward, and the chosen one's name."""

    gates: dict[str, ForecastGate]
    validation: dict[str, float]
    chosen: str

    def record(self) -> dict[str, Any]:
        """The choice as the results file records it."""
        return {
            "chosen": self.chosen,
            "max_spread": self.gates[self.chosen].max_spread,
            "validation_reward": self.validation,
        }


def _choose_gate(
    run: _Runner, forecast: QuantileForecast, features: np.ndarray, args: argparse.Namespace
) -> _GateChoice:
    """The gate of the highest mean reward on the validation episodes of the training channels."""
    gates = candidate_gates(forecast, features)
    validation_seeds = range(VALIDATION_SEED, VALIDATION_SEED + args.validation_episodes)
    validated = run(
        {
            (channel, name): (channel, GatedQuantileMPCPolicy.name, validation_seeds, gate)
            for channel in args.train_channels
            for name, gate in gates.items()
        },
        "choosing the gate",
    )
    validation = {
        name: float(np.mean([validated[channel, name][0] for channel in args.train_channels]))
        for name in gates
    }
    chosen = max(gates, key=validation.__getitem__)
    rewards = ", ".join(f"{name} {reward:.4f}" for name, reward in validation.items())
    print(f"gate chosen on the training channels: {chosen} ({rewards})", flush=True)
    return _GateChoice(gates, validation, chosen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="default-timeout")
    parser.add_argument("--train-channels", nargs="+", default=list(TRAIN_CHANNELS))
    parser.add_argument("--train-episodes", type=int, default=20)
    parser.add_argument("--payload-bytes", type=int, default=DEFAULT_PAYLOAD_BYTES)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="training seed: the fit's, and the training episodes' (reset seeds from seed x "
        "--train-episodes)",
    )
    parser.add_argument(
        "--validation-episodes",
        type=int,
        default=10,
        help="episodes per training channel that choose the gate",
    )
    parser.add_argument(
        "--forecast-rules",
        nargs="+",
        choices=list(FORECAST_RULES),
        default=list(FORECAST_RULES),
        help="forecast rules to evaluate (the gate is chosen only when 'gated' is among them)",
    )
    parser.add_argument(
        "--switch-memory-s",
        type=float,
        default=DEFAULT_SWITCH_MEMORY_S,
        help="time constant of the switched rule's score, in seconds",
    )
    parser.add_argument(
        "--switch-score",
        choices=SWITCH_SCORES,
        default="measured",
        help="how the switch scores a request: at its own transfer's throughput where it "
        "offloaded, else the radio's later report (measured); at the report alone (report); at "
        "the true values (clairvoyant: not causal, a reference)",
    )
    parser.add_argument("--episodes", type=int, default=40, help="evaluation episodes")
    parser.add_argument("--conditions", nargs="+", help="channels or trace:PATH (default: all)")
    parser.add_argument("--traces", type=Path, default=TRACES_DIR)
    parser.add_argument("--horizon", type=int, help="requests per episode (default: scenario's)")
    parser.add_argument("--jobs", type=int, default=2, help="processes (1: in this process)")
    parser.add_argument(
        "--save-forecast",
        type=Path,
        help="also write the fitted forecast to this .npz file (splitrl's mpc-quantile ships one)",
    )
    args = parser.parse_args(argv)
    counts = (
        "train_episodes",
        "payload_bytes",
        "epochs",
        "validation_episodes",
        "episodes",
        "jobs",
    )
    for flag in counts:
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    if not (math.isfinite(args.switch_memory_s) and args.switch_memory_s > 0):
        parser.error("--switch-memory-s must be positive and finite")
    if args.horizon is not None and args.horizon < 1:
        parser.error("--horizon must be at least 1")
    if not (0 <= args.seed and (args.seed + 1) * args.train_episodes <= VALIDATION_SEED):
        parser.error(
            f"--seed must be at least 0, and its training episodes below reset seed "
            f"{VALIDATION_SEED} (the validation episodes')"
        )
    if args.save_forecast is not None:
        if args.save_forecast.suffix != ".npz" or args.save_forecast.is_dir():
            parser.error(f"--save-forecast must name a .npz file, got {args.save_forecast}")
        try:
            args.save_forecast.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            parser.error(f"--save-forecast: cannot create its folder ({error})")
    try:
        scenario = get_scenario(args.scenario)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    if args.horizon is not None:
        scenario = dataclasses.replace(scenario, horizon=args.horizon)
    unknown = sorted(
        {*args.train_channels, *(args.conditions or [])}
        - set(SCENARIO_CHANNELS)
        - {name for name in args.conditions or [] if name.startswith("trace:")}
    )
    if unknown:
        parser.error(f"unknown channels {unknown}; known: {', '.join(SCENARIO_CHANNELS)}")
    channels = conditions(args.conditions, args.traces)

    started = time.perf_counter()
    first = args.seed * args.train_episodes
    train_seeds = range(first, first + args.train_episodes)
    data = np.concatenate(
        [
            collect(scenario, channel, train_seeds, args.payload_bytes)
            for channel in args.train_channels
        ]
    )
    forecast = fit_forecast(data[:, :-1], data[:, -1], epochs=args.epochs, seed=args.seed)
    state = forecast.state_dict()
    if args.save_forecast is not None:
        LinkForecast.from_state_dict(state).save(args.save_forecast)
    print(
        f"forecast fitted on {len(data)} requests in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    switch = SwitchSettings(args.switch_memory_s, args.switch_score)
    run = _Runner(scenario, state, args.jobs, started, switch)
    rules = list(dict.fromkeys(args.forecast_rules))
    gate = _choose_gate(run, forecast, data[:, :-1], args) if "gated" in rules else None

    policies = (*(FORECAST_RULES[rule][0] for rule in rules), *RULES)
    seeds = range(EVAL_SEED, EVAL_SEED + args.episodes)
    results = run(
        {
            (condition, policy): (
                channels[condition],
                policy,
                seeds,
                (
                    gate.gates[gate.chosen]
                    if gate is not None and policy == GatedQuantileMPCPolicy.name
                    else None
                ),
            )
            for condition in channels
            for policy in policies
        },
        "evaluating",
    )

    rows = [
        _row(condition, {policy: results[condition, policy] for policy in policies}, rules)
        for condition in channels
    ]
    columns = [
        ("condition", "condition", ""),
        ("best_rule", "best causal rule", ""),
        ("best_rule_reward", "its reward", ".4f"),
    ]
    for rule in rules:
        prefix = FORECAST_RULES[rule][1]
        columns += [(f"{prefix}gain", f"{rule}: gain", "+.4f"), (f"{prefix}gain_ci95", "±", ".4f")]
        if rule == "gated":
            columns.append(("trusted_fraction", "trusted", ".3f"))
        elif rule == "switched":
            columns.append(("switched_changed_fraction", "changed", ".3f"))
    print_table(rows, columns)
    settings = {
        key: str(value) if isinstance(value, Path) else value
        for key, value in vars(args).items()
        if key not in ("traces", "conditions")
    }
    path = write_results(
        "link_forecast",
        {
            "settings": {
                **settings,
                "quantiles": list(QUANTILES),
                "rules": list(RULES),
                "feature_coverage": FEATURE_COVERAGE,
                "validation_seed": VALIDATION_SEED,
            },
            "train_requests": len(data),
            **({} if gate is None else {"gate": gate.record()}),
            "seconds": time.perf_counter() - started,
            "conditions": rows,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
