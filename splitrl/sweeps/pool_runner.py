"""Run trials in a pool of processes on this machine (no Ray): the runner without the extra."""

from __future__ import annotations

import multiprocessing
import os
import threading
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

#: seconds between a worker's checks that the process that started it is alive
PARENT_CHECK_S = 1.0


def exit_with_parent(parent_pid: int) -> None:
    """Make this worker process exit once ``parent_pid`` is gone (a pool's ``initializer``).

    A driver stopped by ``SIGTERM`` or ``SIGKILL`` runs no clean-up, and the pool's workers would
    otherwise finish their trial and then wait forever for the next one. The cells a worker has
    written stay; a rerun resumes the trial it was running.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def worker_pool(jobs: int) -> ProcessPoolExecutor:
    """A pool of ``jobs`` fresh (``spawn``) processes that exit with this one."""
    return ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=exit_with_parent,
        initargs=(os.getpid(),),
    )


def _run_and_write(trial: Trial, out: Path) -> None:
    def write(key: str, result: dict[str, Any]) -> None:
        write_cell(out, key, result)

    with errors_as_text():
        run_trial(trial, write)


def run_in_pool(trials: Sequence[Trial], out: Path, *, jobs: int) -> RunSummary:
    """Run ``trials`` in ``jobs`` processes (``spawn``), each writing its cells under ``out`` as
    they finish; a trial that raises is reported, and the others run on. The workers exit when
    this process dies, however it is stopped (:func:`exit_with_parent`).

    Prints a line for each trial that ends, with the counts of done, running and failed trials.
    """
    summary = RunSummary()
    if not trials:
        return summary
    started = time.perf_counter()
    with worker_pool(jobs) as pool:
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
