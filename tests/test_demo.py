"""The demo pipeline (``splitrl demo``) end to end, with tiny settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from splitrl.cli import main
from splitrl.demo import DemoSettings, run_demo


@pytest.fixture(autouse=True)
def restore_torch_threads() -> Iterator[None]:
    """The demo sets one torch thread; give the next tests back what they had."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_demo_trains_evaluates_and_plots(
    tiny_profile_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = DemoSettings(
        profile=str(tiny_profile_path),
        horizon=20,
        timesteps=200,
        episodes=2,
        hyperparameters={"learning_starts": 50, "batch_size": 16},
        out=tmp_path / "demo",
        progress=False,
    )
    result = run_demo(settings)
    printed = capsys.readouterr().out
    assert [step for step, _ in result.learning_curve] == list(range(20, 201, 20))
    assert (result.run_dir / "best_model.zip").exists()
    names = [row.name for row in result.evaluation.conditions[0].rows]
    assert names[0] == "sacd"
    assert {"random", "channel-blind", "robust-mpc", "clairvoyant-lookahead"} <= set(names)
    sacd = result.evaluation.conditions[0].rows[0]
    assert {result.evaluation.conditions[0].best_causal, "channel-blind"} <= set(sacd.gains)
    assert result.evaluation.seeds[0] >= 1_000_000  # held out from the training seeds
    assert "| sacd |" in printed and "normalized score" in printed and "Non-triviality" in printed
    for path in result.files:
        assert path.stat().st_size > 0
    assert {path.name for path in result.files} >= {"results.md", "timeline_markov.png"}


@pytest.mark.parametrize(
    ("flag", "value", "minimum"), [("--timesteps", 0, 1), ("--episodes", 1, 2)]
)
def test_demo_rejects_a_too_small_budget(
    flag: str, value: int, minimum: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", flag, str(value)]) == 2
    assert f"{flag} must be at least {minimum}" in capsys.readouterr().err
