"""The ``splitrl`` command line.

Each subcommand lives in the module that owns its job and exposes two functions:
``configure_parser(parser)`` adds its arguments and ``run(args) -> int`` does the work. Those modules
keep their heavy imports (torch, stable-baselines3) inside ``run`` so that ``splitrl --help`` stays fast.

Errors that come from bad input (a malformed file, an unknown preset, a bad flag value) are reported as
one line ``splitrl: error: ...`` with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: subcommand -> (module that implements it, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "splitrl.demo",
        "run the main job on the shipped default profile and print the comparison",
    ),
    "profile": (
        "splitrl.profiles.cli",
        "build, inspect or validate a profile of an early-exit DNN",
    ),
    "scenario": (
        "splitrl.evaluation.scenario_fit",
        "fit a scenario's frame rate and deadline to a profile on a device",
    ),
    "train": (
        "splitrl.training.cli",
        "train a policy (SACD or a comparison learner) in a scenario",
    ),
    "evaluate": (
        "splitrl.evaluation.cli",
        "evaluate trained policies and baselines on the same seeded episodes",
    ),
    "audit-offloads": (
        "splitrl.evaluation.audit_cli",
        "split a trained policy's gain over a rule into its offloads and the requests after them",
    ),
    "export": ("splitrl.runtime.export", "export a trained policy and the DNN segments to ONNX"),
    "run-device": (
        "splitrl.runtime.device",
        "run real split inference as a device against a server",
    ),
    "serve": ("splitrl.runtime.server", "run the edge server"),
    "sweep": (
        "splitrl.sweeps.sweep",
        "run a grid of trainings and evaluations (a sweep file) on Ray or a process pool",
    ),
    "tune": ("splitrl.sweeps.tune", "search a learner's hyperparameters with Ray Tune"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="splitrl",
        description="Adaptive split computing with early exits, learned by discrete Soft Actor-Critic.",
    )
    from splitrl import __version__

    parser.add_argument("--version", action="version", version=f"splitrl {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.configure_parser(subparser)
        subparser.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print("splitrl: interrupted", file=sys.stderr)
        return 130
    except (
        ValueError,
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
        ConnectionError,
    ) as error:
        # Bad input is the user's to fix: one clear line, no traceback.
        print(f"splitrl {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
