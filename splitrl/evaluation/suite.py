"""Evaluate trained runs and baselines side by side: the work behind ``splitrl evaluate``.

The steps: load the runs (:func:`load_runs`), choose the scenario (:func:`evaluation_scenario`) and
the channel conditions (:func:`evaluation_conditions`), check that every run fits the evaluated env
(:func:`check_run_matches`), then :func:`evaluate` runs every policy on the same seeded episodes of
each condition, fits the best static configuration on training seeds, and summarizes.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from splitrl.agents.baselines import BASELINES, BestStaticPolicy, learned_baselines
from splitrl.agents.policy_interface import ModelPolicy, Policy
from splitrl.envs.scenarios import Scenario, get_scenario
from splitrl.envs.split_computing import SplitComputingEnv
from splitrl.evaluation.defaults import (
    DEFAULT_EVAL_EPISODES,
    DEFAULT_EVAL_SEED,
    DEFAULT_FIT_EPISODES,
    DEFAULT_FIT_SEED,
)
from splitrl.evaluation.metrics import PolicyMetrics, compare, summarize
from splitrl.evaluation.references import (
    UPPER_REFERENCE,
    AdaptationValue,
    adaptation_value,
    best_of,
    is_causal,
    make_baselines,
    reference_names,
)
from splitrl.evaluation.runner import Rollout, evaluate_policies
from splitrl.evaluation.seeds import SeedsReport, aggregate_learner, pairwise_improvements


@dataclass
class TrainedRun:
    """A run directory and its trained policy.

    :param path: the run directory
    :param algo: its learner
    :param seed: its training seed
    :param config: its ``config.yaml``
    :param policy: the trained policy (its ``name`` is the row name in tables)
    :param which: the model loaded, ``"final"`` or ``"best"``
    """

    path: Path
    algo: str
    seed: int
    config: dict[str, Any]
    policy: ModelPolicy
    which: Literal["final", "best"] = "final"


@dataclass(frozen=True)
class Condition:
    """One evaluation condition: the scenario with one channel.

    :param name: short name in tables and file names (``"markov"``, ``"trace:norway_bus_1"``)
    :param scenario: the scenario to build the env from
    """

    name: str
    scenario: Scenario

    def make_env(self) -> SplitComputingEnv:
        """A new env of this condition."""
        return SplitComputingEnv(self.scenario)


@dataclass
class ConditionResult:
    """The outcome of one condition.

    :param condition: the condition
    :param rows: one row per policy
    :param rollouts: every policy's requests, by name
    :param best_causal: the best causal baseline (0 on the normalized score)
    :param adaptation: what adapting to the link is worth in this condition
    :param best_static_action: the label of the fitted best static action, if it was evaluated
    """

    condition: Condition
    rows: list[PolicyMetrics]
    rollouts: dict[str, Rollout]
    best_causal: str
    adaptation: AdaptationValue
    best_static_action: str | None


@dataclass
class EvaluationResult:
    """Everything :func:`evaluate` measured.

    :param scenario: the evaluated scenario (with the conditions' channels replaced)
    :param seeds: the evaluation episodes' reset seeds
    :param fit_seeds: the training-channel seeds the best static configuration was fitted on
    :param runs: the evaluated runs
    :param conditions: one result per condition
    :param bit_options: the profile's bit options (labels of the bits distribution)
    :param deadline_s: the reward's latency deadline
    :param seeds_report: the learners aggregated over training seeds with rliable (``None`` with
        fewer than two runs)
    """

    scenario: Scenario
    seeds: list[int]
    fit_seeds: list[int]
    runs: list[TrainedRun]
    conditions: list[ConditionResult]
    bit_options: tuple[int | str, ...]
    deadline_s: float
    seeds_report: SeedsReport | None = None

    def rows(self) -> list[PolicyMetrics]:
        """Every row of every condition."""
        return [row for result in self.conditions for row in result.rows]


def load_runs(
    paths: Sequence[str | Path], which: Literal["final", "best"] = "final"
) -> list[TrainedRun]:
    """Load the trained policies of run directories, named for tables.

    A learner with one run is named after it (``"sacd"``); several runs of one learner are named
    by seed (``"sacd (seed 1)"``), or by directory when seeds repeat.

    :param paths: run directories written by ``splitrl train``
    :param which: ``"final"`` or ``"best"`` model
    :raises FileNotFoundError: for a missing directory or model
    :raises ValueError: for a malformed run config
    """
    from splitrl.training.run_dir import RunDirectory

    runs = []
    for path in paths:
        directory = RunDirectory(Path(path))
        config = directory.read_config()
        for key in ("seed", "action_nvec", "profile_identity", "scenario_spec"):
            if key not in config:
                raise ValueError(f"{directory.config_path}: not a splitrl run config (no {key!r})")
        policy = directory.load_policy(which)
        runs.append(
            TrainedRun(
                directory.path, str(config["algo"]), int(config["seed"]), config, policy, which
            )
        )
    for algo in {run.algo for run in runs}:
        group = [run for run in runs if run.algo == algo]
        seeds = [run.seed for run in group]
        for member in group:
            if len(group) == 1:
                member.policy.name = algo
            elif len(set(seeds)) == len(seeds):
                member.policy.name = f"{algo} (seed {member.seed})"
            else:
                member.policy.name = f"{algo} ({member.path.name})"
    names = [run.policy.name for run in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"the same run is given twice: {sorted(names)}")
    return runs


def evaluation_scenario(
    runs: Sequence[TrainedRun], scenario: str | None = None, profile: str | None = None
) -> Scenario:
    """The scenario to evaluate in.

    :param runs: the runs to evaluate
    :param scenario: a named scenario; default: the scenario the runs trained in (with their
        overrides), which must then be the same for every run; ``"default"`` without runs
    :param profile: a profile name or path replacing the scenario's
    :raises ValueError: when the runs trained in different scenarios and none is named
    """
    from splitrl.envs.scenarios import scenario_from_dict

    if scenario is not None:
        chosen = get_scenario(scenario)
    elif runs:
        specs = [run.config["scenario_spec"] for run in runs]
        if any(spec != specs[0] for spec in specs[1:]):
            trained = sorted({f"{run.path.name}: {run.config.get('scenario')}" for run in runs})
            raise ValueError(
                "the runs were trained in different scenarios or with different overrides "
                f"({'; '.join(trained)}); name the one to evaluate in with --scenario"
            )
        chosen = scenario_from_dict(specs[0])
    else:
        chosen = get_scenario("default")
    if profile is not None:
        chosen = dataclasses.replace(chosen, profile=_absolute_if_path(profile))
    return chosen


def evaluation_conditions(
    scenario: Scenario, channel: str | None = None, traces: Sequence[str | Path] = ()
) -> list[Condition]:
    """The channels to evaluate on: one channel model, or one condition per trace file.

    :param scenario: the evaluated scenario
    :param channel: a channel model name (``markov``, ``gilbert-elliott``, ``fading``, ``constant``)
        or any ``make_channel`` spec; default: the scenario's channel
    :param traces: trace files, each a separate condition (not together with ``channel``)
    :raises FileNotFoundError: for a missing trace file
    :raises ValueError: when both ``channel`` and ``traces`` are given
    """
    if channel is not None and traces:
        raise ValueError("give either a channel model or trace files, not both")
    if traces:
        conditions = []
        for trace in traces:
            path = Path(trace)
            if not path.is_file():
                raise FileNotFoundError(f"trace file {path} not found")
            spec = f"trace:{path.resolve()}"
            conditions.append(
                Condition(f"trace:{path.name}", dataclasses.replace(scenario, channel=spec))
            )
        names = [condition.name for condition in conditions]
        if len(set(names)) != len(names):
            raise ValueError(f"trace files must have distinct names, got {names}")
        return conditions
    if channel is not None:
        return [Condition(_channel_name(channel), dataclasses.replace(scenario, channel=channel))]
    return [Condition(_channel_name(scenario.channel), scenario)]


def _channel_name(channel: str | Mapping[str, Any]) -> str:
    if isinstance(channel, str):
        if channel.startswith("trace:"):
            return f"trace:{Path(channel[len('trace:') :]).name}"
        return channel
    return str(channel.get("model", "custom"))


def _absolute_if_path(profile: str) -> str:
    candidate = Path(profile)
    if candidate.suffix in (".json", ".npz") or candidate.exists():
        return str(candidate.resolve())
    return profile


def check_run_matches(run: TrainedRun, env: SplitComputingEnv, profile_sha256: str) -> None:
    """Raise ``ValueError`` if ``run`` was trained on another profile or action space than ``env``.

    :param run: the trained run
    :param env: an env of the evaluated scenario
    :param profile_sha256: ``arrays_sha256`` of the evaluated profile
    """
    identity = run.config["profile_identity"]
    trained_sha = str(identity.get("arrays_sha256", ""))
    if trained_sha != profile_sha256:
        raise ValueError(
            f"run {run.path} was trained on profile {identity.get('name')!r} "
            f"(arrays {trained_sha[:12]}), but the evaluation uses profile {env.profile.name!r} "
            f"(arrays {profile_sha256[:12]}); evaluate it in its own scenario (omit --scenario) "
            "or pass its profile with --profile"
        )
    trained_nvec = [int(n) for n in run.config["action_nvec"]]
    if trained_nvec != [int(n) for n in env.actions.nvec]:
        raise ValueError(
            f"run {run.path} acts in MultiDiscrete({trained_nvec}) but the evaluated env's action "
            f"space is MultiDiscrete({list(env.actions.nvec)})"
        )
    trained_shape = tuple(run.policy.model.observation_space.shape)
    observed_shape = run.policy.observation_shape(env)
    if trained_shape != observed_shape:
        raise ValueError(
            f"run {run.path} observes vectors of shape {trained_shape} but would get vectors of "
            f"shape {observed_shape} in the evaluated env"
        )


def baseline_names(spec: str) -> list[str]:
    """Baseline names from ``"all"``, ``"none"`` or a comma-separated list (checked).

    ``"all"`` is every baseline but the learned ones
    (:func:`~splitrl.agents.baselines.learned_baselines`, named to be run). The references of the
    measures (:func:`splitrl.evaluation.references.reference_names`: every causal baseline,
    ``channel-blind`` and ``clairvoyant-lookahead``) are always included.
    """
    text = spec.strip()
    if text == "all":
        learned = learned_baselines()
        chosen = [name for name in BASELINES if name not in learned]
    elif text in ("", "none"):
        chosen = []
    else:
        chosen = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baselines {unknown}; known: {', '.join(BASELINES)}, all")
    return list(dict.fromkeys([*chosen, *reference_names()]))


def evaluate(
    runs: Sequence[TrainedRun],
    baselines: Sequence[str],
    conditions: Sequence[Condition],
    *,
    episodes: int = DEFAULT_EVAL_EPISODES,
    seed: int = DEFAULT_EVAL_SEED,
    fit_episodes: int = DEFAULT_FIT_EPISODES,
    fit_seed: int = DEFAULT_FIT_SEED,
    progress: bool = True,
    jobs: int = 1,
) -> EvaluationResult:
    """Evaluate the runs and baselines on the same seeded episodes of every condition.

    Every row gets its paired gain over every baseline and its normalized score (0 = the best
    causal baseline, 1 = ``clairvoyant-lookahead``). The best static configuration is fitted per
    condition on the episodes of ``fit_seed ..`` (training-channel seeds), never on the evaluation
    seeds. With two runs or more, the learners are aggregated over their training seeds with
    rliable (:mod:`splitrl.evaluation.seeds`).

    :param runs: loaded runs (:func:`load_runs`)
    :param baselines: baseline names (:func:`baseline_names`); the references of the measures are
        added if missing
    :param conditions: the conditions (:func:`evaluation_conditions`)
    :param episodes: evaluation episodes per condition (at least 2: intervals need them)
    :param seed: reset seed of the first evaluation episode (then ``seed + 1``, ...)
    :param fit_episodes: episodes per action when fitting the best static configuration
    :param fit_seed: first seed of those episodes
    :param progress: show progress bars
    :param jobs: conditions evaluated at once, each in its own process (one torch thread each);
        the results are the same as with 1
    :raises ValueError: for a run that does not match the evaluated profile or action space
    """
    from splitrl.training.config import profile_identity

    if episodes < 2:
        raise ValueError(
            f"episodes must be at least 2 (a confidence interval needs them), got {episodes}"
        )
    if not conditions:
        raise ValueError("no evaluation condition")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    baselines = list(dict.fromkeys([*baselines, *reference_names()]))
    unknown = [name for name in baselines if name not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; known: {', '.join(BASELINES)}")
    envs = [condition.make_env() for condition in conditions]
    for condition, env in zip(conditions, envs, strict=True):
        sha = profile_identity(condition.scenario.profile)["arrays_sha256"]
        for run in runs:
            check_run_matches(run, env, sha)
    for env in envs:
        env.close()
    seeds = list(range(seed, seed + episodes))
    fit = (fit_episodes, fit_seed)
    if jobs == 1 or len(conditions) == 1:
        results = [
            evaluate_condition(condition, runs, baselines, seeds, fit, progress)
            for condition in conditions
        ]
    else:
        results = _evaluate_in_processes(conditions, runs, baselines, seeds, fit, progress, jobs)
    return EvaluationResult(
        conditions[0].scenario,
        seeds,
        list(range(fit_seed, fit_seed + fit_episodes)),
        list(runs),
        results,
        tuple(envs[0].actions.bit_options),
        float(envs[0].reward_spec.deadline_s),
        seeds_report(runs, results) if len(runs) > 1 else None,
    )


def evaluate_condition(
    condition: Condition,
    runs: Sequence[TrainedRun],
    baselines: Sequence[str],
    seeds: Sequence[int],
    fit: tuple[int, int],
    progress: bool = True,
) -> ConditionResult:
    """Evaluate the runs and baselines on the seeded episodes of one condition (see
    :func:`evaluate`, which checks the arguments).

    :param fit: ``(episodes, first seed)`` of the best static configuration's fit
    """
    env = condition.make_env()
    references = make_baselines(baselines, condition.make_env, *fit)
    policies: list[Policy] = [*(run.policy for run in runs), *references]
    rollouts = {
        rollout.name: rollout
        for rollout in evaluate_policies(
            policies,
            env,
            seeds,
            progress=progress,
            description=f"evaluating on {condition.name}",
        )
    }
    causal = [policy.name for policy in references if is_causal(policy)]
    best_causal = best_of(rollouts, causal)
    learned = {run.policy.name: run.seed for run in runs}
    rows = [
        summarize(
            rollouts[policy.name],
            env.actions.bit_options,
            condition=condition.name,
            kind="learned" if policy.name in learned else "baseline",
            causal=is_causal(policy),
        )
        for policy in policies
    ]
    for row in rows:
        if row.name in learned:
            row.seeds = [learned[row.name]]
    compare(rows, rollouts, list(baselines), best_causal, UPPER_REFERENCE)
    static = next((p for p in references if isinstance(p, BestStaticPolicy)), None)
    env.close()
    return ConditionResult(
        condition,
        rows,
        rollouts,
        best_causal,
        adaptation_value(rollouts, causal),
        None
        if static is None or static.best_action is None
        else env.actions.label(*static.best_action),
    )


def _evaluate_in_processes(
    conditions: Sequence[Condition],
    runs: Sequence[TrainedRun],
    baselines: Sequence[str],
    seeds: Sequence[int],
    fit: tuple[int, int],
    progress: bool,
    jobs: int,
) -> list[ConditionResult]:
    """:func:`evaluate_condition` of every condition, ``jobs`` at a time in worker processes,
    which load the runs again from their directories (a model is not sent between processes)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    loads = [(str(run.path), run.which, run.policy.name) for run in runs]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(conditions)), mp_context=context) as pool:
        futures = [
            pool.submit(
                _evaluate_condition_in_worker, condition, loads, list(baselines), list(seeds), fit
            )
            for condition in conditions
        ]
        results = []
        for condition, future in zip(conditions, futures, strict=True):
            results.append(future.result())
            if progress:
                print(f"evaluated on {condition.name}", file=sys.stderr, flush=True)
    # the rows name the runs loaded in the workers; the result keeps the caller's runs
    return results


def _evaluate_condition_in_worker(
    condition: Condition,
    loads: Sequence[tuple[str, Literal["final", "best"], str]],
    baselines: list[str],
    seeds: list[int],
    fit: tuple[int, int],
) -> ConditionResult:
    import torch

    torch.set_num_threads(1)
    runs = []
    for path, which, name in loads:
        (run,) = load_runs([path], which=which)
        run.policy.name = name
        runs.append(run)
    return evaluate_condition(condition, runs, baselines, seeds, fit, progress=False)


def learner_row_name(algo: str, n_runs: int) -> str:
    """The name of a learner's aggregate: ``"sacd (3 seeds)"``, or ``"sacd"`` for one run."""
    return f"{algo} ({n_runs} seeds)" if n_runs > 1 else algo


def seeds_report(
    runs: Sequence[TrainedRun], results: Sequence[ConditionResult]
) -> SeedsReport | None:
    """Aggregate every learner over its runs with rliable, per condition and over all of them.

    A learner whose runs repeat a training seed (say, a fresh and a shipped run of seed 0) is
    left out: its runs are not independent seeds. ``None`` when no learner is left.

    :param runs: the evaluated runs
    :param results: their results, one per condition
    """
    names = [result.condition.name for result in results]
    best_causal = np.array(
        [next(r.reward for r in result.rows if r.name == result.best_causal) for result in results]
    )
    report = SeedsReport()
    matrices = {}
    for algo in dict.fromkeys(run.algo for run in runs):
        group = [run for run in runs if run.algo == algo]
        if len({run.seed for run in group}) < len(group):
            continue
        name = learner_row_name(algo, len(group))
        rewards = np.array(
            [
                [
                    next(r.reward for r in result.rows if r.name == run.policy.name)
                    for result in results
                ]
                for run in group
            ]
        )
        matrices[name] = rewards
        seeds = [run.seed for run in group]
        for column, condition in enumerate(names):
            report.per_condition.setdefault(condition, []).append(
                aggregate_learner(
                    name,
                    seeds,
                    [condition],
                    rewards[:, [column]],
                    best_causal[[column]],
                    with_improvement=False,
                )
            )
        report.overall.append(aggregate_learner(name, seeds, names, rewards, best_causal))
    if not matrices:
        return None
    report.improvements = pairwise_improvements(matrices)
    return report
