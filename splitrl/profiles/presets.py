"""Device and network presets: typed loaders with strict validation.

A device preset turns FLOPs into seconds and joules for one device class (or the edge server);
a network preset gives the round-trip time, the uplink capacity range and the radio energy of
one network type. The shipped presets live in ``splitrl/profiles/data/devices.yaml`` and
``networks.yaml``; ``docs/presets.md`` lists them with their sources and calibration arithmetic.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DEVICE_ROLES = ("device", "server")
BYTES_PER_FLOAT32 = 4


class PresetError(ValueError):
    """A preset file or preset is missing, malformed or names an unknown preset."""


@dataclass(frozen=True)
class CalibrationPoint:
    """One published whole-model latency that a device preset reproduces.

    :param model: the model and its size, as the source names it
    :param flops: its FLOPs (one multiply-add = 2 FLOPs)
    :param n_layers: its number of conv/fc layers
    :param latency_ms: the measured latency at batch 1
    :param source: where the measurement was published
    """

    model: str
    flops: float
    n_layers: int
    latency_ms: float
    source: str


@dataclass(frozen=True)
class DevicePreset:
    """Compute, power and codec figures of one device class or edge server.

    Compute time of a block is ``flops / (compute_gflops * 1e9) + n_layers *
    per_layer_overhead_ms / 1e3``. A ``measured`` preset (the ``host``) has no compute figures:
    its compute time comes from the latencies measured in the profile.

    :param name: preset name (the key in the data file)
    :param role: ``"device"`` or ``"server"``
    :param description: what hardware and runtime the figures describe
    :param compute_gflops: effective throughput in GFLOP/s; ``None`` when ``measured``
    :param per_layer_overhead_ms: fixed cost per layer (kernel launch, dispatch); ``None``
        when ``measured``
    :param compute_power_w: power drawn while computing
    :param idle_power_w: power drawn while waiting
    :param codec_mbps: quantize + run-length coding throughput in MB/s of float32 input
    :param radio_power_w: transmit power of this device's own radio; ``None`` means the
        network preset's figure applies
    :param measured: compute time comes from the profile's host latencies
    :param sources: citations for every figure
    :param calibration: the published latencies the compute figures reproduce
    """

    name: str
    role: str
    description: str
    compute_gflops: float | None
    per_layer_overhead_ms: float | None
    compute_power_w: float
    idle_power_w: float
    codec_mbps: float
    radio_power_w: float | None
    measured: bool
    sources: tuple[str, ...]
    calibration: tuple[CalibrationPoint, ...]

    def compute_time_s(self, flops: float, n_layers: int) -> float:
        """Time to run a block of ``flops`` FLOPs made of ``n_layers`` layers.

        :param flops: FLOPs of the block (one multiply-add = 2 FLOPs), >= 0
        :param n_layers: number of conv/fc layers in the block, >= 0
        :return: seconds
        :raises PresetError: for a ``measured`` preset, whose times come from the profile
        """
        if self.compute_gflops is None or self.per_layer_overhead_ms is None:
            raise PresetError(
                f"device preset '{self.name}' is measured: use the latencies in the profile"
            )
        if not math.isfinite(flops) or flops < 0:
            raise ValueError(f"flops must be a finite number >= 0, got {flops!r}")
        if n_layers < 0:
            raise ValueError(f"n_layers must be >= 0, got {n_layers!r}")
        return flops / (self.compute_gflops * 1e9) + n_layers * self.per_layer_overhead_ms / 1e3

    def codec_time_s(self, n_elements: int) -> float:
        """Time to quantize and run-length code (or decode) ``n_elements`` float32 values.

        :param n_elements: number of tensor elements, >= 0
        :return: seconds
        """
        if n_elements < 0:
            raise ValueError(f"n_elements must be >= 0, got {n_elements!r}")
        return n_elements * BYTES_PER_FLOAT32 / (self.codec_mbps * 1e6)


@dataclass(frozen=True)
class NetworkPreset:
    """Round-trip time, uplink capacity range and radio energy of one network type.

    Radio energy of a transfer follows the linear power model of Huang et al. (MobiSys 2012),
    ``P = alpha_u * throughput + beta``: integrated over a transfer it is
    ``radio_power_w * transfer_time + radio_energy_j_per_mbit * payload_mbit``.

    :param name: preset name (the key in the data file)
    :param rtt_ms: base round-trip time to the edge server
    :param rtt_jitter_ms: standard deviation of the round-trip time
    :param uplink_mbps_low: low end of the uplink capacity range (Mbit/s)
    :param uplink_mbps_typical: typical uplink capacity (Mbit/s)
    :param uplink_mbps_high: high end of the uplink capacity range (Mbit/s)
    :param radio_power_w: power drawn by the radio while sending, independent of the rate (beta)
    :param radio_energy_j_per_mbit: extra energy per Mbit sent (alpha_u)
    :param sources: citations for every figure
    """

    name: str
    rtt_ms: float
    rtt_jitter_ms: float
    uplink_mbps_low: float
    uplink_mbps_typical: float
    uplink_mbps_high: float
    radio_power_w: float
    radio_energy_j_per_mbit: float
    sources: tuple[str, ...]

    def transmit_energy_j(self, payload_bytes: int, transfer_time_s: float) -> float:
        """Radio energy of sending ``payload_bytes`` in ``transfer_time_s`` seconds.

        :param payload_bytes: bytes sent, >= 0
        :param transfer_time_s: time the radio was sending, >= 0
        :return: joules
        """
        if payload_bytes < 0 or transfer_time_s < 0:
            raise ValueError(
                f"payload_bytes and transfer_time_s must be >= 0, "
                f"got {payload_bytes!r} and {transfer_time_s!r}"
            )
        payload_mbit = payload_bytes * 8 / 1e6
        return self.radio_power_w * transfer_time_s + self.radio_energy_j_per_mbit * payload_mbit


class _Fields:
    """Reads typed fields of one preset mapping and names file, preset and field on error."""

    def __init__(self, path: str, name: str, raw: Mapping[str, Any], prefix: str = "") -> None:
        self.path = path
        self.name = name
        self.raw = raw
        self.prefix = prefix

    def error(self, field: str, problem: str) -> PresetError:
        location = f"{self.path}: preset '{self.name}': field '{self.prefix}{field}'"
        return PresetError(f"{location}: {problem}")

    def check_keys(self, required: set[str], optional: set[str]) -> None:
        unknown = sorted(set(self.raw) - required - optional)
        if unknown:
            allowed = ", ".join(sorted(required | optional))
            raise self.error(unknown[0], f"unknown key (allowed: {allowed})")
        missing = sorted(required - set(self.raw))
        if missing:
            raise self.error(missing[0], "required key is missing")

    def number(self, field: str, *, minimum: float = 0.0, strict: bool = True) -> float:
        return _number(self.raw[field], minimum, strict, lambda p: self.error(field, p))

    def optional_number(self, field: str) -> float | None:
        return self.number(field) if field in self.raw else None

    def text(self, field: str) -> str:
        value = self.raw[field]
        if not isinstance(value, str) or not value.strip():
            raise self.error(field, f"must be a non-empty string, got {value!r}")
        return value.strip()

    def flag(self, field: str) -> bool:
        value = self.raw.get(field, False)
        if not isinstance(value, bool):
            raise self.error(field, f"must be true or false, got {value!r}")
        return value

    def sources(self) -> tuple[str, ...]:
        value = self.raw["sources"]
        if not isinstance(value, list) or not value:
            raise self.error("sources", "must be a non-empty list of citation strings")
        if not all(isinstance(item, str) and item.strip() for item in value):
            raise self.error("sources", "every entry must be a non-empty string")
        return tuple(item.strip() for item in value)

    def calibration(self) -> tuple[CalibrationPoint, ...]:
        value = self.raw["calibration"]
        if not isinstance(value, list) or not value:
            raise self.error("calibration", "must be a non-empty list of measurements")
        return tuple(self._calibration_point(index, item) for index, item in enumerate(value))

    def _calibration_point(self, index: int, item: object) -> CalibrationPoint:
        field = f"calibration[{index}]"
        if not isinstance(item, Mapping):
            raise self.error(field, "must be a mapping")
        point = _Fields(self.path, self.name, item, prefix=f"{field}.")
        point.check_keys({"model", "flops", "n_layers", "latency_ms", "source"}, set())
        n_layers = point.number("n_layers", strict=False)
        if n_layers != int(n_layers):
            raise point.error("n_layers", f"must be an integer, got {n_layers!r}")
        return CalibrationPoint(
            model=point.text("model"),
            flops=point.number("flops"),
            n_layers=int(n_layers),
            latency_ms=point.number("latency_ms"),
            source=point.text("source"),
        )


def _number(value: object, minimum: float, strict: bool, error: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise error(f"must be finite, got {value!r}")
    if value < minimum or (strict and value == minimum):
        bound = ">" if strict else ">="
        raise error(f"must be {bound} {minimum:g}, got {value!r}")
    return float(value)


_DEVICE_REQUIRED = {
    "role",
    "description",
    "compute_power_w",
    "idle_power_w",
    "codec_mbps",
    "sources",
}
_DEVICE_COMPUTE = {"compute_gflops", "per_layer_overhead_ms", "calibration"}
_NETWORK_REQUIRED = {
    "rtt_ms",
    "rtt_jitter_ms",
    "uplink_mbps_low",
    "uplink_mbps_typical",
    "uplink_mbps_high",
    "radio_power_w",
    "radio_energy_j_per_mbit",
    "sources",
}


def _parse_device(fields: _Fields) -> DevicePreset:
    measured = fields.flag("measured") if "measured" in fields.raw else False
    if measured:
        present = sorted(_DEVICE_COMPUTE & set(fields.raw))
        if present:
            raise fields.error(
                present[0], "a measured preset takes its compute time from the profile"
            )
        fields.check_keys(_DEVICE_REQUIRED, {"measured", "radio_power_w"})
    else:
        fields.check_keys(_DEVICE_REQUIRED | _DEVICE_COMPUTE, {"measured", "radio_power_w"})
    role = fields.text("role")
    if role not in DEVICE_ROLES:
        raise fields.error("role", f"unknown role {role!r} (known: {', '.join(DEVICE_ROLES)})")
    return DevicePreset(
        name=fields.name,
        role=role,
        description=fields.text("description"),
        compute_gflops=None if measured else fields.number("compute_gflops"),
        per_layer_overhead_ms=None
        if measured
        else fields.number("per_layer_overhead_ms", strict=False),
        compute_power_w=fields.number("compute_power_w"),
        idle_power_w=fields.number("idle_power_w", strict=False),
        codec_mbps=fields.number("codec_mbps"),
        radio_power_w=fields.optional_number("radio_power_w"),
        measured=measured,
        sources=fields.sources(),
        calibration=() if measured else fields.calibration(),
    )


def _parse_network(fields: _Fields) -> NetworkPreset:
    fields.check_keys(_NETWORK_REQUIRED, set())
    low = fields.number("uplink_mbps_low")
    typical = fields.number("uplink_mbps_typical")
    high = fields.number("uplink_mbps_high")
    if not low <= typical <= high:
        raise fields.error(
            "uplink_mbps_typical",
            f"uplink range must satisfy low <= typical <= high, got {low}, {typical}, {high}",
        )
    return NetworkPreset(
        name=fields.name,
        rtt_ms=fields.number("rtt_ms"),
        rtt_jitter_ms=fields.number("rtt_jitter_ms", strict=False),
        uplink_mbps_low=low,
        uplink_mbps_typical=typical,
        uplink_mbps_high=high,
        radio_power_w=fields.number("radio_power_w", strict=False),
        radio_energy_j_per_mbit=fields.number("radio_energy_j_per_mbit", strict=False),
        sources=fields.sources(),
    )


def _read_mapping(path: Path | None, default_name: str) -> tuple[str, dict[str, Any]]:
    if path is None:
        text = resources.files("splitrl.profiles").joinpath("data", default_name).read_text()
        label = f"splitrl/profiles/data/{default_name}"
    else:
        label = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise PresetError(f"{label}: cannot read preset file: {error}") from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PresetError(f"{label}: not valid YAML: {error}") from error
    if not isinstance(data, dict) or not data:
        raise PresetError(f"{label}: must be a non-empty mapping of preset name to preset")
    for name, raw in data.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise PresetError(f"{label}: preset name {name!r} must be an identifier-like string")
        if not isinstance(raw, dict):
            raise PresetError(f"{label}: preset '{name}': must be a mapping of fields")
    return label, data


def load_device_presets(path: str | Path | None = None) -> dict[str, DevicePreset]:
    """Load and validate device presets.

    :param path: a YAML file; ``None`` reads the shipped ``devices.yaml``
    :return: presets by name, in file order
    :raises PresetError: naming the file, preset and field of the first problem
    """
    label, data = _read_mapping(None if path is None else Path(path), "devices.yaml")
    return {name: _parse_device(_Fields(label, name, raw)) for name, raw in data.items()}


def load_network_presets(path: str | Path | None = None) -> dict[str, NetworkPreset]:
    """Load and validate network presets.

    :param path: a YAML file; ``None`` reads the shipped ``networks.yaml``
    :return: presets by name, in file order
    :raises PresetError: naming the file, preset and field of the first problem
    """
    label, data = _read_mapping(None if path is None else Path(path), "networks.yaml")
    return {name: _parse_network(_Fields(label, name, raw)) for name, raw in data.items()}


@functools.cache
def _shipped_devices() -> dict[str, DevicePreset]:
    return load_device_presets()


@functools.cache
def _shipped_networks() -> dict[str, NetworkPreset]:
    return load_network_presets()


def get_device_preset(name: str) -> DevicePreset:
    """One shipped device preset by name.

    :param name: e.g. ``"raspberry_pi_4"``; see ``load_device_presets()`` for all names
    :raises PresetError: if no shipped preset has that name
    """
    presets = _shipped_devices()
    if name not in presets:
        raise PresetError(f"unknown device preset {name!r} (known: {', '.join(presets)})")
    return presets[name]


def get_network_preset(name: str) -> NetworkPreset:
    """One shipped network preset by name.

    :param name: e.g. ``"lte"``; see ``load_network_presets()`` for all names
    :raises PresetError: if no shipped preset has that name
    """
    presets = _shipped_networks()
    if name not in presets:
        raise PresetError(f"unknown network preset {name!r} (known: {', '.join(presets)})")
    return presets[name]
