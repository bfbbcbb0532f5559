"""The hindsight-alignment benchmark: its bookkeeping and its refusals of bad flags."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from benchmarks.bench_hindsight_alignment import main
from tests.conftest import assert_flags_refused


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
    assert_flags_refused(main, flags, message, tmp_path, monkeypatch, capsys)


def test_a_shadow_that_acts_as_the_policy_changes_nothing(tiny_profile_path: Path) -> None:
    """The replay of a shadow action that is the action taken has nothing to replay: its realized
    continuation is 0 and its realized value equals the action taken's."""
    from benchmarks.bench_hindsight_alignment import play
    from splitrl.agents.baselines import make_baseline
    from splitrl.envs import SplitComputingEnv
    from splitrl.profiles import load_profile
    from splitrl.profiles.presets import get_device_preset

    # a device slow enough that a local final exit (10 ms) outlasts a frame (6 ms): backlogs form
    slow = dataclasses.replace(get_device_preset("stm32h7"), compute_gflops=0.001)
    env = SplitComputingEnv(
        profile=load_profile(tiny_profile_path),
        device=slow,
        horizon=40,
        frame_interval_s=0.006,
        deadline_s=0.02,
    )
    trajectory = play(env, make_baseline("mpc"), [0, 1], shadow=make_baseline("mpc"))
    assert trajectory.shadow_continuation is not None
    assert not trajectory.shadow_continuation.any()
    summary = trajectory.summary()
    assert summary["realized_value_over_shadow"] == 0.0
    assert summary["shadow_reward"] == summary["reward"]
    # a shadow that runs the final exit on the device leaves a backlog: replays run and charge it
    local = play(env, make_baseline("mpc"), [0, 1], shadow=make_baseline("device-only"))
    assert local.shadow_continuation is not None and local.shadow_continuation.any()
