"""The report of a sweep: its cell files aggregated over training seeds with rliable.

Per scenario, condition and learner: the IQM of the mean reward per request over training seeds
with its stratified bootstrap interval, the IQM of the paired gain over every causal baseline
(the same episodes) with how many seeds beat it, and the normalized score (0 = the best causal
baseline, 1 = ``clairvoyant-lookahead``). Per scenario and condition: the room a causal policy has,
``oracle-now`` (the device's rule told the true capacity), ``oracle-ahead`` and ``clairvoyant-link``
(where the sweep evaluated them) and ``clairvoyant-lookahead`` against the best causal baseline,
paired. Per scenario
and learner, over every condition: the rliable aggregates of :mod:`splitrl.evaluation.seeds` (IQM
of reward and gain, probability of beating the best causal baseline, and of beating each other
learner).

:func:`write_report` writes ``report.json`` (the document), ``conditions.csv`` (one row per
scenario, condition and learner), ``room.csv`` (one row per scenario and condition),
``report.md`` (the tables) and one rliable plot per scenario.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from splitrl.sweeps.cells import read_cell
from splitrl.sweeps.grid import Sweep

#: the normalized score a learner should reach
SCORE_GOAL = 0.5


def aggregate_condition(
    scenario: str,
    condition: str,
    baselines: Mapping[str, np.ndarray],
    learners: Mapping[str, np.ndarray],
    causal: Sequence[str],
) -> dict[str, Any]:
    """Every learner against the baselines in one condition.

    :param baselines: episode rewards ``(episodes,)`` per baseline (causal ones and, if evaluated,
        the references of :data:`~splitrl.evaluation.references.ROOM_REFERENCES`)
    :param learners: episode rewards ``(seeds, episodes)`` per learner, on the same episodes
    :param causal: the causal baselines' names
    :return: the baselines' means, the best causal one, ``room`` (each evaluated reference's
        paired gain over the best causal baseline: ``mean`` and the 95% t-interval's ``ci95``)
        and one row per learner. A row's ``gains`` hold, per causal baseline, the IQM of the
        seeds' paired gains with its bootstrap interval over seeds (``iqm``, ``low``, ``high``:
        the episodes held fixed), the seeds above it (``seeds_better``), and the t-interval over
        episodes of the seeds' mean gain (``episodes_mean``, ``episodes_ci95``: the seeds held
        fixed). A learner beats every causal baseline when, against each, both intervals lie
        above zero and at least 4 of 5 seeds (80 %) are above it.
    """
    from splitrl.evaluation.metrics import normalized_score
    from splitrl.evaluation.references import ROOM_REFERENCES, UPPER_REFERENCE
    from splitrl.evaluation.seeds import interval_estimate
    from splitrl.statistics import t_interval

    baseline_means = {name: float(values.mean()) for name, values in baselines.items()}
    best = max((name for name in causal if name in baselines), key=baseline_means.__getitem__)
    upper = baseline_means.get(UPPER_REFERENCE, math.nan)
    rows = {}
    for learner, episodes in learners.items():
        reward = interval_estimate(episodes.mean(axis=1, keepdims=True))
        gains = {}
        for name in causal:
            if name not in baselines:
                continue
            paired = episodes - baselines[name][None, :]
            per_seed = paired.mean(axis=1)
            gain = interval_estimate(per_seed[:, None])
            # The bootstrap over seeds holds the episodes fixed; the t-interval over episodes of
            # the seeds' mean gain is what another draw of episodes could change.
            episode_mean, episode_ci95 = t_interval(paired.mean(axis=0))
            gains[name] = {
                "iqm": gain.value,
                "low": gain.low,
                "high": gain.high,
                "seeds_better": int((per_seed > 0).sum()),
                "episodes_mean": episode_mean,
                "episodes_ci95": episode_ci95,
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
                gain["low"] > 0
                and gain["seeds_better"] >= math.ceil(0.8 * len(episodes))
                and gain["episodes_mean"] - gain["episodes_ci95"] > 0
                for gain in gains.values()
            ),
        }
    room = {}
    for reference in ROOM_REFERENCES:
        if reference in baselines:
            mean, ci95 = t_interval(baselines[reference] - baselines[best])
            room[reference] = {"mean": mean, "ci95": ci95}
    return {
        "scenario": scenario,
        "condition": condition,
        "baselines": baseline_means,
        "best_causal": best,
        "upper_reference": None if math.isnan(upper) else upper,
        "room": room,
        "learners": rows,
    }


def sweep_document(sweep: Sweep) -> dict[str, Any]:
    """Aggregate the sweep's cell files; cells that did not finish are left out (and listed).

    :return: ``settings``, ``missing_cells``, ``seconds_per_10k_steps`` per learner,
        ``conditions`` (one :func:`aggregate_condition` each) and ``overall`` (per scenario and
        learner, rliable over every condition)
    """
    from splitrl.agents.baselines import causal_baselines

    out = sweep.out.resolve()
    missing: list[str] = []

    def episodes(key: str) -> np.ndarray | None:
        result = read_cell(out, key)
        if result is None:
            missing.append(key)
            return None
        return np.asarray(result["episode_rewards"], dtype=np.float64)

    seconds: dict[str, list[float]] = {learner: [] for learner in sweep.variants}
    for train in sweep.train_cells():
        result = read_cell(out, train.key)
        if result is None:
            missing.append(train.key)
        else:
            seconds[train.learner].append(float(result["seconds_per_10k_steps"]))
    causal = causal_baselines(learned=True)  # only the baselines the sweep ran count
    conditions = []
    overall = []
    for scenario in sweep.scenarios:
        matrices: dict[str, list[list[float]]] = {}
        best_rewards = []
        for condition in sweep.conditions:
            baselines = {
                cell.policy: rewards
                for cell in sweep.baseline_cells()
                if (cell.scenario, cell.condition) == (scenario.name, condition)
                and (rewards := episodes(cell.key)) is not None
            }
            learners: dict[str, np.ndarray] = {}
            for learner in sweep.variants:
                runs = [
                    rewards
                    for train in sweep.train_cells()
                    if (train.learner, train.scenario) == (learner, scenario.name)
                    for cell in sweep.learner_cells(train)
                    if cell.condition == condition and (rewards := episodes(cell.key)) is not None
                ]
                if runs:
                    learners[learner] = np.array(runs)
            if not any(name in baselines for name in causal):
                continue
            aggregate = aggregate_condition(scenario.name, condition, baselines, learners, causal)
            conditions.append(aggregate)
            best_rewards.append(aggregate["baselines"][aggregate["best_causal"]])
            for learner, matrix in learners.items():
                matrices.setdefault(learner, []).append(list(matrix.mean(axis=1)))
        names = [c["condition"] for c in conditions if c["scenario"] == scenario.name]
        overall.extend(_overall(scenario.name, names, matrices, best_rewards))
    return {
        "settings": sweep.to_dict(),
        "missing_cells": missing,
        "seconds_per_10k_steps": seconds,
        "conditions": conditions,
        "overall": overall,
    }


def _overall(
    scenario: str,
    conditions: Sequence[str],
    matrices: Mapping[str, list[list[float]]],
    best_rewards: Sequence[float],
) -> list[dict[str, Any]]:
    """rliable over every condition of one scenario, for the learners evaluated on all of them
    with the same number of seeds."""
    from splitrl.evaluation.seeds import aggregate_learner, pairwise_improvements

    complete = {
        learner: np.array(columns).T
        for learner, columns in matrices.items()
        if len(columns) == len(best_rewards) and len({len(c) for c in columns}) == 1
    }
    rows = []
    for learner, rewards in complete.items():
        aggregate = aggregate_learner(
            learner,
            list(range(len(rewards))),
            list(conditions),
            rewards,
            best_rewards,
        )
        rows.append(
            {
                "scenario": scenario,
                "learner": learner,
                "seeds": len(rewards),
                "reward": _interval(aggregate.reward),
                "gain_over_best_causal": _interval(aggregate.gain),
                "gain_mean_over_best_causal": _interval(aggregate.gain_mean),
                "probability_beats_best_causal": _interval(aggregate.beats_best_causal),
            }
        )
    improvements = pairwise_improvements(complete) if len(complete) > 1 else []
    for row in rows:
        row["probability_of_improvement"] = {
            item.other: _interval(item.probability)
            for item in improvements
            if item.learner == row["learner"]
        }
    return rows


def _interval(estimate: Any) -> dict[str, float] | None:
    if estimate is None:
        return None
    return {"value": estimate.value, "low": estimate.low, "high": estimate.high}


def condition_rows(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat row per scenario, condition and learner (the CSV and the table)."""
    rows = []
    for condition in document["conditions"]:
        best = condition["best_causal"]
        for learner, row in condition["learners"].items():
            gain = row["gains"][best]
            rows.append(
                {
                    "scenario": condition["scenario"],
                    "condition": condition["condition"],
                    "learner": learner,
                    "seeds": row["seeds"],
                    "reward_iqm": row["reward_iqm"],
                    "reward_low": row["reward_low"],
                    "reward_high": row["reward_high"],
                    "best_causal": best,
                    "best_causal_reward": condition["baselines"][best],
                    "gain_iqm": gain["iqm"],
                    "gain_low": gain["low"],
                    "gain_high": gain["high"],
                    "seeds_better": gain["seeds_better"],
                    "gain_episodes_mean": gain["episodes_mean"],
                    "gain_episodes_ci95": gain["episodes_ci95"],
                    "beats_every_causal_baseline": row["beats_every_causal_baseline"],
                    "score": row["score"],
                }
            )
    return rows


def room_rows(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per scenario and condition: the best causal baseline and what each reference gains over it.

    Conditions aggregated before the references were evaluated have no ``room`` and are left out.
    """
    return [
        {
            "scenario": condition["scenario"],
            "condition": condition["condition"],
            "best_causal": condition["best_causal"],
            "best_causal_reward": condition["baselines"][condition["best_causal"]],
            **{
                f"{reference}_gain": gain["mean"]
                for reference, gain in condition.get("room", {}).items()
            },
            **{
                f"{reference}_ci95": gain["ci95"]
                for reference, gain in condition.get("room", {}).items()
            },
        }
        for condition in document["conditions"]
        if condition.get("room")
    ]


def markdown_report(document: Mapping[str, Any]) -> str:
    """The per-condition table, the room per condition and the rliable table over conditions, as
    markdown."""
    lines = [
        "| scenario | condition | learner | reward IQM [95% CI] | best causal baseline "
        "| gain over it IQM [95% CI over seeds] | mean gain ± 95% over episodes | seeds better "
        "| beats every causal baseline | score |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in condition_rows(document):
        score = "-" if row["score"] is None else f"{row['score']:.3f}"
        episodes = f"{row['gain_episodes_mean']:+.4f} ± {row['gain_episodes_ci95']:.4f}"
        lines.append(
            f"| {row['scenario']} | {row['condition']} | {row['learner']} "
            f"| {row['reward_iqm']:.4f} [{row['reward_low']:.4f}, {row['reward_high']:.4f}] "
            f"| {row['best_causal']} {row['best_causal_reward']:.4f} "
            f"| {row['gain_iqm']:+.4f} [{row['gain_low']:+.4f}, {row['gain_high']:+.4f}] "
            f"| {episodes} | {row['seeds_better']}/{row['seeds']} "
            f"| {'yes' if row['beats_every_causal_baseline'] else 'no'} | {score} |"
        )
    lines += _room_table(document)
    if document["overall"]:
        lines += [
            "",
            "Over every condition (rliable: IQM over runs and conditions, stratified bootstrap):",
            "",
            "| scenario | learner | seeds | reward IQM [95% CI] | gain vs best causal IQM [95% CI] "
            "| P(run > best causal) [95% CI] |",
            "|---|---|---|---|---|---|",
        ]
        for row in document["overall"]:
            lines.append(
                f"| {row['scenario']} | {row['learner']} | {row['seeds']} "
                f"| {_text(row['reward'])} | {_text(row['gain_over_best_causal'])} "
                f"| {_text(row['probability_beats_best_causal'])} |"
            )
    if document["missing_cells"]:
        lines += ["", f"{len(document['missing_cells'])} cells did not finish and are left out."]
    return "\n".join(lines) + "\n"


def _room_table(document: Mapping[str, Any]) -> list[str]:
    """The room per condition: each reference's paired gain over the best causal baseline."""
    from splitrl.evaluation.references import LINK_REFERENCE, ROOM_REFERENCES

    rows = room_rows(document)
    if not rows:
        return []
    references = [name for name in ROOM_REFERENCES if any(f"{name}_gain" in row for row in rows)]
    lines = [
        "",
        f"The room a causal policy has: {', '.join(references)} against the best causal "
        f"baseline, paired (mean ± 95% t-interval; {LINK_REFERENCE}: the device's rule told the "
        "true capacity):",
        "",
        "| scenario | condition | best causal baseline | "
        + " | ".join(f"{name} gain" for name in references)
        + " |",
        "|---|---|---|" + "---|" * len(references),
    ]

    def gain(row: Mapping[str, Any], reference: str) -> str:
        if f"{reference}_gain" not in row:
            return "-"
        return f"{row[f'{reference}_gain']:+.4f} ± {row[f'{reference}_ci95']:.4f}"

    for row in rows:
        lines.append(
            f"| {row['scenario']} | {row['condition']} | {row['best_causal']} "
            f"{row['best_causal_reward']:.4f} | "
            + " | ".join(gain(row, name) for name in references)
            + " |"
        )
    return lines


def _text(interval: Mapping[str, float] | None) -> str:
    if interval is None:
        return "-"
    return f"{interval['value']:.4f} [{interval['low']:.4f}, {interval['high']:.4f}]"


def write_report(document: Mapping[str, Any], folder: Path) -> list[Path]:
    """Write ``report.json``, ``conditions.csv``, ``room.csv``, ``report.md`` and the rliable plots
    to ``folder``.

    :return: the files written
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "report.json", folder / "report.md"]
    paths[0].write_text(json.dumps(document, indent=1) + "\n")
    paths[1].write_text(markdown_report(document))
    paths.append(_write_csv(folder / "conditions.csv", condition_rows(document)))
    paths.append(_write_csv(folder / "room.csv", room_rows(document)))
    paths.extend(_plots(document, folder))
    return paths


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """``rows`` as CSV, the columns of every row in order of first appearance."""
    fields = list(dict.fromkeys(field for row in rows for field in row)) or ["scenario"]
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _plots(document: Mapping[str, Any], folder: Path) -> list[Path]:
    """One rliable interval plot per scenario (reward and gain over the best causal baseline)."""
    from splitrl.evaluation.plots import plot_seeds, slug
    from splitrl.evaluation.seeds import (
        Improvement,
        IntervalEstimate,
        LearnerAggregate,
        SeedsReport,
    )

    def estimate(interval: Mapping[str, float]) -> IntervalEstimate:
        return IntervalEstimate(interval["value"], interval["low"], interval["high"])

    paths = []
    for scenario in dict.fromkeys(row["scenario"] for row in document["overall"]):
        report = SeedsReport()
        for row in document["overall"]:
            if row["scenario"] != scenario:
                continue
            report.overall.append(
                LearnerAggregate(
                    name=row["learner"],
                    seeds=list(range(row["seeds"])),
                    conditions=[],
                    reward=estimate(row["reward"]),
                    gain=estimate(row["gain_over_best_causal"]),
                    gain_mean=estimate(row["gain_mean_over_best_causal"]),
                )
            )
            report.improvements += [
                Improvement(row["learner"], other, estimate(interval))
                for other, interval in row["probability_of_improvement"].items()
            ]
        paths += plot_seeds(report, folder / f"seeds_{slug(scenario)}.png")
    return paths
