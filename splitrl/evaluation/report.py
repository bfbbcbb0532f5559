"""Write evaluation results as a markdown table, a CSV file and a JSON document."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from splitrl.evaluation.metrics import MIN_SCORE_GAP, PolicyMetrics, json_safe
from splitrl.evaluation.references import CHANNEL_BLIND, UPPER_REFERENCE
from splitrl.evaluation.seeds import LearnerAggregate, SeedsReport
from splitrl.evaluation.suite import ConditionResult, EvaluationResult
from splitrl.statistics import PairedDifference

#: the scalar columns of the CSV file, in order (then ``gain_vs_<baseline>`` and the shares)
CSV_COLUMNS = (
    "condition",
    "name",
    "kind",
    "causal",
    "episodes",
    "requests",
    "reward",
    "reward_ci95",
    "normalized_score",
    "latency_ms",
    "latency_p95_ms",
    "accuracy",
    "deadline_miss_rate",
    "energy_mj",
    "payload_bytes",
)


def _number(value: float, spec: str) -> str:
    return "n/a" if not math.isfinite(value) else format(value, spec)


def _distribution(fractions: dict[str, float]) -> str:
    """``"0:12% 2:88%"``: the chosen values and their share, zeros left out."""
    shown = [
        f"{key}:{share:.0%}" if share >= 0.005 else f"{key}:<1%"
        for key, share in fractions.items()
        if share > 0
    ]
    return " ".join(shown) or "-"


def _interval(mean: float, half_width: float, spec: str) -> str:
    if not math.isfinite(half_width):
        return _number(mean, spec)
    return f"{format(mean, spec)} ± {half_width:.4f}"


def _gain_cell(gain: PairedDifference | None) -> str:
    return "-" if gain is None else _interval(gain.mean, gain.ci95, "+.4f")


def markdown_table(rows: Sequence[PolicyMetrics], best_causal: str) -> str:
    """The metrics of one condition as a markdown table, then the chosen actions as a second one.

    :param rows: the condition's rows
    :param best_causal: the condition's best causal baseline (a gain column refers to it)
    """
    lines = [
        f"| policy | reward (95% CI) | gain vs {best_causal} (paired CI) "
        f"| gain vs {CHANNEL_BLIND} (paired CI) | score | latency ms | p95 ms | accuracy "
        "| miss rate | energy mJ | bytes sent |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        name = row.name if row.causal else f"{row.name} (not causal)"
        lines.append(
            f"| {name} | {_interval(row.reward, row.reward_ci95, '.4f')} "
            f"| {_gain_cell(row.gains.get(best_causal))} "
            f"| {_gain_cell(row.gains.get(CHANNEL_BLIND))} "
            f"| {_number(row.normalized_score, '.3f')} "
            f"| {row.latency_ms:.1f} | {row.latency_p95_ms:.1f} | {row.accuracy:.3f} "
            f"| {row.deadline_miss_rate:.3f} | {row.energy_mj:.2f} | {row.payload_bytes:.0f} |"
        )
    lines += ["", "| policy | exits | splits | bits |", "|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row.name} | {_distribution(row.exits)} | {_distribution(row.splits)} "
            f"| {_distribution(row.bits)} |"
        )
    return "\n".join(lines)


def _aggregate_line(aggregate: LearnerAggregate) -> str:
    improvement = aggregate.beats_best_causal
    return (
        f"| {aggregate.name} | {' '.join(map(str, aggregate.seeds))} | {aggregate.reward} "
        f"| {aggregate.gain} | {aggregate.gain_mean} "
        f"| {'-' if improvement is None else improvement} |"
    )


def seeds_tables(report: SeedsReport, condition: str | None) -> str:
    """The rliable aggregates of one condition (``None``: over every condition) as markdown."""
    aggregates = report.overall if condition is None else report.per_condition[condition]
    lines = [
        "| learner | training seeds | reward IQM [95% CI] | gain vs best causal IQM [95% CI] "
        "| gain mean [95% CI] | P(run > best causal) [95% CI] |",
        "|---|---|---|---|---|---|",
        *(_aggregate_line(aggregate) for aggregate in aggregates),
    ]
    if condition is None and report.improvements:
        lines += ["", "| learner X | learner Y | P(X > Y) [95% CI] |", "|---|---|---|"]
        lines += [
            f"| {item.learner} | {item.other} | {item.probability} |"
            for item in report.improvements
        ]
    return "\n".join(lines)


def _condition_section(result: EvaluationResult, condition: ConditionResult) -> list[str]:
    rows = {row.name: row for row in condition.rows}
    low, high = rows[condition.best_causal].reward, rows[UPPER_REFERENCE].reward
    lines = [
        "",
        f"## Channel {condition.condition.name}",
        "",
        f"Best causal baseline (score 0): {condition.best_causal} ({low:.4f}); upper reference "
        f"(score 1): {UPPER_REFERENCE} ({high:.4f})"
        + (
            f"; the two are less than {MIN_SCORE_GAP} apart, so the score is n/a"
            if high - low < MIN_SCORE_GAP
            else ""
        )
        + ".",
        "",
        f"Non-triviality: {condition.adaptation.summary()}.",
    ]
    if condition.best_static_action is not None:
        lines += [
            "",
            f"Best static configuration (fitted on training seeds {result.fit_seeds[0]}.."
            f"{result.fit_seeds[-1]}): {condition.best_static_action}",
        ]
    lines += ["", markdown_table(condition.rows, condition.best_causal)]
    if result.seeds_report is not None:
        lines += [
            "",
            "Across training seeds (rliable: interquartile mean, stratified bootstrap 95% CI):",
            "",
            seeds_tables(result.seeds_report, condition.condition.name),
        ]
    return lines


def markdown_report(result: EvaluationResult) -> str:
    """The whole evaluation as markdown: one section per condition, then the seeds' aggregate."""
    seeds = result.seeds
    sections = [
        f"# Evaluation: scenario {result.scenario.name}",
        "",
        f"{len(seeds)} episodes of {result.scenario.requests_per_episode} requests per policy, "
        f"reset seeds "
        f"{seeds[0]}..{seeds[-1]} (the same for every policy). Reward: mean per request with a "
        "95% t-interval over episodes. Gains: reward minus the baseline's, paired per episode "
        "(same channel and requests), with their 95% t-interval. Score: (R - R_best_causal) / "
        f"(R_{UPPER_REFERENCE} - R_best_causal).",
    ]
    for condition in result.conditions:
        sections += _condition_section(result, condition)
    if result.seeds_report is not None and len(result.conditions) > 1:
        sections += [
            "",
            "## Across training seeds and conditions (rliable)",
            "",
            seeds_tables(result.seeds_report, None),
        ]
    return "\n".join(sections) + "\n"


def csv_rows(rows: Sequence[PolicyMetrics]) -> list[dict[str, Any]]:
    """Flat rows for CSV: the scalar metrics, ``gain_vs_<baseline>`` with its ``_ci95``, then
    ``exit_<e>``, ``split_<s>``, ``bits_<b>``."""
    flat = []
    for row in rows:
        record: dict[str, Any] = {column: getattr(row, column) for column in CSV_COLUMNS}
        for name, gain in row.gains.items():
            record[f"gain_vs_{name}"] = gain.mean
            record[f"gain_vs_{name}_ci95"] = gain.ci95
        record.update({f"exit_{key}": share for key, share in row.exits.items()})
        record.update({f"split_{key}": share for key, share in row.splits.items()})
        record.update({f"bits_{key}": share for key, share in row.bits.items()})
        record["seeds"] = " ".join(str(seed) for seed in row.seeds)
        flat.append(record)
    return flat


def write_csv(rows: Sequence[PolicyMetrics], path: Path) -> Path:
    """Write the rows (all conditions) as CSV; missing values are empty cells."""
    records = csv_rows(rows)
    columns = list(dict.fromkeys(key for record in records for key in record))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for record in records:
            writer.writerow(
                {
                    key: "" if isinstance(value, float) and not math.isfinite(value) else value
                    for key, value in record.items()
                }
            )
    return path


def result_document(result: EvaluationResult) -> dict[str, Any]:
    """The evaluation as plain JSON data: settings, runs, the rows of every condition and the
    aggregates over training seeds."""
    return {
        "scenario": result.scenario.to_dict(),
        "seeds": result.seeds,
        "fit_seeds": result.fit_seeds,
        "runs": [
            {"path": str(run.path), "algo": run.algo, "seed": run.seed, "name": run.policy.name}
            for run in result.runs
        ],
        "conditions": [
            {
                "name": condition.condition.name,
                "channel": _plain_channel(condition.condition.scenario.channel),
                "best_causal": condition.best_causal,
                "upper_reference": UPPER_REFERENCE,
                "adaptation": {
                    **json_safe(dataclasses.asdict(condition.adaptation)),
                    "upper_goal_met": condition.adaptation.upper_goal_met,
                    "causal_goal_met": condition.adaptation.causal_goal_met,
                },
                "best_static_action": condition.best_static_action,
                "rows": [row.to_dict() for row in condition.rows],
            }
            for condition in result.conditions
        ],
        "seeds_report": None
        if result.seeds_report is None
        else json_safe(dataclasses.asdict(result.seeds_report)),
    }


def _plain_channel(channel: Any) -> Any:
    return channel if isinstance(channel, str) else dict(channel)


def write_reports(result: EvaluationResult, out: Path) -> dict[str, Path]:
    """Write ``results.md``, ``results.csv`` and ``results.json`` into ``out``.

    :return: the paths written, by format
    """
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out / "results.md",
        "csv": out / "results.csv",
        "json": out / "results.json",
    }
    paths["markdown"].write_text(markdown_report(result))
    write_csv(result.rows(), paths["csv"])
    paths["json"].write_text(json.dumps(result_document(result), indent=2) + "\n")
    return paths
