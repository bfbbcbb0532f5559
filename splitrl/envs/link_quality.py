"""Link quality: the uplink rate the device's radio reports without sending anything.

A radio measures its link all the time from the signals it receives: an LTE modem reports RSRP,
SINR and the CQI, a Wi-Fi chip the RSSI and the MCS (hence the PHY rate) it would use. Mapped to a
rate, such a report predicts the throughput the link achieves, with an error. LinkForecast (Yue et
al., "LinkForecast: Cellular Link Bandwidth Prediction in LTE Networks", IEEE Transactions on
Mobile Computing 17(7), 2018, doi:10.1109/TMC.2017.2756937) predicts LTE link bandwidth from such
lower-layer reports with an average error of 3.9 to 17.0 percent at a granularity of one second,
over the scenarios it measured. The model here takes the worst of that range, 17 percent, as its
default: a device decides in milliseconds, on one report, not on a one-second average of
specialised measurements. No error below the best of that range (3.9 percent) is accepted, so the
report never hands a policy the true capacity.

The report for request ``k``, decided at time ``t``, is

.. code-block:: text

    report_k = C(max(t - delay_s, 0)) * exp(X_k)
    X_0 = sigma * Z_0,   X_k = rho * X_{k-1} + sqrt(1 - rho^2) * sigma * Z_k,   Z_k ~ N(0, 1)
    rho = exp(-frame_interval_s / correlation_s)

where ``C`` is the true capacity and ``sigma`` is chosen so that the mean absolute relative error
``E|exp(X) - 1| = exp(sigma^2 / 2) * erf(sigma / sqrt(2))`` equals ``relative_error``. The error is
multiplicative (a link 10 times faster is misjudged by the same factor), log-normal, and correlated
over ``correlation_s`` (the granularity at which the published error was measured). It evolves per
request, not per decision time, so that its draws do not depend on the policy's actions (common
random numbers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: mean absolute relative error of the report: LinkForecast's worst scenario (17.0 %)
DEFAULT_RELATIVE_ERROR = 0.17
#: the smallest error accepted: LinkForecast's best scenario (3.9 %)
MIN_RELATIVE_ERROR = 0.039
#: age of a report: about one Wi-Fi beacon interval (100 TU = 102.4 ms), over which RSSI is sampled
DEFAULT_DELAY_S = 0.1
#: correlation time of the error: the one-second granularity of the published error
DEFAULT_CORRELATION_S = 1.0

#: noise draws per numpy call
_DRAW_BLOCK = 1024


def log_sigma(relative_error: float) -> float:
    """The ``sigma`` of a log-normal error ``exp(sigma Z)`` whose mean absolute relative error is
    ``relative_error``: the root of ``exp(sigma^2 / 2) erf(sigma / sqrt 2) = relative_error``.

    :param relative_error: ``E|exp(sigma Z) - 1|``, positive
    """
    if not (math.isfinite(relative_error) and relative_error > 0.0):
        raise ValueError(f"relative_error must be positive and finite, got {relative_error}")

    def error_of(sigma: float) -> float:
        return math.exp(0.5 * sigma * sigma) * math.erf(sigma / math.sqrt(2.0))

    low, high = 0.0, 1.0
    while error_of(high) < relative_error:
        low, high = high, 2.0 * high
    for _ in range(100):
        middle = 0.5 * (low + high)
        if error_of(middle) < relative_error:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


@dataclass(frozen=True)
class LinkQualityModel:
    """How the radio's link-rate report relates to the true uplink capacity (module docstring).

    :param relative_error: mean absolute relative error of the report, ``E|report / C - 1|``;
        at least :data:`MIN_RELATIVE_ERROR`
    :param delay_s: age of the report: it describes the capacity ``delay_s`` before the decision
    :param correlation_s: correlation time of the error in seconds (0: independent per request)
    """

    relative_error: float = DEFAULT_RELATIVE_ERROR
    delay_s: float = DEFAULT_DELAY_S
    correlation_s: float = DEFAULT_CORRELATION_S

    def __post_init__(self) -> None:
        if not (math.isfinite(self.relative_error) and self.relative_error >= MIN_RELATIVE_ERROR):
            raise ValueError(
                f"relative_error must be at least {MIN_RELATIVE_ERROR} (the best published "
                f"link-rate prediction; less would observe the true capacity), got "
                f"{self.relative_error}"
            )
        if not (math.isfinite(self.delay_s) and self.delay_s >= 0.0):
            raise ValueError(f"delay_s must be finite and non-negative, got {self.delay_s}")
        if not (math.isfinite(self.correlation_s) and self.correlation_s >= 0.0):
            raise ValueError(
                f"correlation_s must be finite and non-negative, got {self.correlation_s}"
            )

    @property
    def sigma(self) -> float:
        """Standard deviation of ``log(report / C)``."""
        return log_sigma(self.relative_error)

    def correlation(self, frame_interval_s: float) -> float:
        """Correlation of the errors of consecutive requests ``frame_interval_s`` apart."""
        if self.correlation_s == 0.0:
            return 0.0
        return math.exp(-frame_interval_s / self.correlation_s)

    def to_dict(self) -> dict[str, float]:
        """Plain-JSON form (``policy.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LinkQualityModel:
        """The inverse of :meth:`to_dict`."""
        return cls(
            relative_error=float(data["relative_error"]),
            delay_s=float(data["delay_s"]),
            correlation_s=float(data["correlation_s"]),
        )


class LinkQualityReport:
    """The reports of one realization: one per request, from the capacity and a seeded error.

    :param model: the relation between report and capacity
    :param frame_interval_s: time between requests (the error's step)
    :param seed: seed of the error's own generator (:meth:`reset` draws a new realization)
    """

    def __init__(self, model: LinkQualityModel, frame_interval_s: float, seed: int = 0) -> None:
        if not (math.isfinite(frame_interval_s) and frame_interval_s > 0.0):
            raise ValueError(f"frame_interval_s must be positive, got {frame_interval_s}")
        self.model = model
        self.delay_s = model.delay_s
        self._sigma = model.sigma
        self._rho = model.correlation(frame_interval_s)
        self._innovation = math.sqrt(1.0 - self._rho * self._rho) * self._sigma
        self.reset(seed)

    def reset(self, seed: int) -> None:
        """Start a new realization of the error, seeded with ``seed``."""
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)
        self._normals: list[float] = []
        self._log_error: float | None = None

    def report(self, capacity: Callable[[float], float], now_s: float) -> float:
        """The report for the next request, decided at ``now_s``.

        :param capacity: the true capacity in bit/s at a time in seconds (``channel.capacity``)
        :param now_s: the decision time, seconds since the start of the episode or run
        :return: the reported link rate in bit/s
        """
        if not self._normals:
            # Drawn in blocks: one numpy call per 1024 requests.
            self._normals = self._rng.standard_normal(_DRAW_BLOCK).tolist()
            self._normals.reverse()
        z = self._normals.pop()
        if self._log_error is None:
            self._log_error = self._sigma * z
        else:
            self._log_error = self._rho * self._log_error + self._innovation * z
        measured_at = now_s - self.delay_s
        return capacity(measured_at if measured_at > 0.0 else 0.0) * math.exp(self._log_error)
