"""``splitrl demo`` (``make demo``): train SACD briefly, compare it with every baseline, plot.

Uses only what the repository ships: the default profile and scenario. SACD trains for a few
minutes on one CPU core and is evaluated greedily ten times on the same validation episodes (the
learning curve; a later model replaces the best one only when its paired gain over it is
significant); then that best model and all baselines are evaluated on held-out channel
realizations (evaluation seeds apart from the training and validation seeds) and the comparison
table and plots are written to ``results/demo/``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: SACD timesteps of the demo: three to four minutes on one core of a small machine
DEMO_TIMESTEPS = 25_000
#: evaluation episodes per policy
DEMO_EPISODES = 10
#: validation evaluations during training (the learning curve and the best model)
DEMO_EVAL_POINTS = 10
#: validation episodes of each periodic evaluation (seeds ``seed + 10 000 ..``, apart from the
#: training seeds and from the evaluation seeds)
VALIDATION_EPISODES = 10


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs; the defaults are what ``make demo`` does.

    :param scenario: the scenario to train and evaluate in
    :param profile: a profile name or path replacing the scenario's
    :param horizon: requests per episode, replacing the scenario's
    :param timesteps: SACD training steps
    :param seed: training seed
    :param episodes: evaluation episodes per policy
    :param eval_seed: reset seed of the first evaluation episode
    :param hyperparameters: SACD keywords replacing the learner's defaults
    :param out: output folder (run directory under ``runs/``, tables and plots)
    :param which: evaluate the ``"best"`` model of the validation during training (the run's
        ``best_model.zip``) or the ``"final"`` one
    :param progress: show progress bars
    """

    scenario: str = "default"
    profile: str | None = None
    horizon: int | None = None
    timesteps: int = DEMO_TIMESTEPS
    seed: int = 0
    episodes: int = DEMO_EPISODES
    eval_seed: int | None = None
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    out: Path = Path("results/demo")
    which: str = "best"
    progress: bool = True


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced.

    :param run_dir: the training run directory
    :param learning_curve: ``(timesteps, mean reward per request)`` of the validation evaluations
    :param evaluation: the evaluation of SACD and the baselines
    :param files: the tables and plots written
    :param seconds: wall time of training and of evaluation
    """

    run_dir: Path
    learning_curve: list[tuple[int, float]]
    evaluation: Any
    files: list[Path]
    seconds: dict[str, float]


def run_demo(settings: DemoSettings) -> DemoResult:
    """Train SACD, evaluate it with every baseline, write the tables and plots.

    :param settings: what to run
    """
    import torch

    from splitrl.evaluation.defaults import DEFAULT_EVAL_SEED
    from splitrl.evaluation.plots import plot_evaluation
    from splitrl.evaluation.report import markdown_report, write_reports
    from splitrl.evaluation.suite import (
        baseline_names,
        evaluate,
        evaluation_conditions,
        evaluation_scenario,
        load_runs,
    )
    from splitrl.training.callbacks import EVALUATIONS_FILE, load_validation_log
    from splitrl.training.config import TrainConfig
    from splitrl.training.trainer import train

    if settings.which not in ("final", "best"):
        raise ValueError(f"which must be 'final' or 'best', got {settings.which!r}")
    torch.set_num_threads(1)
    out = Path(settings.out)
    eval_freq = max(settings.timesteps // DEMO_EVAL_POINTS, 1)
    config = TrainConfig(
        algo="sacd",
        scenario=settings.scenario,
        profile=settings.profile,
        horizon=settings.horizon,
        timesteps=settings.timesteps,
        seed=settings.seed,
        hyperparameters=dict(settings.hyperparameters),
        eval_freq=eval_freq,
        n_eval_episodes=VALIDATION_EPISODES,
        checkpoint_freq=0,
        out=out / "runs",
    )
    print(
        f"training SACD in scenario {settings.scenario!r} for {settings.timesteps} steps "
        f"(seed {settings.seed})",
        flush=True,
    )
    started = time.perf_counter()
    trained = train(config, progress_bar=settings.progress)
    train_seconds = time.perf_counter() - started
    run_dir = trained.run_dir.path
    runs = load_runs([run_dir], which="best" if settings.which == "best" else "final")
    scenario = evaluation_scenario(runs)
    validation = load_validation_log(trained.run_dir.eval_dir / EVALUATIONS_FILE)
    curve = validation.curve
    print(f"trained in {train_seconds:.0f} s: {run_dir}")
    print(
        f"learning curve (greedy, {VALIDATION_EPISODES} validation episodes, "
        "mean reward per request):"
    )
    for step, reward in curve:
        kept = "  <- best_model.zip" if step == validation.best_timesteps else ""
        print(f"  {step:>7d} steps  {reward:.4f}{kept}")
    started = time.perf_counter()
    result = evaluate(
        runs,
        baseline_names("all"),
        evaluation_conditions(scenario),
        episodes=settings.episodes,
        seed=DEFAULT_EVAL_SEED if settings.eval_seed is None else settings.eval_seed,
        progress=settings.progress,
    )
    evaluate_seconds = time.perf_counter() - started
    print()
    print(markdown_report(result))
    files = list(write_reports(result, out).values()) + plot_evaluation(result, out)
    print(_verdict(result))
    print(f"evaluated in {evaluate_seconds:.0f} s; tables and plots in {out}/:")
    for path in files:
        print(f"  {path}")
    return DemoResult(
        run_dir,
        curve,
        result,
        files,
        {"train": train_seconds, "evaluate": evaluate_seconds},
    )


def _verdict(result: Any) -> str:
    """One line: SACD's paired gains over the best causal baseline and channel-blind, and its
    normalized score."""
    from splitrl.evaluation.references import CHANNEL_BLIND, UPPER_REFERENCE

    condition = result.conditions[0]
    sacd = next(row for row in condition.rows if row.name == "sacd")
    gains = ", ".join(
        f"{sacd.gains[name].mean:+.4f} ± {sacd.gains[name].ci95:.4f} vs {name}"
        for name in dict.fromkeys((condition.best_causal, CHANNEL_BLIND))
    )
    score = f"{sacd.normalized_score:.2f}" if math.isfinite(sacd.normalized_score) else "n/a"
    return (
        f"SACD: mean reward {sacd.reward:.4f} per request; paired gain {gains}; normalized score "
        f"{score} (0 = best causal baseline {condition.best_causal}, 1 = {UPPER_REFERENCE})"
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``splitrl demo``."""
    parser.add_argument(
        "--timesteps",
        type=int,
        default=DEMO_TIMESTEPS,
        help=f"SACD training steps (default: {DEMO_TIMESTEPS})",
    )
    parser.add_argument(
        "--episodes",
        type=int,
        default=DEMO_EPISODES,
        help=f"evaluation episodes per policy, at least 2 (default: {DEMO_EPISODES})",
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    parser.add_argument(
        "--out", default="results/demo", help="output folder (default: results/demo)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Run the demo with the parsed flags."""
    for name, minimum in (("timesteps", 1), ("episodes", 2)):
        if getattr(args, name) < minimum:
            raise ValueError(f"--{name} must be at least {minimum}, got {getattr(args, name)}")
    if args.seed < 0:
        raise ValueError(f"--seed must be at least 0, got {args.seed}")
    run_demo(
        DemoSettings(
            timesteps=args.timesteps,
            episodes=args.episodes,
            seed=args.seed,
            out=Path(args.out),
            progress=not args.no_progress,
        )
    )
    return 0
