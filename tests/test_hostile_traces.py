"""Trace files beyond the stated limits fail at load, at once, with the problem named."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from splitrl.cli import main
from splitrl.envs.channels import make_channel
from splitrl.envs.traces import MAX_TRACE_SEGMENTS, Trace, TraceFormatError, load_trace


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("huge.up", "100000000000\n", r"1000000000 bins of 0.1 s, above the limit of 1000000"),
        ("big.up", "1000000000\n", r"lasts 1e\+06 s: 10000000 bins of 0.1 s, above the limit"),
        ("tiny_steps.csv", "0,1\n1e-300,1\n2e-300,1\n", r"shorter than the 1e-06 s limit"),
        ("fast.csv", "0,1\n1,1e300\n", r"rate 1e\+300 Mbps is above the limit of 100000 Mbps"),
        ("fast.txt", "0 1\n1 200000\n", r"above the limit of 100000 Mbps"),
        ("empty.csv", "", "needs at least two data rows"),
        ("empty.up", "", "empty file"),
        ("words.csv", "time,rate\n0,1\nabc,def\n", r"words.csv:3: non-numeric value"),
        ("words.up", "12\nx\n", r"words.up:2: expected an integer millisecond timestamp"),
    ],
)
def test_traces_beyond_the_limits_fail_at_load_within_a_second(
    name: str, text: str, message: str, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_text(text)
    start = time.process_time()
    with pytest.raises(TraceFormatError, match=message):
        load_trace(path)
    assert time.process_time() - start < 1.0


def test_a_directory_is_not_a_trace(tmp_path: Path) -> None:
    with pytest.raises(TraceFormatError, match="a directory, not a trace file"):
        load_trace(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_trace(tmp_path / "missing.csv")


def test_traces_built_in_code_obey_the_same_limits() -> None:
    with pytest.raises(ValueError, match="shorter than the 1e-06 s limit"):
        Trace((0.0, 1e-9, 1.0), (1.0, 1.0))
    with pytest.raises(ValueError, match="above the limit of 1e\\+11 bit/s"):
        Trace((0.0, 1.0), (2e11,))
    with pytest.raises(ValueError, match=f"above the limit of {MAX_TRACE_SEGMENTS}"):
        Trace.from_rates([1.0] * (MAX_TRACE_SEGMENTS + 1), 1e-3)
    assert Trace((0.0, 1e-6, 1.0), (1e11, 0.0)).duration_s == 1.0  # the limits themselves pass


def test_train_on_a_bad_trace_fails_before_the_run_directory(
    tiny_profile_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    for target in (tmp_path, tmp_path / "huge.up"):
        (tmp_path / "huge.up").write_text("100000000000\n")
        flags = ["train", "--profile", str(tiny_profile_path), "--out", str(out)]
        assert main([*flags, "--channel", f"trace:{target}"]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and error.startswith("splitrl train: error:"), error
        assert not out.exists()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"model": "markov", "slot_s": 1e-300}, r"slot_s must be at least 1e-06 s"),
        ({"model": "markov", "levels_bps": [1e6, 1e300]}, "above the limit of 1e\\+11"),
        ({"model": "gilbert-elliott", "slot_s": 1e-12}, r"slot_s must be at least 1e-06 s"),
        ({"model": "fading", "coherence_time_s": 1e-300}, "shorter than the 1e-06 s limit"),
        ({"model": "fading", "speed_range_mps": [1, 1e300]}, "shorter than the 1e-06 s limit"),
        ({"model": "fading", "bandwidth_mhz": 1e300}, "above the limit of 1e\\+11"),
        ({"model": "constant", "rate_bps": 1e300}, "rate_bps must be positive and at most 1e\\+11"),
    ],
)
def test_synthetic_channels_obey_the_trace_limits(spec: dict[str, object], message: str) -> None:
    start = time.process_time()
    with pytest.raises(ValueError, match=message):
        make_channel(spec)
    assert time.process_time() - start < 1.0
