"""Device energy of a request, as the env documents it: compute + radio + idle while awaiting the reply.

``energy = compute_power x (compute + encode) + radio energy of the transfer + idle_power x (RTT +
server queueing + server compute)``, where the radio energy is the network's
``radio_power_w x transfer + radio_energy_j_per_mbit x Mbit`` or, for a device with a radio of its
own, ``radio_power_w x transfer``. Checked through ``step``'s ``info`` only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from splitrl.envs import SplitComputingEnv
from splitrl.profiles.presets import get_device_preset, get_network_preset
from splitrl.profiles.schema import Profile
from tests.handmade import FOUR_BITS, HAND_DEVICE, LOSSLESS, hand_env


def composed_energy(info: dict[str, Any], compute_w: float, idle_w: float, radio_j: float) -> float:
    """The documented composition from the parts ``info`` reports."""
    awaiting_reply_s = info["rtt_s"] + info["queue_s"] + info["server_s"]
    return (
        compute_w * (info["device_compute_s"] + info["encode_s"])
        + radio_j
        + idle_w * awaiting_reply_s
    )


def test_a_local_request_costs_compute_power_times_compute_time() -> None:
    env = hand_env(1e6)
    env.reset(seed=0)
    info = env.step(np.array((0, 1, 0)))[4]  # exit 0 on the device: 10 ms at 3 W
    assert info["energy_j"] == pytest.approx(3.0 * 0.010, rel=1e-12)
    info = env.step(np.array((1, 2, 0)))[4]  # the full model on the device: 40 ms at 3 W
    assert info["energy_j"] == pytest.approx(3.0 * 0.040, rel=1e-12)


def test_an_offloaded_request_adds_the_radio_and_the_idle_wait_for_the_reply() -> None:
    env = hand_env(1e6)
    env.reset(seed=0)
    info = env.step(np.array((1, 0, LOSSLESS)))[4]
    # 100 bytes at 1 Mbit/s: 0.8 ms of radio at 1.7 W plus 0.25 J/Mbit x 0.0008 Mbit
    radio_j = 1.7 * 0.0008 + 0.25 * 0.0008
    assert info["transfer_s"] == pytest.approx(0.0008)
    assert info["energy_j"] == pytest.approx(composed_energy(info, 3.0, 0.5, radio_j), rel=1e-9)
    # by hand: the radio, and 0.5 W through the 10 ms round trip (encoding and the server take
    # nanoseconds and microseconds, below the tolerance)
    assert info["energy_j"] == pytest.approx(radio_j + 0.5 * 0.010, rel=1e-3)


def test_a_device_with_its_own_radio_pays_its_radio_power_only() -> None:
    device = dataclasses.replace(HAND_DEVICE, radio_power_w=0.9)
    env = hand_env(1e6, device=device)
    env.reset(seed=0)
    info = env.step(np.array((1, 1, FOUR_BITS)))[4]  # 20 bytes after 10 ms of compute
    assert info["transfer_s"] == pytest.approx(160 / 1e6)
    radio_j = 0.9 * info["transfer_s"]
    assert info["energy_j"] == pytest.approx(composed_energy(info, 3.0, 0.5, radio_j), rel=1e-9)


def test_waiting_for_the_device_itself_costs_no_energy() -> None:
    # frames every 5 ms and 40 ms of local compute: the second request waits 35 ms
    env = hand_env(1e6, frame_interval_s=0.005)
    env.reset(seed=0)
    first = env.step(np.array((1, 2, 0)))[4]
    second = env.step(np.array((1, 2, 0)))[4]
    assert second["wait_s"] == pytest.approx(0.035)
    assert second["energy_j"] == pytest.approx(first["energy_j"], rel=1e-12)


def test_every_step_on_a_varying_link_composes_its_energy(tiny_profile: Profile) -> None:
    device, network = get_device_preset("stm32h7"), get_network_preset("wifi")
    env = SplitComputingEnv(
        profile=tiny_profile,
        device=device,
        network=network,
        channel="markov",
        frame_interval_s=0.005,
        horizon=300,
    )
    env.reset(seed=1)
    rng = np.random.default_rng(0)
    offloaded = 0
    for _ in range(300):
        info = env.step(rng.integers(0, np.asarray(env.actions.nvec), size=3))[4]
        n_bytes = info["payload_bytes"]
        radio_j = network.transmit_energy_j(n_bytes, info["transfer_s"]) if n_bytes else 0.0
        expected = composed_energy(info, device.compute_power_w, device.idle_power_w, radio_j)
        assert info["energy_j"] == pytest.approx(expected, rel=1e-9)
        offloaded += n_bytes > 0
    assert 0 < offloaded < 300
