"""``splitrl evaluate``: trained runs and baselines on the same seeded episodes, with a report.

Examples::

    splitrl evaluate runs/sacd_default_s0_*                  # the runs' scenario and channel
    splitrl evaluate runs/sacd_* runs/ppo_* --episodes 50 --out results/eval
    splitrl evaluate runs/sacd_default_s0_* --channel fading --which best
    splitrl evaluate runs/sacd_default_s0_* --trace walk.csv --trace bus.up
    splitrl evaluate --scenario pizero-lte --baselines greedy,neurosurgeon   # baselines only

See ``docs/evaluation.md`` for the protocol, the metrics, the normalized score and the plots.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from splitrl.arguments import HelpFormatter, integer_at_least

#: the output folder unless ``--out`` says otherwise
DEFAULT_OUT = "results/evaluation"


def add_model_choice(parser: argparse.ArgumentParser) -> None:
    """Add ``--which``: the final or the best model of each run."""
    parser.add_argument(
        "--which",
        choices=("final", "best"),
        default="final",
        help="model of each run: final (model.zip, default) or best (best_model.zip)",
    )


def add_condition_arguments(parser: argparse.ArgumentParser, *, several_traces: bool) -> None:
    """Add where and on which episodes policies play: ``--scenario``, ``--channel`` or
    ``--trace``, ``--episodes``, ``--seed`` and ``--fit-episodes``.

    :param several_traces: ``--trace`` is repeatable, each file its own condition
    """
    from splitrl.evaluation.defaults import (
        DEFAULT_EVAL_EPISODES,
        DEFAULT_EVAL_SEED,
        DEFAULT_FIT_EPISODES,
    )

    parser.add_argument(
        "--scenario", help="named scenario (default: the runs' own; default without runs)"
    )
    channels = parser.add_mutually_exclusive_group()
    channels.add_argument(
        "--channel",
        help="channel model (markov, gilbert-elliott, fading, constant) or trace:PATH",
    )
    if several_traces:
        channels.add_argument(
            "--trace",
            action="append",
            default=[],
            metavar="PATH",
            help="trace file, one evaluation condition each (repeatable)",
        )
    else:
        channels.add_argument("--trace", metavar="PATH", help="trace file to play")
    parser.add_argument(
        "--episodes",
        type=integer_at_least(2),
        default=DEFAULT_EVAL_EPISODES,
        help=f"episodes per condition, at least 2 (default: {DEFAULT_EVAL_EPISODES})",
    )
    parser.add_argument(
        "--seed",
        type=integer_at_least(0),
        default=DEFAULT_EVAL_SEED,
        help="reset seed of the first episode, apart from training seeds "
        f"(default: {DEFAULT_EVAL_SEED})",
    )
    parser.add_argument(
        "--fit-episodes",
        type=integer_at_least(1),
        default=DEFAULT_FIT_EPISODES,
        help="training-channel episodes per action to fit best-static and the other fitted "
        f"baselines (default: {DEFAULT_FIT_EPISODES})",
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``splitrl evaluate``."""
    parser.formatter_class = HelpFormatter
    parser.epilog = "Metrics, normalized score, plots: docs/evaluation.md"
    parser.add_argument(
        "runs", nargs="*", metavar="RUN", help="run directories written by splitrl train"
    )
    add_model_choice(parser)
    parser.add_argument(
        "--baselines",
        default="all",
        help="all (default: every baseline but the learned mpc-quantile), none, or a comma list; "
        "the references (every causal baseline and clairvoyant-lookahead) are always evaluated",
    )
    parser.add_argument("--profile", help="profile name or path, replacing the scenario's")
    add_condition_arguments(parser, several_traces=True)
    parser.add_argument(
        "--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})"
    )
    parser.add_argument("--no-plots", action="store_true", help="write no plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--torch-threads",
        type=integer_at_least(1),
        default=1,
        help="torch CPU threads (default: 1, fastest for small networks)",
    )
    parser.add_argument(
        "--jobs",
        type=integer_at_least(1),
        default=1,
        help="conditions (traces) evaluated at once, each in its own process (default: 1)",
    )


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the markdown report and write the files; returns the exit status."""
    import torch

    from splitrl.evaluation.plots import plot_evaluation
    from splitrl.evaluation.report import markdown_report, write_reports
    from splitrl.evaluation.suite import (
        baseline_names,
        evaluate,
        evaluation_conditions,
        evaluation_scenario,
        load_runs,
    )

    torch.set_num_threads(args.torch_threads)
    baselines = baseline_names(args.baselines)
    runs = load_runs(args.runs, which=args.which)
    scenario = evaluation_scenario(runs, args.scenario, args.profile)
    conditions = evaluation_conditions(scenario, args.channel, args.trace)
    result = evaluate(
        runs,
        baselines,
        conditions,
        episodes=args.episodes,
        seed=args.seed,
        fit_episodes=args.fit_episodes,
        progress=not args.no_progress,
        jobs=args.jobs,
    )
    out = Path(args.out)
    print(markdown_report(result))
    paths = write_reports(result, out)
    print(f"tables: {paths['markdown']}, {paths['csv']}, {paths['json']}")
    if not args.no_plots:
        plots = plot_evaluation(result, out)
        print(f"plots: {len(plots)} PNG files in {out}")
    return 0
