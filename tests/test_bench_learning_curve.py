"""The plateau rules of the learning-curve benchmark on hand-made curves."""

from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_learning_curve import last_share_rise, plateau_index


def test_plateau_is_the_first_point_no_later_one_beats_by_more_than_the_margin() -> None:
    rewards = np.array([0.70, 0.74, 0.760, 0.7615, 0.759, 0.7619])
    assert plateau_index(rewards) == 2  # 0.7619 is within 0.002 of 0.760
    assert plateau_index(rewards, rise=0.001) == 3
    assert plateau_index(np.array([0.70, 0.71, 0.72])) == 2  # still rising: the last point


def test_rise_over_the_last_fifth_of_training() -> None:
    steps = np.arange(1, 11) * 1000
    rising = np.linspace(0.70, 0.79, 10)
    # evaluations after 8000 steps (9000, 10000) against the one at 8000
    assert last_share_rise(steps, rising) == pytest.approx((0.78 + 0.79) / 2 - 0.77)
    flat = np.full(10, 0.75)
    assert last_share_rise(steps, flat) == pytest.approx(0.0)


def test_an_unknown_reference_rule_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.bench_learning_curve import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--baseline", "bola", "--train", "--runs-dir", str(tmp_path / "runs")])
    assert exit_info.value.code == 2
    assert "unknown baseline 'bola'; known:" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
