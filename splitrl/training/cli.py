"""``splitrl train``: train SACD or a comparison learner in a scenario.

Examples::

    splitrl train                                   # SACD in the default scenario
    splitrl train --algo maskable-ppo --scenario pizero-lte --timesteps 50000 --seed 1
    splitrl train --conf-file hyperparams.yaml --hyperparams gamma=0.95 batch_size=256
    splitrl train --resume runs/sacd_default_s0_20250101-120000 --timesteps 60000

The options that configure a run are generated from :class:`~splitrl.training.config.TrainConfig`
(its fields' :class:`~splitrl.training.config.Flag`). See ``docs/training.md`` for the flags, what
they borrow from RL Baselines3 Zoo, the config file and the run directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from splitrl.arguments import HelpFormatter, integer_at_least
from splitrl.training.config import Flag, TrainConfig, flags

#: flags of the command that are not fields of :class:`TrainConfig`, and that define a run
_HYPERPARAMETER_FLAGS = {"conf_file": "--conf-file", "hyperparams": "--hyperparams"}


def _add_flag(group: argparse._ArgumentGroup, name: str, flag: Flag, default: Any) -> None:
    """Add the option of a :class:`TrainConfig` field; unset options stay ``None``."""
    option = flag.option(name)
    help_text = flag.help if default is None else f"{flag.help} (default: {default})"
    if flag.const is not None:
        group.add_argument(
            option, dest=name, action="store_const", const=flag.const, help=help_text
        )
        return
    checks: dict[str, Any] = {"choices": flag.choices}
    if flag.minimum is not None:
        checks["type"] = integer_at_least(flag.minimum)
    if flag.choices is None:
        checks["metavar"] = option.lstrip("-").replace("-", "_").upper()
    group.add_argument(option, dest=name, help=help_text, **checks)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``splitrl train``: one per :class:`TrainConfig` flag, and the rest."""
    parser.formatter_class = HelpFormatter
    parser.epilog = "Run directory layout, config file format and learners: docs/training.md"
    groups = {
        "what": parser.add_argument_group("what to train"),
        "how": parser.add_argument_group("how to train"),
        "output": parser.add_argument_group("output"),
    }
    defaults = {item.name: item.default for item in dataclasses.fields(TrainConfig)}
    for name, flag in flags().items():
        _add_flag(groups[flag.group], name, flag, defaults[name])
    groups["how"].add_argument(
        "--conf-file", help="YAML file with per-algorithm hyperparameters (see docs/training.md)"
    )
    groups["how"].add_argument(
        "--hyperparams",
        nargs="+",
        metavar="KEY=VALUE",
        help="override hyperparameters; values are YAML (gamma=0.95 ent_coef=auto)",
    )
    groups["how"].add_argument(
        "--torch-threads",
        type=integer_at_least(1),
        default=1,
        help="torch CPU threads (default: 1, fastest for small networks)",
    )
    groups["output"].add_argument(
        "--resume",
        metavar="RUN",
        help="continue run directory RUN from its latest checkpoint (with its own configuration)",
    )
    groups["output"].add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed flags (config file and ``--hyperparams`` merged)."""
    from splitrl.agents.learners import LEARNERS, get_learner
    from splitrl.training.config import load_conf_file, parse_hyperparams

    algo = get_learner(args.algo or TrainConfig.algo).name
    hyperparameters: dict[str, Any] = {}
    if args.conf_file is not None:
        hyperparameters.update(load_conf_file(args.conf_file, algo, list(LEARNERS)))
    hyperparameters.update(parse_hyperparams(args.hyperparams or []))
    given = {name: getattr(args, name) for name in flags() if getattr(args, name) is not None}
    return TrainConfig(**{**given, "algo": algo}, hyperparameters=hyperparameters)


def run_defining_flags(args: argparse.Namespace) -> list[str]:
    """The flags given in ``args`` that define a run, which ``--resume`` takes from the run."""
    given = [
        flag.option(name)
        for name, flag in flags().items()
        if not flag.resumable and getattr(args, name) is not None
    ]
    hyperparameter_flags = [
        option for name, option in _HYPERPARAMETER_FLAGS.items() if getattr(args, name) is not None
    ]
    return given + hyperparameter_flags


def run(args: argparse.Namespace) -> int:
    """Train (or resume) and print where the run went; 130 if interrupted (the model is saved)."""
    import torch

    from splitrl.training.trainer import resume, train

    torch.set_num_threads(args.torch_threads)
    progress_bar = not args.no_progress
    if args.resume is not None:
        conflicting = run_defining_flags(args)
        if conflicting:
            raise ValueError(
                f"--resume continues a run with its own configuration; drop {', '.join(conflicting)}"
            )
        from splitrl.training.run_dir import RunDirectory

        previous = RunDirectory(Path(args.resume)).read_config()
        print(
            f"resuming {args.resume}: {previous.get('status')} at "
            f"{previous.get('num_timesteps')} timesteps",
            file=sys.stderr,
        )
        result = resume(
            args.resume,
            timesteps=args.timesteps,
            eval_freq=args.eval_freq,
            checkpoint_freq=args.checkpoint_freq,
            progress_bar=progress_bar,
        )
    else:
        result = train(config_from_args(args), progress_bar=progress_bar)
    path = result.run_dir.path
    if result.resumed_from is not None:
        print(f"continued from the checkpoint of {result.resumed_from.num_timesteps} timesteps")
    if result.interrupted:
        print(
            f"interrupted after {result.num_timesteps} timesteps; model saved to {path}\n"
            f"continue with: splitrl train --resume {path}",
            file=sys.stderr,
        )
        return 130
    print(f"trained {result.num_timesteps} timesteps: {path}")
    print(f"view the logs with: tensorboard --logdir {result.run_dir.tensorboard_dir}")
    return 0
