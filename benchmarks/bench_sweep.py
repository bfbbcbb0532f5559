"""Sweeps on Ray against the process pool: the same 4 equal cells, and Ray's fixed costs.

Run with ``python -m benchmarks.bench_sweep`` (part of ``make bench``; needs ``splitrl[scale]``).

* **4 equal cells** (SACD, 4 training seeds, ``--timesteps`` steps each, then one evaluation
  episode on the Markov channel), two at a time, torch at one thread: the wall time of
  ``splitrl sweep`` on a local Ray of two CPUs, Ray's start and stop included, against the same
  cells in the process pool (``--runner processes --jobs 2``). Goal: Ray at most 10% slower.
  Each round runs both, the order alternating from round to round. Besides the wall time, each
  run's time beyond its cells (the wall time less half the seconds its cells took, two running at
  a time) is what the runner itself adds: start, scheduling and stop.
* **Ray's fixed costs**: the seconds to start and stop a local Ray, and the wall time per trial of
  trials that do nothing (two at a time), through the same Tune runner.

Each runner writes its cells to a fresh folder, so neither finds the other's results. Results go
to ``results/bench_sweep.json``, with the load average before and after: on a shared machine other
jobs take CPU time from both runners unequally, and a load above the two cores disturbs the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import write_results
from splitrl.sweeps.sweep import Runner

#: the goal: Ray's wall time over the pool's
GOAL_RATIO = 1.10


def equal_cells(out: Path, timesteps: int) -> Any:
    """The sweep of 4 equal cells: SACD with 4 seeds, one evaluation episode, no baselines."""
    from splitrl.sweeps.grid import sweep_from_dict

    return sweep_from_dict(
        {
            "out": str(out),
            "scenarios": ["default"],
            "learners": ["sacd"],
            "seeds": 4,
            "timesteps": timesteps,
            "conditions": ["markov"],
            "episodes": 1,
            "baselines": [],
        },
        out,
    )


def timed_sweep(runner: Runner, timesteps: int) -> dict[str, float]:
    """The 4 cells through ``runner``: wall seconds (Ray: start and stop included), the seconds
    the cells themselves took (summed), and the wall time beyond them with two at a time (what
    the runner adds: start, scheduling, stop)."""
    from splitrl.sweeps.cells import read_cell
    from splitrl.sweeps.sweep import run_sweep

    with tempfile.TemporaryDirectory(prefix=f"bench_sweep_{runner}_") as folder:
        sweep = equal_cells(Path(folder), timesteps)
        started = time.perf_counter()
        summary = run_sweep(sweep, runner=runner, num_cpus=2, jobs=2)
        seconds = time.perf_counter() - started
        if summary.failed or len(summary.finished) != 4:
            raise RuntimeError(f"{runner}: {summary}")
        keys = [cell.key for cell in sweep.train_cells()]
        keys += [cell.key for train in sweep.train_cells() for cell in sweep.learner_cells(train)]
        results = [read_cell(sweep.out, key) for key in keys]
        cell_seconds = sum(float(result["seconds"]) for result in results if result is not None)
    return {"wall_s": seconds, "cell_s": cell_seconds, "beyond_cells_s": seconds - cell_seconds / 2}


def ray_fixed_costs(empty_trials: int) -> dict[str, float]:
    """Seconds to start and stop a local Ray, and wall seconds per empty trial (2 at a time)."""
    import ray

    from splitrl.sweeps.cells import ScenarioSpec, Trial
    from splitrl.sweeps.ray_runner import ray_session, run_on_ray

    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - started
    started = time.perf_counter()
    ray.shutdown()
    shutdown = time.perf_counter() - started
    trials = [
        Trial(f"empty{index}", ScenarioSpec("default", "default"), (), {})
        for index in range(empty_trials)
    ]
    with tempfile.TemporaryDirectory(prefix="bench_sweep_empty_") as folder, ray_session(None, 2):
        started = time.perf_counter()
        summary = run_on_ray(trials, Path(folder))
        seconds = time.perf_counter() - started
    if len(summary.finished) != empty_trials:
        raise RuntimeError(f"empty trials: {summary}")
    return {
        "startup_s": startup,
        "shutdown_s": shutdown,
        "empty_trials": empty_trials,
        "seconds_per_empty_trial": seconds / empty_trials,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--timesteps", type=int, default=3_000, help="training steps per cell (default: 3000)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds of (pool, Ray) (default: 1)")
    parser.add_argument(
        "--empty-trials", type=int, default=8, help="empty trials for the per-trial cost"
    )
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    load_before = os.getloadavg()
    rounds: list[dict[str, Any]] = []
    ratios = []
    for number in range(args.repeat):
        # alternate the order, so that a load that grows or shrinks favours neither runner
        order: list[Runner] = ["processes", "ray"] if number % 2 == 0 else ["ray", "processes"]
        measured = {runner: timed_sweep(runner, args.timesteps) for runner in order}
        pool, on_ray = measured["processes"], measured["ray"]
        ratio = on_ray["wall_s"] / pool["wall_s"]
        rounds.append({"pool": pool, "ray": on_ray, "ratio": ratio})
        ratios.append(ratio)
        print(
            f"pool {pool['wall_s']:.1f} s ({pool['beyond_cells_s']:.1f} s beyond the cells), "
            f"Ray {on_ray['wall_s']:.1f} s ({on_ray['beyond_cells_s']:.1f} s): ratio {ratio:.3f}",
            flush=True,
        )
    fixed = ray_fixed_costs(args.empty_trials)
    load_after = os.getloadavg()
    ratio = statistics.median(ratios)
    document = {
        "cells": 4,
        "timesteps": args.timesteps,
        "rounds": rounds,
        "ratio": ratio,
        "goal_ratio": GOAL_RATIO,
        "goal_met": ratio <= GOAL_RATIO,
        "ray_fixed_costs": fixed,
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "disturbed": max(load_before[0], load_after[0]) > 2.0,
    }
    print(
        f"Ray start {fixed['startup_s']:.1f} s, stop {fixed['shutdown_s']:.1f} s, "
        f"{fixed['seconds_per_empty_trial']:.2f} s per empty trial; "
        f"load average {load_before[0]:.1f} -> {load_after[0]:.1f}"
    )
    path = write_results("sweep", document)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
