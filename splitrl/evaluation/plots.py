"""Plots of an evaluation (PNG files, matplotlib's non-interactive Agg backend).

Per condition: the mean reward per policy with its confidence interval, the latency CDF, a timeline
of one episode (the true capacity and the exit, split and bit-width a learned policy chose beside a
baseline's), and accuracy against mean latency. With several runs, the learners aggregated over
training seeds (rliable's interval and probability-of-improvement plots).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from splitrl.evaluation.metrics import PolicyMetrics
from splitrl.evaluation.runner import LOCAL_BITS, Rollout
from splitrl.evaluation.seeds import SeedsReport
from splitrl.evaluation.suite import ConditionResult, EvaluationResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure


#: height of one learner's row in the aggregate plot; its x label sits half an inch below the axes
ROW_HEIGHT_INCHES = 0.6


def _figure(width: float, height: float, rows: int = 1) -> tuple[Figure, np.ndarray]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(rows, 1, figsize=(width, height), squeeze=False, sharex=rows > 1)
    return figure, axes[:, 0]


def _save(figure: Figure, path: Path, *, layout: bool = True) -> Path:
    from matplotlib import pyplot as plt

    if layout:
        figure.tight_layout()
    # "tight" also keeps the labels rliable places outside the axes
    figure.savefig(path, dpi=110, bbox_inches=None if layout else "tight")
    plt.close(figure)
    return path


def slug(name: str) -> str:
    """A file-name-safe condition name: ``"trace:norway_bus_1"`` -> ``"trace-norway_bus_1"``."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-") or "condition"


def plot_rewards(rows: Sequence[PolicyMetrics], title: str, path: Path) -> Path:
    """Mean reward per request of every policy, with its 95% confidence interval."""
    figure, (axis,) = _figure(max(6.0, 0.7 * len(rows) + 2.0), 4.0)
    names = [row.name for row in rows]
    rewards = np.array([row.reward for row in rows])
    errors = np.nan_to_num(np.array([row.reward_ci95 for row in rows]))
    colors = ["tab:orange" if row.kind != "baseline" else "tab:blue" for row in rows]
    axis.bar(range(len(rows)), rewards, yerr=errors, color=colors, capsize=3)
    axis.set_xticks(range(len(rows)), names, rotation=35, ha="right")
    low = float(np.min(rewards - errors))
    high = float(np.max(rewards + errors))
    margin = 0.1 * (high - low) if high > low else 0.05
    axis.set_ylim(low - margin, high + margin)
    axis.set_ylabel("mean reward per request")
    axis.set_title(title)
    axis.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def plot_latency_cdf(
    rollouts: Sequence[Rollout], deadline_s: float, title: str, path: Path
) -> Path:
    """Empirical CDF of the end-to-end latency of every policy, with the deadline."""
    figure, (axis,) = _figure(7.0, 4.5)
    for rollout in rollouts:
        latencies = np.sort(rollout.latency_s.reshape(-1)) * 1e3
        axis.step(latencies, np.arange(1, latencies.size + 1) / latencies.size, label=rollout.name)
    axis.axvline(deadline_s * 1e3, color="black", linestyle="--", linewidth=1, label="deadline")
    axis.set_xscale("log")
    axis.set_xlabel("latency (ms)")
    axis.set_ylabel("fraction of requests")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small", ncols=2)
    return _save(figure, path)


def plot_timeline(
    rollouts: Sequence[Rollout],
    bit_options: Sequence[int | str],
    title: str,
    path: Path,
    episode: int = 0,
) -> Path:
    """One episode: the true capacity, then each policy's exit, split and bits per request."""
    from matplotlib.ticker import ScalarFormatter

    figure, axes = _figure(9.0, 8.0, rows=4)
    steps = np.arange(rollouts[0].reward.shape[1])
    axes[0].plot(steps, rollouts[0].capacity_bps[episode] / 1e6, color="black", linewidth=1)
    axes[0].set_yscale("log")
    axes[0].yaxis.set_major_formatter(ScalarFormatter())
    axes[0].yaxis.set_minor_formatter(ScalarFormatter())
    axes[0].set_ylabel("capacity\n(Mbit/s)")
    axes[0].set_title(f"{title} (episode seed {rollouts[0].seeds[episode]})")
    bit_labels = [str(option) for option in bit_options]
    for rollout in rollouts:
        bits = rollout.bits[episode]
        shown_bits = np.where(bits == LOCAL_BITS, len(bit_options), bits)
        for axis, values in zip(
            axes[1:], (rollout.exit[episode], rollout.split[episode], shown_bits), strict=True
        ):
            axis.step(steps, values, where="post", label=rollout.name, alpha=0.8)
    axes[1].set_ylabel("exit")
    axes[1].set_yticks(range(rollouts[0].n_exits))
    axes[2].set_ylabel("split")
    axes[2].set_yticks(range(rollouts[0].n_splits))
    axes[3].set_ylabel("bits")
    axes[3].set_yticks(range(len(bit_options) + 1), [*bit_labels, "local"])
    axes[3].set_xlabel("request")
    axes[1].legend(fontsize="small", loc="upper right")
    for axis in axes:
        axis.grid(alpha=0.3)
    return _save(figure, path)


def plot_accuracy_latency(rows: Sequence[PolicyMetrics], title: str, path: Path) -> Path:
    """Accuracy against mean latency, one point per policy."""
    figure, (axis,) = _figure(7.0, 5.0)
    for row in rows:
        marker = "o" if row.kind == "baseline" else "*"
        axis.scatter(row.latency_ms, row.accuracy, marker=marker, s=80 if marker == "*" else 40)
        axis.annotate(
            row.name,
            (row.latency_ms, row.accuracy),
            fontsize="small",
            xytext=(4, 4),
            textcoords="offset points",
        )
    axis.set_xlabel("mean latency (ms)")
    axis.set_ylabel("accuracy")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    return _save(figure, path)


def plot_seeds(report: SeedsReport, path: Path) -> list[Path]:
    """The learners over their training seeds and every condition: IQM of the reward, IQM and mean
    of the gain over the best causal baseline (stratified bootstrap 95% intervals), and, with two
    learners or more, the probability of improvement between them.

    Drawn with rliable's plotting utilities.

    :return: ``path``, and ``<path stem>_improvement.png`` when there are two learners or more
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from rliable import plot_utils

    names = [aggregate.name for aggregate in report.overall]
    estimates = {
        aggregate.name: (aggregate.reward, aggregate.gain, aggregate.gain_mean)
        for aggregate in report.overall
    }
    figure, _ = plot_utils.plot_interval_estimates(
        {name: np.array([e.value for e in estimates[name]]) for name in names},
        {
            name: np.array([[e.low for e in estimates[name]], [e.high for e in estimates[name]]])
            for name in names
        },
        metric_names=["reward IQM", "gain IQM", "gain mean"],
        algorithms=names,
        xlabel="reward per request; gain over the best causal baseline",
        xlabel_y_coordinate=-0.5 / (ROW_HEIGHT_INCHES * max(len(names), 1)),
        subfigure_width=3.6,
        row_height=ROW_HEIGHT_INCHES,
        max_ticks=3,
    )
    paths = [_save(figure, path, layout=False)]
    if report.improvements:
        figure, axis = plt.subplots(figsize=(5.0, 1.0 + 0.5 * len(report.improvements)))
        plot_utils.plot_probability_of_improvement(
            {
                f"{item.learner},{item.other}": item.probability.value
                for item in report.improvements
            },
            {
                f"{item.learner},{item.other}": np.array(
                    [item.probability.low, item.probability.high]
                )
                for item in report.improvements
            },
            ax=axis,
        )
        improvement = path.with_name(f"{path.stem}_improvement{path.suffix}")
        paths.append(_save(figure, improvement, layout=False))
    return paths


def plot_condition(
    result: ConditionResult,
    bit_options: Sequence[int | str],
    deadline_s: float,
    out: Path,
    learned: str | None = None,
) -> list[Path]:
    """Every plot of one condition; the timeline only when a learned policy is named.

    :param result: the condition's result
    :param bit_options: the profile's bit options
    :param deadline_s: the reward's deadline (drawn in the latency CDF)
    :param out: folder of the PNG files
    :param learned: the learned policy of the timeline (shown beside the best causal baseline)
    """
    out.mkdir(parents=True, exist_ok=True)
    name = result.condition.name
    tag = slug(name)
    rows = result.rows
    paths = [
        plot_rewards(rows, f"reward per policy: {name}", out / f"reward_{tag}.png"),
        plot_latency_cdf(
            list(result.rollouts.values()),
            deadline_s,
            f"latency CDF: {name}",
            out / f"latency_cdf_{tag}.png",
        ),
        plot_accuracy_latency(
            rows, f"accuracy vs latency: {name}", out / f"accuracy_latency_{tag}.png"
        ),
    ]
    if learned is not None:
        shown = [result.rollouts[learned], result.rollouts[result.best_causal]]
        paths.append(
            plot_timeline(shown, bit_options, f"timeline: {name}", out / f"timeline_{tag}.png")
        )
    return paths


def plot_evaluation(result: EvaluationResult, out: Path) -> list[Path]:
    """Every plot of every condition into ``out``; the timeline shows the first evaluated run.

    :return: the PNG files written
    """
    learned = result.runs[0].policy.name if result.runs else None
    paths = []
    for condition in result.conditions:
        paths += plot_condition(condition, result.bit_options, result.deadline_s, out, learned)
    if result.seeds_report is not None:
        paths += plot_seeds(result.seeds_report, out / "seeds_aggregate.png")
    return paths
