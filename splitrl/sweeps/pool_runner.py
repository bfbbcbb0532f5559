"""Run trials in a pool of processes on this machine (no Ray): the runner without the extra."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from splitrl.sweeps.cells import (
    RunSummary,
    Trial,
    error_line,
    errors_as_text,
    run_trial,
    write_cell,
)


def _run_and_write(trial: Trial, out: Path) -> None:
    def write(key: str, result: dict[str, Any]) -> None:
        write_cell(out, key, result)

    with errors_as_text():
        run_trial(trial, write)


def run_in_pool(trials: Sequence[Trial], out: Path, *, jobs: int) -> RunSummary:
    """Run ``trials`` in ``jobs`` processes (``spawn``), each writing its cells under ``out`` as
    they finish; a trial that raises is reported, and the others run on.

    Prints a line for each trial that ends, with the counts of done, running and failed trials.
    """
    summary = RunSummary()
    if not trials:
        return summary
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures: dict[Future[None], Trial] = {
            pool.submit(_run_and_write, trial, out): trial for trial in trials
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                trial = futures[future]
                error = future.exception()
                if error is None:
                    summary.finished.append(trial.name)
                    status = "done"
                else:
                    summary.failed[trial.name] = error_line(error)
                    status = f"FAILED: {summary.failed[trial.name]}"
                running = min(jobs, len(pending))
                print(
                    f"[{len(summary.finished)} done, {running} running, "
                    f"{len(summary.failed)} failed, {len(pending) - running} waiting; "
                    f"{time.perf_counter() - started:.0f} s] {trial.name}: {status}",
                    flush=True,
                )
    return summary
