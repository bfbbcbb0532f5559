"""What the observation knows and when: replies arrive after their latency, estimates age.

The device measures a transfer's throughput when the transfer ends, but learns a request's latency
and the server's load only when the reply arrives, one latency after the request did. Between
transfers its estimate ages. Checked through ``reset``/``step`` on the hand-built situation
(``tests/handmade.py``), where every time is known by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from splitrl.envs.channels import TraceChannel
from splitrl.envs.observation import scale_throughput
from splitrl.envs.server_load import ServerLoad
from splitrl.envs.traces import Trace
from tests.handmade import FOUR_BITS, LOSSLESS, hand_env

DEADLINE_S = 0.06
LOCAL_EXIT0 = np.array((0, 1, 0))  # 10 ms on the device
INPUT_LOSSLESS = np.array((1, 0, LOSSLESS))  # 100 bytes, reply after 10 ms of RTT
INPUT_4BIT = np.array((1, 0, FOUR_BITS))  # 50 bytes


def feature(env: object, observation: np.ndarray, name: str) -> float:
    return float(observation[env.layout.names.index(name)])  # type: ignore[attr-defined]


def test_a_reply_feeds_the_observation_only_once_it_has_arrived() -> None:
    # frames every 4 ms; an offloaded request's reply comes back about 10.8 ms after it started
    env = hand_env(1e6, frame_interval_s=0.004, deadline_s=DEADLINE_S)
    env.server_load = ServerLoad(levels=(0.3, 0.6), transition_matrix=((0.5, 0.5), (0.5, 0.5)))
    observation, _ = env.reset(seed=0)
    assert feature(env, observation, "last_latency") == 0.0
    assert feature(env, observation, "server_load") == 0.0
    infos, seen_latency, seen_load = [], [], []
    actions = (INPUT_LOSSLESS, INPUT_4BIT, INPUT_4BIT, INPUT_4BIT, LOCAL_EXIT0, INPUT_4BIT)
    for action in actions:
        observation, _, _, _, info = env.step(action)
        infos.append(info)
        seen_latency.append(feature(env, observation, "last_latency") * DEADLINE_S)
        seen_load.append(feature(env, observation, "server_load"))
    # request 0 (t = 0) is answered at 10.80 ms, request 1 (t = 4 ms) at 14.40 ms: the decisions
    # at 4 and 8 ms know neither, the one at 12 ms knows request 0's, the one at 16 ms request 1's
    assert infos[0]["latency_s"] == pytest.approx(0.0108, abs=1e-5)
    assert 0.004 + infos[1]["latency_s"] == pytest.approx(0.0144, abs=1e-5)
    assert seen_latency[:2] == [0.0, 0.0]
    assert seen_load[:2] == [0.0, 0.0]
    for seen, request in ((2, 0), (3, 1)):
        assert seen_latency[seen] == pytest.approx(infos[request]["latency_s"], rel=1e-6)
        assert seen_load[seen] == pytest.approx(infos[request]["server_load"], rel=1e-6)
        assert infos[request]["server_load"] in (0.3, 0.6)
    # request 4 (t = 16 ms) runs locally until 26 ms, so request 5 waits for the device and
    # starts at 26 ms, sending until 26.4 ms; request 6 (t = 24 ms) decides then. It knows the
    # local answer's latency, but the local request reports no server load: the load observed is
    # the one in the last reply (request 3's, back at 22.4 ms)
    local = infos[4]
    assert local["latency_s"] == pytest.approx(0.010) and infos[5]["wait_s"] == pytest.approx(0.006)
    assert seen_latency[5] == pytest.approx(local["latency_s"], rel=1e-6)
    assert seen_load[5] == pytest.approx(infos[3]["server_load"], rel=1e-6)


def test_the_throughput_is_measured_when_the_transfer_ends_and_then_ages() -> None:
    # 2 Mbit/s for the first 10 ms, then 0.5 Mbit/s for 10 ms; the device's prior is 1 Mbit/s
    trace = Trace.from_rates([2e6, 0.5e6], slot_s=0.01)
    channel = TraceChannel(trace, random_start=False)
    env = hand_env(1e6, channel=channel, frame_interval_s=0.015, deadline_s=DEADLINE_S)
    observation, _ = env.reset(seed=0)
    rates = [f"throughput_{k}" for k in range(4)]
    assert [feature(env, observation, name) for name in rates] == [0.0] * 4  # log10(1) / 3
    assert feature(env, observation, "estimate_age") == 1.0  # nothing measured yet

    observation, _, _, _, info = env.step(INPUT_LOSSLESS)  # t = 0: 800 bit at 2 Mbit/s
    transfer_end = info["encode_s"] + info["transfer_s"]
    assert info["transfer_s"] == pytest.approx(0.0004)
    assert feature(env, observation, "throughput_0") == pytest.approx(scale_throughput(2e6))
    age = 0.015 - transfer_end  # the next decision comes at 15 ms
    assert feature(env, observation, "estimate_age") == pytest.approx(age / (age + 1.0), rel=1e-5)

    observation, _, _, _, info = env.step(INPUT_4BIT)  # t = 15 ms: 400 bit at 0.5 Mbit/s
    assert info["transfer_s"] == pytest.approx(0.0008)
    history = [feature(env, observation, name) for name in rates]
    expected = [scale_throughput(0.5e6), scale_throughput(2e6), 0.0, 0.0]  # newest first
    np.testing.assert_allclose(history, expected, rtol=1e-6, atol=1e-7)
    transfer_end = 0.015 + info["encode_s"] + info["transfer_s"]

    # staying local measures nothing: the estimate keeps its value and grows older
    for step in range(2, 6):
        observation, *_ = env.step(LOCAL_EXIT0)
        age = 0.015 * (step + 1) - transfer_end  # decided when request step + 1 arrives
        assert feature(env, observation, "estimate_age") == pytest.approx(
            age / (age + 1.0), rel=1e-5
        )
        assert [feature(env, observation, name) for name in rates] == pytest.approx(history)
