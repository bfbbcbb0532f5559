"""The transfer timeout: the device gives up a transfer that runs too long and answers itself."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from splitrl.envs import SCENARIOS, SplitComputingEnv, get_scenario
from splitrl.envs.channels import ConstantChannel, MarkovChannel
from splitrl.envs.time_model import LinkOverheads
from splitrl.profiles.schema import Profile

#: an offloading action of the tiny profile: exit 1 (after stage 3), split 0 (the input), bits 3
OFFLOAD = np.array((1, 0, 3))


def make_env(profile: Profile, **kwargs: object) -> SplitComputingEnv:
    return SplitComputingEnv(profile=profile, frame_interval_s=1.0, **kwargs)  # type: ignore[arg-type]


def test_a_slow_transfer_is_given_up_at_the_timeout(tiny_profile: Profile) -> None:
    """On a 1 kbit/s link the input takes seconds: with a 50 ms timeout the device stops sending
    then, runs exit 1 itself on the full-precision input, and counts that exit's device-only
    accuracy."""
    env = make_env(tiny_profile, channel=ConstantChannel(1e3), transfer_timeout_s=0.05)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(OFFLOAD)
    assert info["gave_up"]
    assert info["transfer_s"] == 0.05
    assert info["rtt_s"] == info["queue_s"] == info["server_s"] == 0.0
    assert math.isnan(info["server_load"])
    local = float(env.costs.device_compute_s[1, env.actions.exit_stages[1]])
    assert info["device_compute_s"] == pytest.approx(local)  # stages [0, 0) + the rest up to exit 1
    assert info["latency_s"] == pytest.approx(info["encode_s"] + 0.05 + local)
    k_1 = env.actions.exit_stages[1]
    assert info["correct"] == float(tiny_profile.correct[info["sample_index"], k_1, 0, 1])
    # the device measured what got through: about 50 ms at 1 kbit/s, a positive rate
    assert env.knowledge.throughput_estimate_bps == pytest.approx(1e3, rel=0.2)
    assert np.isfinite(reward)


def test_without_a_timeout_the_same_transfer_runs_to_its_end(tiny_profile: Profile) -> None:
    env = make_env(tiny_profile, channel=ConstantChannel(1e3))
    env.reset(seed=0)
    info = env.step(OFFLOAD)[4]
    assert not info["gave_up"]
    assert info["transfer_s"] == pytest.approx(8 * info["payload_bytes"] / 1e3)
    assert info["transfer_s"] > 1.0


def test_a_fast_transfer_is_not_given_up(tiny_profile: Profile) -> None:
    env = make_env(tiny_profile, channel=ConstantChannel(1e8), transfer_timeout_s=0.05)
    env.reset(seed=0)
    info = env.step(OFFLOAD)[4]
    assert not info["gave_up"]
    assert info["transfer_s"] == pytest.approx(8 * info["payload_bytes"] / 1e8)
    assert info["server_s"] > 0.0


def test_a_timeout_bounds_the_backlog_an_outage_leaves(tiny_profile: Profile) -> None:
    """A 1 bit/s link is an outage: without a timeout each offloaded frame holds the device for
    the whole transfer; with one, the device is free a timeout and the local rest later."""
    waits = {}
    for timeout in (None, 0.05):
        env = SplitComputingEnv(
            profile=tiny_profile,
            channel=ConstantChannel(1.0),
            frame_interval_s=0.1,
            transfer_timeout_s=timeout,
        )
        env.reset(seed=0)
        waits[timeout] = max(env.step(OFFLOAD)[4]["wait_s"] for _ in range(5))
    assert waits[None] > 100.0
    assert waits[0.05] == 0.0


def test_step_and_every_evaluation_agree_when_transfers_are_given_up(
    tiny_profile: Profile,
) -> None:
    """evaluate_actions (what the oracles and hindsight read) times and scores every action as
    step does, given-up transfers included (on a profile where only each exit's device-only
    answer is correct, so that answering on the device instead is seen)."""
    channel = MarkovChannel(
        levels_bps=(2e3, 1e7), transition_matrix=((0.5, 0.5), (0.5, 0.5)), slot_s=0.05
    )
    correct = np.zeros_like(tiny_profile.correct)
    for e, k_e in enumerate(tiny_profile.exit_stages):
        correct[:, k_e, 0, e] = 1
    profile = dataclasses.replace(tiny_profile, correct=correct)
    env = SplitComputingEnv(
        profile=profile, channel=channel, frame_interval_s=0.2, transfer_timeout_s=0.05
    )
    env.reset(seed=3)
    gave_up = 0
    for step in range(60):
        outcomes = env.evaluate_actions(know_labels=True)
        # every offloading action in turn: their bit-widths' accuracies differ from the exit's
        # own on the device, which a given-up transfer answers with
        offloads = np.flatnonzero(outcomes.payload_bytes > 0)
        pick = int(offloads[step % offloads.size])
        _, reward, _, _, info = env.step(outcomes.actions[pick])
        assert reward == pytest.approx(outcomes.reward[pick])
        assert info["latency_s"] == pytest.approx(outcomes.latency_s[pick])
        assert info["correct"] == outcomes.correct[pick] == float(info["gave_up"])
        gave_up += info["gave_up"]
    assert 0 < gave_up < 60


def test_predictions_give_up_the_transfers_slower_than_the_timeout(tiny_profile: Profile) -> None:
    """At an estimated 20 kbit/s, an action is predicted to be given up exactly when its mean
    payload needs more than the timeout; then it is predicted to answer at its exit on the
    device, with that exit's device-only accuracy and no reply to wait for."""
    timeout = 0.05
    env = make_env(tiny_profile, channel=ConstantChannel(2e4), transfer_timeout_s=timeout)
    env.reset(seed=0)
    waiting = make_env(tiny_profile, channel=ConstantChannel(2e4))
    waiting.reset(seed=0)
    predicted = env.predict_actions(capacity_bps=2e4)
    patient = waiting.predict_actions(capacity_bps=2e4)
    slow = 8.0 * predicted.payload_bytes / 2e4 > timeout
    assert slow.any() and (~slow & (predicted.payload_bytes > 0)).any()
    accuracy = tiny_profile.accuracy()
    stages = env.actions.exit_stages
    for i, (e, s, b) in enumerate(predicted.actions):
        if slow[i]:
            rest = env.costs.device_compute_s[e, stages[e]] - env.costs.device_compute_s[e, s]
            compute = env.costs.device_compute_s[e, s] + env.costs.encode_s[s, b]
            assert predicted.latency_s[i] == pytest.approx(compute + timeout + rest)
            assert predicted.device_free_s[i] == pytest.approx(predicted.latency_s[i])
            assert predicted.correct[i] == accuracy[stages[e], 0, e]
        else:
            assert predicted.latency_s[i] == pytest.approx(patient.latency_s[i])
            assert predicted.correct[i] == patient.correct[i]


@pytest.mark.parametrize("value", [0.0, -0.05, math.nan, math.inf, True, "50 ms"])
def test_bad_timeouts_get_clear_errors(tiny_profile: Profile, value: object) -> None:
    with pytest.raises(ValueError, match="transfer_timeout_s must be a positive number"):
        SplitComputingEnv(profile=tiny_profile, transfer_timeout_s=value)  # type: ignore[arg-type]
    scenario = dataclasses.replace(SCENARIOS["default"], transfer_timeout_s=value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="transfer_timeout_s must be a positive number"):
        SplitComputingEnv(scenario, profile=tiny_profile)


@pytest.mark.parametrize("base", ["default", "mcu-lte-video"])
def test_the_timeout_scenario_is_its_base_with_a_timeout(base: str, tmp_path: Path) -> None:
    """``<base>-timeout`` differs from ``base`` only by its name, description and timeout, and a
    scenario file carries the timeout."""
    default, timeout = SCENARIOS[base], SCENARIOS[f"{base}-timeout"]
    assert default.transfer_timeout_s is None
    assert timeout.transfer_timeout_s is not None
    assert timeout.transfer_timeout_s < timeout.deadline_s
    same = dataclasses.replace(
        timeout, name=default.name, description=default.description, transfer_timeout_s=None
    )
    assert same == default
    data = timeout.to_dict()
    if data["uplink_mbps"] is not None:
        data["uplink_mbps"] = list(data["uplink_mbps"])
    path = tmp_path / "timeout.yaml"
    path.write_text(yaml.safe_dump(data))
    assert get_scenario(str(path)) == timeout
    assert SplitComputingEnv(str(path)).request_model.transfer_timeout_s == 0.05


def test_an_unbounded_capacity_estimate_gives_nothing_up(tiny_profile: Profile) -> None:
    env = make_env(tiny_profile, channel=ConstantChannel(1e3), transfer_timeout_s=0.05)
    env.reset(seed=0)
    predicted = env.predict_actions(capacity_bps=math.inf)
    assert predicted.gave_up is not None and not predicted.gave_up.any()
    assert np.isfinite(predicted.reward).all()
    # at 1 kbit/s every offload is given up, and none is counted as answered by the server
    slow = env.predict_actions(capacity_bps=1e3)
    assert slow.gave_up is not None
    assert np.array_equal(slow.gave_up, slow.payload_bytes > 0)
    assert not slow.offloaded.any()


def test_mean_times_give_up_with_the_scenario() -> None:
    """The scenario's mean action times (the keep-up warning, scenario fit) cap a slow transfer
    at the timeout, with the rest of the model on the device."""
    from splitrl.envs.mean_times import action_times
    from splitrl.envs.scenarios import resolve_scenario

    waiting = resolve_scenario("default")
    giving_up = resolve_scenario("default-timeout")
    busy_waiting, _ = action_times(waiting, 1e4)
    busy, latency = action_times(giving_up, 1e4)
    assert busy_waiting.max() > 1.0  # the input at 10 kbit/s takes seconds
    assert busy.max() < 0.05 + busy_waiting.min() + 0.1  # timeout + local compute
    assert np.array_equal(busy, latency)  # given up or local: the answer is the device's
    fast_waiting, _ = action_times(waiting, 1e8)
    fast, _ = action_times(giving_up, 1e8)
    assert np.array_equal(fast, fast_waiting)  # nothing given up on a fast link


def test_a_given_up_transfer_measures_payload_not_headers(tiny_profile: Profile) -> None:
    """What the device measures of a transfer it gave up counts payload bytes: with link
    overheads, each packet's header took its share of the capacity."""
    link = LinkOverheads(header_bytes_per_packet=66, mss_bytes=1448, reply_ack_bytes=66)
    channel = ConstantChannel(8e6)  # one byte per microsecond
    seconds = (2 * (1448 + 66) + 100) / 1e6  # two full packets and 100 bytes of a third
    plain = make_env(tiny_profile, channel=channel, transfer_timeout_s=0.05)
    linked = make_env(tiny_profile, channel=channel, transfer_timeout_s=0.05, link_overheads=link)
    plain.reset(seed=0)
    assert plain.request_model.bytes_sent(channel, 10**6, 0.0, seconds) == 3128
    assert linked.request_model.bytes_sent(channel, 10**6, 0.0, seconds) == 2 * 1448 + 34
    # never more than the payload, never less than one byte
    assert linked.request_model.bytes_sent(channel, 2000, 0.0, seconds) == 2000
    assert linked.request_model.bytes_sent(channel, 2000, 0.0, 1e-6) == 1


@pytest.mark.parametrize("n_bytes", [1, 1447, 1448, 1449, 2896, 10_000])
def test_payload_bytes_inverts_wire_bytes(n_bytes: int) -> None:
    """The payload in a transfer's first wire bytes: all of it once its packets are through,
    one byte less a byte before."""
    link = LinkOverheads(header_bytes_per_packet=52, mss_bytes=1448, reply_ack_bytes=52)
    wire = link.wire_bytes(n_bytes) - link.reply_ack_bytes
    assert link.payload_bytes(float(wire)) == n_bytes
    assert link.payload_bytes(float(wire - 1)) == n_bytes - 1
