"""A link forecast learned offline on synthetic channels, and ``mpc-quantile``, the rule that uses it.

``mpc-geometric`` forecasts the link as one point: the geometric mean of the device's last
throughputs and the radio's link-rate report. :class:`LinkForecast` forecasts it as a distribution:
from what the device knows about its link (:func:`forecast_features`), a small network gives the
quantiles :data:`QUANTILES` of the log ratio of the coming throughput (a transfer of about one
offload's payload, started now) to that geometric mean. :class:`QuantileMPCPolicy`
(``mpc-quantile``) is ``mpc-geometric`` whose value of every action is the mean of its values at
those quantiles, an expectation over the forecast instead of a value at one point.

The forecast is fitted by the pinball loss to requests of synthetic channels only
(``benchmarks/bench_link_forecast.py``, which also measures the rule; ``docs/evaluation.md``); no
trace is seen. The shipped forecast (:data:`SHIPPED_FORECAST`) was fitted by::

    python -m benchmarks.bench_link_forecast --seed 1 \\
        --train-channels markov fading gilbert-elliott randomized cellular randomized-cellular \\
        --save-forecast splitrl/agents/baselines/data/link_forecast.npz

(a rerun of that fit wrote the same bytes, SHA-256 ``d329423d…``; the record is in
``benchmarks/results/link_forecast/shipped-seed1/``).

It acts in numpy (no torch), so the device runtime computes the same forecast from the same
knowledge as the simulator: the rule is causal.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from splitrl.agents.baselines.backlog import DEFAULT_BACKLOG_HORIZON
from splitrl.agents.baselines.robust_mpc import DEFAULT_ERROR_WINDOW, GeometricMPCPolicy
from splitrl.agents.baselines.spread import DEFAULT_SPREAD_DRAWS
from splitrl.envs.forecast import ForecastView

#: quantile levels of the forecast; their mean value is a midpoint rule for the expectation
QUANTILES = (0.1, 0.3, 0.5, 0.7, 0.9)
#: device features per request (:func:`forecast_features`)
N_FEATURES = 12
#: the forecast ``mpc-quantile`` uses unless given another
SHIPPED_FORECAST = Path(__file__).parent / "data" / "link_forecast.npz"
#: the age feature of a device that has never sent anything
_NEVER_SENT_AGE = 8.0
#: the throughputs the features read (the default observation's history)
_HISTORY_LENGTH = 4


def forecast_features(env: ForecastView) -> tuple[float, np.ndarray]:
    """What the device knows about its link at the current request.

    :return: the log of ``mpc-geometric``'s forecast (the geometric mean of the last throughputs
        and the link-rate report, in bit/s), and ``N_FEATURES`` features: each throughput and the
        report relative to it (log ratios), the spread of those logs, the smallest and largest
        ratio, ``log(1 + age / 10 ms)`` of the newest throughput, two products of that age with
        the report's and the newest throughput's ratio, and the reported server load
    :raises ValueError: a device that keeps other than four throughputs (the forecast was fitted
        on four)
    """
    knowledge = env.knowledge
    if len(knowledge.throughputs) != _HISTORY_LENGTH:
        raise ValueError(
            f"the link forecast reads the last {_HISTORY_LENGTH} throughputs, the device keeps "
            f"{len(knowledge.throughputs)} (history_length must be {_HISTORY_LENGTH})"
        )
    throughputs = [math.log(max(sample, 1.0)) for sample in knowledge.throughputs]
    report = knowledge.link_quality_bps
    logs = throughputs if report is None else [*throughputs, math.log(max(report, 1.0))]
    geometric = math.fsum(logs) / len(logs)
    age = env.request_start_s - knowledge.last_transfer_end
    age_feature = math.log1p(age / 0.01) if math.isfinite(age) else _NEVER_SENT_AGE
    ratios = [log - geometric for log in throughputs]
    report_ratio = 0.0 if report is None else logs[-1] - geometric
    features = [
        *ratios,
        report_ratio,
        float(np.std(logs)),
        min(ratios),
        max(ratios),
        age_feature,
        age_feature * report_ratio,
        age_feature * ratios[0],
        knowledge.server_load,
    ]
    return geometric, np.array(features, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class LinkForecast:
    """Quantiles of the log ratio of the coming throughput to the geometric-mean forecast.

    A multilayer perceptron with tanh hidden layers on standardized features; its outputs are the
    first quantile and softplus increments, so the quantiles are monotone by construction.

    :param levels: the quantile levels, increasing
    :param center: the training features' mean, ``(N_FEATURES,)``
    :param scale: their spread, ``(N_FEATURES,)``
    :param weights: each layer's ``(out, in)`` weights
    :param biases: each layer's ``(out,)`` biases
    """

    levels: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        if not self.weights or len(self.biases) != len(self.weights):
            raise ValueError(
                f"a link forecast needs one bias per weight matrix, got {len(self.weights)} "
                f"weights and {len(self.biases)} biases"
            )
        if self.center.shape != (N_FEATURES,) or self.scale.shape != (N_FEATURES,):
            raise ValueError(
                f"a link forecast's center and scale need {N_FEATURES} entries, got shapes "
                f"{self.center.shape} and {self.scale.shape}"
            )
        inputs = N_FEATURES
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            if weight.ndim != 2 or weight.shape[1] != inputs or bias.shape != (weight.shape[0],):
                raise ValueError(
                    f"a link forecast's layer {index} has weights {weight.shape} and biases "
                    f"{bias.shape} after {inputs} inputs"
                )
            inputs = weight.shape[0]
        levels = self.levels
        if levels.shape != (inputs,) or not (
            np.all((levels > 0) & (levels < 1)) and np.all(np.diff(levels) > 0)
        ):
            raise ValueError(
                f"a link forecast's levels must be {inputs} increasing values in (0, 1), got "
                f"{levels.tolist()}"
            )
        arrays = (self.center, self.scale, *self.weights, *self.biases)
        if not all(np.all(np.isfinite(array)) for array in arrays) or np.any(self.scale <= 0):
            raise ValueError("a link forecast's parameters must be finite, its scale positive")

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> LinkForecast:
        """The forecast of a fitted torch module's state dict (``levels``, ``center``, ``scale``,
        and ``body.<i>.weight`` / ``body.<i>.bias`` of its linear layers, in order)."""

        def array(value: Any) -> np.ndarray:
            return np.asarray(
                value.detach().cpu().numpy() if hasattr(value, "detach") else value,
                dtype=np.float32,
            )

        layers = sorted({int(key.split(".")[1]) for key in state if key.startswith("body.")})
        return cls(
            levels=array(state["levels"]),
            center=array(state["center"]),
            scale=array(state["scale"]),
            weights=tuple(array(state[f"body.{i}.weight"]) for i in layers),
            biases=tuple(array(state[f"body.{i}.bias"]) for i in layers),
        )

    @classmethod
    def load(cls, path: str | Path) -> LinkForecast:
        """A forecast saved by :meth:`save`; ``ValueError`` naming the file if it is not one."""
        try:
            with np.load(path, allow_pickle=False) as data:
                n_layers = int(data["n_layers"])
                return cls(
                    levels=data["levels"].astype(np.float32),
                    center=data["center"].astype(np.float32),
                    scale=data["scale"].astype(np.float32),
                    weights=tuple(data[f"weight{i}"].astype(np.float32) for i in range(n_layers)),
                    biases=tuple(data[f"bias{i}"].astype(np.float32) for i in range(n_layers)),
                )
        except (
            OSError,
            EOFError,
            zipfile.BadZipFile,
            KeyError,
            ValueError,
            TypeError,
            AttributeError,
        ) as error:
            raise ValueError(f"{path}: not a link forecast ({error})") from error

    def save(self, path: str | Path) -> None:
        """Write the forecast to ``path`` (numpy ``.npz``)."""
        arrays: dict[str, np.ndarray] = {
            "n_layers": np.asarray(len(self.weights)),
            "levels": self.levels,
            "center": self.center,
            "scale": self.scale,
        }
        arrays.update({f"weight{i}": weight for i, weight in enumerate(self.weights)})
        arrays.update({f"bias{i}": bias for i, bias in enumerate(self.biases)})
        np.savez(path, allow_pickle=False, **arrays)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """The quantiles (log offsets from the geometric mean) of one request's features."""
        hidden = (np.asarray(features, dtype=np.float32) - self.center) / self.scale
        for weight, bias in zip(self.weights[:-1], self.biases[:-1], strict=True):
            hidden = np.tanh(weight @ hidden + bias)
        raw = self.weights[-1] @ hidden + self.biases[-1]
        steps = np.logaddexp(0.0, raw[1:])
        return np.concatenate([raw[:1], raw[0] + np.cumsum(steps)])


@cache
def shipped_forecast() -> LinkForecast:
    """The forecast shipped with splitrl (:data:`SHIPPED_FORECAST`), loaded once."""
    return LinkForecast.load(SHIPPED_FORECAST)


class QuantileMPCPolicy(GeometricMPCPolicy):
    """``mpc-geometric`` with the value of every action averaged over a learned link forecast.

    Each action's value (predicted reward over the RTT and queueing spread, minus the backlog's
    cost) is computed at the link rate of every quantile of the forecast (the geometric mean times
    ``exp`` of its offset) and averaged, each quantile weighing alike. Causal: the forecast reads
    only what the device knows (:func:`forecast_features`), on a device as in the simulator.

    :param offsets: maps :func:`forecast_features`'s features to log offsets from the geometric
        mean (default: the shipped :class:`LinkForecast`, loaded when first needed).
        ``lambda features: np.zeros(1)`` is ``mpc-geometric`` itself
    :param error_window: as ``mpc-geometric``'s (no discount is applied)
    :param horizon: next requests the backlog cost counts
    :param spread_draws: draws of the RTT and queueing spread per prediction
    """

    name = "mpc-quantile"
    #: it acts on a model fitted offline (left out of the default causal set: ``causal_baselines``)
    learned = True
    knows = (
        "the device's own estimates (its measured throughputs, the link-rate report, the age of "
        "its newest throughput, the last reported server load, its backlog, its RTT's spread) and "
        "a link forecast learned offline on synthetic channels, priced with the backlog"
    )

    def __init__(
        self,
        offsets: Callable[[np.ndarray], np.ndarray] | None = None,
        error_window: int = DEFAULT_ERROR_WINDOW,
        horizon: int = DEFAULT_BACKLOG_HORIZON,
        spread_draws: int = DEFAULT_SPREAD_DRAWS,
    ) -> None:
        super().__init__(error_window, horizon, spread_draws)
        self._offsets = offsets

    @property
    def offsets(self) -> Callable[[np.ndarray], np.ndarray]:
        """The forecast the values are averaged over (the shipped one unless given another)."""
        if self._offsets is None:
            self._offsets = shipped_forecast()
        return self._offsets

    def action_values(self, env: ForecastView) -> tuple[np.ndarray, np.ndarray]:
        """The mean over the forecast's quantiles of ``mpc-geometric``'s value of every action."""
        geometric, features = forecast_features(env)
        offsets = self.forecast_offsets(features)
        values = [self.values_at(env, math.exp(geometric + float(offset))) for offset in offsets]
        return values[0][0], np.mean([value for _, value in values], axis=0)

    def forecast_offsets(self, features: np.ndarray) -> np.ndarray:
        """The log offsets the values are averaged over: the forecast's quantiles."""
        return self.offsets(features)
