"""Policy quality: SACD, PPO and DQN (several seeds each) against every baseline, per scenario.

Run with ``python -m benchmarks.bench_policy`` (or ``make bench``); ``--quick`` for a smaller run.
Results go to ``results/bench_policy.json``. Every learner trains with its default settings in
every scenario preset (on the scenario's own channel); then the runs and all baselines are
evaluated on the same seeded episodes of the Markov and the fading channel and of the real traces
in ``../shared/traces/`` (skipped, with a message, when that folder is absent).

Goals, per scenario and channel (reported whether met or not), on each learner's interquartile
mean over its training seeds (rliable):

* SACD at least as good as the best causal baseline;
* SACD's normalized score at least 0.9 (0 = best causal baseline, 1 = clairvoyant-lookahead);
* SACD at least as good as PPO and DQN at the same number of steps.

Trainings are the cost; they run ``--jobs`` at a time, each on one torch thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, print_table, write_results

#: the real traces, beside the repository (not part of it)
TRACES_DIR = Path(__file__).resolve().parents[2] / "shared" / "traces"
#: the learners compared
ALGOS = ("sacd", "ppo", "dqn")
#: channels of every scenario, besides the traces
CHANNELS = ("markov", "fading")
#: the normalized score SACD should reach
SCORE_GOAL = 0.9


@dataclass(frozen=True)
class BenchSettings:
    """What the benchmark runs.

    :param scenarios: scenario presets
    :param algos: learners
    :param seeds: training seeds per learner
    :param timesteps: training steps per run
    :param episodes: evaluation episodes per condition
    :param jobs: processes training (and evaluating) at once
    :param runs_dir: where the run directories go
    """

    scenarios: tuple[str, ...]
    algos: tuple[str, ...] = ALGOS
    seeds: tuple[int, ...] = (0, 1, 2)
    timesteps: int = 15_000
    episodes: int = 20
    jobs: int = 2
    runs_dir: Path = RESULTS_DIR / "bench_policy_runs"


def full_settings() -> BenchSettings:
    """Every scenario, three seeds, 15 000 steps per training (about 40 minutes on 2 cores)."""
    from splitrl.envs import SCENARIOS

    return BenchSettings(scenarios=tuple(SCENARIOS))


def quick_settings() -> BenchSettings:
    """The default scenario, one seed, 12 000 steps per training (about five minutes on 2 cores)."""
    return BenchSettings(scenarios=("default",), seeds=(0,), timesteps=12_000, episodes=10)


def trace_files() -> list[Path]:
    """The real traces, or none (with a message) when the folder is absent."""
    if not TRACES_DIR.is_dir():
        print(f"no trace folder at {TRACES_DIR}: the real-trace conditions are skipped")
        return []
    return sorted(path for path in TRACES_DIR.iterdir() if path.is_file() and path.suffix != ".md")


def train_one(algo: str, scenario: str, seed: int, timesteps: int, out: str) -> tuple[str, float]:
    """Train one run with the learner's defaults; returns its directory and the seconds it took."""
    import torch

    from splitrl.training.config import TrainConfig
    from splitrl.training.trainer import train

    torch.set_num_threads(1)
    started = time.perf_counter()
    config = TrainConfig(
        algo=algo,
        scenario=scenario,
        seed=seed,
        timesteps=timesteps,
        eval_freq=0,
        checkpoint_freq=0,
        out=out,
    )
    result = train(config)
    return str(result.run_dir.path), time.perf_counter() - started


def evaluate_scenario(
    run_paths: Sequence[str], traces: Sequence[str], episodes: int
) -> dict[str, Any]:
    """Evaluate the runs of one scenario with every baseline on every channel and trace."""
    import torch

    from splitrl.evaluation.report import result_document
    from splitrl.evaluation.suite import (
        baseline_names,
        evaluate,
        evaluation_conditions,
        evaluation_scenario,
        load_runs,
    )

    torch.set_num_threads(1)
    started = time.perf_counter()
    runs = load_runs(run_paths)
    scenario = evaluation_scenario(runs)
    conditions = [
        condition
        for channel in CHANNELS
        for condition in evaluation_conditions(scenario, channel=channel)
    ]
    if traces:
        conditions += evaluation_conditions(scenario, traces=traces)
    result = evaluate(runs, baseline_names("all"), conditions, episodes=episodes, progress=False)
    document = result_document(result)
    document["seconds"] = time.perf_counter() - started
    return document


def learner_reward(document: dict[str, Any], condition: dict[str, Any], algo: str) -> float:
    """A learner's reward in one condition: the IQM over its training seeds, or its single run's."""
    report = document.get("seeds_report")
    if report is not None:
        for aggregate in report["per_condition"][condition["name"]]:
            if aggregate["name"].split(" (")[0] == algo:
                return float(aggregate["reward"]["value"])
    rows = {row["name"]: row for row in condition["rows"]}
    return float(rows[algo]["reward"])


def goals(
    document: dict[str, Any], condition: dict[str, Any], algos: Sequence[str]
) -> dict[str, Any]:
    """SACD against the best causal baseline, the score goal and the other learners, in one
    condition."""
    from splitrl.evaluation.metrics import normalized_score

    rows = {row["name"]: row for row in condition["rows"]}
    best = condition["best_causal"]
    best_reward = float(rows[best]["reward"])
    upper_reward = float(rows[condition["upper_reference"]]["reward"])
    learners = {algo: learner_reward(document, condition, algo) for algo in algos}
    sacd = learners["sacd"]
    score = normalized_score(sacd, best_reward, upper_reward)
    return {
        "condition": condition["name"],
        "sacd_reward": sacd,
        "sacd_score": None if math.isnan(score) else score,
        "best_baseline": best,
        "best_baseline_reward": best_reward,
        "upper_reward": upper_reward,
        "learner_rewards": learners,
        "sacd_beats_baselines": sacd >= best_reward,
        "score_goal_met": not math.isnan(score) and score >= SCORE_GOAL,
        "sacd_beats_learners": all(sacd >= reward for reward in learners.values()),
    }


def run(settings: BenchSettings) -> dict[str, Any]:
    """Train, evaluate and check the goals; returns the JSON document."""
    traces = [str(path) for path in trace_files()]
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    jobs = [
        (algo, scenario, seed)
        for scenario in settings.scenarios
        for algo in settings.algos
        for seed in settings.seeds
    ]
    print(
        f"training {len(jobs)} runs of {settings.timesteps} steps, {settings.jobs} at a time",
        flush=True,
    )
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=settings.jobs, mp_context=context) as pool:
        futures = {
            job: pool.submit(train_one, *job, settings.timesteps, str(settings.runs_dir))
            for job in jobs
        }
        trained = {job: future.result() for job, future in futures.items()}
        train_seconds = time.perf_counter() - started
        print(f"trained in {train_seconds:.0f} s; evaluating", flush=True)
        evaluations = {
            scenario: pool.submit(
                evaluate_scenario,
                [path for (_, name, _), (path, _) in trained.items() if name == scenario],
                traces,
                settings.episodes,
            )
            for scenario in settings.scenarios
        }
        documents = {scenario: future.result() for scenario, future in evaluations.items()}
    total_seconds = time.perf_counter() - started
    scenario_goals = {
        scenario: [
            goals(document, condition, settings.algos) for condition in document["conditions"]
        ]
        for scenario, document in documents.items()
    }
    checks = [check for checks in scenario_goals.values() for check in checks]
    return {
        "settings": {
            "scenarios": list(settings.scenarios),
            "algos": list(settings.algos),
            "seeds": list(settings.seeds),
            "timesteps": settings.timesteps,
            "episodes": settings.episodes,
            "jobs": settings.jobs,
            "traces": [Path(path).name for path in traces],
        },
        "seconds": {
            "total": total_seconds,
            "training": train_seconds,
            "per_training": {
                f"{algo}/{scenario}/s{seed}": seconds
                for (algo, scenario, seed), (_, seconds) in trained.items()
            },
        },
        "goals": {
            "sacd_beats_the_best_causal_baseline": all(c["sacd_beats_baselines"] for c in checks),
            "sacd_score_at_least_0.9": all(c["score_goal_met"] for c in checks),
            "sacd_beats_ppo_and_dqn": all(c["sacd_beats_learners"] for c in checks),
            "per_scenario": scenario_goals,
        },
        "evaluations": documents,
    }


def _print_summary(document: dict[str, Any]) -> None:
    rows = []
    for scenario, checks in document["goals"]["per_scenario"].items():
        for check in checks:
            learners = check["learner_rewards"]
            rows.append(
                {
                    "scenario": scenario,
                    "channel": check["condition"],
                    "sacd": check["sacd_reward"],
                    "ppo": learners.get("ppo", math.nan),
                    "dqn": learners.get("dqn", math.nan),
                    "best": f"{check['best_baseline']} {check['best_baseline_reward']:.4f}",
                    "upper": check["upper_reward"],
                    "score": math.nan if check["sacd_score"] is None else check["sacd_score"],
                }
            )
    print_table(
        rows,
        [
            ("scenario", "scenario", "s"),
            ("channel", "channel", "s"),
            ("sacd", "SACD", ".4f"),
            ("ppo", "PPO", ".4f"),
            ("dqn", "DQN", ".4f"),
            ("best", "best causal baseline", "s"),
            ("upper", "clairvoyant-lookahead", ".4f"),
            ("score", "SACD score", ".3f"),
        ],
    )
    for goal, met in document["goals"].items():
        if goal != "per_scenario":
            print(f"{goal}: {'met' if met else 'NOT met'}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one scenario, one seed, fewer steps")
    parser.add_argument("--timesteps", type=int, help="training steps per run")
    parser.add_argument("--jobs", type=int, help="processes at once (default: 2)")
    parser.add_argument(
        "--scenarios", help="comma-separated scenario presets (default: all; --quick: default)"
    )
    args = parser.parse_args(argv)
    settings = quick_settings() if args.quick else full_settings()
    if args.scenarios:
        from splitrl.envs import SCENARIOS

        chosen = tuple(name.strip() for name in args.scenarios.split(","))
        unknown = [name for name in chosen if name not in SCENARIOS]
        if unknown:
            parser.error(f"--scenarios: unknown {unknown}; known: {', '.join(SCENARIOS)}")
        settings = dataclasses.replace(settings, scenarios=chosen)
    overrides = {"timesteps": args.timesteps, "jobs": args.jobs}
    for name, value in overrides.items():
        if value is not None:
            if value < 1:
                parser.error(f"--{name} must be at least 1, got {value}")
            settings = dataclasses.replace(settings, **{name: value})
    document = run(settings)
    document["settings"]["quick"] = args.quick
    _print_summary(document)
    path = write_results("policy", document)
    print(f"results: {path} ({document['seconds']['total']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
