"""Policy quality: learners (several training seeds each) against every baseline, per condition.

Run with ``python -m benchmarks.bench_policy`` (``--quick`` for a small run). The benchmark is a
grid of cells, each a pure function of its inputs that returns a result dict:

* a **training cell** (learner, scenario, seed, steps) trains one run on the scenario's own
  (synthetic) channel and returns its directory and the seconds it took;
* an **evaluation cell** (policy, scenario, seed, condition) runs one trained run, or one baseline,
  on the condition's seeded evaluation episodes (the same episodes for every policy: common random
  numbers) and returns the mean reward per request of every episode.

Every finished cell is written to its own file under ``--out`` (default
``results/bench_policy/``), and a rerun skips the cells whose file exists, so the benchmark can be
stopped and resumed, or its cells spread over several machines. The aggregation reads the files
and uses the evaluation package: per learner and condition, the IQM over training seeds with its
stratified bootstrap interval (rliable), the IQM of the paired gain over every causal baseline,
how many seeds beat each baseline on the same episodes, and the normalized score (0 = the best
causal baseline, 1 = ``clairvoyant-lookahead``). It goes to ``results/bench_policy.json``.

Learners are the names of :data:`splitrl.agents.learners.LEARNERS` or the ablation variants of
:data:`VARIANTS` (a learner with changed hyperparameters). Conditions: ``markov``, ``fading``,
``gilbert-elliott`` and ``trace:NAME`` for every trace in ``../shared/traces/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS_DIR, print_table, write_results

#: the real traces, beside the repository (not part of it)
TRACES_DIR = Path(__file__).resolve().parents[2] / "shared" / "traces"
#: the synthetic channel models every scenario is evaluated on, besides the traces
CHANNELS = ("markov", "fading", "gilbert-elliott")
#: the normalized score the learner should reach
SCORE_GOAL = 0.5
#: first reset seed of the evaluation episodes (apart from training and validation seeds)
EVAL_SEED = 1_000_000


@dataclass(frozen=True)
class Variant:
    """A learner with hyperparameters that replace its defaults (an ablation row).

    :param algo: a learner of :data:`splitrl.agents.learners.LEARNERS`
    :param hyperparameters: constructor keywords that replace the learner's defaults
    :param description: what the variant changes, for the ablation table
    :param channel: the training channel, replacing the scenario's (``"randomized"``: domain
        randomization over the synthetic models)
    """

    algo: str
    hyperparameters: Mapping[str, Any]
    description: str
    channel: str | None = None


#: the ablation variants, by name (each learner of LEARNERS is also a variant of itself)
VARIANTS: dict[str, Variant] = {
    "sacd-alpha": Variant("sacd", {"ent_coef": "auto_0.01"}, "temperature starts at 0.01"),
    "sacd-center": Variant(
        "sacd", {"ent_coef": "auto_0.01", "reward_centering": 0.01}, "+ reward centering"
    ),
    "sacd-features": Variant(
        "sacd-prior",
        {
            "ent_coef": "auto_0.01",
            "reward_centering": 0.01,
            "policy_kwargs": {"net_arch": [64, 64]},
        },
        "+ predicted value of every action as features (no prior)",
    ),
    "sacd-prior-center": Variant(
        "sacd-prior",
        {"ent_coef": "auto_0.01", "reward_centering": 0.01},
        "+ critic residual and actor logits on the predicted values",
    ),
    "sacd-prior-randomized": Variant(
        "sacd-prior",
        {"ent_coef": "auto_0.01", "reward_centering": 0.01},
        "+ trained on randomized channels (model, parameters, outages)",
        channel="randomized",
    ),
}


def variant(name: str) -> Variant:
    """The variant called ``name``: an entry of :data:`VARIANTS` or a learner with its defaults."""
    from splitrl.agents.learners import LEARNERS

    if name in VARIANTS:
        return VARIANTS[name]
    if name in LEARNERS:
        return Variant(name, {}, "defaults")
    raise ValueError(f"unknown learner {name!r}; known: {', '.join([*LEARNERS, *VARIANTS])}")


@dataclass(frozen=True)
class TrainCell:
    """One training run. :param learner: a variant name :param seed: the training seed"""

    learner: str
    scenario: str
    seed: int
    timesteps: int

    @property
    def key(self) -> str:
        return f"train/{self.scenario}/{self.learner}_t{self.timesteps}_s{self.seed}"


@dataclass(frozen=True)
class EvalCell:
    """One policy on one condition's evaluation episodes.

    :param policy: a variant name (with ``seed`` and ``timesteps``) or a baseline name
    :param condition: ``markov``, ``fading``, ``gilbert-elliott`` or ``trace:NAME``
    :param seed: the training seed of a learner; -1 for a baseline
    :param timesteps: the training steps of a learner; 0 for a baseline
    """

    policy: str
    scenario: str
    condition: str
    episodes: int
    seed: int = -1
    timesteps: int = 0

    @property
    def key(self) -> str:
        name = self.policy if self.seed < 0 else f"{self.policy}_t{self.timesteps}_s{self.seed}"
        condition = self.condition.replace(":", "-")
        return f"eval/{self.scenario}/{condition}/e{self.episodes}/{name}"


def train_cell(cell: TrainCell, runs_dir: str) -> dict[str, Any]:
    """Train one run with the variant's hyperparameters; its directory and seconds."""
    import torch

    from splitrl.training.config import TrainConfig
    from splitrl.training.trainer import train

    torch.set_num_threads(1)
    chosen = variant(cell.learner)
    started = time.perf_counter()
    config = TrainConfig(
        algo=chosen.algo,
        scenario=cell.scenario,
        seed=cell.seed,
        timesteps=cell.timesteps,
        channel=chosen.channel,
        hyperparameters=dict(chosen.hyperparameters),
        eval_freq=0,
        checkpoint_freq=0,
        out=str(Path(runs_dir) / cell.learner),
    )
    result = train(config)
    seconds = time.perf_counter() - started
    return {
        "run_dir": str(result.run_dir.path),
        "seconds": seconds,
        "seconds_per_10k_steps": seconds / cell.timesteps * 10_000,
    }


def condition_scenario(scenario: str, condition: str) -> Any:
    """The scenario with the condition's channel (a trace name is looked up in the trace folder)."""
    from splitrl.envs.scenarios import get_scenario

    channel = condition
    if condition.startswith("trace:"):
        path = TRACES_DIR / condition[len("trace:") :]
        if not path.is_file():
            raise FileNotFoundError(f"trace {path} not found")
        channel = f"trace:{path}"
    return dataclasses.replace(get_scenario(scenario), channel=channel)


def eval_cell(cell: EvalCell, run_dir: str | None = None) -> dict[str, Any]:
    """The mean reward per request of every evaluation episode of one policy in one condition.

    :param run_dir: the trained run of a learner cell; None for a baseline
    """
    import torch

    from splitrl.agents.baselines import fitted_baselines, make_baseline
    from splitrl.agents.policy_interface import Policy
    from splitrl.agents.rollout import run_episodes
    from splitrl.envs.split_computing import SplitComputingEnv
    from splitrl.evaluation.defaults import DEFAULT_FIT_EPISODES, DEFAULT_FIT_SEED
    from splitrl.training.run_dir import RunDirectory

    torch.set_num_threads(1)
    scenario = condition_scenario(cell.scenario, cell.condition)
    started = time.perf_counter()
    policy: Policy
    if run_dir is not None:
        policy = RunDirectory(run_dir).load_policy()
    elif cell.policy in fitted_baselines():
        policy = make_baseline(
            cell.policy,
            env_factory=lambda: SplitComputingEnv(scenario),
            episodes=DEFAULT_FIT_EPISODES,
            seed=DEFAULT_FIT_SEED,
        )
    else:
        policy = make_baseline(cell.policy)
    env = SplitComputingEnv(scenario)
    rollout = run_episodes(policy, env, range(EVAL_SEED, EVAL_SEED + cell.episodes))
    return {
        "episode_rewards": rollout.reward.mean(axis=1).tolist(),
        "offload_fraction": float((rollout.payload_bytes > 0).mean()),
        "deadline_miss_fraction": float(rollout.deadline_missed.mean()),
        "seconds": time.perf_counter() - started,
    }


@dataclass(frozen=True)
class BenchSettings:
    """What the benchmark runs.

    :param scenarios: scenario presets
    :param learners: learners and variants
    :param seeds: training seeds per learner
    :param timesteps: training steps per run
    :param conditions: evaluation conditions
    :param episodes: evaluation episodes per condition
    :param jobs: processes at once
    :param out: where the cell files and run directories go
    """

    scenarios: tuple[str, ...] = ("default",)
    learners: tuple[str, ...] = ("sacd", "ppo", "maskable-ppo", "dqn")
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    timesteps: int = 50_000
    conditions: tuple[str, ...] = CHANNELS
    episodes: int = 70
    jobs: int = 2
    out: Path = RESULTS_DIR / "bench_policy"


def trace_conditions() -> tuple[str, ...]:
    """``trace:NAME`` for every real trace, or none (with a message) when the folder is absent."""
    if not TRACES_DIR.is_dir():
        print(f"no trace folder at {TRACES_DIR}: the real-trace conditions are skipped")
        return ()
    return tuple(
        f"trace:{path.name}"
        for path in sorted(TRACES_DIR.iterdir())
        if path.is_file() and path.suffix != ".md"
    )


def _run_cells(
    cells: Sequence[Any],
    function: Callable[..., dict[str, Any]],
    arguments: Callable[[Any], tuple[Any, ...]],
    settings: BenchSettings,
) -> dict[Any, dict[str, Any]]:
    """Run the cells without a result file (``jobs`` at a time), write each file as it finishes;
    returns every cell's result."""
    results: dict[Any, dict[str, Any]] = {}
    todo = []
    for cell in cells:
        path = settings.out / f"{cell.key}.json"
        if path.is_file():
            results[cell] = json.loads(path.read_text())
        else:
            todo.append(cell)
    print(f"{len(todo)} of {len(cells)} cells to run ({len(cells) - len(todo)} done)", flush=True)
    if not todo:
        return results
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=settings.jobs, mp_context=context) as pool:
        futures = {cell: pool.submit(function, cell, *arguments(cell)) for cell in todo}
        for cell, future in futures.items():
            result = {"cell": dataclasses.asdict(cell), **future.result()}
            path = settings.out / f"{cell.key}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(result, indent=1))
            temporary.replace(path)
            results[cell] = result
            print(f"  {cell.key}: {result.get('seconds', 0.0):.0f} s", flush=True)
    return results


def run(settings: BenchSettings) -> dict[str, Any]:
    """Run every missing cell, then aggregate all of them; returns the JSON document."""
    from splitrl.agents.baselines import causal_baselines

    for name in settings.learners:
        variant(name)  # a clear error before any work
    runs_dir = settings.out / "runs"
    train_cells = [
        TrainCell(learner, scenario, seed, settings.timesteps)
        for scenario in settings.scenarios
        for learner in settings.learners
        for seed in settings.seeds
    ]
    trained = _run_cells(train_cells, train_cell, lambda cell: (str(runs_dir),), settings)
    baselines = [*causal_baselines(), "clairvoyant-lookahead"]
    eval_cells = [
        EvalCell(name, scenario, condition, settings.episodes)
        for scenario in settings.scenarios
        for condition in settings.conditions
        for name in baselines
    ] + [
        EvalCell(
            cell.learner, cell.scenario, condition, settings.episodes, cell.seed, cell.timesteps
        )
        for cell in train_cells
        for condition in settings.conditions
    ]

    def run_dir_of(cell: EvalCell) -> tuple[str | None]:
        if cell.seed < 0:
            return (None,)
        train = TrainCell(cell.policy, cell.scenario, cell.seed, cell.timesteps)
        return (str(trained[train]["run_dir"]),)

    evaluated = _run_cells(eval_cells, eval_cell, run_dir_of, settings)
    document: dict[str, Any] = {
        "settings": {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(settings).items()
            if key != "out"
        },
        "seconds_per_10k_steps": {
            learner: [
                trained[cell]["seconds_per_10k_steps"]
                for cell in train_cells
                if cell.learner == learner
            ]
            for learner in settings.learners
        },
        "conditions": [],
    }
    for scenario in settings.scenarios:
        for condition in settings.conditions:
            rewards = {
                cell.policy: np.asarray(evaluated[cell]["episode_rewards"])
                for cell in eval_cells
                if cell.seed < 0 and (cell.scenario, cell.condition) == (scenario, condition)
            }
            learners = {
                learner: np.array(
                    [
                        evaluated[cell]["episode_rewards"]
                        for cell in eval_cells
                        if (cell.policy, cell.scenario, cell.condition)
                        == (learner, scenario, condition)
                    ]
                )
                for learner in settings.learners
            }
            document["conditions"].append(
                aggregate_condition(scenario, condition, rewards, learners, causal_baselines())
            )
    return document


def aggregate_condition(
    scenario: str,
    condition: str,
    baselines: Mapping[str, np.ndarray],
    learners: Mapping[str, np.ndarray],
    causal: Sequence[str],
) -> dict[str, Any]:
    """Every learner against the baselines in one condition.

    :param baselines: episode rewards ``(episodes,)`` per baseline (causal ones and the upper
        reference ``clairvoyant-lookahead``)
    :param learners: episode rewards ``(seeds, episodes)`` per learner, on the same episodes
    :param causal: the causal baselines' names
    """
    from splitrl.evaluation.metrics import normalized_score
    from splitrl.evaluation.seeds import interval_estimate

    baseline_means = {name: float(values.mean()) for name, values in baselines.items()}
    best = max((name for name in causal if name in baselines), key=baseline_means.__getitem__)
    upper = baseline_means["clairvoyant-lookahead"]
    rows = {}
    for learner, episodes in learners.items():
        reward = interval_estimate(episodes.mean(axis=1, keepdims=True))
        gains = {}
        for name in causal:
            if name not in baselines:
                continue
            per_seed = (episodes - baselines[name][None, :]).mean(axis=1)
            gain = interval_estimate(per_seed[:, None])
            gains[name] = {
                "iqm": gain.value,
                "low": gain.low,
                "high": gain.high,
                "seeds_better": int((per_seed > 0).sum()),
            }
        score = normalized_score(reward.value, baseline_means[best], upper)
        rows[learner] = {
            "reward_iqm": reward.value,
            "reward_low": reward.low,
            "reward_high": reward.high,
            "seeds": len(episodes),
            "score": None if math.isnan(score) else score,
            "score_goal_met": not math.isnan(score) and score >= SCORE_GOAL,
            "gains": gains,
            "beats_every_causal_baseline": all(
                gain["low"] > 0 and gain["seeds_better"] >= math.ceil(0.8 * len(episodes))
                for gain in gains.values()
            ),
        }
    return {
        "scenario": scenario,
        "condition": condition,
        "baselines": baseline_means,
        "best_causal": best,
        "upper_reference": upper,
        "learners": rows,
    }


def _print_summary(document: dict[str, Any]) -> None:
    rows = []
    for condition in document["conditions"]:
        best = condition["best_causal"]
        for learner, row in condition["learners"].items():
            gain = row["gains"][best]
            rows.append(
                {
                    "condition": f"{condition['scenario']}/{condition['condition']}",
                    "learner": learner,
                    "reward": row["reward_iqm"],
                    "best": f"{best} {condition['baselines'][best]:.4f}",
                    "gain": f"{gain['iqm']:+.4f} [{gain['low']:+.4f}, {gain['high']:+.4f}]",
                    "better": f"{gain['seeds_better']}/{row['seeds']}",
                    "score": math.nan if row["score"] is None else row["score"],
                }
            )
    print_table(
        rows,
        [
            ("condition", "condition", "s"),
            ("learner", "learner", "s"),
            ("reward", "reward IQM", ".4f"),
            ("best", "best causal baseline", "s"),
            ("gain", "gain over it (IQM, 95% CI)", "s"),
            ("better", "seeds better", "s"),
            ("score", "score", ".3f"),
        ],
    )
    for learner, values in document["seconds_per_10k_steps"].items():
        print(f"{learner}: {np.mean(values):.0f} s per 10k steps (mean of {len(values)} runs)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="two seeds, 10k steps, markov only, 10 episodes"
    )
    parser.add_argument("--learners", help="comma-separated learners and variants")
    parser.add_argument("--scenarios", help="comma-separated scenario presets (default: default)")
    parser.add_argument("--conditions", help="comma-separated conditions (default: all)")
    parser.add_argument("--seeds", type=int, help="training seeds per learner")
    parser.add_argument("--timesteps", type=int, help="training steps per run")
    parser.add_argument("--episodes", type=int, help="evaluation episodes per condition")
    parser.add_argument("--jobs", type=int, help="processes at once (default: 2)")
    parser.add_argument("--out", type=Path, help="cell files (default: results/bench_policy)")
    args = parser.parse_args(argv)
    settings = BenchSettings(conditions=(*CHANNELS, *trace_conditions()))
    changes: dict[str, Any] = {}
    if args.quick:
        changes = {"seeds": (0, 1), "timesteps": 10_000, "conditions": ("markov",), "episodes": 10}
    for name in ("learners", "scenarios", "conditions"):
        value = getattr(args, name)
        if value:
            changes[name] = tuple(item.strip() for item in value.split(","))
    for name in ("seeds", "timesteps", "episodes", "jobs"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                parser.error(f"--{name} must be at least 1, got {value}")
            changes[name] = tuple(range(value)) if name == "seeds" else value
    if args.out is not None:
        changes["out"] = args.out
    settings = dataclasses.replace(settings, **changes)
    try:
        for learner in settings.learners:
            variant(learner)
        for scenario in settings.scenarios:
            for condition in settings.conditions:
                condition_scenario(scenario, condition)
    except (ValueError, KeyError, FileNotFoundError) as error:
        parser.error(str(error))
    document = run(settings)
    _print_summary(document)
    path = write_results("policy", document)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
