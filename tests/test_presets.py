"""The shipped device and network presets against their documented measurements, and the loaders.

The numbers in ``PUBLISHED`` are the measurements ``docs/presets.md`` cites (latencies of whole
models on each device class); the tables of that page are read and recomputed from the presets.
"""

import itertools
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
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


PRESETS_DOC = Path(__file__).resolve().parents[1] / "docs" / "presets.md"

RESNET8, RESNET18, RESNET34, RESNET50 = (25_003_264, 10), (3.64e9, 21), (7.328e9, 37), (8.18e9, 54)
#: (preset, model size, published latency in ms): the measurements each preset is calibrated on
PUBLISHED = [
    ("stm32h7", RESNET8, 1000 / 18.401),  # MLPerf Tiny: 18.401 inferences per second
    ("pi_zero_2w", RESNET18, 416.54 * 1.4 / 1.0),  # Pi 3 B+ (same cores) at 1.4 GHz, clock-scaled
    ("raspberry_pi_4", RESNET18, 233.89),
    ("jetson_nano", RESNET18, 34.7),
    ("jetson_nano", RESNET34, 64.8),
    ("phone_sd855", RESNET18, 11.63),
    ("rtx_2080", RESNET18, 2.24),
]


@pytest.mark.parametrize(("name", "model", "latency_ms"), PUBLISHED)
def test_each_device_reproduces_its_published_latencies(
    name: str, model: tuple[float, int], latency_ms: float
) -> None:
    # within 0.1%, as docs/presets.md states; compute_time_s returns seconds
    predicted_s = DEVICES[name].compute_time_s(*model)
    assert predicted_s == pytest.approx(latency_ms / 1e3, rel=0.001)


def test_the_data_file_calibrates_on_the_published_measurements() -> None:
    calibrated = sorted(
        (preset.name, point.flops, point.n_layers, point.latency_ms)
        for preset in DEVICES.values()
        for point in preset.calibration
    )
    published = sorted((name, float(flops), layers, ms) for name, (flops, layers), ms in PUBLISHED)
    assert [point[:3] for point in calibrated] == [point[:3] for point in published]
    for (_, _, _, data_ms), (_, _, _, published_ms) in zip(calibrated, published, strict=True):
        assert data_ms == pytest.approx(published_ms, rel=1e-3)  # the data file rounds


def test_out_of_sample_errors_are_the_documented_ones() -> None:
    # Jetson Nano ResNet-50: 84.5 ms predicted against 81.7 measured (+3%); RTX 2080: 5.4 ms
    # against 4.49 (+20%)
    over = {
        "jetson_nano": DEVICES["jetson_nano"].compute_time_s(*RESNET50) * 1e3 / 81.7 - 1,
        "rtx_2080": DEVICES["rtx_2080"].compute_time_s(*RESNET50) * 1e3 / 4.49 - 1,
    }
    assert over["jetson_nano"] == pytest.approx(0.03, abs=0.005)
    assert over["rtx_2080"] == pytest.approx(0.20, abs=0.005)
    # SqueezeNet's 26 conv layers run in 1.49 ms on the RTX 2080: its overhead cannot be more
    assert 26 * DEVICES["rtx_2080"].per_layer_overhead_ms < 1.49  # type: ignore[operator]


def test_the_mcu_power_and_latency_give_its_published_energy_per_inference() -> None:
    # MLPerf Tiny's energy run: 160.6 mW and 8707 uJ per inference
    stm32 = DEVICES["stm32h7"]
    energy_j = stm32.compute_power_w * stm32.compute_time_s(*RESNET8)
    assert energy_j == pytest.approx(8707e-6, rel=0.01)


def test_the_mcu_is_as_much_slower_as_the_page_says() -> None:
    # "about 34x slower per FLOP than the Pi 4 and 24x slower on this network" (30 MFLOP, 15 layers)
    mcu, pi4 = DEVICES["stm32h7"], DEVICES["raspberry_pi_4"]
    assert pi4.compute_gflops / mcu.compute_gflops == pytest.approx(34, abs=0.5)  # type: ignore[operator]
    ratio = mcu.compute_time_s(30e6, 15) / pi4.compute_time_s(30e6, 15)
    assert ratio == pytest.approx(24, abs=0.5)


@pytest.mark.parametrize("name", MODELLED)
def test_compute_time_grows_with_flops_and_layers_and_adds_up_over_blocks(name: str) -> None:
    preset = DEVICES[name]
    flops = np.geomspace(1e3, 1e10, 30)
    times = [preset.compute_time_s(f, 5) for f in flops]
    assert all(later > earlier for earlier, later in itertools.pairwise(times))
    layers = [preset.compute_time_s(1e6, n) for n in range(10)]
    assert all(later >= earlier for earlier, later in itertools.pairwise(layers))
    # a network's time is the sum of its blocks' times (the env sums stages and heads)
    whole = preset.compute_time_s(3e7 + 5e6, 12 + 3)
    assert whole == pytest.approx(preset.compute_time_s(3e7, 12) + preset.compute_time_s(5e6, 3))
    assert preset.compute_time_s(0.0, 0) == 0.0
    with pytest.raises(ValueError, match="flops"):
        preset.compute_time_s(-1.0, 1)


def test_codec_time_and_radio_energy_units() -> None:
    pi4 = get_device_preset("raspberry_pi_4")
    # 1e6 float32 values are 4 MB: at codec_mbps MB/s they take 4 / codec_mbps seconds
    assert pi4.codec_time_s(1_000_000) == pytest.approx(4.0 / pi4.codec_mbps)
    assert pi4.codec_time_s(2_000_000) == pytest.approx(2 * pi4.codec_time_s(1_000_000))
    lte = get_network_preset("lte")
    # 125 000 bytes are 1 Mbit: beta x 0.5 s + alpha_u x 1 Mbit, in joules
    energy = lte.transmit_energy_j(payload_bytes=125_000, transfer_time_s=0.5)
    assert energy == pytest.approx(1.28804 * 0.5 + 0.43839 * 1.0, rel=1e-3)
    assert lte.transmit_energy_j(0, 0.0) == 0.0
    assert lte.transmit_energy_j(250_000, 0.5) > energy
    assert lte.transmit_energy_j(125_000, 1.0) > energy


@pytest.mark.parametrize("preset", list(DEVICES.values()), ids=lambda p: p.name)
def test_a_busy_device_draws_more_than_an_idle_one(preset: DevicePreset) -> None:
    assert preset.compute_power_w > preset.idle_power_w >= 0.0


def test_network_ranges_follow_the_cited_standards() -> None:
    # LTE-M (Cat-M1) peaks at 1 Mbit/s uplink, NB-IoT NB2 at 159 kbit/s; NB-IoT latency 1.6-10 s
    assert NETWORKS["lte_m"].uplink_mbps_high == 1.0
    assert NETWORKS["nb_iot"].uplink_mbps_high == 0.159
    assert 1600 <= NETWORKS["nb_iot"].rtt_ms <= 10_000
    # Huang et al.: LTE uplink median 6 Mbit/s; radio power beta and alpha_u of LTE and Wi-Fi
    assert NETWORKS["lte"].uplink_mbps_typical == 6.0
    assert NETWORKS["lte"].radio_power_w == pytest.approx(1.28804, abs=5e-4)
    assert NETWORKS["lte"].radio_energy_j_per_mbit == pytest.approx(0.43839, abs=5e-4)
    assert NETWORKS["wifi"].radio_power_w == pytest.approx(0.13286, abs=5e-4)
    assert NETWORKS["wifi"].radio_energy_j_per_mbit == pytest.approx(0.28317, abs=5e-4)
    # 5G: twice the LTE beta, the low end of Xu et al.'s 2-3x
    assert NETWORKS["nr5g"].radio_power_w == pytest.approx(2 * NETWORKS["lte"].radio_power_w)


def doc_table(heading: str) -> list[list[str]]:
    """The rows of the first table after ``heading`` in ``docs/presets.md``, as cells."""
    text = PRESETS_DOC.read_text()
    rows = []
    for line in text[text.index(heading) :].splitlines()[1:]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            break
    return [row for row in rows[2:]]  # without the header and the rule


def number(cell: str) -> float:
    """The first number in a table cell (``"43.5 ms"`` -> 43.5)."""
    match = re.search(r"-?\d+(\.\d+)?", cell)
    assert match, cell
    return float(match.group())


def rounded_as(cell: str) -> float:
    """Half a unit of the last digit the cell shows: its rounding tolerance."""
    digits = re.search(r"\d+(\.(\d+))?", cell)
    assert digits, cell
    return 0.5 * 10.0 ** -len(digits.group(2) or "")


def test_the_device_table_of_the_docs_is_the_data_file() -> None:
    rows = {row[0].strip("`"): row for row in doc_table("## Device presets")}
    assert set(rows) == set(DEVICES)
    for name in MODELLED:
        row, preset = rows[name], DEVICES[name]
        fields = (
            preset.compute_gflops,
            preset.per_layer_overhead_ms,
            preset.compute_power_w,
            preset.idle_power_w,
            preset.codec_mbps,
        )
        assert [number(cell) for cell in row[2:7]] == pytest.approx(fields), name
        for cell, (flops, layers) in zip(
            row[7:10], [(20e6, 10), (30e6, 15), (40e6, 20)], strict=True
        ):
            assert number(cell) == pytest.approx(
                preset.compute_time_s(flops, layers) * 1e3, abs=rounded_as(cell)
            ), (name, cell)
        share = 15 * preset.per_layer_overhead_ms / (preset.compute_time_s(30e6, 15) * 1e3)  # type: ignore[operator]
        assert number(row[10]) == pytest.approx(100 * share, abs=0.5), name


def test_the_network_table_of_the_docs_is_the_data_file() -> None:
    rows = {row[0].strip("`"): row for row in doc_table("## Network presets")}
    assert set(rows) == set(NETWORKS)
    for name, preset in NETWORKS.items():
        row = rows[name]
        low, typical, high = (float(part) for part in row[3].split("/"))
        documented = [number(row[1]), number(row[2]), low, typical, high, *map(number, row[4:6])]
        fields = [
            preset.rtt_ms,
            preset.rtt_jitter_ms,
            preset.uplink_mbps_low,
            preset.uplink_mbps_typical,
            preset.uplink_mbps_high,
            preset.radio_power_w,
            preset.radio_energy_j_per_mbit,
        ]
        assert documented == pytest.approx(fields), name
        # 10 kB at the typical rate plus one RTT
        ten_kb_ms = 8e4 / (preset.uplink_mbps_typical * 1e6) * 1e3 + preset.rtt_ms
        assert number(row[6]) == pytest.approx(
            ten_kb_ms, abs=max(rounded_as(row[6]), 0.005 * ten_kb_ms)
        )


def test_the_calibration_table_of_the_docs_gives_the_data_files_rates() -> None:
    rows = doc_table("## Calibration arithmetic")
    results = {row[0].split("`")[1]: row[-1] for row in rows}
    assert set(results) == set(MODELLED)
    for name, cell in results.items():
        assert number(cell) == DEVICES[name].compute_gflops, name


#: what makes a citation checkable: a repository path or web address, a publication year, a
#: vendor's specification, or a label saying the figure is a stated estimate, an assumption,
#: derived or measured on the development host
CHECKABLE = re.compile(
    r"(\b[\w.-]+/[\w./-]+)|(\b(19[5-9]|20[0-4])\d\b)|\bspecification\b|"
    r"^(estimate|assumption|derived|measured)\b|measured .* development host"
)


@pytest.mark.parametrize("preset", [*DEVICES.values(), *NETWORKS.values()], ids=lambda p: p.name)
def test_every_source_names_something_checkable(preset: DevicePreset | NetworkPreset) -> None:
    for source in preset.sources:
        assert CHECKABLE.search(source), source
    # not only estimates: every preset cites at least one measurement or publication
    assert any(not source.startswith(("estimate", "assumption")) for source in preset.sources)


@pytest.mark.parametrize("name", MODELLED)
def test_each_calibration_source_quotes_the_figure_it_was_fitted_to(name: str) -> None:
    for point in DEVICES[name].calibration:
        quoted = [float(n) for n in re.findall(r"\d+\.\d+|\d+", point.source)]
        clock = re.search(r"(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?) GHz", point.source)
        scale = float(clock.group(1)) / float(clock.group(2)) if clock else 1.0
        candidates = [n * scale for n in quoted] + [1000.0 / n for n in quoted if n > 0]
        assert any(math.isclose(c, point.latency_ms, rel_tol=1e-3) for c in candidates), (
            point.source
        )


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
