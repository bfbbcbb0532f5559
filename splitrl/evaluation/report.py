"""Write evaluation results as a markdown table, a CSV file and a JSON document."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from splitrl.evaluation.metrics import PolicyMetrics
from splitrl.evaluation.suite import EvaluationResult

#: the scalar columns of the CSV file, in order
CSV_COLUMNS = (
    "condition",
    "name",
    "kind",
    "episodes",
    "requests",
    "reward",
    "reward_ci95",
    "normalized_score",
    "gain_vs_static",
    "gain_vs_static_ci95",
    "latency_ms",
    "latency_p95_ms",
    "accuracy",
    "deadline_miss_rate",
    "energy_mj",
    "payload_bytes",
    "reward_seed_std",
    "normalized_score_seed_std",
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


def _reward_cell(row: PolicyMetrics) -> str:
    if not math.isfinite(row.reward_ci95):
        return f"{row.reward:.4f}"
    return f"{row.reward:.4f} ± {row.reward_ci95:.4f}"


def _gain_cell(row: PolicyMetrics) -> str:
    if not math.isfinite(row.gain_vs_static_ci95):
        return _number(row.gain_vs_static, "+.4f")
    return f"{row.gain_vs_static:+.4f} ± {row.gain_vs_static_ci95:.4f}"


def markdown_table(rows: Sequence[PolicyMetrics]) -> str:
    """The metrics of one condition as a markdown table, then the chosen actions as a second one."""
    lines = [
        "| policy | reward (95% CI) | gain vs static (paired CI) | score | latency ms | p95 ms "
        "| accuracy | miss rate | energy mJ | bytes sent |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {_reward_cell(row)} | {_gain_cell(row)} "
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


def markdown_report(result: EvaluationResult) -> str:
    """The whole evaluation as markdown: one section per condition."""
    seeds = result.seeds
    sections = [
        f"# Evaluation: scenario {result.scenario.name}",
        "",
        f"{len(seeds)} episodes of {result.scenario.requests_per_episode} requests per policy, reset seeds "
        f"{seeds[0]}..{seeds[-1]} (the same for every policy). Reward: mean per request with a "
        "95% t-interval over episodes (over training seeds for aggregate rows). Gain vs static: "
        "reward minus the best static configuration's, paired per episode (same channel and "
        "requests). Score: (R - R_best_static) / (R_oracle - R_best_static).",
    ]
    for condition in result.conditions:
        sections += [
            "",
            f"## Channel {condition.condition.name}",
            "",
            f"Best static configuration (fitted on training seeds {result.fit_seeds[0]}.."
            f"{result.fit_seeds[-1]}): {condition.best_static_action}",
            "",
            markdown_table(condition.rows),
        ]
    return "\n".join(sections) + "\n"


def csv_rows(rows: Sequence[PolicyMetrics]) -> list[dict[str, Any]]:
    """Flat rows for CSV: the scalar metrics, then ``exit_<e>``, ``split_<s>``, ``bits_<b>``."""
    flat = []
    for row in rows:
        record: dict[str, Any] = {column: getattr(row, column) for column in CSV_COLUMNS}
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
    """The evaluation as plain JSON data: settings, runs, and the rows of every condition."""
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
                "best_static_action": condition.best_static_action,
                "rows": [row.to_dict() for row in condition.rows],
            }
            for condition in result.conditions
        ],
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
