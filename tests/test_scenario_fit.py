"""``splitrl scenario fit``: a frame rate and a deadline that fit a profile on a device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from splitrl.envs.mean_times import action_times, keep_up_warning
from splitrl.envs.scenarios import resolve_scenario
from splitrl.evaluation.scenario_fit import fit_scenario
from splitrl.profiles.schema import Profile


@pytest.mark.parametrize("device", ["stm32h7", "pi_zero_2w"])
def test_fit_keeps_up_and_puts_the_deadline_between_offloading_and_the_device(
    tiny_profile: Profile, device: str
) -> None:
    parts = resolve_scenario("default", profile=tiny_profile, device=device)
    fit = fit_scenario(parts)
    busy, latency = action_times(parts, parts.uplink_mbps[1] * 1e6)
    assert fit.cheapest_busy_s == pytest.approx(float(busy.min()))
    assert fit.cheapest_busy_s * 1.2 <= fit.frame_interval_s
    assert 1 / fit.frame_interval_s == pytest.approx(round(1 / fit.frame_interval_s))
    assert fit.offload_final_fast_s <= fit.offload_final_slow_s
    assert fit.offload_final_fast_s >= float(latency.min())
    if fit.trivial_reason is None:
        assert fit.offload_final_fast_s < fit.deadline_s < fit.local_final_s
    else:
        assert fit.offload_final_fast_s >= fit.local_final_s
    fitted = resolve_scenario(
        "default", profile=tiny_profile, device=device, frame_interval_s=fit.frame_interval_s
    )
    assert keep_up_warning(fitted) is None


def test_a_device_slower_than_the_frame_rate_is_warned_about(tiny_profile: Profile) -> None:
    parts = resolve_scenario("default", profile=tiny_profile, device="stm32h7")
    too_fast = fit_scenario(parts).cheapest_busy_s / 2
    with pytest.warns(UserWarning, match="even at its cheapest action"):
        resolve_scenario(
            "default", profile=tiny_profile, device="stm32h7", frame_interval_s=too_fast
        )


def test_slower_links_never_make_an_action_faster(tiny_profile: Profile) -> None:
    parts = resolve_scenario("default", profile=tiny_profile, device="stm32h7")
    busy_fast, latency_fast = action_times(parts, 10e6)
    busy_slow, latency_slow = action_times(parts, 1e6)
    assert np.all(busy_slow >= busy_fast) and np.all(latency_slow >= latency_fast)
    assert np.any(latency_slow > latency_fast)


def test_scenario_fit_command(tiny_profile_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from splitrl.cli import main

    assert (
        main(["scenario", "fit", "--profile", str(tiny_profile_path), "--device", "stm32h7"]) == 0
    )
    printed = capsys.readouterr().out
    assert "frame interval" in printed and "deadline_s=" in printed
    assert main(["scenario", "fit", "--profile", "nowhere.json", "--device", "stm32h7"]) == 2


def test_fitted_scenario_file_drives_training_and_the_env(
    tiny_profile_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--out`` writes the proposal as a scenario file that ``--scenario`` accepts everywhere."""
    from splitrl.cli import main
    from splitrl.envs import SplitComputingEnv, get_scenario
    from splitrl.training.config import TrainConfig

    out = tmp_path / "fitted.yaml"
    arguments = ["scenario", "fit", "--profile", str(tiny_profile_path), "--device", "pi_zero_2w"]
    assert main([*arguments, "--out", str(out)]) == 0
    capsys.readouterr()
    scenario = get_scenario(str(out))
    fit = fit_scenario(resolve_scenario("default", profile=tiny_profile_path, device="pi_zero_2w"))
    assert scenario.name == "fitted" and scenario.device == "pi_zero_2w"
    assert scenario.frame_interval_s == pytest.approx(fit.frame_interval_s)
    assert scenario.deadline_s == pytest.approx(fit.deadline_s)
    env = SplitComputingEnv(str(out))
    assert env.reward_spec.deadline_s == pytest.approx(fit.deadline_s)
    assert env.frame_interval_s == pytest.approx(fit.frame_interval_s)
    assert TrainConfig(scenario=str(out)).effective_scenario() == scenario
    assert main([*arguments, "--out", str(tmp_path / "fitted.txt")]) == 2
    assert "must name a .yaml or .yml file" in capsys.readouterr().err


def test_malformed_scenario_files_get_one_line_errors(tmp_path: Path) -> None:
    from splitrl.envs import get_scenario

    with pytest.raises(FileNotFoundError, match="scenario file"):
        get_scenario(str(tmp_path / "missing.yaml"))
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="a mapping of scenario fields"):
        get_scenario(str(listed))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("name: x\nframes: 3\n")
    with pytest.raises(ValueError, match=r"unknown scenario fields \['frames'\]"):
        get_scenario(str(unknown))
    partial = tmp_path / "partial.yaml"
    partial.write_text("name: x\n")
    with pytest.raises(ValueError, match="malformed scenario"):
        get_scenario(str(partial))
