"""RobustMPC and MPC for split computing: a throughput forecast (cautious or not), the backlog priced.

``mpc-geometric`` is MPC with the geometric mean of the last throughputs as its forecast.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from splitrl.agents.baselines.backlog import (
    DEFAULT_BACKLOG_HORIZON,
    backlog_cost,
    check_horizon,
)
from splitrl.agents.baselines.spread import DEFAULT_SPREAD_DRAWS, LatencySpread
from splitrl.envs.forecast import ForecastView
from splitrl.envs.split_computing import SplitComputingEnv

#: past prediction errors the discount looks at (RobustMPC's window of 5 chunks)
DEFAULT_ERROR_WINDOW = 5


class RobustMPCPolicy:
    """A RobustMPC-style controller: a discounted throughput forecast, and the backlog priced.

    Yin, Jindal, Sekar, Sinopoli, "A Control-Theoretic Approach for Dynamic Adaptive Video Streaming
    over HTTP", SIGCOMM 2015. RobustMPC predicts the throughput by the harmonic mean of the last
    measurements, divides it by ``1 + max error`` (the largest relative error of its past
    predictions, ``|predicted - measured| / measured``, over the last ``error_window`` transfers),
    and optimizes the reward of the next decisions under that prediction.

    Here the measurements are the throughputs of the device's last transfers
    (``env.knowledge.throughputs``, the link's nominal rate before any) and, when the env observes
    it, the radio's link-rate report (``env.knowledge.link_quality_bps``). The error of a prediction
    is scored on the transfer its decision started. The action is the argmax of the predicted reward
    (``env.predict_actions`` at the discounted throughput, averaged over the spread of the RTT and
    the server's queueing: :class:`~splitrl.agents.baselines.spread.LatencySpread`) minus the cost
    its backlog puts on the next requests (:func:`~splitrl.agents.baselines.backlog.backlog_cost`).
    It is causal: it reads only the device's knowledge and the models of its RTT and of the
    server's service, never their draws.

    :param error_window: past transfers whose prediction error discounts the forecast
    :param horizon: next requests the backlog cost counts
    :param spread_draws: draws of the RTT and queueing spread per prediction
    """

    name = "robust-mpc"
    #: whether the forecast is divided by ``1 + max error`` (``False``: :class:`MPCPolicy`)
    robust = True
    causal = True
    knows = (
        "the device's own estimates (its measured throughputs, the link-rate report when observed, "
        "the last reported server load, its backlog, its RTT's spread), priced with the backlog"
    )

    def __init__(
        self,
        error_window: int = DEFAULT_ERROR_WINDOW,
        horizon: int = DEFAULT_BACKLOG_HORIZON,
        spread_draws: int = DEFAULT_SPREAD_DRAWS,
    ) -> None:
        if error_window < 1:
            raise ValueError(f"error_window must be at least 1, got {error_window}")
        self.error_window = error_window
        self.horizon = check_horizon(horizon)
        self.spread = LatencySpread(spread_draws)
        self.errors: deque[float] = deque(maxlen=error_window)
        #: the harmonic mean of the last decision, before the discount
        self.predicted_bps = math.nan
        #: the discounted forecast the last decision used
        self.robust_bps = math.nan
        self._seen_transfer_end = -math.inf

    def reset(self, env: ForecastView) -> None:
        """Forget past errors and predictions: a new episode."""
        self.errors.clear()
        self.predicted_bps = math.nan
        self.robust_bps = math.nan
        self._seen_transfer_end = env.knowledge.last_transfer_end
        self.spread.reset(env)

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """The action of highest predicted reward minus backlog cost, at the robust throughput."""
        actions, values = self.action_values(env)
        return actions[int(np.argmax(values))].copy()

    def action_values(self, env: ForecastView) -> tuple[np.ndarray, np.ndarray]:
        """The value of every canonical action for the current request, as :meth:`act` ranks them.

        Call it once per request: it scores the previous prediction and makes the next one.
        ``env`` is the env, or on a real device its :class:`~splitrl.envs.forecast.DeviceForecast`.

        :return: the canonical actions ``(n, 3)`` and their predicted reward minus backlog cost
        """
        knowledge = env.knowledge
        if knowledge.last_transfer_end != self._seen_transfer_end:
            # The previous decision started a transfer: score the prediction it was made with.
            self._seen_transfer_end = knowledge.last_transfer_end
            measured = knowledge.throughput_estimate_bps
            if math.isfinite(self.predicted_bps):
                self.errors.append(abs(self.predicted_bps - measured) / measured)
        throughputs = [max(sample, 1.0) for sample in knowledge.throughputs]
        report = knowledge.link_quality_bps
        self.predicted_bps = self.forecast_bps(
            throughputs, None if report is None else max(report, 1.0)
        )
        discount = 1.0 + max(self.errors, default=0.0) if self.robust else 1.0
        self.robust_bps = self.predicted_bps / discount
        return self.values_at(env, self.robust_bps)

    def values_at(self, env: ForecastView, capacity_bps: float) -> tuple[np.ndarray, np.ndarray]:
        """The canonical actions and their value at ``capacity_bps``: the predicted reward, averaged
        over the RTT and queueing spread, minus the backlog cost."""
        predicted = env.predict_actions(capacity_bps)
        rewards = self.spread.expected_rewards(predicted, env)
        cost = backlog_cost(
            predicted,
            env.frame_interval_s,
            env.reward_spec,
            self.horizon,
            self.spread.offsets(env),
        )
        return predicted.actions, rewards - cost

    def forecast_bps(self, throughputs: list[float], report: float | None) -> float:
        """The throughput forecast from the last throughputs and the link-rate report (``None``
        when not observed), each at least 1 bit/s: their harmonic mean, before the discount."""
        samples = throughputs if report is None else [*throughputs, report]
        return len(samples) / sum(1.0 / sample for sample in samples)


class MPCPolicy(RobustMPCPolicy):
    """``robust-mpc`` without its discount: the harmonic mean of the last throughputs as it is.

    Yin et al. (SIGCOMM 2015) define both: MPC optimizes at the harmonic-mean forecast, RobustMPC at
    that forecast divided by ``1 + max error``. Everything else (the link-rate report among the
    samples, the latency spread, the backlog's price) is ``robust-mpc``'s. Where the link is steady
    enough that the errors of the last forecasts overstate the risk, the discount gives away
    offloads that would have paid: on the default scenario's Markov channel (10 episodes) MPC
    scored +0.018 ± 0.013 over ``robust-mpc``.
    """

    name = "mpc"
    robust = False
    knows = (
        "the device's own estimates (its measured throughputs, the link-rate report when observed, "
        "the last reported server load, its backlog, its RTT's spread), priced with the backlog; "
        "no discount"
    )


class GeometricMPCPolicy(MPCPolicy):
    """``mpc`` with the geometric mean of the last throughputs and the link-rate report.

    The harmonic mean is dominated by the slowest sample. Where the capacity moves from one
    coherence block to the next (the fading channel) or between a good and a bad state
    (Gilbert-Elliott), one slow sample among the last throughputs (four by default) keeps the
    harmonic forecast low until it leaves the history, and ``mpc`` keeps the device local when an
    offload would have paid. The geometric
    mean weighs every sample's order of magnitude alike. Everything else is ``mpc``'s. It is the
    more optimistic rule: where the link drops for seconds and no transfer timeout bounds an offload
    (the T-Mobile and Verizon traces of the default scenario), it offloads into the drops.

    :param error_window: as ``robust-mpc``'s (no discount is applied)
    :param horizon: next requests the backlog cost counts
    :param spread_draws: draws of the RTT and queueing spread per prediction
    :param report_weight: how many samples the link-rate report counts as in the mean (1: one
        among the throughputs, the rule as named; any other weight names the policy
        ``mpc-geometric-report<weight>``). On 40 episodes of ``default-timeout`` a weight
        of 2 was +0.0053 ± 0.0047 on the T-Mobile LTE trace and within noise elsewhere
        (``docs/sacd-experiments.md``, Where the room is real)
    """

    name = "mpc-geometric"
    knows = (
        "the device's own estimates (the geometric mean of its measured throughputs and the "
        "link-rate report, the last reported server load, its backlog, its RTT's spread), priced "
        "with the backlog; no discount"
    )

    def __init__(
        self,
        error_window: int = DEFAULT_ERROR_WINDOW,
        horizon: int = DEFAULT_BACKLOG_HORIZON,
        spread_draws: int = DEFAULT_SPREAD_DRAWS,
        report_weight: float = 1.0,
    ) -> None:
        if not (
            isinstance(report_weight, (int, float))
            and not isinstance(report_weight, bool)
            and math.isfinite(report_weight)
            and report_weight > 0
        ):
            raise ValueError(f"report_weight must be a positive number, got {report_weight!r}")
        super().__init__(error_window, horizon, spread_draws)
        self.report_weight = float(report_weight)
        if self.report_weight != 1.0:
            # another rule than the named one: tables and cell files must not mistake it for it
            self.name = f"{type(self).name}-report{self.report_weight:g}"

    def forecast_bps(self, throughputs: list[float], report: float | None) -> float:
        """The geometric mean of the last throughputs and the link-rate report (each at least
        1 bit/s), the report counted ``report_weight`` times."""
        logs = [math.log(sample) for sample in throughputs]
        weight = float(len(logs))
        if report is not None:
            logs.append(self.report_weight * math.log(report))
            weight += self.report_weight
        # fsum / count is statistics.geometric_mean's own mean of the logs, to the last bit
        return math.exp(math.fsum(logs) / weight)
