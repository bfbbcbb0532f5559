"""The texture of every channel at 100 ms: the synthetic scenario channels against the real traces.

A request meets the link over tens of milliseconds, so what a policy or a link forecast trained on
synthetic channels has to generalize from is the channel's texture at that scale: how much the
rate moves from one 100 ms bin to the next, how long it remembers, how often it falls silent. For
each scenario channel of ``--scenario`` (realized over ``--episodes`` episodes of ``--seconds``,
seeds from 0) and each trace of ``../shared/traces`` (replayed once from its start), in bins of
``BIN_S``:

* the mean rate, and the share of silent bins (below ``SILENT_MBPS``);
* the lag-1 and lag-10 autocorrelation of the log rate (silent bins held at ``SILENT_MBPS``);
* the standard deviation of the step in log rate between two consecutive bins that both carry
  data;
* outages (silent runs of at least 1 s) per minute, and the longest silent run.

    python -m benchmarks.bench_channel_texture
    python -m benchmarks.bench_channel_texture --channels cellular randomized-cellular --episodes 50

Without the traces folder (``--traces DIR``) only the synthetic channels are described. Writes
``results/bench_channel_texture.json``.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_outage_risk import outage_runs
from benchmarks.bench_traces import TRACES_DIR, documented_traces
from benchmarks.common import print_table, write_results
from splitrl.envs.channels import Channel, TraceChannel
from splitrl.envs.scenarios import SCENARIO_CHANNELS, resolve_scenario
from splitrl.envs.traces import load_trace

#: the bin in which every channel is described: a trace's replay bin and a request's time scale
BIN_S = 0.1
#: a bin below this rate carries (next to) nothing
SILENT_MBPS = 0.05
#: the shortest silent run counted as an outage, in bins
OUTAGE_BINS = 10
#: the synthetic channels described by default (``constant`` has no texture)
DEFAULT_CHANNELS = tuple(name for name in SCENARIO_CHANNELS if name != "constant")


def bin_rates_mbps(channel: Channel, seconds: float) -> np.ndarray:
    """The channel's mean rate over consecutive bins of :data:`BIN_S` from 0, in Mbit/s."""
    edges = np.arange(0.0, seconds + BIN_S / 2, BIN_S)
    return np.array([channel.mean_throughput(a, b) for a, b in itertools.pairwise(edges)]) / 1e6


def texture(realizations: list[np.ndarray]) -> dict[str, float]:
    """The statistics of a channel from its realizations (rates per bin, Mbit/s), pooled."""
    lag1, lag10, steps, runs = [], [], [], []
    for rates in realizations:
        logs = np.log(np.maximum(rates, SILENT_MBPS))
        lag1.append(np.corrcoef(logs[:-1], logs[1:])[0, 1])
        lag10.append(np.corrcoef(logs[:-10], logs[10:])[0, 1])
        carrying = rates >= SILENT_MBPS
        both = carrying[:-1] & carrying[1:]
        steps.append(np.diff(logs)[both])
        runs.append(
            np.array([length for _, length in outage_runs(rates, SILENT_MBPS, 1)], dtype=int)
        )
    every_bin = np.concatenate(realizations)
    every_run = np.concatenate(runs)
    minutes = len(every_bin) * BIN_S / 60.0
    return {
        "mean_mbps": float(every_bin.mean()),
        "silent_share": float(np.mean(every_bin < SILENT_MBPS)),
        # a constant stretch has no correlation; nanmean skips it
        "lag1_log": float(np.nanmean(lag1)),
        "lag10_log": float(np.nanmean(lag10)),
        "log_step_std": float(np.concatenate(steps).std()),
        "outages_per_min": float(np.sum(every_run >= OUTAGE_BINS) / minutes),
        "longest_silence_s": float(every_run.max(initial=0) * BIN_S),
    }


def describe_channel(name: str, scenario: str, episodes: int, seconds: float) -> dict[str, Any]:
    """One scenario channel's texture over ``episodes`` realizations."""
    channel = resolve_scenario(scenario, channel=name).channel
    realizations = []
    for seed in range(episodes):
        channel.reset(np.random.default_rng(seed))
        realizations.append(bin_rates_mbps(channel, seconds))
    return {"channel": name, "kind": "synthetic", **texture(realizations)}


def describe_trace(path: Path) -> dict[str, Any]:
    """One trace's texture over one replay from its start."""
    trace = load_trace(path, bin_s=BIN_S)
    channel = TraceChannel(trace, random_start=False)
    channel.reset(np.random.default_rng(0))
    return {
        "channel": path.name,
        "kind": "trace",
        **texture([bin_rates_mbps(channel, trace.duration_s - BIN_S)]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="default-timeout")
    parser.add_argument("--channels", nargs="+", default=list(DEFAULT_CHANNELS))
    parser.add_argument("--episodes", type=int, default=20, help="realizations per channel")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of a realization")
    parser.add_argument("--traces", type=Path, default=TRACES_DIR, help="folder of trace files")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.channels) - set(SCENARIO_CHANNELS))
    if unknown:
        parser.error(f"unknown channels {unknown}; known: {', '.join(SCENARIO_CHANNELS)}")
    if args.episodes < 1:
        parser.error(f"--episodes must be at least 1, got {args.episodes}")
    if not args.seconds >= 20 * BIN_S:
        parser.error(f"--seconds must be at least {20 * BIN_S:g}, got {args.seconds}")
    rows = [
        describe_channel(name, args.scenario, args.episodes, args.seconds) for name in args.channels
    ]
    paths = documented_traces(args.traces)
    if not paths:
        print(f"no documented trace in {args.traces}: only the synthetic channels are described")
    rows += [describe_trace(path) for path in paths]
    print_table(
        rows,
        [
            ("channel", "channel", "s"),
            ("mean_mbps", "mean Mbit/s", ".2f"),
            ("silent_share", "silent", ".3f"),
            ("lag1_log", "lag-1 r", ".2f"),
            ("lag10_log", "lag-10 r", ".2f"),
            ("log_step_std", "step std", ".2f"),
            ("outages_per_min", "outages/min", ".2f"),
            ("longest_silence_s", "longest s", ".1f"),
        ],
    )
    settings = {
        "scenario": args.scenario,
        "episodes": args.episodes,
        "seconds": args.seconds,
        "bin_s": BIN_S,
        "silent_mbps": SILENT_MBPS,
        "outage_s": OUTAGE_BINS * BIN_S,
    }
    path = write_results("channel_texture", {"settings": settings, "channels": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
