"""The channel-texture benchmark on hand-made rates, a generated trace and the synthetic channels."""

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_channel_texture import BIN_S, main, texture


def test_texture_of_hand_made_rates() -> None:
    # 30 s of bins: 1 Mbit/s and 4 Mbit/s alternating every 10 bins, with one 1.5 s silence
    rates = np.tile(np.repeat([1.0, 4.0], 10), 15)
    rates[100:115] = 0.0
    row = texture([rates])
    assert row["mean_mbps"] == pytest.approx(rates.mean())
    assert row["silent_share"] == pytest.approx(15 / 300)
    assert row["longest_silence_s"] == pytest.approx(1.5)
    assert row["outages_per_min"] == pytest.approx(1 / 0.5)
    # steps between carrying bins are 0 or log 4; the ones into and out of the silence are left out
    both = (rates[:-1] > 0) & (rates[1:] > 0)
    expected = np.log(rates[1:][both]) - np.log(rates[:-1][both])
    assert row["log_step_std"] == pytest.approx(expected.std())
    assert 0.0 < row["log_step_std"] < np.log(4.0)
    assert row["lag1_log"] > row["lag10_log"]


def test_short_silences_are_not_outages() -> None:
    rates = np.ones(600)
    rates[::50] = 0.0
    row = texture([rates])
    assert row["outages_per_min"] == 0.0
    assert row["longest_silence_s"] == pytest.approx(BIN_S)


def test_main_describes_channels_and_a_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    traces = tmp_path / "traces"
    traces.mkdir()
    # a 20 s Mahimahi trace at 12 Mbit/s with a 2 s gap, under a documented name
    stamps = [ms for ms in range(1, 20_001) if not 5_000 <= ms < 7_000]
    (traces / "Verizon-LTE-short.up").write_text("".join(f"{ms}\n" for ms in stamps))
    monkeypatch.chdir(tmp_path)
    argv = ["--channels", "markov", "randomized-cellular", "--episodes", "3", "--seconds", "20"]
    assert main([*argv, "--traces", str(traces)]) == 0
    rows = json.loads((tmp_path / "results" / "bench_channel_texture.json").read_text())["channels"]
    assert [row["channel"] for row in rows] == [
        "markov",
        "randomized-cellular",
        "Verizon-LTE-short.up",
    ]
    trace_row = rows[2]
    assert trace_row["mean_mbps"] == pytest.approx(12.0 * 18 / 20, rel=0.02)
    assert trace_row["longest_silence_s"] == pytest.approx(2.0)
    assert rows[0]["silent_share"] == 0.0


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--channels", "wifi"], "unknown channels"),
        (["--episodes", "0"], "--episodes must be at least 1"),
        (["--seconds", "1"], "--seconds must be at least"),
    ],
)
def test_bad_flags_are_refused_before_any_work(
    argv: list[str],
    problem: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(argv)
    assert problem in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
