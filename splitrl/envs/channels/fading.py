"""Block-fading radio channel: path loss, shadowing, Rayleigh/Rician fading, mobility, Shannon rate."""

from __future__ import annotations

import math

import numpy as np

from splitrl.envs.channels.base import PiecewiseConstantChannel
from splitrl.envs.traces import MAX_RATE_BPS, MIN_SEGMENT_S

SPEED_OF_LIGHT_MPS = 299_792_458.0
THERMAL_NOISE_DBM_PER_HZ = -174.0
# 64-QAM with code rate 948/1024: the highest CQI of 3GPP TS 36.213, Table 7.2.3-1.
LTE_MAX_SPECTRAL_EFFICIENCY = 5.5547


def umi_nlos_reference_loss_db(carrier_ghz: float) -> float:
    """Path loss at 1 m of the 3GPP TR 38.901 UMi-Street Canyon NLOS model,
    ``PL = 22.4 + 35.3 log10(d / 1 m) + 21.3 log10(f_c / 1 GHz)`` (Table 7.4.1-1).

    :param carrier_ghz: carrier frequency in GHz
    :return: the distance-independent part of the path loss in dB
    """
    return 22.4 + 21.3 * math.log10(carrier_ghz)


class BlockFadingChannel(PiecewiseConstantChannel):
    """Uplink of a moving device: large-scale path loss and shadowing, small-scale block fading,
    and a Shannon-type rate with link-adaptation limits.

    Per coherence block ``k`` of length ``T_c`` the capacity is constant::

        PL(d)   = PL_0 + 10 n log10(d / 1 m)                      [dB]
        N       = -174 dBm/Hz + 10 log10(B) + NF                  [dBm]
        SNR_k   = 10^((P_tx - PL(d_k) - S_k - N) / 10) * g_k
        rate_k  = eta * B * min(log2(1 + SNR_k / Gamma), SE_max)   (0 if SNR_k < SNR_min)

    ``g_k`` is the power gain of Rayleigh fading (``rician_k = 0``, exponential with mean 1) or
    Rician fading with factor ``K``, independent between blocks. ``S_k`` is log-normal shadowing
    (standard deviation ``shadowing_std_db``), correlated over distance with the Gudmundson model
    ``S_k = rho S_(k-1) + sqrt(1 - rho^2) sigma z``, ``rho = exp(-|d_k - d_(k-1)| / d_corr)``.
    The coherence time is ``T_c = 0.423 / f_D`` with Doppler ``f_D = v f_c / c`` unless
    ``coherence_time_s`` is given.

    Mobility: the distance to the base station changes radially at a speed drawn uniformly from
    ``speed_range_mps`` for legs of exponential length (mean ``mean_leg_s``), in a random
    direction, reflecting at ``distance_range_m``; each realization starts at a uniform distance.

    Defaults (sources in ``docs/channels.md``): 3.5 GHz carrier, 20 MHz uplink, 23 dBm UE power
    (3GPP power class 3), 5 dB base-station noise figure, UMi-Street Canyon NLOS path loss
    (exponent 3.53) with 7.82 dB shadowing decorrelating over 13 m (TR 38.901), Rayleigh fading,
    pedestrian speeds 0.5-1.5 m/s, distances 35-400 m. That spans about 1 to 60 Mbit/s of mean
    rate over positions, with outages (SNR below -15 dB) about 8 % of the time.

    :param bandwidth_mhz: uplink bandwidth B in MHz
    :param carrier_ghz: carrier frequency f_c in GHz
    :param tx_power_dbm: device transmit power P_tx in dBm
    :param noise_figure_db: receiver noise figure NF in dB
    :param noise_psd_dbm_hz: thermal noise density in dBm/Hz
    :param path_loss_exponent: n
    :param reference_loss_db: PL_0, path loss at 1 m in dB; ``None`` uses the UMi NLOS intercept
        at ``carrier_ghz`` (:func:`umi_nlos_reference_loss_db`)
    :param shadowing_std_db: sigma of the shadowing in dB (0 disables it)
    :param shadowing_decorrelation_m: d_corr in metres
    :param rician_k: Rician K factor (linear; 0 is Rayleigh)
    :param distance_range_m: (min, max) distance to the base station in metres
    :param speed_range_mps: (min, max) radial speed in m/s
    :param mean_leg_s: mean duration of a constant-velocity leg in seconds
    :param coherence_time_s: block length T_c in seconds; ``None`` derives it from the Doppler
        spread of each leg's speed (then the minimum speed must be positive)
    :param bandwidth_efficiency: eta, the share of B left after overheads
    :param snr_gap_db: Gamma in dB, the distance of practical coding from the Shannon bound
    :param max_spectral_efficiency: SE_max in bit/s/Hz, the highest modulation and coding rate
    :param min_snr_db: SNR_min in dB, below which the link carries nothing (outage)
    :param kwargs: :class:`PiecewiseConstantChannel` options
    """

    _BLOCK = 256

    def __init__(
        self,
        bandwidth_mhz: float = 20.0,
        carrier_ghz: float = 3.5,
        tx_power_dbm: float = 23.0,
        noise_figure_db: float = 5.0,
        noise_psd_dbm_hz: float = THERMAL_NOISE_DBM_PER_HZ,
        path_loss_exponent: float = 3.53,
        reference_loss_db: float | None = None,
        shadowing_std_db: float = 7.82,
        shadowing_decorrelation_m: float = 13.0,
        rician_k: float = 0.0,
        distance_range_m: tuple[float, float] = (35.0, 400.0),
        speed_range_mps: tuple[float, float] = (0.5, 1.5),
        mean_leg_s: float = 20.0,
        coherence_time_s: float | None = None,
        bandwidth_efficiency: float = 0.6,
        snr_gap_db: float = 2.0,
        max_spectral_efficiency: float = LTE_MAX_SPECTRAL_EFFICIENCY,
        min_snr_db: float = -15.0,
        **kwargs: float,
    ) -> None:
        super().__init__(**kwargs)
        positive = {
            "bandwidth_mhz": bandwidth_mhz,
            "carrier_ghz": carrier_ghz,
            "path_loss_exponent": path_loss_exponent,
            "shadowing_decorrelation_m": shadowing_decorrelation_m,
            "mean_leg_s": mean_leg_s,
            "bandwidth_efficiency": bandwidth_efficiency,
            "max_spectral_efficiency": max_spectral_efficiency,
        }
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be positive and finite, got {value}")
        if not bandwidth_efficiency <= 1.0:
            raise ValueError(f"bandwidth_efficiency must be at most 1, got {bandwidth_efficiency}")
        if not (shadowing_std_db >= 0.0 and rician_k >= 0.0):
            raise ValueError("shadowing_std_db and rician_k must be non-negative")
        d_min, d_max = (float(d) for d in distance_range_m)
        if not 0.0 < d_min <= d_max < math.inf:
            raise ValueError(
                f"distance_range_m must satisfy 0 < min <= max, got {distance_range_m}"
            )
        v_min, v_max = (float(v) for v in speed_range_mps)
        if not 0.0 <= v_min <= v_max < math.inf:
            raise ValueError(f"speed_range_mps must satisfy 0 <= min <= max, got {speed_range_mps}")
        if coherence_time_s is None:
            if v_min <= 0.0:
                raise ValueError(
                    "speed_range_mps must have a positive minimum when coherence_time_s is None "
                    "(a static device has no Doppler spread); give coherence_time_s"
                )
        elif not (math.isfinite(coherence_time_s) and coherence_time_s > 0.0):
            raise ValueError(f"coherence_time_s must be positive, got {coherence_time_s}")

        self.bandwidth_mhz = float(bandwidth_mhz)
        self.carrier_ghz = float(carrier_ghz)
        self.tx_power_dbm = float(tx_power_dbm)
        self.noise_figure_db = float(noise_figure_db)
        self.noise_psd_dbm_hz = float(noise_psd_dbm_hz)
        self.path_loss_exponent = float(path_loss_exponent)
        self.reference_loss_db = (
            umi_nlos_reference_loss_db(carrier_ghz)
            if reference_loss_db is None
            else float(reference_loss_db)
        )
        self.shadowing_std_db = float(shadowing_std_db)
        self.shadowing_decorrelation_m = float(shadowing_decorrelation_m)
        self.rician_k = float(rician_k)
        self.distance_range_m = (d_min, d_max)
        self.speed_range_mps = (v_min, v_max)
        self.mean_leg_s = float(mean_leg_s)
        self.coherence_time_s = coherence_time_s
        self.bandwidth_efficiency = float(bandwidth_efficiency)
        self.snr_gap_db = float(snr_gap_db)
        self.max_spectral_efficiency = float(max_spectral_efficiency)
        self.min_snr_db = float(min_snr_db)

        noise_dbm = self.noise_psd_dbm_hz + 10.0 * math.log10(self.bandwidth_mhz * 1e6)
        noise_dbm += self.noise_figure_db
        # Mean SNR in dB at distance d is _snr_at_1m_db - 10 n log10(d) - S.
        self._snr_at_1m_db = self.tx_power_dbm - self.reference_loss_db - noise_dbm
        # Distance travelled per Doppler coherence time, 0.423 wavelengths, independent of speed.
        self._doppler_coherence_m = 0.423 * SPEED_OF_LIGHT_MPS / (self.carrier_ghz * 1e9)
        shortest_block_s = (
            self._doppler_coherence_m / v_max if coherence_time_s is None else coherence_time_s
        )
        if shortest_block_s < MIN_SEGMENT_S:
            raise ValueError(
                f"fading blocks of {shortest_block_s:g} s are shorter than the "
                f"{MIN_SEGMENT_S:g} s limit (coherence_time_s, or speed_range_mps and carrier_ghz)"
            )
        peak_bps = bandwidth_mhz * 1e6 * bandwidth_efficiency * max_spectral_efficiency
        if peak_bps > MAX_RATE_BPS:
            raise ValueError(
                f"a peak rate of {peak_bps:g} bit/s is above the limit of {MAX_RATE_BPS:g} "
                "(bandwidth_mhz x bandwidth_efficiency x max_spectral_efficiency)"
            )
        self._distance = d_min
        self._shadow_db = 0.0
        self._direction = 1.0
        self._leg_left_s = 0.0
        self._block_s = 0.0
        self._step_m = 0.0
        self._shadow_rho = 1.0
        self._shadow_innovation = 0.0

    def mean_snr_db(self, distance_m: float) -> float:
        """Mean SNR without shadowing and fading at a distance.

        :param distance_m: distance to the base station in metres
        :return: SNR in dB
        """
        return self._snr_at_1m_db - 10.0 * self.path_loss_exponent * math.log10(distance_m)

    def _start(self, rng: np.random.Generator) -> None:
        d_min, d_max = self.distance_range_m
        self._distance = float(rng.uniform(d_min, d_max))
        self._shadow_db = float(rng.normal(0.0, self.shadowing_std_db))
        self._new_leg(rng)

    def _new_leg(self, rng: np.random.Generator) -> None:
        speed = float(rng.uniform(*self.speed_range_mps))
        self._direction = 1.0 if rng.random() < 0.5 else -1.0
        self._leg_left_s = float(rng.exponential(self.mean_leg_s))
        if self.coherence_time_s is None:
            self._block_s = self._doppler_coherence_m / speed
        else:
            self._block_s = self.coherence_time_s
        self._step_m = speed * self._block_s
        self._shadow_rho = math.exp(-self._step_m / self.shadowing_decorrelation_m)
        self._shadow_innovation = self.shadowing_std_db * math.sqrt(1.0 - self._shadow_rho**2)

    def _generate_segments(self, rng: np.random.Generator) -> tuple[list[float], list[float]]:
        d_min, d_max = self.distance_range_m
        durations: list[float] = []
        distances: list[float] = []
        shadows: list[float] = []
        distance = self._distance
        shadow = self._shadow_db
        for z in rng.standard_normal(self._BLOCK).tolist():
            if self._leg_left_s <= 0.0:
                self._new_leg(rng)
            distance += self._direction * self._step_m
            if distance > d_max or distance < d_min:
                self._direction = -self._direction
                distance = min(
                    max(2.0 * (d_max if distance > d_max else d_min) - distance, d_min), d_max
                )
            shadow = self._shadow_rho * shadow + self._shadow_innovation * z
            self._leg_left_s -= self._block_s
            durations.append(self._block_s)
            distances.append(distance)
            shadows.append(shadow)
        self._distance = distance
        self._shadow_db = shadow

        snr_db = (
            self._snr_at_1m_db
            - 10.0 * self.path_loss_exponent * np.log10(distances)
            - np.asarray(shadows)
            + 10.0 * np.log10(self._fading_gains(rng))
        )
        efficiency = np.minimum(
            np.log2(1.0 + 10.0 ** ((snr_db - self.snr_gap_db) / 10.0)),
            self.max_spectral_efficiency,
        )
        rates = self.bandwidth_efficiency * self.bandwidth_mhz * 1e6 * efficiency
        rates[snr_db < self.min_snr_db] = 0.0
        return durations, rates.tolist()

    def _fading_gains(self, rng: np.random.Generator) -> np.ndarray:
        """Power gains ``|h|^2`` with mean 1 of one block of Rayleigh or Rician fading."""
        if self.rician_k == 0.0:
            return rng.exponential(1.0, self._BLOCK)
        k = self.rician_k
        scattered = rng.standard_normal((2, self._BLOCK)) * math.sqrt(0.5 / (k + 1.0))
        return (math.sqrt(k / (k + 1.0)) + scattered[0]) ** 2 + scattered[1] ** 2

    def __repr__(self) -> str:
        return (
            f"BlockFadingChannel(bandwidth_mhz={self.bandwidth_mhz:g}, "
            f"carrier_ghz={self.carrier_ghz:g}, distance_range_m={self.distance_range_m}, "
            f"speed_range_mps={self.speed_range_mps})"
        )
