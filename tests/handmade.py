"""A hand-built profile, presets and env whose every time, payload and accuracy is known by hand.

The network has two stages and two exits; the device runs 1 MFLOP per millisecond with no per-layer
overhead, so stage 1 takes 10 ms and stage 2 takes 30 ms on it:

======================  ===========  =========================================
action ``(e, s, b)``    accuracy     latency at capacity ``C`` (bit/s), RTT 10 ms
======================  ===========  =========================================
exit 0 on the device    0.5          10 ms
exit 1 on the device    1.0          40 ms
exit 1, s=0, lossless   1.0          800 bit / C + 10 ms (the 100-byte input)
exit 1, s=0, 4 bits     0.75         400 bit / C + 10 ms
exit 1, s=1, lossless   1.0          10 ms + 320 bit / C + 10 ms (40 bytes)
exit 1, s=1, 4 bits     0.75         10 ms + 160 bit / C + 10 ms (20 bytes)
exit 0, s=0, any bits   0.5          as exit 1 at s=0
======================  ===========  =========================================

plus microseconds of encoding, server compute and decoding. Every sample has the same payloads, so
the profile's mean payload is the payload of every request; the RTT has no jitter and the server
is all but idle, so what the device predicts at the true capacity is what happens.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from splitrl.envs import SplitComputingEnv
from splitrl.envs.channels import ConstantChannel
from splitrl.envs.reward import RewardSpec
from splitrl.envs.server_load import ServerLoad
from splitrl.profiles.io import validate_profile
from splitrl.profiles.presets import DevicePreset, NetworkPreset
from splitrl.profiles.schema import BlockInfo, ExitInfo, HostLatency, Profile

#: bit options of the hand-built profile: index 0 is 4 bits, index 1 lossless
FOUR_BITS, LOSSLESS = 0, 1
#: payload in bytes per split (0: the input, 1: stage 1's output) and bit option
PAYLOAD_BYTES = np.array([[50, 100], [20, 40], [0, 0]])
RTT_S = 0.01

_HOST = HostLatency(0.1, 0.1, 0.1, 0.1, 1)


def hand_profile() -> Profile:
    """The two-stage, two-exit profile of the module docstring, validated."""
    n = 4
    # correct[i, s, b, e]: exit 0 right on half the samples whatever is sent; exit 1 always right
    # unquantized, and on three samples of four after 4-bit quantization
    correct = np.zeros((n, 3, 2, 2), dtype=bool)
    correct[:2, :, :, 0] = True
    correct[:, :, :, 1] = True
    correct[3, :2, FOUR_BITS, 1] = False
    profile = Profile(
        name="hand",
        stages=(
            BlockInfo("stage1", (1, 5, 4), flops=10_000_000, params=1, n_layers=1, host=_HOST),
            BlockInfo("stage2", (1, 2, 2), flops=30_000_000, params=1, n_layers=1, host=_HOST),
        ),
        exits=(
            ExitInfo("exit0", (2,), flops=0, params=1, n_layers=0, host=_HOST, after_stage=1),
            ExitInfo("exit1", (2,), flops=0, params=1, n_layers=0, host=_HOST, after_stage=2),
        ),
        bit_options=(4, "lossless"),
        input_shape=(1, 10, 10),
        input_dtype="uint8",
        codec={"per_channel": False, "clip": None, "entropy": False},
        encode_ms=np.zeros((3, 2)),
        decode_ms=np.zeros((3, 2)),
        labels=np.zeros(n, dtype=np.int64),
        payload_bytes=np.broadcast_to(PAYLOAD_BYTES, (n, 3, 2)).copy(),
        correct=correct,
        confidence=np.full((n, 3, 2, 2), 0.9, dtype=np.float32),
        input_png_bytes=np.full(n, 100, dtype=np.int64),
    )
    validate_profile(profile)
    return profile


#: 1 GFLOP/s and no per-layer overhead: 1 ms per MFLOP; the codec is all but free
HAND_DEVICE = DevicePreset(
    name="hand-device",
    role="device",
    description="1 GFLOP/s, powers chosen to tell the energy terms apart",
    compute_gflops=1.0,
    per_layer_overhead_ms=0.0,
    compute_power_w=3.0,
    idle_power_w=0.5,
    codec_mbps=1e4,
    radio_power_w=None,
    measured=False,
    sources=("hand-built",),
    calibration=(),
)
HAND_SERVER = dataclasses.replace(
    HAND_DEVICE, name="hand-server", role="server", compute_gflops=1e4, codec_mbps=1e5
)


def hand_network(capacity_bps: float) -> NetworkPreset:
    """A network whose RTT is 10 ms without jitter and whose typical rate is ``capacity_bps``."""
    return NetworkPreset(
        name="hand-network",
        rtt_ms=RTT_S * 1e3,
        rtt_jitter_ms=0.0,
        uplink_mbps_low=capacity_bps / 1e6,
        uplink_mbps_typical=capacity_bps / 1e6,
        uplink_mbps_high=capacity_bps / 1e6,
        radio_power_w=1.7,
        radio_energy_j_per_mbit=0.25,
        sources=("hand-built",),
    )


def idle_server() -> ServerLoad:
    """A server whose load is a billionth: no queueing, no slowdown worth a nanosecond."""
    return ServerLoad(levels=(1e-9, 2e-9), transition_matrix=((0.5, 0.5), (0.5, 0.5)))


def hand_env(
    capacity_bps: float = 1e6,
    *,
    deadline_s: float = 0.06,
    frame_interval_s: float = 1.0,
    horizon: int = 20,
    reward: RewardSpec | None = None,
    **overrides: Any,
) -> SplitComputingEnv:
    """The hand-built situation on a constant uplink of ``capacity_bps``.

    The device's prior throughput is ``capacity_bps``, so even its first estimate is right. The
    default reward counts the expected correctness, a deadline miss (``w_miss`` 1) and nothing
    else: the best action is the most accurate one that meets the deadline.

    :param capacity_bps: the uplink's capacity, also the device's prior throughput
    :param deadline_s: the deadline of the default reward
    :param frame_interval_s: time between requests
    :param horizon: requests per episode
    :param reward: another reward (its correctness becomes ``"expected"``)
    :param overrides: further :class:`SplitComputingEnv` arguments (``channel``, ``device``, ...)
    """
    spec = reward or RewardSpec(deadline_s=deadline_s, w_latency=0.0, w_miss=1.0)
    arguments: dict[str, Any] = {
        "profile": hand_profile(),
        "device": HAND_DEVICE,
        "server": HAND_SERVER,
        "network": hand_network(capacity_bps),
        "channel": ConstantChannel(capacity_bps),
        "reward": dataclasses.replace(spec, correctness="expected"),
        "frame_interval_s": frame_interval_s,
        "horizon": horizon,
        "link_quality": False,
        **overrides,
    }
    env = SplitComputingEnv(**arguments)
    env.server_load = idle_server()
    return env
