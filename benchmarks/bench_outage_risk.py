"""What an offload risks on a trace with outages, and whether the device could have seen them coming.

Run with ``python -m benchmarks.bench_outage_risk`` (or ``make bench``); results go to
``results/bench_outage_risk.json``. The traces are read from ``../shared/traces``
(``--traces DIR`` for another folder, ``--trace FILE`` for one file); without them the benchmark
says so and exits 0.

In the time model, a transfer holds the device until its last bit is through, so one transfer
caught by an outage stalls every later request for the rest of the outage. Whether a causal
policy can avoid that depends on whether an outage announces itself. For every trace, over its
replay at 10 ms resolution, this reports:

* the outages (capacity below ``--outage-mbps`` for at least ``--min-outage-s``): how many, how
  often, how long;
* at each onset, the rate the link report shows to a transfer that starts just before it (the
  capacity ``--report-delay-s`` earlier, the default scenario's report age, without its noise),
  as a percentile of the reports outside outages: near 50 means the outage came without warning.
  ``onsets_announced`` is the fraction whose report already showed an outage (a shorter one just
  before it);
* the rate an offload must beat: with the uplink busy a fraction ``u`` of the time, each onset
  catches a transfer with probability ``u``; ``onsets_per_minute`` times ``u`` is how many stalls
  a minute of such offloading costs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_traces import TRACES_DIR, documented_traces
from benchmarks.common import print_table, write_results
from splitrl.envs.channels import TraceChannel
from splitrl.envs.link_quality import DEFAULT_DELAY_S
from splitrl.envs.traces import load_trace

#: resolution of the replayed capacity, seconds
STEP_S = 0.01
#: a capacity below this is an outage (the figure the traces' SOURCES.md uses), Mbit/s
OUTAGE_MBPS = 0.05
#: shortest outage counted, seconds
MIN_OUTAGE_S = 1.0


def outage_runs(
    capacity_mbps: np.ndarray, outage_mbps: float, min_steps: int
) -> list[tuple[int, int]]:
    """``(start, length)`` in steps of every run of ``capacity < outage_mbps`` at least ``min_steps`` long."""
    low = np.concatenate(([False], capacity_mbps < outage_mbps, [False]))
    edges = np.flatnonzero(np.diff(low.astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2]
    return [(int(s), int(e - s)) for s, e in zip(starts, ends, strict=True) if e - s >= min_steps]


def describe(path: Path, outage_mbps: float, min_outage_s: float, delay_s: float) -> dict[str, Any]:
    """The outages of one trace and the link report the device had at their onsets."""
    trace = load_trace(path)
    channel = TraceChannel(trace, random_start=False)
    channel.reset(np.random.default_rng(0))
    times = np.arange(0.0, trace.duration_s - STEP_S, STEP_S)
    capacity = np.array([channel.mean_throughput(t, t + STEP_S) for t in times]) / 1e6
    runs = outage_runs(capacity, outage_mbps, round(min_outage_s / STEP_S))
    delay = round(delay_s / STEP_S)
    outside = capacity >= outage_mbps
    reports = np.sort(capacity[outside])
    # a transfer caught by an onset started just before it: its report is one step older still
    onset_reports = np.array([capacity[start - delay - 1] for start, _ in runs if start > delay])
    percentiles = 100.0 * np.searchsorted(reports, onset_reports) / max(len(reports), 1)
    durations = np.array([length * STEP_S for _, length in runs])
    minutes_outside = outside.sum() * STEP_S / 60.0
    return {
        "trace": path.name,
        "duration_s": float(trace.duration_s),
        "outages": len(runs),
        "onsets_per_minute": len(runs) / minutes_outside if minutes_outside else float("nan"),
        "outage_time_fraction": float(durations.sum() / trace.duration_s),
        "median_outage_s": float(np.median(durations)) if len(runs) else float("nan"),
        "max_outage_s": float(durations.max()) if len(runs) else float("nan"),
        "median_report_mbps": float(np.median(reports)) if len(reports) else float("nan"),
        "onset_report_mbps": onset_reports.tolist(),
        "onsets_announced": (
            float(np.mean(onset_reports < outage_mbps)) if len(onset_reports) else float("nan")
        ),
        "onset_report_percentile_median": (
            float(np.median(percentiles)) if len(percentiles) else float("nan")
        ),
        "onsets_reported_above_median": (
            float(np.mean(percentiles > 50.0)) if len(percentiles) else float("nan")
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=TRACES_DIR, help="folder of trace files")
    parser.add_argument("--trace", type=Path, action="append", default=[], help="one trace file")
    parser.add_argument("--outage-mbps", type=float, default=OUTAGE_MBPS)
    parser.add_argument("--min-outage-s", type=float, default=MIN_OUTAGE_S)
    parser.add_argument("--report-delay-s", type=float, default=DEFAULT_DELAY_S)
    args = parser.parse_args(argv)
    if not (args.outage_mbps > 0 and args.min_outage_s > 0 and args.report_delay_s >= STEP_S):
        parser.error(
            f"--outage-mbps and --min-outage-s must be positive and --report-delay-s at least "
            f"{STEP_S}"
        )
    paths = list(args.trace) or documented_traces(args.traces)
    missing = [path for path in paths if not path.is_file()]
    if missing:
        parser.error(f"no such trace file: {missing[0]}")
    if not paths:
        print(f"skipped: no documented trace in {args.traces}")
        return 0
    rows = [
        describe(path, args.outage_mbps, args.min_outage_s, args.report_delay_s) for path in paths
    ]
    print_table(
        rows,
        [
            ("trace", "trace", "s"),
            ("outages", "outages", "d"),
            ("onsets_per_minute", "onsets/min", ".2f"),
            ("outage_time_fraction", "time in outage", ".3f"),
            ("median_outage_s", "median s", ".1f"),
            ("max_outage_s", "max s", ".1f"),
            ("median_report_mbps", "median report", ".2f"),
            ("onsets_announced", "announced", ".2f"),
            ("onset_report_percentile_median", "onset report pct", ".0f"),
            ("onsets_reported_above_median", "above median", ".2f"),
        ],
    )
    settings = {
        "step_s": STEP_S,
        "outage_mbps": args.outage_mbps,
        "min_outage_s": args.min_outage_s,
        "report_delay_s": args.report_delay_s,
    }
    path = write_results("outage_risk", {**settings, "traces": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
