"""Tests of the policy benchmark's sweep file and flags (no training)."""

import argparse

import pytest

from benchmarks.bench_policy import POLICY_SWEEP, sweep_document
from splitrl.sweeps.grid import load_sweep, sweep_from_dict


def flags(**given: object) -> argparse.Namespace:
    names = (
        "quick",
        "learners",
        "scenarios",
        "conditions",
        "seeds",
        "timesteps",
        "episodes",
        "out",
    )
    return argparse.Namespace(**{name: given.get(name) for name in names})


def test_ablation_variants_keep_their_hyperparameters() -> None:
    sweep = load_sweep(
        POLICY_SWEEP,
        learners=["sacd-center", "sacd-prior-randomized"],
        trace_dir=None,
    )
    center, randomized = sweep.variants.values()
    assert (center.algo, dict(center.hyperparameters), center.channel) == (
        "sacd",
        {"ent_coef": "auto_0.01", "reward_centering": 0.01},
        None,
    )
    assert (randomized.algo, randomized.channel) == ("sacd-prior", "randomized")


def test_flags_replace_the_sweep_entries() -> None:
    quick = sweep_from_dict(sweep_document(flags(quick=True)), POLICY_SWEEP.parent)
    assert (quick.seeds, quick.timesteps, quick.conditions, quick.episodes) == (
        (0, 1),
        10_000,
        ("markov",),
        10,
    )
    document = sweep_document(flags(learners="sacd, dqn", seeds=3, conditions="markov,fading"))
    sweep = sweep_from_dict(document, POLICY_SWEEP.parent)
    assert list(sweep.variants) == ["sacd", "dqn"] and sweep.seeds == (0, 1, 2)
    assert sweep.conditions == ("markov", "fading")
    with pytest.raises(FileNotFoundError, match=r"nope\.up"):
        sweep_from_dict(sweep_document(flags(conditions="trace:nope.up")), POLICY_SWEEP.parent)


def test_committed_sacd_ablation_is_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cell of the first SACD ablation (docs/sacd-experiments.md, The first ablation) is
    committed, so rerunning its sweep only re-aggregates the result files."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    sweep = load_sweep(root / "benchmarks" / "sweeps" / "sacd_ablation.yaml")
    assert sweep.out == Path("benchmarks/results/sacd_ablation")
    assert sweep.trials() == []
    assert sweep.variants["sacd-prior-kl05"].hyperparameters["target_kl"] == 0.05


#: the rows of docs/sacd.md's ablation table, in order
ABLATION_ROWS = [
    "sacd",
    "sacd-prior",
    "sacd-hindsight-plain",
    "sacd-hindsight-clip",
    "sacd-hindsight-wd",
    "sacd-hindsight",
    "sacd-hindsight-randomized-default",
    "sacd-hindsight-mpc",
    "sacd-hindsight-mpc-kl02",
    "sacd-hindsight-mpc-randomized",
    "sacd-hindsight-mpc-fading",
    "sacd-hindsight-mpc-validated",
    "sacd-hindsight-mpc-replayed",
]


def test_committed_ablation_rows_are_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every training cell of the ablation table's rows and their evaluations on the synthetic
    channels are committed (the traces are not read here), so its command only re-aggregates."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    sweep = load_sweep(
        root / "benchmarks" / "sweeps" / "sacd_hindsight.yaml",
        learners=ABLATION_ROWS,
        seeds=3,
        trace_dir=None,
        report="benchmarks/results/sacd_hindsight/ablation",
    )
    assert sweep.trials() == []
    assert (root / sweep.report_folder / "report.json").is_file()
