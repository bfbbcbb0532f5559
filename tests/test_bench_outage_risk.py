"""The outage-risk benchmark on hand-made capacities and a generated trace file."""

from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_outage_risk import describe, main, outage_runs


def test_outage_runs_keeps_only_runs_long_enough() -> None:
    capacity = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.01, 0.0])
    assert outage_runs(capacity, 0.05, 3) == [(3, 3)]
    assert outage_runs(capacity, 0.05, 1) == [(1, 1), (3, 3), (7, 2)]
    assert outage_runs(np.ones(5), 0.05, 1) == []


def _mahimahi(path: Path, pieces: list[tuple[float, float]]) -> Path:
    """A Mahimahi trace of ``(seconds, Mbit/s)`` pieces; a rate of 0 is an outage."""
    lines, start_ms = [], 0
    for seconds, mbps in pieces:
        end_ms = start_ms + round(seconds * 1000)
        if mbps > 0:
            period_ms = 1500 * 8 / (mbps * 1e3)
            lines += [str(round(t)) for t in np.arange(start_ms, end_ms, period_ms)]
        start_ms = end_ms
    lines.append(str(start_ms))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_describe_finds_the_outage_and_the_report_before_it(tmp_path: Path) -> None:
    trace = _mahimahi(tmp_path / "gap.up", [(5.0, 2.0), (2.0, 0.0), (3.0, 2.0)])
    row = describe(trace, outage_mbps=0.05, min_outage_s=1.0, delay_s=0.1)
    assert row["outages"] == 1
    assert row["max_outage_s"] == pytest.approx(2.0, abs=0.15)
    assert row["outage_time_fraction"] == pytest.approx(0.2, abs=0.02)
    # the report a transfer starting just before the onset sees: the steady 2 Mbit/s
    assert row["onset_report_mbps"] == [pytest.approx(2.0, rel=0.1)]
    assert row["onsets_announced"] == 0.0


def test_a_missing_trace_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--trace", str(tmp_path / "absent.up")])
