"""The link's measured terms in the environment: headers, the shaper's bucket, the reply's ACK and
the software stack's time, worked out by hand on the hand-built env (``tests/handmade.py``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from splitrl.envs import SplitComputingEnv
from splitrl.envs.channels import ConstantChannel
from splitrl.envs.scenarios import get_scenario, resolve_scenario, scenario_from_dict
from splitrl.envs.time_model import LinkOverheads
from tests.handmade import LOSSLESS, RTT_S, hand_env

CAPACITY_BPS = 1e5
#: some tests run a backlog on purpose
pytestmark = pytest.mark.filterwarnings("ignore:scenario default. device hand-device is busy")
#: exit 1 at split 0, lossless: the 100-byte input crosses the link
SEND_INPUT = np.array([1, 0, LOSSLESS])


def _step_transfers(env: SplitComputingEnv, n: int) -> list[dict[str, float]]:
    env.reset(seed=0)
    return [env.step(SEND_INPUT)[4] for _ in range(n)]


def test_headers_the_replys_ack_and_the_stack_time_by_hand() -> None:
    link = LinkOverheads(header_bytes_per_packet=40, mss_bytes=30, reply_ack_bytes=40, stack_s=5e-3)
    env = hand_env(CAPACITY_BPS, link_overheads=link)
    info = _step_transfers(env, 1)[0]
    # 100 bytes in 4 packets of at most 30: 100 + 4 x 40 header bytes + a 40-byte ACK = 300 bytes
    assert info["transfer_s"] == pytest.approx(8 * 300 / CAPACITY_BPS)
    assert info["rtt_s"] == pytest.approx(RTT_S + 5e-3)
    plain = _step_transfers(hand_env(CAPACITY_BPS), 1)[0]
    assert plain["transfer_s"] == pytest.approx(8 * 100 / CAPACITY_BPS)
    assert info["latency_s"] - plain["latency_s"] == pytest.approx(8 * 200 / CAPACITY_BPS + 5e-3)


def test_the_shapers_bucket_by_hand() -> None:
    link = LinkOverheads(mss_bytes=30, burst_bytes=40)
    # a second apart the bucket refills: every request's last packet (10 bytes) and 40 bytes
    # leave on tokens, the other 50 bytes wait for them
    rested = _step_transfers(hand_env(CAPACITY_BPS, link_overheads=link), 3)
    for info in rested:
        assert info["transfer_s"] == pytest.approx(8 * 50 / CAPACITY_BPS)
    # 2 ms apart the next request starts when the last one ended, owing its last packet: it waits
    # for its own 100 bytes and the 10 owed, less the 10 of its own last packet
    busy = _step_transfers(hand_env(CAPACITY_BPS, link_overheads=link, frame_interval_s=2e-3), 3)
    assert busy[0]["transfer_s"] == pytest.approx(8 * 50 / CAPACITY_BPS)
    for info in busy[1:]:
        assert info["transfer_s"] == pytest.approx(8 * 100 / CAPACITY_BPS, abs=1e-6)


@pytest.mark.parametrize("frame_interval_s", [1.0, 2e-3])
def test_predict_and_serve_agree_with_the_link_terms(frame_interval_s: float) -> None:
    link = LinkOverheads(40, 30, burst_bytes=40, reply_ack_bytes=40, stack_s=2e-3)
    env = hand_env(CAPACITY_BPS, link_overheads=link, frame_interval_s=frame_interval_s)
    env.reset(seed=0)
    for _ in range(3):
        predicted = env.predict_actions(CAPACITY_BPS)
        served = env.evaluate_actions()
        np.testing.assert_allclose(predicted.latency_s, served.latency_s, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(predicted.device_free_s, served.device_free_s, atol=1e-9)
        env.step(SEND_INPUT)


def test_the_channels_and_the_constant_rates_transfer_agree() -> None:
    link = LinkOverheads(66, 1448, burst_bytes=1600, reply_ack_bytes=66)
    channel = ConstantChannel(CAPACITY_BPS)
    channel.reset(np.random.default_rng(0))
    for n_bytes, t0, bucket in (
        (5000, 1.0, None),
        (5000, 1.0, (0.9, -0.001)),
        (100, 1.0, (0.99, 0.0)),
        (20_000, 1.0, (1.2, -0.004)),
        (0, 1.0, (0.5, 0.0)),
    ):
        seconds, after = link.transfer(channel, n_bytes, t0, bucket)
        at_rate, ended, left_s = link.transfer_at_rate(n_bytes, t0, bucket, CAPACITY_BPS)
        assert seconds == pytest.approx(float(at_rate), abs=1e-9)
        if n_bytes:
            assert after == (pytest.approx(float(ended)), pytest.approx(float(left_s)))


def test_terms_at_zero_change_nothing() -> None:
    env = SplitComputingEnv("default", horizon=300)
    zero = SplitComputingEnv("default", horizon=300, link_overheads=LinkOverheads())
    assert env.request_model.link is None
    for each in (env, zero):
        each.reset(seed=7)
        each.action_space.seed(7)
    for _ in range(300):
        action = env.action_space.sample()
        zero.action_space.sample()
        _, reward, _, _, info = env.step(action)
        _, zero_reward, _, _, zero_info = zero.step(action)
        assert reward == zero_reward
        info.pop("canonical_action")
        zero_info.pop("canonical_action")
        assert info == pytest.approx(zero_info, nan_ok=True, rel=0, abs=0)


def test_a_scenario_carries_the_terms_through_its_config() -> None:
    scenario = dataclasses.replace(
        get_scenario("default"), link_overheads={"header_bytes_per_packet": 66, "stack_s": 0.01}
    )
    parts = resolve_scenario(scenario_from_dict(scenario.to_dict()))
    assert parts.link_overheads == LinkOverheads(header_bytes_per_packet=66, stack_s=0.01)
    assert resolve_scenario("default").link_overheads is None
    with pytest.raises(ValueError, match="unknown link_overheads fields \\['mtu'\\]"):
        resolve_scenario("default", link_overheads={"mtu": 1500})
    with pytest.raises(ValueError, match="stack_s must be finite and >= 0"):
        LinkOverheads(stack_s=-1.0)
