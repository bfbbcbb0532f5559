"""Tests for the shipped device/network presets and their validating loaders."""

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from splitrl.profiles.presets import (
    DevicePreset,
    NetworkPreset,
    PresetError,
    get_device_preset,
    get_network_preset,
    load_device_presets,
    load_network_presets,
)

DEVICES = load_device_presets()
NETWORKS = load_network_presets()
MODELLED = [name for name, preset in DEVICES.items() if not preset.measured]

VALID_DEVICE = {
    "role": "device",
    "description": "test board",
    "compute_gflops": 1.0,
    "per_layer_overhead_ms": 0.1,
    "compute_power_w": 1.0,
    "idle_power_w": 0.1,
    "codec_mbps": 10.0,
    "calibration": [
        {"model": "m", "flops": 1e9, "n_layers": 10, "latency_ms": 1001.0, "source": "s"}
    ],
    "sources": ["a citation"],
}
VALID_NETWORK = {
    "rtt_ms": 50.0,
    "rtt_jitter_ms": 10.0,
    "uplink_mbps_low": 1.0,
    "uplink_mbps_typical": 5.0,
    "uplink_mbps_high": 20.0,
    "radio_power_w": 1.0,
    "radio_energy_j_per_mbit": 0.4,
    "sources": ["a citation"],
}


def write_yaml(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "presets.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_files_cover_the_required_classes() -> None:
    assert {"stm32h7", "pi_zero_2w", "raspberry_pi_4", "jetson_nano", "phone_sd855"} <= set(DEVICES)
    assert DEVICES["rtx_2080"].role == "server"
    assert DEVICES["host"].measured
    assert {"wifi", "lte", "nr5g", "lte_m", "nb_iot"} == set(NETWORKS)
    assert all(isinstance(p, DevicePreset) for p in DEVICES.values())
    assert all(isinstance(p, NetworkPreset) for p in NETWORKS.values())


@pytest.mark.parametrize("preset", [*DEVICES.values(), *NETWORKS.values()], ids=lambda p: p.name)
def test_every_preset_cites_sources(preset: DevicePreset | NetworkPreset) -> None:
    assert preset.sources
    assert all(len(source) > 10 for source in preset.sources)


@pytest.mark.parametrize("name", MODELLED)
def test_calibration_reproduces_published_latency(name: str) -> None:
    preset = DEVICES[name]
    assert preset.calibration
    for point in preset.calibration:
        predicted_ms = preset.compute_time_s(point.flops, point.n_layers) * 1e3
        assert predicted_ms == pytest.approx(point.latency_ms, rel=0.03), point.model


def test_device_speed_ordering() -> None:
    resnet18, layers = 3.64e9, 21
    times = {name: DEVICES[name].compute_time_s(resnet18, layers) for name in MODELLED}
    assert times["stm32h7"] > 30 * times["raspberry_pi_4"]
    assert times["pi_zero_2w"] > times["raspberry_pi_4"] > times["jetson_nano"]
    assert times["raspberry_pi_4"] > 50 * times["rtx_2080"]
    assert min(times, key=times.__getitem__) == "rtx_2080"


def test_network_ordering() -> None:
    assert NETWORKS["nb_iot"].uplink_mbps_high < NETWORKS["lte_m"].uplink_mbps_typical
    assert NETWORKS["lte_m"].uplink_mbps_high <= NETWORKS["lte"].uplink_mbps_typical
    assert NETWORKS["nb_iot"].rtt_ms > 10 * NETWORKS["lte"].rtt_ms > 10 * NETWORKS["wifi"].rtt_ms


def test_time_and_energy_helpers() -> None:
    pi4 = get_device_preset("raspberry_pi_4")
    assert pi4.compute_time_s(0.0, 0) == 0.0
    assert pi4.compute_time_s(2e9, 4) > pi4.compute_time_s(1e9, 4)
    assert pi4.codec_time_s(1_000_000) == pytest.approx(4e6 / (pi4.codec_mbps * 1e6))
    lte = get_network_preset("lte")
    energy = lte.transmit_energy_j(payload_bytes=125_000, transfer_time_s=0.5)
    assert energy == pytest.approx(lte.radio_power_w * 0.5 + lte.radio_energy_j_per_mbit * 1.0)
    with pytest.raises(ValueError, match="flops"):
        pi4.compute_time_s(-1.0, 1)


def test_measured_host_has_no_throughput_model() -> None:
    with pytest.raises(PresetError, match="measured"):
        get_device_preset("host").compute_time_s(1e6, 3)


@pytest.mark.parametrize("getter", [get_device_preset, get_network_preset])
def test_unknown_preset_name(getter: Callable[[str], object]) -> None:
    with pytest.raises(PresetError, match=r"unknown \w+ preset 'warp_drive'"):
        getter("warp_drive")


def test_valid_tmp_files_load(tmp_path: Path) -> None:
    assert load_device_presets(write_yaml(tmp_path, {"board": VALID_DEVICE}))["board"].role
    assert load_network_presets(write_yaml(tmp_path, {"net": VALID_NETWORK}))["net"].rtt_ms == 50


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"compute_gflops": None}, "field 'compute_gflops': must be a number"),
        ({"compute_gflops": -2.0}, "field 'compute_gflops': must be > 0"),
        ({"idle_power_w": -0.1}, "field 'idle_power_w': must be >= 0"),
        ({"role": "cloud"}, "field 'role': unknown role 'cloud'"),
        ({"colour": "red"}, "field 'colour': unknown key"),
        ({"measured": "yes"}, "field 'measured': must be true or false"),
        ({"sources": []}, "field 'sources': must be a non-empty list"),
        ({"calibration": [{"model": "m"}]}, "field 'calibration\\[0\\].flops': required key"),
        ({"measured": True}, "measured preset takes its compute time from the profile"),
    ],
)
def test_malformed_device_rejected(tmp_path: Path, change: dict, message: str) -> None:
    path = write_yaml(tmp_path, {"board": {**VALID_DEVICE, **change}})
    with pytest.raises(PresetError, match=message) as excinfo:
        load_device_presets(path)
    assert str(path) in str(excinfo.value)
    assert "preset 'board'" in str(excinfo.value)


@pytest.mark.parametrize("missing", ["codec_mbps", "sources", "calibration"])
def test_missing_device_key_rejected(tmp_path: Path, missing: str) -> None:
    raw = {key: value for key, value in VALID_DEVICE.items() if key != missing}
    with pytest.raises(PresetError, match=f"field '{missing}': required key is missing"):
        load_device_presets(write_yaml(tmp_path, {"board": raw}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rtt_ms": 0}, "field 'rtt_ms': must be > 0"),
        ({"uplink_mbps_low": 9.0}, "low <= typical <= high"),
        ({"bandwidth": 3}, "field 'bandwidth': unknown key"),
        ({"radio_power_w": True}, "field 'radio_power_w': must be a number"),
        ({"rtt_jitter_ms": float("inf")}, "field 'rtt_jitter_ms': must be finite"),
    ],
)
def test_malformed_network_rejected(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(PresetError, match=message):
        load_network_presets(write_yaml(tmp_path, {"net": {**VALID_NETWORK, **change}}))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- a\n- b\n", "must be a non-empty mapping"),
        ("", "must be a non-empty mapping"),
        ("board: 3\n", "preset 'board': must be a mapping"),
        ("board: [unclosed\n", "not valid YAML"),
    ],
)
def test_file_that_is_not_a_mapping_rejected(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "presets.yaml"
    path.write_text(content)
    with pytest.raises(PresetError, match=message):
        load_device_presets(path)


def test_missing_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(PresetError, match="cannot read preset file"):
        load_network_presets(tmp_path / "absent.yaml")
