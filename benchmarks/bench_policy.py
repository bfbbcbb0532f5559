"""Policy quality: learners (several training seeds each) against every baseline, per condition.

The benchmark is the sweep file ``benchmarks/sweeps/policy.yaml`` run by ``splitrl sweep``
(:mod:`splitrl.sweeps`): a grid of training cells and evaluation cells, each one JSON file under
``results/bench_policy/``, resumed by file existence, aggregated over training seeds with rliable.
This module runs the same sweep with the benchmark's flags and writes the aggregate to
``results/bench_policy.json`` (the README's numbers)::

    python -m benchmarks.bench_policy --quick        # 2 seeds, 10k steps, markov only, 10 episodes
    python -m benchmarks.bench_policy --learners sacd,sacd-alpha --seeds 3 --conditions markov
    splitrl sweep benchmarks/sweeps/policy.yaml      # the full grid, on Ray

Learners are the learners of ``splitrl train`` or the ablation variants of the sweep file.
Conditions: ``markov``, ``fading``, ``gilbert-elliott`` and ``trace:NAME`` for every trace in
``../shared/traces/``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import write_results

#: the benchmark's sweep file
POLICY_SWEEP = Path(__file__).resolve().parent / "sweeps" / "policy.yaml"


def sweep_document(args: argparse.Namespace) -> dict[str, Any]:
    """The sweep file's entries with the flags applied."""
    document: dict[str, Any] = yaml.safe_load(POLICY_SWEEP.read_text())
    if args.quick:
        document.update(seeds=2, timesteps=10_000, conditions=["markov"], episodes=10)
        document.pop("trace_dir")
    if args.conditions:
        names = [item.strip() for item in args.conditions.split(",")]
        folder = document.pop("trace_dir", "../../../shared/traces")
        document["conditions"] = [
            f"trace:{folder}/{name[len('trace:') :]}"
            if name.startswith("trace:") and "/" not in name
            else name
            for name in names
        ]
    for name in ("learners", "scenarios"):
        value = getattr(args, name)
        if value:
            document[name] = [item.strip() for item in value.split(",")]
    for name in ("seeds", "timesteps", "episodes"):
        value = getattr(args, name)
        if value is not None:
            document[name] = value
    if args.out is not None:
        document["out"] = str(args.out)
    return document


def main(argv: Sequence[str] | None = None) -> int:
    from splitrl.arguments import integer_at_least
    from splitrl.sweeps.grid import sweep_from_dict
    from splitrl.sweeps.report import markdown_report, write_report
    from splitrl.sweeps.report import sweep_document as aggregate
    from splitrl.sweeps.sweep import check_runner, run_sweep

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="two seeds, 10k steps, markov only, 10 episodes"
    )
    parser.add_argument("--learners", help="comma-separated learners and variants")
    parser.add_argument("--scenarios", help="comma-separated scenario presets (default: default)")
    parser.add_argument("--conditions", help="comma-separated conditions (default: all)")
    parser.add_argument("--seeds", type=integer_at_least(1), help="training seeds per learner")
    parser.add_argument("--timesteps", type=integer_at_least(1), help="training steps per run")
    parser.add_argument(
        "--episodes", type=integer_at_least(1), help="evaluation episodes per condition"
    )
    parser.add_argument(
        "--jobs", type=integer_at_least(1), default=2, help="processes at once (default: 2)"
    )
    parser.add_argument(
        "--runner",
        choices=("processes", "ray"),
        default="processes",
        help="processes (default) or ray (as splitrl sweep)",
    )
    parser.add_argument("--out", type=Path, help="cell files (default: results/bench_policy)")
    args = parser.parse_args(argv)
    try:
        check_runner(args.runner)
        sweep = sweep_from_dict(sweep_document(args), POLICY_SWEEP.parent)
    except (ValueError, KeyError, FileNotFoundError) as error:
        parser.error(str(error))
    summary = run_sweep(sweep, runner=args.runner, jobs=args.jobs)
    document = aggregate(sweep)
    write_report(document, sweep.out / "report")
    print(markdown_report(document), end="")
    path = write_results("policy", document)
    print(f"results: {path}")
    for name, message in summary.failed.items():
        print(f"FAILED {name}: {message}")
    return 1 if summary.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
