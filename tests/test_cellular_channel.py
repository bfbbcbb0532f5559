"""Tests of the cellular channel: a wandering Poisson packet rate with outages."""

import math

import numpy as np
import pytest

from splitrl.envs.channels import CellularChannel, make_channel
from splitrl.envs.channels.randomized import RandomizedChannel
from splitrl.envs.scenarios import network_channel


def bin_rates(channel: CellularChannel, seconds: float, seed: int = 0) -> np.ndarray:
    channel.reset(np.random.default_rng(seed))
    centres = (np.arange(round(seconds / channel.bin_s)) + 0.5) * channel.bin_s
    return np.array([channel.capacity(t) for t in centres])


def test_mean_rate_without_outages() -> None:
    rates = bin_rates(CellularChannel(mean_rate_bps=4e6, outage_rate_per_s=0.0), 4000.0)
    assert rates.mean() == pytest.approx(4e6, rel=0.05)
    # without outages only a rare dip of the rate leaves a bin empty
    assert np.mean(rates == 0.0) < 0.01


def test_capacity_is_whole_packets_per_bin() -> None:
    channel = CellularChannel(mean_rate_bps=2e6, packet_bytes=1000, bin_s=0.05)
    rates = bin_rates(channel, 100.0)
    packets = rates * channel.bin_s / 8000.0
    np.testing.assert_allclose(packets, np.round(packets), atol=1e-6)
    # constant within a bin
    assert channel.capacity(3.01) == channel.capacity(3.04)


def test_constant_rate_gives_poisson_packet_counts() -> None:
    channel = CellularChannel(mean_rate_bps=1.2e6, log_std=0.0, outage_rate_per_s=0.0)
    packets = bin_rates(channel, 2000.0) * channel.bin_s / 12_000.0
    assert packets.mean() == pytest.approx(10.0, rel=0.03)
    assert packets.var() == pytest.approx(10.0, rel=0.1)


def test_outage_share_follows_rate_and_duration() -> None:
    channel = CellularChannel(
        mean_rate_bps=10e6,
        log_std=0.0,
        outage_rate_per_s=0.2,
        median_outage_s=1.0,
        outage_log_std=0.0,
    )
    silent = bin_rates(channel, 6000.0) == 0.0
    expected = 0.2 * 1.0 / (1.0 + 0.2 * 1.0)
    assert silent.mean() == pytest.approx(expected, abs=0.02)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], silent.astype(int), [0]))))
    lengths = edges[1::2] - edges[::2]
    # every outage lasts its 10 bins; one may follow another at once
    assert np.all(lengths % 10 == 0) and np.mean(lengths == 10) > 0.7


def test_correlation_time_sets_the_memory() -> None:
    def lag_one(correlation_s: float) -> float:
        channel = CellularChannel(
            mean_rate_bps=50e6, correlation_s=correlation_s, outage_rate_per_s=0.0
        )
        logs = np.log(bin_rates(channel, 1000.0))
        return float(np.corrcoef(logs[:-1], logs[1:])[0, 1])

    slow, fast = lag_one(10.0), lag_one(0.2)
    assert slow > 0.95
    assert fast < 0.7
    # the AR(1) persistence exp(-bin / correlation) of the log rate, diluted by packet noise
    assert fast == pytest.approx(math.exp(-0.1 / 0.2), abs=0.1)


def test_same_seed_same_realization_and_transfers_cross_outages() -> None:
    channel = CellularChannel(outage_rate_per_s=0.5)
    first = bin_rates(channel, 60.0, seed=3)
    np.testing.assert_array_equal(bin_rates(channel, 60.0, seed=3), first)
    assert not np.array_equal(bin_rates(channel, 60.0, seed=4), first)
    channel.reset(np.random.default_rng(3))
    silent = np.flatnonzero(first == 0.0)
    t0 = float(silent[0]) * channel.bin_s
    seconds = channel.transfer_time(100_000, t0)
    assert channel.mean_throughput(t0, t0 + seconds) * seconds == pytest.approx(800_000, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"mean_rate_bps": 0.0}, "mean_rate_bps must be positive"),
        ({"mean_rate_bps": math.inf}, "mean_rate_bps must be positive"),
        ({"log_std": -0.1}, "log_std must be finite and non-negative"),
        ({"outage_rate_per_s": math.nan}, "outage_rate_per_s must be finite"),
        ({"outage_log_std": -1.0}, "outage_log_std must be finite"),
        ({"correlation_s": 0.0}, "correlation_s must be positive"),
        ({"median_outage_s": -1.0}, "median_outage_s must be positive"),
        ({"bin_s": 0.0}, "bin_s must be at least"),
        ({"packet_bytes": 0}, "packet_bytes must be a positive integer"),
        ({"packet_bytes": 1.5}, "packet_bytes must be a positive integer"),
    ],
)
def test_bad_parameters_name_the_problem(kwargs: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        CellularChannel(**kwargs)


def test_factory_and_scenario_names() -> None:
    assert type(make_channel("cellular")) is CellularChannel
    built = make_channel({"model": "cellular", "mean_rate_bps": 2e6, "log_std": 0.3})
    assert isinstance(built, CellularChannel) and built.log_std == 0.3
    typical = network_channel("cellular", (0.5, 12.0), 6.0)
    assert isinstance(typical, CellularChannel) and typical.mean_rate_bps == 6e6
    randomized = network_channel("randomized-cellular", (0.5, 12.0), 6.0)
    assert isinstance(randomized, RandomizedChannel) and randomized.models == ("cellular",)
    mixed = network_channel("randomized-all", (0.5, 12.0), 6.0)
    assert isinstance(mixed, RandomizedChannel)
    assert set(mixed.models) == {"markov", "gilbert-elliott", "fading", "cellular"}


def test_randomized_cellular_draws_parameters_in_range() -> None:
    channel = RandomizedChannel((0.5, 12.0), models=("cellular",))
    means, correlations = [], []
    for seed in range(60):
        channel.reset(np.random.default_rng(seed))
        drawn = channel.current
        assert isinstance(drawn, CellularChannel)
        means.append(drawn.mean_rate_bps)
        correlations.append(drawn.correlation_s)
        assert 0.2 <= drawn.log_std <= 1.0
        assert 0.01 <= drawn.outage_rate_per_s <= 0.5
    assert 0.5e6 <= min(means) < 1e6 and 6e6 < max(means) <= 12e6
    assert 0.3 <= min(correlations) < 1.0 and 3.0 < max(correlations) <= 10.0


def test_default_randomization_never_draws_cellular_and_models_are_checked() -> None:
    channel = RandomizedChannel((0.5, 12.0))
    for seed in range(30):
        channel.reset(np.random.default_rng(seed))
        assert not isinstance(channel.current, CellularChannel)
    mixed = RandomizedChannel((0.5, 12.0), models=("markov", "cellular"))
    kinds = set()
    for seed in range(30):
        mixed.reset(np.random.default_rng(seed))
        kinds.add(type(mixed.current).__name__)
    assert kinds == {"MarkovChannel", "CellularChannel"}
    with pytest.raises(ValueError, match="models must be a non-empty selection"):
        RandomizedChannel((0.5, 12.0), models=("wifi",))
    with pytest.raises(ValueError, match="models must be a non-empty selection"):
        RandomizedChannel((0.5, 12.0), models=())
