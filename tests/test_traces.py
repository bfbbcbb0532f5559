"""Trace parsers: hand-computed rates for each format, generated traces read back in each format,
and one error per malformed case. Tests write their own trace files; the real development traces
are checked by ``benchmarks/bench_traces.py``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from splitrl.envs.channels import TraceChannel, make_channel
from splitrl.envs.traces import (
    Trace,
    TraceFormatError,
    detect_format,
    load_trace,
    parse_csv,
    parse_mahimahi,
    parse_pensieve,
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_mahimahi_bins_delivery_opportunities(tmp_path: Path) -> None:
    # 4 opportunities in [0, 100) ms, 2 in [100, 200), 1 in the short last bin [200, 250].
    path = write(tmp_path, "link.up", "0\n50\n50\n99\n100\n150\n250\n")
    trace = parse_mahimahi(path, bin_s=0.1)
    assert trace.boundaries_s == pytest.approx((0.0, 0.1, 0.2, 0.25))
    assert trace.rates_bps == pytest.approx((4 * 12000 / 0.1, 2 * 12000 / 0.1, 12000 / 0.05))
    assert trace.duration_s == pytest.approx(0.25)
    assert trace.mean_rate_bps == pytest.approx(7 * 12000 / 0.25)
    assert (trace.name, trace.source_format) == ("link.up", "mahimahi")


def test_mahimahi_bin_width_is_configurable(tmp_path: Path) -> None:
    path = write(tmp_path, "link.down", "1\n2\n3\n1000\n")
    trace = parse_mahimahi(path, bin_s=0.5)
    assert trace.rates_bps == pytest.approx((3 * 12000 / 0.5, 12000 / 0.5))


def test_pensieve_value_holds_over_the_preceding_interval(tmp_path: Path) -> None:
    path = write(tmp_path, "bus", "10.0\t9.0\n10.5\t2.0\n\n11.5\t4.0\n")
    trace = parse_pensieve(path)
    assert trace.boundaries_s == pytest.approx((0.0, 0.5, 1.5))
    assert trace.rates_bps == pytest.approx((2e6, 4e6))
    assert trace.mean_rate_bps == pytest.approx((0.5 * 2e6 + 1.0 * 4e6) / 1.5)


@pytest.mark.parametrize("header", ["", "time_s,Mbps\n", " time , rate \n"])
def test_csv_with_and_without_header(tmp_path: Path, header: str) -> None:
    path = write(tmp_path, "trace.csv", header + "0,1\n1, 3\n3,0.5\n")
    trace = parse_csv(path)
    assert trace.boundaries_s == pytest.approx((0.0, 1.0, 3.0))
    assert trace.rates_bps == pytest.approx((3e6, 0.5e6))
    assert trace.source_format == "csv"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("a.up", "1\n", "mahimahi"),
        ("a.DOWN", "1 2\n", "mahimahi"),
        ("a.csv", "0 1\n", "csv"),
        ("a", "\n0,1\n", "csv"),
        ("a", "12\n13\n", "mahimahi"),
        ("a.txt", "0.0 1.5\n", "pensieve"),
    ],
)
def test_detect_format(tmp_path: Path, name: str, text: str, expected: str) -> None:
    assert detect_format(write(tmp_path, name, text)) == expected


def test_load_trace_detects_or_takes_the_format(tmp_path: Path) -> None:
    path = write(tmp_path, "plain", "0 1\n1 2\n")
    assert load_trace(path).source_format == "pensieve"
    assert load_trace(path, "pensieve").rates_bps == (2e6,)
    with pytest.raises(ValueError, match="unknown trace format 'json'"):
        load_trace(path, "json")


MALFORMED = [
    ("empty.up", "", None, "empty file"),
    ("blank.up", "\n \n", None, "empty file"),
    ("decreasing.up", "5\n3\n", 2, "before the previous"),
    ("text.up", "5\nabc\n", 2, "integer millisecond"),
    ("float.up", "5\n6.5\n", 2, "integer millisecond"),
    ("negative.up", "-1\n", 1, "negative timestamp"),
    ("columns.up", "1 2\n", 1, "2 columns"),
    ("instant.up", "0\n0\n", 2, "no duration"),
    ("one_row", "0 1\n", None, "at least two data rows"),
    ("three_columns", "0 1\n1 2 3\n", 2, "expected 2 columns"),
    ("non_numeric", "0 1\n1 x\n", 2, "non-numeric"),
    ("negative_rate", "0 1\n1 -2\n", 2, "negative rate"),
    ("not_finite", "0 1\n1 nan\n", 2, "non-finite"),
    ("backwards", "0 1\n2 1\n1 1\n", 3, "does not increase"),
    ("repeated_time", "0 1\n1 1\n1 1\n", 3, "does not increase"),
    ("all_zero", "0 5\n1 0\n2 0\n", None, "all rates are zero"),
    ("bad_row.csv", "time_s,Mbps\n0,1\n1,x\n", 3, "non-numeric"),
    ("header_only.csv", "time_s,Mbps\n", None, "at least two data rows"),
    ("wide.csv", "0,1,2\n", 1, "expected 2 columns"),
    ("word.csv", "hello\n", 1, "expected 2 columns"),
]


@pytest.mark.parametrize(("name", "text", "line", "problem"), MALFORMED)
def test_malformed_files_name_file_line_and_problem(
    tmp_path: Path, name: str, text: str, line: int | None, problem: str
) -> None:
    path = write(tmp_path, name, text)
    fmt = "pensieve" if "." not in name else None
    with pytest.raises(TraceFormatError, match=problem) as caught:
        load_trace(path, fmt)
    assert caught.value.line == line
    assert caught.value.path == str(path)
    assert str(caught.value).startswith(f"{path}:{line}:" if line else f"{path}:")
    assert isinstance(caught.value, ValueError)


def test_binary_file_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "blob.up"
    path.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(TraceFormatError, match="not a UTF-8 text file"):
        load_trace(path)


@pytest.mark.parametrize(
    ("boundaries", "rates", "problem"),
    [
        ((0.0, 1.0), (1.0, 2.0), "one more boundary"),
        ((0.5, 1.0), (1.0,), "start at 0.0"),
        ((0.0, 1.0, 1.0), (1.0, 1.0), "strictly increasing"),
        ((0.0, 1.0), (-1.0,), "non-negative"),
        ((0.0, 1.0), (0.0,), "all rates are zero"),
    ],
)
def test_trace_validates_direct_construction(
    boundaries: tuple[float, ...], rates: tuple[float, ...], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        Trace(boundaries, rates)


def test_trace_from_rates_is_frozen() -> None:
    trace = Trace.from_rates([1e6, 3e6], slot_s=0.5, name="slots")
    assert trace.boundaries_s == (0.0, 0.5, 1.0)
    assert trace.durations_s == (0.5, 0.5)
    assert trace.mean_rate_bps == pytest.approx(2e6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        trace.name = "other"  # type: ignore[misc]


def write_generated(tmp_path: Path, fmt: str, rates_mbps: np.ndarray, slot_s: float) -> Path:
    """``rates_mbps`` held for ``slot_s`` each, written in format ``fmt``."""
    if fmt == "mahimahi":
        # slot k holds rate x slot / 12000 bit opportunities; the last one is the loop period
        rng = np.random.default_rng(1)
        counts = np.rint(rates_mbps * 1e6 * slot_s / 12000).astype(int)
        slot_ms = round(slot_s * 1000)
        stamps = [
            sorted(rng.integers(k * slot_ms, (k + 1) * slot_ms, size=count).tolist())
            for k, count in enumerate(counts)
        ]
        stamps[-1][-1] = len(counts) * slot_ms
        lines = [str(stamp) for slot in stamps for stamp in slot]
        return write(tmp_path, "generated.up", "\n".join(lines) + "\n")
    times = 3.0 + slot_s * np.arange(len(rates_mbps) + 1)  # the first row only marks the start
    values = np.concatenate([[99.0], rates_mbps])
    separator, name = (",", "generated.csv") if fmt == "csv" else ("\t", "generated")
    rows = [f"{t:.6f}{separator}{v:.6f}" for t, v in zip(times, values, strict=True)]
    return write(tmp_path, name, "\n".join(rows) + "\n")


@pytest.mark.parametrize("fmt", ["mahimahi", "pensieve", "csv"])
def test_a_generated_trace_reads_back_in_every_format(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(0)
    slot_s = 0.1 if fmt == "mahimahi" else 0.5
    rates_mbps = rng.integers(1, 40, size=30) * 1.2  # whole opportunities per 100-ms bin
    if fmt != "mahimahi":
        rates_mbps = rng.lognormal(0.0, 1.0, size=30).round(6)
    path = write_generated(tmp_path, fmt, rates_mbps, slot_s)
    trace = load_trace(path)
    assert trace.source_format == fmt
    np.testing.assert_allclose(trace.rates_bps, rates_mbps * 1e6, rtol=1e-9)
    np.testing.assert_allclose(trace.durations_s, slot_s, rtol=1e-9)
    assert trace.mean_rate_bps == pytest.approx(rates_mbps.mean() * 1e6, rel=1e-9)
    # replayed as a channel, the trace delivers its mean rate over its duration
    channel = make_channel(f"trace:{path}")
    assert isinstance(channel, TraceChannel)
    replay = TraceChannel(trace, random_start=False)
    replay.reset(np.random.default_rng(0))
    duration = trace.duration_s
    assert replay.mean_throughput(0.0, duration) == pytest.approx(trace.mean_rate_bps, rel=1e-9)
    assert replay.capacity(slot_s * 4.5) == pytest.approx(rates_mbps[4] * 1e6, rel=1e-9)
