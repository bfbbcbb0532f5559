"""Helpers shared by the benchmarks: timing, a printed table and JSON results."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path("results")


def best_time(
    function: Callable[[], object], *, repeat: int = 5, min_seconds: float = 0.002
) -> float:
    """Seconds per call: the best of ``repeat`` rounds, each long enough to be measurable.

    :param function: the call to time (no arguments).
    :param repeat: number of rounds; the fastest round is reported (least disturbed by others).
    :param min_seconds: a round repeats the call until it has run at least this long.
    """
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            function()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            break
        calls *= 2
    best = elapsed / calls
    for _ in range(repeat - 1):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def environment() -> dict[str, str]:
    """Machine and library versions, stored with every result file."""
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_results(name: str, results: dict[str, Any]) -> Path:
    """Write ``results`` (plus :func:`environment`) to ``results/bench_NAME.json``.

    :return: the path written.
    """
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"bench_{name}.json"
    path.write_text(json.dumps({"environment": environment(), **results}, indent=2) + "\n")
    return path


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> None:
    """Print rows as an aligned text table.

    :param rows: one dict per row.
    :param columns: ``(key, header, format spec)`` per column, e.g. ``("ratio", "x", ".2f")``.
    """
    cells = [[header for _, header, _ in columns]]
    cells += [[format(row[key], spec) for key, _, spec in columns] for row in rows]
    widths = [max(len(line[index]) for line in cells) for index in range(len(columns))]
    for number, line in enumerate(cells):
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))
        if number == 0:
            print("  ".join("-" * width for width in widths))
