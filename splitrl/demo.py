"""``splitrl demo`` (``make demo``): SACD with hindsight values against every baseline, in minutes.

Uses only what the repository ships: the default profile, a named scenario, and a policy trained
by a documented command (:mod:`splitrl.pretrained`). The demo runs in
``mcu-lte-video-timeout-gate`` (the default scenario's camera board at 120 frames/s on LTE, a
100 ms deadline, a 50 ms transfer timeout and the early-exit confidence gate at 0.65), where the
benchmark's ``sacd-hindsight-mpc-geometric-greedy`` beats every hand-made causal rule on the
synthetic channels (docs/evaluation.md, Demo). It

1. trains that learner (``sacd-hindsight-mpc-geometric-replayed`` filling its replay buffer with
   its own greedy decisions, ``behavior=greedy``) briefly on one CPU core, evaluating it greedily
   on the same validation episodes a few times (the learning curve; a later model replaces the
   best one only when its paired gain over it is significant);
2. evaluates that fresh policy, the shipped one (the same learner trained for 20,000 steps),
   every causal baseline and ``clairvoyant-lookahead`` on held-out episodes (evaluation seeds
   apart from the training and validation seeds) of two channels: the scenario's own Markov
   channel, which both policies trained on, and the Gilbert-Elliott channel, which neither saw;
3. prints the comparison tables, and for each policy and channel whether it beats every causal
   baseline (its paired gain over the best one has a 95% interval above zero), and writes the
   tables and plots to ``results/demo/``.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the scenario the demo trains and evaluates in
DEMO_SCENARIO = "mcu-lte-video-timeout-gate"
#: the learner the demo trains (and the one the shipped policy was trained with), and the
#: keywords that make it the benchmark's ``sacd-hindsight-mpc-geometric-greedy``
DEMO_ALGO = "sacd-hindsight-mpc-geometric-replayed"
DEMO_HYPERPARAMETERS: Mapping[str, Any] = {"behavior": "greedy"}
#: training steps of the fresh policy: about a minute on one core of a small machine
DEMO_TIMESTEPS = 5_000
#: evaluation episodes per policy and channel: paired intervals of about 0.0025 to 0.0065
#: between the policies and the best causal baseline, in under 8 minutes on 2 cores with the
#: training
DEMO_EPISODES = 16
#: validation evaluations during training, besides the one before the first step (the learning
#: curve and the best model); each costs about as much as 2,000 training steps
DEMO_EVAL_POINTS = 2
#: validation episodes of each periodic evaluation (seeds ``seed + 10 000 ..``, apart from the
#: training seeds and from the evaluation seeds)
VALIDATION_EPISODES = 5
#: the shipped policy evaluated beside the fresh one (:data:`splitrl.pretrained.PRETRAINED`)
SHIPPED_POLICY = "sacd-hindsight-mpc-geometric-greedy-lte-gate"
#: the channels evaluated: the scenario's own (``None``) and one no policy trained on
DEMO_CHANNELS: tuple[str | None, ...] = (None, "gilbert-elliott")


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs; the defaults are what ``make demo`` does.

    :param scenario: the scenario to train and evaluate in
    :param profile: a profile name or path replacing the scenario's
    :param horizon: requests per episode, replacing the scenario's
    :param algo: the learner to train
    :param timesteps: training steps
    :param seed: training seed
    :param episodes: evaluation episodes per policy and channel
    :param eval_seed: reset seed of the first evaluation episode
    :param hyperparameters: learner keywords replacing its defaults (the demo's: ``behavior=greedy``)
    :param shipped: the shipped policy evaluated beside the fresh one (a name in
        :data:`splitrl.pretrained.PRETRAINED`), or ``None`` for none; it must have been trained in
        the demo's scenario
    :param channels: the channels to evaluate on; ``None`` stands for the scenario's own
    :param jobs: channels evaluated at once, each in its own process
    :param out: output folder (run directory under ``runs/``, tables and plots)
    :param which: evaluate the ``"best"`` model of the validation during training (the run's
        ``best_model.zip``) or the ``"final"`` one
    :param progress: show progress bars
    """

    scenario: str = DEMO_SCENARIO
    profile: str | None = None
    horizon: int | None = None
    algo: str = DEMO_ALGO
    timesteps: int = DEMO_TIMESTEPS
    seed: int = 0
    episodes: int = DEMO_EPISODES
    eval_seed: int | None = None
    hyperparameters: Mapping[str, Any] = field(default_factory=lambda: dict(DEMO_HYPERPARAMETERS))
    shipped: str | None = SHIPPED_POLICY
    channels: Sequence[str | None] = DEMO_CHANNELS
    jobs: int = field(default_factory=lambda: min(len(DEMO_CHANNELS), os.cpu_count() or 1))
    out: Path = Path("results/demo")
    which: str = "best"
    progress: bool = True


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced.

    :param run_dir: the training run directory
    :param learning_curve: ``(timesteps, mean reward per request)`` of the validation evaluations
    :param evaluation: the evaluation of the policies and the baselines
    :param files: the tables and plots written
    :param seconds: wall time of training and of evaluation
    """

    run_dir: Path
    learning_curve: list[tuple[int, float]]
    evaluation: Any
    files: list[Path]
    seconds: dict[str, float]


def run_demo(settings: DemoSettings) -> DemoResult:
    """Train the learner, evaluate it, the shipped policy and every baseline, write the tables
    and plots.

    :param settings: what to run
    :raises ValueError: for bad settings, or a shipped policy trained in another scenario (before
        anything is trained)
    """
    import torch

    from splitrl.envs.scenarios import scenario_from_dict
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
    if not settings.channels:
        raise ValueError("channels must name at least one channel")
    out = Path(settings.out)
    eval_freq = max(settings.timesteps // DEMO_EVAL_POINTS, 1)
    config = TrainConfig(
        algo=settings.algo,
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
    shipped = []
    if settings.shipped is not None:
        from splitrl.pretrained import pretrained_run

        shipped = load_runs([pretrained_run(settings.shipped)])
        trained_in = scenario_from_dict(shipped[0].config["scenario_spec"])
        if trained_in != config.effective_scenario():
            raise ValueError(
                f"the shipped policy {settings.shipped!r} was trained in scenario "
                f"{trained_in.name!r} with other settings than the demo's; run without it"
            )
        shipped[0].policy.name = f"{shipped[0].algo} (shipped, {_steps(shipped[0].config)} steps)"
    torch.set_num_threads(1)
    print(
        f"training {settings.algo}{_keywords(settings.hyperparameters)} in scenario "
        f"{settings.scenario!r} for {settings.timesteps} "
        f"steps (seed {settings.seed})",
        flush=True,
    )
    started = time.perf_counter()
    trained = train(config, progress_bar=settings.progress)
    train_seconds = time.perf_counter() - started
    run_dir = trained.run_dir.path
    fresh = load_runs([run_dir], which="best" if settings.which == "best" else "final")
    fresh[0].policy.name = f"{settings.algo} (fresh, {settings.timesteps} steps)"
    scenario = evaluation_scenario(fresh)
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
    conditions = [
        condition
        for channel in dict.fromkeys(settings.channels)
        for condition in evaluation_conditions(scenario, channel=channel)
    ]
    started = time.perf_counter()
    result = evaluate(
        fresh + shipped,
        baseline_names("none"),
        conditions,
        episodes=settings.episodes,
        seed=DEFAULT_EVAL_SEED if settings.eval_seed is None else settings.eval_seed,
        progress=settings.progress,
        jobs=settings.jobs,
    )
    evaluate_seconds = time.perf_counter() - started
    print()
    print(markdown_report(result))
    files = list(write_reports(result, out).values()) + plot_evaluation(result, out)
    print("Verdict (paired gain over the best causal baseline of each channel, 95% interval):")
    for line in verdict_lines(result):
        print(f"  {line}")
    print(f"evaluated in {evaluate_seconds:.0f} s; tables and plots in {out}/:")
    for path in files:
        print(f"  {path}")
    print(
        f"deploy a policy (docs/deploy.md): splitrl export {run_dir} --out deploy/; "
        "splitrl serve --export deploy/ --port 9000 &; "
        "splitrl run-device --server 127.0.0.1:9000 --export deploy/"
    )
    return DemoResult(
        run_dir,
        curve,
        result,
        files,
        {"train": train_seconds, "evaluate": evaluate_seconds},
    )


def _keywords(hyperparameters: Mapping[str, Any]) -> str:
    if not hyperparameters:
        return ""
    return " (" + ", ".join(f"{key}={value}" for key, value in hyperparameters.items()) + ")"


def _steps(config: Mapping[str, Any]) -> int:
    return int(config.get("num_timesteps", config.get("timesteps", 0)))


def verdict_lines(result: Any) -> list[str]:
    """One line per learned policy and condition: its paired gain over the condition's best causal
    baseline, whether it beats every causal baseline (the gain's 95% interval lies above zero),
    and its normalized score.

    :param result: an :class:`~splitrl.evaluation.suite.EvaluationResult`
    """
    from splitrl.evaluation.references import UPPER_REFERENCE

    lines = []
    for condition in result.conditions:
        for row in condition.rows:
            if row.kind != "learned":
                continue
            gain = row.gains[condition.best_causal]
            if gain.mean - gain.ci95 > 0:
                verdict = "beats every causal baseline"
            elif gain.mean + gain.ci95 < 0:
                verdict = "below the best causal baseline"
            else:
                verdict = "tied with the best causal baseline (interval spans zero)"
            score = f"{row.normalized_score:.2f}" if math.isfinite(row.normalized_score) else "n/a"
            lines.append(
                f"{condition.condition.name}: {row.name}: {gain.mean:+.4f} ± {gain.ci95:.4f} vs "
                f"{condition.best_causal}: {verdict}; normalized score {score} "
                f"(1 = {UPPER_REFERENCE})"
            )
    return lines


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``splitrl demo``."""
    parser.add_argument(
        "--timesteps",
        type=int,
        default=DEMO_TIMESTEPS,
        help=f"{DEMO_ALGO} training steps (default: {DEMO_TIMESTEPS})",
    )
    parser.add_argument(
        "--episodes",
        type=int,
        default=DEMO_EPISODES,
        help=f"evaluation episodes per policy and channel, at least 2 (default: {DEMO_EPISODES})",
    )
    parser.add_argument(
        "--no-shipped",
        action="store_true",
        help=f"evaluate the fresh policy without the shipped one ({SHIPPED_POLICY})",
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
            shipped=None if args.no_shipped else SHIPPED_POLICY,
            out=Path(args.out),
            progress=not args.no_progress,
        )
    )
    return 0
