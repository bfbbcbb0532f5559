"""The learning curve of a learner and where it plateaus, against a causal rule on the same episodes.

Each run's validation (``eval/evaluations.npz``, written by ``splitrl train --eval-freq``) plays
the same episodes at every evaluation; the reference rule (``--baseline``, ``robust-mpc`` unless
told) plays them too, so every point is a paired gain.
The plateau is the first evaluation after which the validation reward never rises by more than
0.002; a run has plateaued when the mean of the evaluations in its last 20% of training is at
most 0.002 above the evaluation at 80%.

    python -m benchmarks.bench_learning_curve --train --algo sacd-hindsight --seeds 5 \\
        --timesteps 60000 --eval-freq 5000 --eval-episodes 5 --runs-dir runs/learning_curve
    python -m benchmarks.bench_learning_curve --runs runs/learning_curve/sacd-hindsight_default_s*
    python -m benchmarks.bench_learning_curve --baseline mpc --runs RUN...   # sacd-hindsight-mpc

Writes ``results/bench_learning_curve.json`` and ``results/learning_curve.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS_DIR, print_table, write_results

#: the validation reward's rise (reward per request) below which training has plateaued
PLATEAU_RISE = 0.002
#: the final share of training whose rise decides whether a run has plateaued
LAST_SHARE = 0.2


def plateau_index(rewards: np.ndarray, rise: float = PLATEAU_RISE) -> int:
    """The first evaluation after which the curve never rises more than ``rise`` above it."""
    for index, reward in enumerate(rewards):
        if rewards[index:].max() <= reward + rise:
            return index
    return len(rewards) - 1


def last_share_rise(timesteps: np.ndarray, rewards: np.ndarray, share: float = LAST_SHARE) -> float:
    """Mean of the evaluations in the last ``share`` of training minus the evaluation at its start
    (the last one at or before ``(1 - share)`` of the steps)."""
    start = (1.0 - share) * timesteps[-1]
    before = np.flatnonzero(timesteps <= start)
    reference = rewards[before[-1]] if before.size else rewards[0]
    return float(rewards[timesteps > start].mean() - reference)


def baseline_on_validation(run_dir: Path, episodes: int, baseline: str) -> np.ndarray:
    """``baseline``'s mean reward per request on each of the run's validation episodes."""
    from splitrl.agents.baselines import make_baseline
    from splitrl.agents.rollout import run_episodes
    from splitrl.envs import SplitComputingEnv
    from splitrl.training.run_dir import RunDirectory
    from splitrl.training.trainer import training_scenario

    run = RunDirectory(run_dir)
    config = run.read_config()
    scenario = training_scenario(run.scenario(), str(config["reward_correctness"]))
    first = int(config["eval_seed"])
    rollout = run_episodes(
        make_baseline(baseline), SplitComputingEnv(scenario), range(first, first + episodes)
    )
    return np.asarray(rollout.reward.mean(axis=1))


def run_wall_seconds(run_dir: Path) -> float:
    """Seconds from the run's creation to its final model (training and validations)."""
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    created = datetime.fromisoformat(str(config["created"])).timestamp()
    return (run_dir / "model.zip").stat().st_mtime - created


def analyse(run_dir: Path, baseline: str = "robust-mpc") -> dict[str, Any]:
    """One run's curve, paired gains over ``baseline``, plateau and wall time.

    The gains keep the key ``gain_vs_robust_mpc`` and the baseline's reward ``robust_mpc`` whatever
    the baseline (``baseline`` names it), so that the results of earlier runs stay comparable.
    """
    from splitrl.training.callbacks import EVALUATIONS_FILE, load_validation_log

    log = load_validation_log(run_dir / "eval" / EVALUATIONS_FILE)
    timesteps = np.asarray(log.timesteps)
    reference = baseline_on_validation(run_dir, log.results.shape[1], baseline)
    rewards = log.results.mean(axis=1)
    gains = (log.results - reference).mean(axis=1)
    index = plateau_index(rewards)
    seconds = run_wall_seconds(run_dir)
    return {
        "run": str(run_dir),
        "baseline": baseline,
        "timesteps": timesteps.tolist(),
        "validation_reward": rewards.tolist(),
        "gain_vs_robust_mpc": gains.tolist(),
        "robust_mpc": float(reference.mean()),
        "plateau_timesteps": int(timesteps[index]),
        "plateau_reward": float(rewards[index]),
        "rise_over_last_20pct": last_share_rise(timesteps, rewards),
        "wall_seconds": seconds,
        "plateau_wall_seconds": seconds * timesteps[index] / timesteps[-1],
        "best_gain": float(gains.max()),
        "best_gain_timesteps": int(timesteps[int(gains.argmax())]),
        "final_gain": float(gains[-1]),
    }


def train_runs(args: argparse.Namespace) -> list[Path]:
    """Train one run per seed with periodic validation; returns their directories."""
    import torch

    from splitrl.training.config import TrainConfig
    from splitrl.training.trainer import train

    torch.set_num_threads(1)
    paths = []
    for seed in range(args.seeds):
        started = time.perf_counter()
        config = TrainConfig(
            algo=args.algo,
            scenario=args.scenario,
            timesteps=args.timesteps,
            seed=seed,
            eval_freq=args.eval_freq,
            n_eval_episodes=args.eval_episodes,
            checkpoint_freq=0,
            out=args.runs_dir,
        )
        paths.append(train(config).run_dir.path)
        print(f"seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)
    return paths


def plot(results: list[dict[str, Any]], path: Path, baseline: str = "robust-mpc") -> None:
    """Each seed's paired validation gain over ``baseline``, and their mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for result in results:
        axis.plot(result["timesteps"], result["gain_vs_robust_mpc"], color="0.7", linewidth=1)
    steps = results[0]["timesteps"]
    if all(result["timesteps"] == steps for result in results):
        mean = np.mean([result["gain_vs_robust_mpc"] for result in results], axis=0)
        axis.plot(steps, mean, color="C0", linewidth=2, label=f"mean of {len(results)} seeds")
        axis.legend()
    axis.axhline(0.0, color="k", linewidth=0.8)
    axis.set_xlabel("training steps")
    axis.set_ylabel(f"validation gain over {baseline}\n(reward per request, paired)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", type=Path, default=[], help="run directories")
    parser.add_argument("--train", action="store_true", help="train the runs first")
    parser.add_argument("--algo", default="sacd-hindsight")
    parser.add_argument("--scenario", default="default")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--timesteps", type=int, default=60_000)
    parser.add_argument("--eval-freq", type=int, default=5_000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--runs-dir", default="runs/learning_curve")
    parser.add_argument(
        "--baseline", default="robust-mpc", help="the causal rule each validation is paired with"
    )
    args = parser.parse_args(argv)
    from splitrl.agents.baselines import BASELINES

    if args.baseline not in BASELINES:
        parser.error(f"unknown baseline {args.baseline!r}; known: {', '.join(BASELINES)}")
    runs = list(args.runs) + (train_runs(args) if args.train else [])
    if not runs:
        parser.error("give --runs DIR ... or --train")
    missing = [run for run in runs if not (run / "eval" / "evaluations.npz").is_file()]
    if missing:
        parser.error(f"no validation log (train with --eval-freq) in {missing[0]}")
    results = [analyse(run, args.baseline) for run in runs]
    print_table(
        results,
        [
            ("run", "run", "s"),
            ("plateau_timesteps", "plateau at", "d"),
            ("plateau_wall_seconds", "s to plateau", ".0f"),
            ("rise_over_last_20pct", "rise, last 20%", "+.4f"),
            ("best_gain", "best gain", "+.4f"),
            ("best_gain_timesteps", "at", "d"),
            ("final_gain", "final gain", "+.4f"),
            ("wall_seconds", "wall s", ".0f"),
        ],
    )
    RESULTS_DIR.mkdir(exist_ok=True)
    plot(results, RESULTS_DIR / "learning_curve.png", args.baseline)
    path = write_results("learning_curve", {"runs": results})
    print(f"results: {path}, {RESULTS_DIR / 'learning_curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
