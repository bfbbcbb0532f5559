"""``splitrl tune``: search a learner's hyperparameters with Ray Tune (Optuna TPE + ASHA).

Examples::

    splitrl tune --algo sacd --trials 40 --timesteps 30000
    splitrl tune --algo ppo --scenario mcu-latency --address auto --conf-out ppo_best.yaml
    splitrl train --algo sacd --conf-file results/tune/best_sacd.yaml   # train with the best

Every trial trains the learner with values drawn from its search space
(:mod:`splitrl.sweeps.search_spaces`) and evaluates the greedy policy every ``--eval-freq`` steps
on the run's validation episodes (the seeds ``seed + 10000 ..``, apart from the evaluation's);
ASHA stops the trials whose validation reward trails the others', and Optuna's TPE sampler picks
the next trial's values from the finished ones. The best trial's values are written as a config
file of ``splitrl train --conf-file``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from splitrl.arguments import HelpFormatter, integer_at_least
from splitrl.sweeps.sweep import check_runner
from splitrl.training.config import EVAL_SEED_OFFSET, TrainConfig

#: the reported value the search maximizes
METRIC = "validation_reward"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``splitrl tune``."""
    parser.formatter_class = HelpFormatter
    parser.epilog = "Search spaces and the cluster recipe: docs/scaling.md"
    parser.add_argument("--algo", default="sacd", help="learner to tune (default: sacd)")
    parser.add_argument("--scenario", default="default", help="named scenario (default: default)")
    parser.add_argument("--profile", help="profile name or path, replacing the scenario's")
    parser.add_argument("--channel", help="training channel, replacing the scenario's")
    parser.add_argument(
        "--horizon", type=integer_at_least(1), help="requests per episode, replacing the scenario's"
    )
    parser.add_argument(
        "--trials", type=integer_at_least(1), default=20, help="trials (default: 20)"
    )
    parser.add_argument(
        "--timesteps",
        type=integer_at_least(1),
        default=30_000,
        help="training steps of a trial that is not stopped early (default: 30000)",
    )
    parser.add_argument(
        "--eval-freq",
        type=integer_at_least(1),
        default=5_000,
        help="steps between validations, ASHA's rungs (default: 5000)",
    )
    parser.add_argument(
        "--eval-episodes",
        type=integer_at_least(2),
        default=5,
        help="validation episodes (default: 5)",
    )
    parser.add_argument("--seed", type=integer_at_least(0), default=0, help="training seed")
    parser.add_argument(
        "--out", default="results/tune", help="results folder (default: results/tune)"
    )
    parser.add_argument(
        "--conf-out", help="the best configuration's YAML (default: OUT/best_ALGO.yaml)"
    )
    parser.add_argument("--address", help="join a running Ray cluster: auto or HOST:PORT")
    parser.add_argument(
        "--num-cpus", type=integer_at_least(1), help="CPUs of a local Ray (default: every CPU)"
    )
    parser.add_argument("--storage-path", help="Ray Tune's experiment folder (default: OUT/ray)")


def reporting_validation(
    config: TrainConfig, report: Callable[[dict[str, Any]], None], best_path: Path
) -> Any:
    """The run's :class:`~splitrl.training.callbacks.ValidationCallback` (the same episodes and
    best-model rule as ``splitrl train``), reporting the mean validation reward of each evaluation
    with the steps trained. The evaluation of the untrained model is not reported: every trial of
    a learner that starts from a rule would score the rule there, and the search compares what
    the sampled values train."""
    from splitrl.agents import get_learner
    from splitrl.envs import SplitComputingEnv
    from splitrl.training.callbacks import ValidationCallback
    from splitrl.training.trainer import training_scenario

    class ReportingValidation(ValidationCallback):
        def evaluate(self) -> None:
            super().evaluate()
            if self.num_timesteps > 0:
                report({METRIC: self.curve[-1][1], "timesteps": self.num_timesteps})

    scenario = training_scenario(config.effective_scenario(), config.reward_correctness)
    first = config.seed + EVAL_SEED_OFFSET
    return ReportingValidation(
        get_learner(config.algo),
        SplitComputingEnv(scenario),
        range(first, first + config.n_eval_episodes),
        config.eval_freq,
        best_path,
    )


def train_and_validate(
    base: TrainConfig,
    sampled: dict[str, Any],
    report: Callable[[dict[str, Any]], None],
    trial_dir: Path,
) -> None:
    """One search trial: train ``base`` with the sampled values, reporting every validation.

    :param base: the run's configuration (``eval_freq`` and ``n_eval_episodes`` set the
        validation); its hyperparameters are replaced by the sampled ones
    :param trial_dir: the trial's folder (run directory, best model)
    """
    import torch

    from splitrl.sweeps.search_spaces import hyperparameters
    from splitrl.training.trainer import train

    torch.set_num_threads(1)
    config = dataclasses.replace(
        base,
        hyperparameters={**base.hyperparameters, **hyperparameters(base.algo, sampled)},
        out=str(trial_dir),
    )
    validation = reporting_validation(config, report, trial_dir / "best_model.zip")
    train(dataclasses.replace(config, eval_freq=0), callbacks=[validation])


def run(args: argparse.Namespace) -> int:
    """Search, then write the best configuration as a ``--conf-file`` YAML."""
    check_runner("ray")
    from splitrl.agents import get_learner
    from splitrl.sweeps.search_spaces import hyperparameters, sampler

    space = sampler(args.algo)
    get_learner(args.algo)
    if args.eval_freq > args.timesteps:
        raise ValueError(f"--eval-freq {args.eval_freq} exceeds --timesteps {args.timesteps}")
    base = TrainConfig(
        algo=args.algo,
        scenario=args.scenario,
        profile=args.profile,
        channel=args.channel,
        horizon=args.horizon,
        timesteps=args.timesteps,
        seed=args.seed,
        eval_freq=args.eval_freq,
        n_eval_episodes=args.eval_episodes,
        checkpoint_freq=0,
    )
    base.effective_scenario()  # a clear error for a bad scenario, before Ray starts
    # trials run in their own folders: paths absolute
    overrides = base.scenario_overrides()
    base = dataclasses.replace(
        base, profile=overrides.get("profile"), channel=overrides.get("channel")
    )
    out = Path(args.out).resolve()
    conf_out = Path(args.conf_out) if args.conf_out else out / f"best_{args.algo}.yaml"
    from splitrl.sweeps.ray_runner import ray_session, search_on_ray

    with ray_session(args.address, args.num_cpus):
        sampled, score, summary = search_on_ray(
            partial(train_and_validate, base),
            space,
            metric=METRIC,
            trials=args.trials,
            max_t=args.timesteps,
            grace_period=args.eval_freq,
            seed=args.seed,
            storage_path=str(args.storage_path or out / "ray"),
            name=f"tune_{args.algo}_{datetime.now():%Y%m%d-%H%M%S}",
        )
    for name, error in summary.failed.items():
        print(f"  FAILED {name}: {error}")
    best = hyperparameters(args.algo, sampled)
    write_conf_file(conf_out, args.algo, best, score)
    print(
        f"{len(summary.finished)} trials finished, {len(summary.failed)} failed; best validation "
        f"reward {score:.4f}\nbest configuration: {conf_out}\n"
        f"train with: splitrl train --algo {args.algo} --conf-file {conf_out}"
    )
    return 0


def write_conf_file(path: Path, algo: str, hyperparameters: dict[str, Any], score: float) -> Path:
    """Write ``hyperparameters`` as a ``splitrl train --conf-file`` YAML (one section, ``algo``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# splitrl tune: the best of the search, validation reward {score:.4f}\n"
    path.write_text(header + yaml.safe_dump({algo: hyperparameters}, sort_keys=True))
    return path
