"""The hindsight-alignment benchmark: its bookkeeping and its refusals of bad flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.bench_hindsight_alignment import main


def test_each_policy_earns_the_true_reward_of_the_action_it_took(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the training reward (the profile's accuracy), what a request earns is the true reward
    the hindsight values give the action taken: the two bookkeepings agree request by request."""
    monkeypatch.chdir(tmp_path)
    assert main(["--run", str(tiny_run), "--episodes", "2"]) == 0
    document = json.loads((tmp_path / "results" / "bench_hindsight_alignment.json").read_text())
    learned, rule = document["policies"]
    assert rule["policy"] == "mpc" and document["episodes"] == 2
    for row in (learned, rule):
        assert row["earned"] == pytest.approx(row["reward"], abs=1e-12)
        assert row["hindsight_value"] == pytest.approx(row["reward"] - row["backlog_cost"])
        assert row["backlog_cost"] >= 0.0 and row["wait_ms"] >= 0.0
    assert document["earned_gap"] == pytest.approx(learned["earned"] - rule["earned"])
    assert document["aligned"] == (
        (document["earned_gap"] > 0) == (document["hindsight_value_gap"] > 0)
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--rule", "clairvoyant"], "unknown causal rule 'clairvoyant'"),
        (["--channel", "wormhole"], "unknown channel 'wormhole'"),
        (["--episodes", "0"], "--episodes must be at least 1"),
        (["--run", "nowhere"], "nowhere is not a run directory"),
    ],
)
def test_bad_flags_are_refused_before_any_work(
    flags: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as raised:
        main(flags)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
