"""``splitrl sweep``: run a grid of trainings and evaluations (a sweep file), then report.

Examples::

    splitrl sweep benchmarks/sweeps/policy.yaml                  # local Ray, one CPU per trial
    splitrl sweep my_sweep.yaml --address auto                   # on a running Ray cluster
    splitrl sweep my_sweep.yaml --runner processes --jobs 2      # a process pool, without Ray
    splitrl sweep my_sweep.yaml --report-only                    # aggregate the finished cells
    splitrl sweep benchmarks/sweeps/policy.yaml --set seeds=3 "conditions=[markov]" trace_dir=null

Every finished cell is a JSON file under the sweep's results folder; running the same sweep again
runs only the cells without a file. The report (rliable over the training seeds: tables, CSV,
JSON, plots) goes to ``OUT/report/``. See ``docs/scaling.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Sequence
from typing import Any, Literal

import yaml

from splitrl.arguments import HelpFormatter, integer_at_least
from splitrl.sweeps.cells import RunSummary, read_cell
from splitrl.sweeps.grid import Sweep, load_sweep

Runner = Literal["ray", "processes"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``splitrl sweep``."""
    parser.formatter_class = HelpFormatter
    parser.epilog = "Sweep file format and the cluster recipe: docs/scaling.md"
    parser.add_argument("sweep", metavar="SWEEP.yaml", help="the sweep file")
    parser.add_argument("--out", help="results folder, replacing the sweep file's 'out'")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="ENTRY=VALUE",
        help="replace entries of the sweep file; values are YAML (seeds=3 "
        "'learners=[sacd, sacd-alpha]'; null removes an entry)",
    )
    parser.add_argument(
        "--runner",
        choices=("ray", "processes"),
        default="ray",
        help="ray (default: Ray Tune trials) or processes (a process pool on this machine)",
    )
    parser.add_argument(
        "--address",
        help="join a running Ray cluster: auto or HOST:PORT (default: start Ray locally)",
    )
    parser.add_argument(
        "--num-cpus",
        type=integer_at_least(1),
        help="CPUs of a local Ray, one per trial (default: every CPU)",
    )
    parser.add_argument(
        "--jobs", type=integer_at_least(1), default=2, help="processes of --runner processes"
    )
    parser.add_argument(
        "--storage-path",
        help="Ray Tune's experiment folder (default: OUT/ray); shared storage on a cluster",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="aggregate the finished cells, run nothing"
    )


def check_runner(runner: Runner) -> None:
    """Refuse the Ray runner where Ray is not installed, before any work."""
    if runner == "ray" and importlib.util.find_spec("ray") is None:
        raise ValueError(
            "Ray is not installed: pip install 'splitrl[scale]', or use --runner processes"
        )


def parse_entries(items: Sequence[str]) -> dict[str, Any]:
    """``ENTRY=VALUE`` items as a mapping; each value is read as YAML.

    :raises ValueError: for an item without ``=`` or a value that is not YAML
    """
    entries: dict[str, Any] = {}
    for item in items:
        key, separator, text = item.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"--set expects ENTRY=VALUE, got {item!r}")
        try:
            entries[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ValueError(f"--set {key}: value {text!r} is not valid YAML") from None
    return entries


def run_sweep(
    sweep: Sweep,
    *,
    runner: Runner = "ray",
    address: str | None = None,
    num_cpus: int | None = None,
    jobs: int = 2,
    storage_path: str | None = None,
) -> RunSummary:
    """Run every cell of ``sweep`` that has no file yet.

    :param runner: ``"ray"`` (Tune trials, :mod:`splitrl.sweeps.ray_runner`) or ``"processes"``
    :param address: the Ray cluster to join (``None``: Ray on this machine)
    :param num_cpus: CPUs of a local Ray
    :param jobs: processes of the process pool
    :param storage_path: Tune's experiment folder
    """
    check_runner(runner)
    out = sweep.out.resolve()
    trials = sweep.trials()
    pending = sum(len(trial.keys) for trial in trials)
    total = sweep.cell_count()
    print(
        f"{pending} of {total} cells to run ({total - pending} done) in {len(trials)} trials",
        flush=True,
    )
    again = [
        trial.name
        for trial in trials
        if trial.train is not None and read_cell(out, trial.train.key) is not None
    ]
    if again:
        print(
            f"trained again, their run directories gone ({len(again)}): " + ", ".join(again),
            flush=True,
        )
    if runner == "processes":
        from splitrl.sweeps.pool_runner import run_in_pool

        return run_in_pool(trials, out, jobs=jobs)
    from splitrl.sweeps.ray_runner import ray_session, run_on_ray

    with ray_session(address, num_cpus):
        return run_on_ray(trials, out, storage_path=storage_path)


def report(sweep: Sweep) -> dict[str, Any]:
    """Aggregate the finished cells and write the report to its folder (``OUT/report`` unless the
    sweep file names one); returns the document."""
    from splitrl.sweeps.report import sweep_document, write_report

    document = sweep_document(sweep)
    paths = write_report(document, sweep.report_folder)
    print(f"report: {', '.join(str(path) for path in paths)}")
    return document


def run(args: argparse.Namespace) -> int:
    """Run the sweep and write its report; 1 when a trial failed."""
    check_runner(args.runner)
    changes = parse_entries(args.set)
    if args.out is not None:
        changes["out"] = args.out
    sweep = load_sweep(args.sweep, **changes)
    summary = RunSummary()
    if not args.report_only:
        started = time.perf_counter()
        summary = run_sweep(
            sweep,
            runner=args.runner,
            address=args.address,
            num_cpus=args.num_cpus,
            jobs=args.jobs,
            storage_path=args.storage_path,
        )
        print(
            f"{len(summary.finished)} trials finished, {len(summary.failed)} failed "
            f"in {time.perf_counter() - started:.0f} s"
        )
        for name, error in summary.failed.items():
            print(f"  FAILED {name}: {error}")
    from splitrl.sweeps.report import markdown_report

    print(markdown_report(report(sweep)), end="")
    return 1 if summary.failed else 0
