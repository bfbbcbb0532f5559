"""Channels: hand-computed transfer times, statistics of the stochastic models, the factory and
the RTT model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitrl.envs.channels import (
    BlockFadingChannel,
    CellularChannel,
    Channel,
    ChannelError,
    ConstantChannel,
    GilbertElliottChannel,
    MarkovChannel,
    PiecewiseConstantChannel,
    TraceChannel,
    make_channel,
)
from splitrl.envs.rtt import RTTModel
from splitrl.envs.traces import Trace


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def replay(boundaries: tuple[float, ...], rates: tuple[float, ...]) -> TraceChannel:
    channel = TraceChannel(Trace(boundaries, rates), random_start=False)
    channel.reset(rng())
    return channel


# 8 Mbit/s for 1 s, outage for 1 s, 16 Mbit/s for 1 s, then the pattern repeats.
STEPS = ((0.0, 1.0, 2.0, 3.0), (8e6, 0.0, 16e6))


def test_constant_channel_hand_check() -> None:
    channel = ConstantChannel(10e6)
    channel.reset(rng())
    assert channel.capacity(123.4) == 10e6
    assert channel.transfer_time(10_000, 5.0) == pytest.approx(0.008)
    assert channel.transfer_time(0, 5.0) == 0.0
    assert channel.mean_throughput(1.0, 9000.0) == pytest.approx(10e6)


@pytest.mark.parametrize(
    ("t", "expected"),
    [(0.0, 8e6), (0.999, 8e6), (1.0, 0.0), (1.5, 0.0), (2.0, 16e6), (3.2, 8e6), (4.5, 0.0)],
)
def test_piecewise_capacity_loops(t: float, expected: float) -> None:
    assert replay(*STEPS).capacity(t) == expected


@pytest.mark.parametrize(
    ("n_bytes", "t0", "expected_s"),
    [
        (0, 0.3, 0.0),
        (500_000, 0.0, 0.5),  # inside one segment
        (750_000, 0.5, 1.625),  # 4 Mbit before the outage, 2 Mbit at 16 Mbit/s after it
        (125_000, 1.5, 0.5625),  # starts in the outage: waits 0.5 s, then 1 Mbit at 16 Mbit/s
        (1_000_000, 2.0, 0.5),  # starts exactly at a segment boundary
        (7_500_000, 0.0, 8.25),  # 60 Mbit: two full loops (48 Mbit), then 8 + outage + 4 Mbit
    ],
)
def test_transfer_time_hand_computed(n_bytes: int, t0: float, expected_s: float) -> None:
    assert replay(*STEPS).transfer_time(n_bytes, t0) == pytest.approx(expected_s)


def test_transfer_spanning_many_segments() -> None:
    # 100 segments of 0.1 s alternating 1 Mbit/s and outage; 455 kbit need four full on-segments
    # (ending at 0.7 s), the outage [0.7, 0.8) and 55 kbit more at 1 Mbit/s.
    boundaries = tuple(0.1 * k for k in range(101))
    rates = tuple(1e6 if k % 2 == 0 else 0.0 for k in range(100))
    assert replay(boundaries, rates).transfer_time(56_875, 0.0) == pytest.approx(0.855)


@pytest.mark.parametrize(
    ("t0", "t1", "expected"), [(0.0, 3.0, 8e6), (0.5, 1.5, 4e6), (1.2, 1.2, 0.0), (2.5, 3.5, 12e6)]
)
def test_mean_throughput_hand_computed(t0: float, t1: float, expected: float) -> None:
    assert replay(*STEPS).mean_throughput(t0, t1) == pytest.approx(expected)


def test_bad_queries_are_value_errors() -> None:
    channel = replay(*STEPS)
    with pytest.raises(ValueError, match="n_bytes must be non-negative"):
        channel.transfer_time(-1, 0.0)
    for bad_time in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="time must be a finite, non-negative"):
            channel.capacity(bad_time)
        with pytest.raises(ValueError, match="time must be a finite, non-negative"):
            channel.transfer_time(100, bad_time)
    with pytest.raises(ValueError, match="t0 <= t1"):
        channel.mean_throughput(2.0, 1.0)


def test_query_before_reset_is_a_channel_error() -> None:
    with pytest.raises(ChannelError, match=r"call reset\(rng\)"):
        GilbertElliottChannel().capacity(0.0)


class _SilentChannel(PiecewiseConstantChannel):
    """No capacity until ``wake_s``, then 1 Mbit/s."""

    def __init__(self, wake_s: float, **kwargs: float) -> None:
        super().__init__(**kwargs)
        self.wake_s = wake_s

    def _generate_segments(self, rng: np.random.Generator) -> tuple[list[float], list[float]]:
        return [1.0], [1e6 if self._end >= self.wake_s else 0.0]


def test_outage_bound_stops_an_endless_transfer() -> None:
    channel = _SilentChannel(wake_s=np.inf, max_outage_s=50.0)
    channel.reset(rng())
    assert channel.capacity(10.0) == 0.0
    with pytest.raises(ChannelError, match="no capacity for more than 50 s"):
        channel.transfer_time(1, 0.0)


def test_outage_shorter_than_the_bound_is_waited_out() -> None:
    channel = _SilentChannel(wake_s=30.0, max_outage_s=50.0)
    channel.reset(rng())
    assert channel.transfer_time(125_000, 0.5) == pytest.approx(29.5 + 1.0)


def test_history_is_bounded_on_long_episodes() -> None:
    channel = GilbertElliottChannel(mean_good_s=0.05, mean_bad_s=0.05, history_s=5.0)
    channel.reset(rng())
    t = 0.0
    for _ in range(40_000):
        t += 0.033
        channel.transfer_time(10_000, t)
    assert channel.capacity(t - 4.0) >= 0.0
    with pytest.raises(ChannelError, match="precedes the retained history"):
        channel.capacity(1.0)


MODELS = [
    pytest.param(lambda: GilbertElliottChannel(), id="gilbert-elliott"),
    pytest.param(lambda: MarkovChannel(), id="markov"),
    pytest.param(lambda: BlockFadingChannel(), id="fading"),
    pytest.param(lambda: CellularChannel(outage_rate_per_s=0.5), id="cellular"),
    pytest.param(lambda: TraceChannel(Trace.from_rates([1e6, 5e6, 2e6], 0.7)), id="trace"),
]


def realization(channel: PiecewiseConstantChannel, seed: int, draw_between: bool = False) -> list:
    generator = rng(seed)
    channel.reset(generator)
    if draw_between:
        generator.random(1000)
    times = np.arange(0.0, 30.0, 0.033).tolist()
    return [(channel.capacity(t), channel.transfer_time(10_000, t)) for t in times]


@pytest.mark.parametrize("factory", MODELS)
def test_same_seed_same_realization(factory) -> None:
    channel = factory()
    first = realization(channel, seed=7)
    assert realization(channel, seed=7) == first
    assert realization(factory(), seed=7) == first
    # The channel keeps its own stream: other consumers of rng do not change it.
    assert realization(channel, seed=7, draw_between=True) == first
    assert realization(channel, seed=8) != first


@settings(max_examples=100, deadline=None)
@given(
    t0=st.floats(min_value=0.0, max_value=500.0),
    n_bytes=st.integers(min_value=1, max_value=20_000_000),
)
def test_transfer_delivers_exactly_the_payload(t0: float, n_bytes: int) -> None:
    channel = GilbertElliottChannel(bad_rate_bps=0.0, mean_good_s=0.2, mean_bad_s=0.3)
    channel.reset(rng(3))
    duration = channel.transfer_time(n_bytes, t0)
    assert duration > 0.0
    delivered = channel.mean_throughput(t0, t0 + duration) * duration
    # Cumulative bit counts near 1e9 leave rounding errors of about 1e-7 bit.
    assert delivered == pytest.approx(8.0 * n_bytes, rel=1e-9, abs=1e-4)


def test_gilbert_elliott_time_fractions_match_stationary_distribution() -> None:
    horizon = 40_000.0
    channel = GilbertElliottChannel(
        8e6, 1e6, mean_good_s=3.0, mean_bad_s=1.0, slot_s=0.01, history_s=horizon
    )
    channel.reset(rng(11))
    good_fraction = (channel.mean_throughput(0.0, horizon) - 1e6) / 7e6
    assert channel.good_fraction == pytest.approx(0.75)
    assert good_fraction == pytest.approx(0.75, abs=0.015)
    sampled = np.array([channel.capacity(t) for t in np.arange(0.0, horizon, 0.5)])
    assert np.mean(sampled == 8e6) == pytest.approx(0.75, abs=0.015)


def test_gilbert_elliott_from_transition_probabilities() -> None:
    channel = GilbertElliottChannel.from_transition_probabilities(10e6, 0.0, 0.01, 0.04, 0.1)
    assert (channel.mean_good_s, channel.mean_bad_s) == pytest.approx((10.0, 2.5))
    np.testing.assert_allclose(channel.transition_matrix, [[0.99, 0.01], [0.04, 0.96]])


def test_markov_time_fractions_match_stationary_distribution() -> None:
    channel = MarkovChannel()
    np.testing.assert_allclose(channel.stationary_distribution, 0.2, atol=1e-12)
    channel.reset(rng(5))
    sampled = [channel.capacity(t) for t in np.arange(0.0, 50_000.0, 1.0)]
    levels, counts = np.unique(sampled, return_counts=True)
    np.testing.assert_allclose(levels, channel.levels_bps)
    np.testing.assert_allclose(counts / counts.sum(), 0.2, atol=0.02)


def simulate_chain(matrix: np.ndarray, n: int, seed: int) -> np.ndarray:
    generator = rng(seed)
    states = np.empty(n, dtype=np.int64)
    states[0] = 0
    cumulative = np.cumsum(matrix, axis=1)
    for k, u in enumerate(generator.random(n - 1), start=1):
        states[k] = np.searchsorted(cumulative[states[k - 1]], u, side="right")
    return states


def test_markov_fit_recovers_a_known_chain() -> None:
    matrix = np.array([[0.8, 0.15, 0.05], [0.1, 0.8, 0.1], [0.05, 0.15, 0.8]])
    levels = np.array([1e6, 4e6, 12e6])
    states = simulate_chain(matrix, 30_000, seed=2)
    trace = Trace.from_rates(levels[states].tolist(), slot_s=0.5)
    fitted = MarkovChannel.fit(trace, n_levels=3, slot_s=0.5)
    np.testing.assert_allclose(fitted.levels_bps, levels)
    np.testing.assert_allclose(fitted.transition_matrix, matrix, atol=0.02)
    assert fitted.slot_s == 0.5


def test_markov_fit_keeps_the_trace_mean() -> None:
    generator = rng(4)
    trace = Trace.from_rates(generator.lognormal(15.0, 0.8, 2000).tolist(), slot_s=0.1)
    fitted = MarkovChannel.fit(trace, n_levels=6, slot_s=0.5, smoothing=0.0)
    assert len(fitted.levels_bps) == 6
    assert fitted.mean_rate_bps == pytest.approx(trace.mean_rate_bps, rel=0.02)


@pytest.mark.parametrize(
    ("trace", "kwargs", "problem"),
    [
        (Trace.from_rates([2e6] * 10, 1.0), {}, "single rate level"),
        (Trace.from_rates([1e6, 2e6], 0.4), {"slot_s": 0.5}, "too short"),
        (Trace.from_rates([1e6, 2e6] * 5, 1.0), {"n_levels": 1}, "n_levels"),
        (Trace.from_rates([1e6, 2e6] * 5, 1.0), {"smoothing": -1.0}, "smoothing"),
    ],
)
def test_markov_fit_rejects_bad_input(trace: Trace, kwargs: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        MarkovChannel.fit(trace, **kwargs)


@pytest.mark.parametrize(
    ("levels", "matrix", "problem"),
    [
        ([1e6], [[1.0]], "at least two levels"),
        ([1e6, 2e6], [[0.5, 0.5]], "must be 2x2"),
        ([1e6, 2e6], [[0.5, 0.6], [0.5, 0.5]], "sum to 1"),
        ([1e6, -2e6], [[0.5, 0.5], [0.5, 0.5]], "non-negative"),
        ([0.0, 0.0], [[0.5, 0.5], [0.5, 0.5]], "not all zero"),
        ([1e6, 2e6], [[1.0, 0.0], [0.5, 0.5]], "never left"),
        (
            [1, 2, 3, 4],
            [[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]],
            "reducible",
        ),
    ],
)
def test_markov_rejects_invalid_chains(levels: list, matrix: list, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        MarkovChannel(levels, matrix, slot_s=1.0)


def test_fading_defaults_span_a_realistic_range() -> None:
    channel = BlockFadingChannel()
    generator = rng(2024)
    means = []
    for _ in range(150):
        channel.reset(generator)
        means.append(channel.mean_throughput(0.0, 5.0))
    p5, p50, p95 = np.percentile(means, [5, 50, 95])
    assert p5 < 5e6
    assert p95 > 20e6
    assert 5e6 < p50 < 40e6
    peak = channel.bandwidth_efficiency * channel.bandwidth_mhz * 1e6 * 5.5547
    assert np.mean(np.array(means) > 0.95 * peak) < 0.2


def test_fading_mean_snr_follows_the_link_budget() -> None:
    channel = BlockFadingChannel(carrier_ghz=3.5, bandwidth_mhz=20.0, tx_power_dbm=23.0)
    noise_dbm = -174.0 + 10 * np.log10(20e6) + 5.0
    path_loss_db = 22.4 + 35.3 * 2.0 + 21.3 * np.log10(3.5)
    assert channel.mean_snr_db(100.0) == pytest.approx(23.0 - path_loss_db - noise_dbm)


def test_rician_line_of_sight_reduces_fading_spread() -> None:
    def spread(rician_k: float) -> float:
        channel = BlockFadingChannel(
            distance_range_m=(80.0, 80.0),
            speed_range_mps=(0.0, 0.0),
            coherence_time_s=0.01,
            shadowing_std_db=0.0,
            rician_k=rician_k,
        )
        channel.reset(rng(9))
        rates = np.array([channel.capacity(t) for t in np.arange(0.0, 50.0, 0.01)])
        return float(rates.std() / rates.mean())

    assert spread(10.0) < 0.5 * spread(0.0)


def test_fading_coherence_time_follows_doppler() -> None:
    # Mid-range SNR with no shadowing: no block is in outage or at the rate cap, so every new
    # block changes the capacity.
    channel = BlockFadingChannel(
        speed_range_mps=(1.0, 1.0),
        carrier_ghz=3.0,
        distance_range_m=(150.0, 150.0),
        shadowing_std_db=0.0,
    )
    channel.reset(rng())
    # T_c = 0.423 c / (v f_c) = 42.3 ms at 1 m/s and 3 GHz: ~236 blocks in 10 s.
    sampled = np.array([channel.capacity(t) for t in np.arange(0.0, 10.0, 1e-3)])
    changes = np.count_nonzero(np.diff(sampled))
    assert changes == pytest.approx(10.0 / (0.423 * 299_792_458.0 / 3e9), rel=0.05)


def test_fading_static_device_needs_a_coherence_time() -> None:
    with pytest.raises(ValueError, match="give coherence_time_s"):
        BlockFadingChannel(speed_range_mps=(0.0, 1.0))


def test_trace_channel_starts_at_a_random_offset_and_loops() -> None:
    trace = Trace.from_rates([float(k + 1) * 1e6 for k in range(100)], slot_s=1.0)
    channel = TraceChannel(trace)
    offsets = set()
    for seed in range(5):
        channel.reset(rng(seed))
        offsets.add(channel.offset_s)
        expected = trace.rates_bps[int(channel.offset_s)]
        assert channel.capacity(0.0) == expected
        assert channel.capacity(100.0) == expected  # one full loop later
    assert len(offsets) == 5


def test_trace_channel_scale() -> None:
    channel = TraceChannel(Trace.from_rates([4e6, 8e6], 1.0), scale=0.5, random_start=False)
    channel.reset(rng())
    assert [channel.capacity(t) for t in (0.5, 1.5, 2.5)] == [2e6, 4e6, 2e6]


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("constant:10e6", ConstantChannel),
        ("gilbert-elliott", GilbertElliottChannel),
        ("GE", GilbertElliottChannel),
        ("markov", MarkovChannel),
        ("fading", BlockFadingChannel),
        ("block-fading", BlockFadingChannel),
        ("cellular", CellularChannel),
        ({"model": "cellular", "correlation_s": 0.5}, CellularChannel),
        ({"model": "fading", "bandwidth_mhz": 10.0}, BlockFadingChannel),
        ({"model": "constant", "rate_bps": 2e6}, ConstantChannel),
        (
            {"model": "markov", "levels_bps": [1e6, 2e6], "transition_matrix": [[0.5] * 2] * 2},
            MarkovChannel,
        ),
    ],
)
def test_make_channel_models(spec: str | dict, kind: type) -> None:
    channel = make_channel(spec)
    assert type(channel) is kind
    assert isinstance(channel, Channel)
    channel.reset(rng())
    assert channel.transfer_time(10_000, 1.0) > 0.0


def test_make_channel_from_trace_files(tmp_path: Path) -> None:
    mahimahi = tmp_path / "link"
    mahimahi.write_text("".join(f"{ms}\n" for ms in range(1, 2001)))
    pensieve = tmp_path / "walk.log"
    pensieve.write_text("".join(f"{k} {1 + k % 3}\n" for k in range(40)))
    for spec in (f"trace:{mahimahi}", f"trace:mahimahi:{mahimahi}", f"trace:pensieve:{pensieve}"):
        channel = make_channel(spec)
        assert isinstance(channel, TraceChannel)
    replayed = make_channel(f"trace:{mahimahi}")
    assert isinstance(replayed, TraceChannel)
    assert replayed.trace.mean_rate_bps == pytest.approx(12e6)
    fitted = make_channel(f"markov:{pensieve}")
    assert isinstance(fitted, MarkovChannel)
    assert fitted.levels_bps == pytest.approx((1e6, 2e6, 3e6))
    scaled = make_channel({"model": "trace", "path": str(pensieve), "scale": 2.0})
    assert isinstance(scaled, TraceChannel) and scaled.trace.source_format == "pensieve"
    assert scaled.scale == 2.0
    fit = make_channel({"model": "markov", "trace": str(pensieve), "n_levels": 2, "slot_s": 1.0})
    assert isinstance(fit, MarkovChannel) and len(fit.levels_bps) == 2


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("wifi", "unknown channel model 'wifi'"),
        ("constant", "expected 'constant:RATE'"),
        ("constant:fast", "expected 'constant:RATE'"),
        ("constant:0", "rate_bps must be positive"),
        ("trace", "expected 'trace:PATH'"),
        ("fading:5", "takes no ':' argument"),
        ({"bandwidth_mhz": 5}, "no 'model' key"),
        ({"model": "fading", "bandwith_mhz": 5}, "invalid parameters for channel model 'fading'"),
        ({"model": "trace"}, "needs a 'path'"),
        (42, "must be a string or a dict"),
    ],
)
def test_make_channel_errors(spec: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        make_channel(spec)  # type: ignore[arg-type]


def test_make_channel_missing_trace_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        make_channel(f"trace:{tmp_path / 'missing.up'}")


@pytest.mark.parametrize("jitter", ["exponential", "lognormal"])
def test_rtt_mean_and_support(jitter: str) -> None:
    model = RTTModel(base_s=0.02, jitter_mean_s=0.01, jitter=jitter)
    model.reset(rng(1))
    samples = np.array([model.sample() for _ in range(20_000)])
    assert samples.min() >= 0.02
    assert samples.mean() == pytest.approx(model.mean_s, rel=0.03)
    assert model.mean_s == pytest.approx(0.03)


def test_rtt_is_reproducible_and_can_use_a_given_generator() -> None:
    model = RTTModel()
    model.reset(rng(3))
    first = [model.sample() for _ in range(2000)]
    model.reset(rng(3))
    assert [model.sample() for _ in range(2000)] == first
    assert model.sample(rng(5)) == model.sample(rng(5))
    assert RTTModel(0.04, jitter="none").sample(rng()) == 0.04


def test_rtt_errors() -> None:
    with pytest.raises(RuntimeError, match=r"call reset\(rng\)"):
        RTTModel().sample()
    with pytest.raises(ValueError, match="unknown jitter 'gauss'"):
        RTTModel(jitter="gauss")
    with pytest.raises(ValueError, match="base_s"):
        RTTModel(base_s=-1.0)
