"""The demo pipeline (``splitrl demo``) end to end, with tiny settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from splitrl.cli import main
from splitrl.demo import (
    DEMO_ALGO,
    DEMO_EVAL_POINTS,
    DEMO_HYPERPARAMETERS,
    DEMO_SCENARIO,
    SHIPPED_POLICY,
    DemoSettings,
    run_demo,
    verdict_lines,
)


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
        hyperparameters={**DEMO_HYPERPARAMETERS, "learning_starts": 50, "batch_size": 16},
        shipped=None,
        out=tmp_path / "demo",
        progress=False,
    )
    result = run_demo(settings)
    printed = capsys.readouterr().out
    assert f"in scenario '{DEMO_SCENARIO}'" in printed and "(behavior=greedy, " in printed
    interval = 200 // DEMO_EVAL_POINTS  # validations before the first step and every interval
    assert [step for step, _ in result.learning_curve] == list(range(0, 201, interval))
    assert (result.run_dir / "best_model.zip").exists()
    assert [condition.condition.name for condition in result.evaluation.conditions] == [
        "markov",
        "gilbert-elliott",
    ]
    fresh = f"{DEMO_ALGO} (fresh, 200 steps)"
    for condition in result.evaluation.conditions:
        names = [row.name for row in condition.rows]
        assert names[0] == fresh
        assert {"random", "channel-blind", "robust-mpc", "mpc", "clairvoyant-lookahead"} <= set(
            names
        )
        assert {condition.best_causal, "channel-blind"} <= set(condition.rows[0].gains)
    assert result.evaluation.seeds[0] >= 1_000_000  # held out from the training seeds
    assert f"| {fresh} |" in printed and "Non-triviality" in printed
    verdicts = verdict_lines(result.evaluation)
    assert len(verdicts) == 2 and all(line in printed for line in verdicts)
    assert verdicts[1].startswith(f"gilbert-elliott: {fresh}: ")
    for path in result.files:
        assert path.stat().st_size > 0
    assert {path.name for path in result.files} >= {
        "results.md",
        "timeline_markov.png",
        "timeline_gilbert-elliott.png",
    }


def test_verdict_says_whether_the_interval_clears_zero() -> None:
    from types import SimpleNamespace

    from splitrl.statistics import PairedDifference

    def result(mean: float) -> SimpleNamespace:
        row = SimpleNamespace(
            kind="learned",
            name="sacd-hindsight",
            gains={"robust-mpc": PairedDifference("robust-mpc", mean, 0.01)},
            normalized_score=float("nan"),
        )
        baseline = SimpleNamespace(kind="baseline", name="robust-mpc", gains={})
        condition = SimpleNamespace(
            condition=SimpleNamespace(name="markov"), rows=[row, baseline], best_causal="robust-mpc"
        )
        return SimpleNamespace(conditions=[condition])

    assert "beats every causal baseline" in verdict_lines(result(0.011))[0]
    assert "tied" in verdict_lines(result(0.009))[0]
    assert "below the best causal baseline" in verdict_lines(result(-0.011))[0]
    assert "normalized score n/a" in verdict_lines(result(0.011))[0]


def test_the_shipped_policy_is_refused_in_another_scenario(
    tiny_profile_path: Path, tmp_path: Path
) -> None:
    settings = DemoSettings(
        profile=str(tiny_profile_path), horizon=20, timesteps=200, out=tmp_path / "demo"
    )
    with pytest.raises(ValueError, match=f"shipped policy '{SHIPPED_POLICY}' was trained"):
        run_demo(settings)
    assert not (tmp_path / "demo").exists()  # refused before anything is written


def test_the_shipped_policy_loads_and_acts() -> None:
    from splitrl.agents.rollout import run_episodes
    from splitrl.envs import SplitComputingEnv
    from splitrl.evaluation.suite import load_runs
    from splitrl.pretrained import PRETRAINED, pretrained_run

    with pytest.raises(ValueError, match="no shipped policy 'nope'"):
        pretrained_run("nope")
    assert SHIPPED_POLICY in PRETRAINED
    (shipped,) = load_runs([pretrained_run(SHIPPED_POLICY)])
    assert shipped.config["scenario"] == DEMO_SCENARIO and shipped.algo == DEMO_ALGO
    assert shipped.config["hyperparameter_overrides"] == dict(DEMO_HYPERPARAMETERS)
    for name in PRETRAINED:
        (run,) = load_runs([pretrained_run(name)])
        assert run.config["status"] == "finished"
        env = SplitComputingEnv(run.config["scenario"], horizon=50)
        rollout = run_episodes(run.policy, env, [3])
        assert rollout.reward.shape == (1, 50) and np.isfinite(rollout.reward).all()


@pytest.mark.parametrize(
    ("flag", "value", "minimum"), [("--timesteps", 0, 1), ("--episodes", 1, 2)]
)
def test_demo_rejects_a_too_small_budget(
    flag: str, value: int, minimum: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", flag, str(value)]) == 2
    assert f"{flag} must be at least {minimum}" in capsys.readouterr().err
