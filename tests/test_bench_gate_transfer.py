"""The gate-transfer benchmark: its bookkeeping, its gates' fit and its refusals of bad flags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_gate_transfer import FittedGate, Requests, main, score
from tests.conftest import assert_flags_refused


def test_every_link_is_scored_against_its_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No gate beats the best rule of each request, the training set's best rule is the one with
    the highest mean there, and without traces the evaluation stops at the channels, saying so."""
    monkeypatch.chdir(tmp_path)
    flags = ["--train-episodes", "2", "--heldout-episodes", "1", "--episodes", "1"]
    flags += ["--requests", "30", "--steps", "50", "--channels", "fading"]
    assert main([*flags, "--traces", str(tmp_path / "no-traces")]) == 0
    assert "traces skipped: no documented trace" in capsys.readouterr().out
    document = json.loads((tmp_path / "results" / "bench_gate_transfer.json").read_text())
    links = {row["link"]: row for row in document["links"]}
    assert list(links) == ["train", "held-out", "fading"]
    train_means = links["train"]["rules"]
    assert document["best_on_train"] == max(train_means, key=train_means.get)
    for row in links.values():
        assert row["requests"] == 30 * (2 if row["link"] == "train" else 1)
        assert row["best_on_train"] == pytest.approx(row["rules"][document["best_on_train"]])
        for value in [
            *row["rules"].values(),
            *(row[f"gate_{k}"] for k in ("memory", "observation", "both")),
        ]:
            assert value <= row["best_per_request"] + 1e-9


def test_a_gate_learns_which_rule_is_best_where() -> None:
    """Where the first input's sign says which of two rules is worth more, a fitted gate follows
    it on new requests and scores close to the best rule of each request."""
    rng = np.random.default_rng(0)

    def requests(n: int) -> Requests:
        signal = rng.normal(size=(n, 1)).astype(np.float32)
        noise = rng.normal(size=(n, 2)).astype(np.float32)
        payoffs = np.where(signal > 0, [[0.8, 0.5]], [[0.4, 0.7]])
        return Requests(observation=np.hstack([signal, noise]), memory=noise, payoffs=payoffs)

    train, new = requests(2_000), requests(500)
    gate = FittedGate(train.observation, train.payoffs, steps=1_500, seed=0)
    right = (gate.choose(new.observation) == (new.observation[:, 0] <= 0)).mean()
    assert right > 0.95
    assert score(new, gate.choose(new.observation)) > new.payoffs.max(axis=1).mean() - 0.02


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--behavior", "clairvoyant"], "unknown causal rule 'clairvoyant'"),
        (["--rules", "mpc,teleport"], "unknown causal rule 'teleport'"),
        (["--rules", "mpc"], "--rules needs at least two rules"),
        (["--channels", "fading,wormhole"], "unknown channel 'wormhole'"),
        (["--scenario", "moon"], "unknown scenario 'moon'"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--train-episodes", "0"], "--train-episodes must be at least 1"),
    ],
)
def test_bad_flags_are_refused_before_any_work(
    flags: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert_flags_refused(main, flags, message, tmp_path, monkeypatch, capsys)
