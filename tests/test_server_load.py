"""Server load: the Markov-modulated utilization and its effect on service time."""

from __future__ import annotations

import numpy as np
import pytest

from splitrl.envs.channels import ChannelError
from splitrl.envs.server_load import ServerLoad


def started(load: ServerLoad, seed: int = 0) -> ServerLoad:
    load.reset(np.random.default_rng(seed))
    return load


def test_load_levels_and_time_fractions_match_the_stationary_distribution() -> None:
    server = started(ServerLoad(), seed=1)
    assert server.mean_load == pytest.approx(0.42)
    sampled = [server.load(t) for t in np.arange(0.0, 40_000.0, 2.0)]
    levels, counts = np.unique(sampled, return_counts=True)
    np.testing.assert_allclose(levels, (0.1, 0.5, 0.9))
    np.testing.assert_allclose(counts / counts.sum(), (0.4, 0.4, 0.2), atol=0.03)


def test_load_is_piecewise_constant_over_slots_and_reproducible() -> None:
    times = np.arange(0.0, 300.0, 0.25)
    server = started(ServerLoad(), seed=4)
    first = [server.load(t) for t in times]
    again = started(ServerLoad(), seed=4)
    assert [again.load(t) for t in times] == first
    assert again.load(10.0) == again.load(10.999)
    other = started(ServerLoad(), seed=5)
    assert [other.load(t) for t in times] != first


@pytest.mark.parametrize(
    ("load", "expected"), [(0.0, 1.0), (0.5, 2.0), (0.8, 5.0), (0.9, 10.0), (0.99, 10.0)]
)
def test_processor_sharing_slowdown_is_capped(load: float, expected: float) -> None:
    assert ServerLoad(max_slowdown=10.0).compute_slowdown(load) == pytest.approx(expected)


def test_processor_sharing_does_not_queue() -> None:
    server = ServerLoad()
    assert server.queueing_delay(0.9, 0.05, 0.0) == 0.0
    assert server.queueing_delay(0.9, 0.05) == 0.0


def test_fcfs_waiting_time_is_the_mm1_wait() -> None:
    server = ServerLoad(discipline="fcfs")
    assert server.compute_slowdown(0.9) == 1.0
    rho, service = 0.5, 0.02
    assert server.queueing_delay(rho, service) == pytest.approx(rho * service / (1 - rho))
    assert server.queueing_delay(rho, service, u=0.7) == 0.0  # no wait with probability 1 - rho
    uniforms = (np.arange(100_000) + 0.5) / 100_000
    waits = np.array([server.queueing_delay(rho, service, u) for u in uniforms])
    assert waits.mean() == pytest.approx(rho * service / (1 - rho), rel=1e-3)
    assert np.mean(waits > 0) == pytest.approx(rho)


def test_both_disciplines_have_the_same_mean_response_time() -> None:
    rho, service = 0.8, 0.01
    uniforms = (np.arange(50_000) + 0.5) / 50_000
    responses = {}
    for discipline in ("processor-sharing", "fcfs"):
        server = ServerLoad(discipline=discipline)
        waits = [server.queueing_delay(rho, service, u) for u in uniforms]
        responses[discipline] = np.mean(waits) + service * server.compute_slowdown(rho)
    assert responses["fcfs"] == pytest.approx(responses["processor-sharing"], rel=1e-3)
    assert responses["fcfs"] == pytest.approx(service / (1 - rho), rel=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"levels": (0.2, 1.0, 0.5)}, r"load levels must lie in \[0, 1\)"),
        ({"discipline": "lifo"}, "unknown discipline 'lifo'"),
        ({"max_slowdown": 1.0}, "max_slowdown must be greater than 1"),
        ({"transition_matrix": [[0.5, 0.5], [0.5, 0.5]]}, "must be 3x3"),
    ],
)
def test_invalid_configuration(kwargs: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ServerLoad(**kwargs)


def test_load_before_reset_is_an_error() -> None:
    with pytest.raises(ChannelError, match=r"ServerLoad: call reset\(rng\)"):
        ServerLoad().load(0.0)


def test_the_load_chain_speaks_of_levels_not_of_bandwidth() -> None:
    server = ServerLoad(levels=(0.2, 0.6), transition_matrix=((0.9, 0.1), (0.3, 0.7)))
    assert server.levels == server.chain.levels == (0.2, 0.6)
    # stationary distribution (0.75, 0.25)
    assert server.mean_load == pytest.approx(0.75 * 0.2 + 0.25 * 0.6)
    with pytest.raises(ValueError, match="at least two levels") as error:
        ServerLoad(levels=(0.5,), transition_matrix=((1.0,),))
    assert "bps" not in str(error.value)
