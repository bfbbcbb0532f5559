"""``splitrl train``: train SACD or a comparison learner in a scenario (RL Baselines3 Zoo conventions).

Examples::

    splitrl train                                   # SACD in the default scenario
    splitrl train --algo maskable-ppo --scenario pizero-lte --timesteps 50000 --seed 1
    splitrl train --conf-file hyperparams.yaml --hyperparams gamma=0.95 batch_size=256
    splitrl train --resume runs/sacd_default_s0_20250101-120000 --timesteps 60000

See ``docs/training.md`` for the flags, the config file and the run directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from splitrl.cli import integer_at_least
from splitrl.training.config import (
    DEFAULT_CHECKPOINT_FREQ,
    DEFAULT_EVAL_EPISODES,
    DEFAULT_EVAL_FREQ,
    DEFAULT_LOG_FREQ,
    DEFAULT_TIMESTEPS,
    TrainConfig,
)

#: flags that define a run; ``--resume`` continues a run with its own
_RUN_DEFINING_FLAGS = {
    "algo": "--algo",
    "scenario": "--scenario",
    "profile": "--profile",
    "device_preset": "--device-preset",
    "channel": "--channel",
    "reward": "--reward",
    "horizon": "--horizon",
    "link_quality": "--no-link-quality",
    "reward_correctness": "--reward-correctness",
    "seed": "--seed",
    "n_envs": "--n-envs",
    "vec_env": "--vec-env",
    "conf_file": "--conf-file",
    "hyperparams": "--hyperparams",
    "out": "--out",
    "device": "--device",
    "eval_episodes": "--eval-episodes",
    "log_freq": "--log-freq",
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``splitrl train``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "Run directory layout, config file format and learners: docs/training.md"
    what = parser.add_argument_group("what to train")
    what.add_argument(
        "--algo",
        help="learner: sacd (default, ours), sacd-prior, ppo, maskable-ppo, dqn, sac",
    )
    what.add_argument("--scenario", help="named scenario (default: default)")
    what.add_argument("--profile", help="profile name or path, replacing the scenario's")
    what.add_argument("--device-preset", help="device preset, replacing the scenario's")
    what.add_argument(
        "--channel",
        help="channel model (markov, gilbert-elliott, fading, constant, randomized) or trace:PATH",
    )
    what.add_argument("--reward", help="reward preset, replacing the scenario's")
    what.add_argument(
        "--horizon", type=integer_at_least(1), help="requests per episode, replacing the scenario's"
    )
    what.add_argument(
        "--no-link-quality",
        dest="link_quality",
        action="store_const",
        const=False,
        help="observe throughput only, without the radio's link-rate report",
    )
    what.add_argument(
        "--reward-correctness",
        choices=("expected", "sample"),
        help="correctness in the training reward: the action's accuracy (default, less noise) "
        "or the drawn sample's outcome",
    )
    how = parser.add_argument_group("how to train")
    how.add_argument(
        "--timesteps",
        type=integer_at_least(1),
        help=f"total env steps (default: {DEFAULT_TIMESTEPS}; with --resume: the run's target)",
    )
    how.add_argument("--seed", type=integer_at_least(0), help="seed of model and envs (default: 0)")
    how.add_argument(
        "--n-envs", type=integer_at_least(1), help="parallel training envs (default: 1)"
    )
    how.add_argument(
        "--vec-env", choices=("dummy", "subproc"), help="vectorization (default: dummy)"
    )
    how.add_argument(
        "--conf-file", help="YAML file with per-algorithm hyperparameters (see docs/training.md)"
    )
    how.add_argument(
        "--hyperparams",
        nargs="+",
        metavar="KEY=VALUE",
        help="override hyperparameters; values are YAML (gamma=0.95 ent_coef=auto)",
    )
    how.add_argument("--device", help="torch device: cpu (default), cuda, auto")
    how.add_argument(
        "--torch-threads",
        type=integer_at_least(1),
        default=1,
        help="torch CPU threads (default: 1, fastest for small networks)",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--out", help="folder that receives the run directory (default: runs)")
    output.add_argument(
        "--eval-freq",
        type=integer_at_least(0),
        help=f"env steps between evaluations, 0 for none (default: {DEFAULT_EVAL_FREQ})",
    )
    output.add_argument(
        "--eval-episodes",
        type=integer_at_least(2),
        help=f"validation episodes per evaluation, at least 2 (default: {DEFAULT_EVAL_EPISODES})",
    )
    output.add_argument(
        "--checkpoint-freq",
        type=integer_at_least(0),
        help=f"env steps between checkpoints, 0 for end only (default: {DEFAULT_CHECKPOINT_FREQ})",
    )
    output.add_argument(
        "--log-freq",
        type=integer_at_least(1),
        help=f"env steps between split-computing metrics (default: {DEFAULT_LOG_FREQ})",
    )
    output.add_argument(
        "--resume",
        metavar="RUN",
        help="continue run directory RUN from its latest checkpoint (with its own configuration)",
    )
    output.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed flags (config file and ``--hyperparams`` merged)."""
    from splitrl.agents.learners import LEARNERS, get_learner
    from splitrl.training.config import load_conf_file, parse_hyperparams

    algo = args.algo or "sacd"
    get_learner(algo)
    hyperparameters: dict[str, Any] = {}
    if args.conf_file is not None:
        hyperparameters.update(load_conf_file(args.conf_file, algo, list(LEARNERS)))
    hyperparameters.update(parse_hyperparams(args.hyperparams or []))
    given = {
        "scenario": args.scenario,
        "profile": args.profile,
        "device_preset": args.device_preset,
        "channel": args.channel,
        "reward": args.reward,
        "horizon": args.horizon,
        "link_quality": args.link_quality,
        "reward_correctness": args.reward_correctness,
        "timesteps": args.timesteps,
        "seed": args.seed,
        "n_envs": args.n_envs,
        "vec_env": args.vec_env,
        "eval_freq": args.eval_freq,
        "n_eval_episodes": args.eval_episodes,
        "checkpoint_freq": args.checkpoint_freq,
        "log_freq": args.log_freq,
        "torch_device": args.device,
        "out": args.out,
    }
    return TrainConfig(
        algo=algo,
        hyperparameters=hyperparameters,
        **{key: value for key, value in given.items() if value is not None},
    )


def run(args: argparse.Namespace) -> int:
    """Train (or resume) and print where the run went; 130 if interrupted (the model is saved)."""
    import torch

    from splitrl.training.trainer import resume, train

    torch.set_num_threads(args.torch_threads)
    progress_bar = not args.no_progress
    if args.resume is not None:
        conflicting = [
            flag for key, flag in _RUN_DEFINING_FLAGS.items() if getattr(args, key) is not None
        ]
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
