"""The real development traces as the parsers read them: mean, spread, duration and correlation.

Run with ``python -m benchmarks.bench_traces`` (or ``make bench``); results go to
``results/bench_traces.json``. The traces are read from ``../shared/traces`` (``--traces DIR``
for another folder); without them the benchmark says so and exits 0. For every trace it reports
the mean rate, the 5th and 95th percentiles and the lag-1 autocorrelation of 1-second bins and
the duration, and checks the mean and the duration against the figures published with the traces
(within 1%).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import print_table, write_results
from splitrl.envs.channels import TraceChannel
from splitrl.envs.traces import load_trace

TRACES_DIR = Path(__file__).resolve().parents[2] / "shared" / "traces"
#: published mean rate (Mbit/s) and duration (s) of each trace
DOCUMENTED = {
    "Verizon-LTE-short.up": (5.95, 140.0),
    "TMobile-LTE-short.up": (13.3, 140.0),
    "norway_bus_1": (2.92, 155.0),
    "norway_car_1": (1.50, 280.0),
    "Verizon-EVDO-driving.up": (0.84, 1065.0),
}
TOLERANCE = 0.01


def documented_traces(folder: Path) -> list[Path]:
    """The documented traces (:data:`DOCUMENTED`) that ``folder`` holds, sorted by path."""
    return sorted(folder / name for name in DOCUMENTED if (folder / name).is_file())


def describe(path: Path) -> dict[str, Any]:
    """The statistics of one trace file, in 1-second bins of its replay."""
    trace = load_trace(path)
    channel = TraceChannel(trace, random_start=False)
    channel.reset(np.random.default_rng(0))
    n_bins = math.floor(trace.duration_s)
    bins = np.array([channel.mean_throughput(t, t + 1.0) for t in range(n_bins)]) / 1e6
    mean_mbps, duration_s = trace.mean_rate_bps / 1e6, trace.duration_s
    documented_mbps, documented_s = DOCUMENTED.get(path.name, (math.nan, math.nan))
    return {
        "trace": path.name,
        "format": trace.source_format,
        "mean_mbps": mean_mbps,
        "p5_mbps": float(np.percentile(bins, 5)),
        "p95_mbps": float(np.percentile(bins, 95)),
        "lag1_autocorrelation": float(np.corrcoef(bins[:-1], bins[1:])[0, 1]),
        "duration_s": duration_s,
        "documented_mean_mbps": documented_mbps,
        "documented_duration_s": documented_s,
        "matches_documentation": bool(
            abs(mean_mbps / documented_mbps - 1) <= TOLERANCE
            and abs(duration_s / documented_s - 1) <= TOLERANCE
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=TRACES_DIR, help="folder of trace files")
    args = parser.parse_args(argv)
    paths = documented_traces(args.traces)
    if not paths:
        print(f"skipped: no documented trace in {args.traces}")
        return 0
    rows = [describe(path) for path in paths]
    print_table(
        rows,
        [
            ("trace", "trace", "s"),
            ("format", "format", "s"),
            ("mean_mbps", "mean Mbit/s", ".2f"),
            ("documented_mean_mbps", "documented", ".2f"),
            ("p5_mbps", "p5", ".2f"),
            ("p95_mbps", "p95", ".2f"),
            ("lag1_autocorrelation", "lag-1 r", ".2f"),
            ("duration_s", "duration s", ".0f"),
            ("matches_documentation", "matches", ""),
        ],
    )
    path = write_results("traces", {"tolerance": TOLERANCE, "traces": rows})
    print(f"wrote {path}")
    return 0 if all(row["matches_documentation"] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
