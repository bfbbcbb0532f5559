"""Scenarios: a device preset, a network type, a channel model and a reward preset, by name.

A :class:`Scenario` holds names and numbers only, so it is cheap to list, print and store in a run's
config; :func:`resolve_scenario` turns it (plus any overrides) into the objects the env runs on.
The channel of a scenario is parameterized by its network type: a Markov chain over capacity levels
spread log-uniformly over the network's uplink range, a Gilbert-Elliott channel between its low
and typical rates, block fading, a constant link at the typical rate, or a trace file.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from splitrl.envs.channels import Channel, make_channel
from splitrl.envs.channels.randomized import (
    MIXTURE_PREFIX,
    RANDOMIZED_MODELS,
    TRACE_MIX_PREFIX,
    ChannelMixture,
    RandomizedChannel,
    make_trace_mix,
    mixture_specs,
)
from splitrl.envs.exit_gate import exit_gate_of
from splitrl.envs.reward import REWARD_PRESETS, RewardSpec, get_reward_spec
from splitrl.envs.rtt import RTTModel
from splitrl.envs.server_load import ServerLoad
from splitrl.envs.time_model import LinkOverheads
from splitrl.files import read_yaml_mapping
from splitrl.profiles.io import load_profile
from splitrl.profiles.presets import (
    DevicePreset,
    NetworkPreset,
    get_device_preset,
    get_network_preset,
)
from splitrl.profiles.schema import Profile

#: channel models a scenario can name without further parameters
SCENARIO_CHANNELS = (
    "markov",
    "gilbert-elliott",
    "fading",
    "constant",
    "randomized",
    "cellular",
    "randomized-cellular",
    "randomized-all",
)


@dataclass(frozen=True)
class Scenario:
    """A named setting for :class:`~splitrl.envs.SplitComputingEnv`.

    :param name: scenario name
    :param description: one line for people
    :param device: device preset name (``splitrl.profiles.presets``)
    :param network: network preset name: RTT, uplink range, radio power
    :param reward: reward preset name (``splitrl.envs.reward.REWARD_PRESETS``)
    :param channel: ``"markov"``, ``"gilbert-elliott"``, ``"fading"``, ``"constant"``,
        ``"randomized"``, ``"cellular"``, ``"randomized-cellular"``, ``"randomized-all"``
        (parameterized by the network's uplink range; ``"randomized"`` draws a model among Markov,
        Gilbert-Elliott and fading and its parameters every episode, ``"randomized-cellular"`` a
        cellular channel's parameters, ``"randomized-all"`` any of the four models),
        ``"traces:PATH,PATH,..."`` (a recorded trace drawn every episode:
        :class:`~splitrl.envs.channels.randomized.TraceMixChannel`), ``"mix:SPEC|SPEC|..."`` (one
        of these channels drawn every episode:
        :class:`~splitrl.envs.channels.randomized.ChannelMixture`), a ``make_channel`` spec string
        such as ``"trace:PATH"``, or a dict
    :param uplink_mbps: ``(low, high)`` uplink range that replaces the network preset's, for links
        slower than the network's norm (a microcontroller's Wi-Fi module)
    :param server: server preset name
    :param profile: profile name or path
    :param frame_interval_s: time between requests
    :param deadline_s: latency deadline of the reward
    :param episode_s: simulated seconds per episode; an episode holds
        ``ceil(episode_s / frame_interval_s)`` requests. At least 20 s by default, longer than a
        real uplink takes to change, so that an episode sees its link change
    :param horizon: requests per episode, replacing the length given by ``episode_s``
    :param server_job_s: mean service time of the other tenants' requests queued at the server
    :param reward_overrides: reward fields that differ from the preset
    :param link_quality: whether the device observes its radio's link-rate report
        (:mod:`splitrl.envs.link_quality`); ``False`` for throughput-only studies
    :param link_overheads: what a real TCP/IP link adds to each request
        (:class:`~splitrl.envs.time_model.LinkOverheads`, or its fields as a mapping); ``None``
        (the default): the payload alone crosses the channel
    :param transfer_timeout_s: the device gives up an uplink transfer still running after this many
        seconds and answers the request itself at the action's exit
        (:class:`~splitrl.envs.time_model.RequestModel`); ``None`` (the default): it waits for
        every transfer, however long an outage lasts
    :param exit_gate: the device's confidence gate at the early exits: a request whose action
        computes an earlier exit on the device stops there when that exit's softmax confidence is
        above this threshold (in ``(0, 1)``), and the device computes the head of every such exit
        to read it; ``None`` (the default): no gate, an action answers at its own exit
    """

    name: str
    description: str
    device: str
    network: str
    reward: str = "latency-accuracy"
    channel: str | Mapping[str, Any] = "markov"
    uplink_mbps: tuple[float, float] | None = None
    server: str = "rtx_2080"
    profile: str = "default"
    frame_interval_s: float = 0.2
    deadline_s: float = 0.2
    episode_s: float = 20.0
    horizon: int | None = None
    server_job_s: float = 0.01
    reward_overrides: Mapping[str, Any] = field(default_factory=dict)
    link_quality: bool = True
    link_overheads: LinkOverheads | Mapping[str, Any] | None = None
    transfer_timeout_s: float | None = None
    exit_gate: float | None = None

    @property
    def requests_per_episode(self) -> int:
        """``horizon`` if given, else the requests that cover ``episode_s``."""
        return episode_requests(self.episode_s, self.frame_interval_s, self.horizon)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, for run configs."""
        data = dataclasses.asdict(self)
        data["reward_overrides"] = dict(self.reward_overrides)
        return data


#: the confidence threshold of the named scenarios with an exit gate: of 0.5, 0.65 and 0.8, the
#: one whose gate gains most over ``mpc-geometric`` net of the exit heads' compute, on the default
#: scenario's Markov channel (``docs/evaluation.md``, Room outside the decision model)
DEFAULT_EXIT_GATE = 0.65

#: the default scenario: the state-dependent one where offloading buys accuracy
DEFAULT_SCENARIO = Scenario(
    name="default",
    description=(
        "microcontroller camera board (STM32H7) at 120 frames/s on a slow Wi-Fi link "
        "(0.5 to 12 Mbit/s): most accurate answer within 60 ms"
    ),
    device="stm32h7",
    network="wifi",
    uplink_mbps=(0.5, 12.0),
    reward="deadline",
    reward_overrides={"w_latency": 0.1},
    frame_interval_s=1 / 120,
    deadline_s=0.06,
)

#: the state-dependent scenario on LTE: the default scenario's camera board and frame rate, a
#: 100 ms deadline and a 50 ms round trip
MCU_LTE_VIDEO_SCENARIO = Scenario(
    name="mcu-lte-video",
    description=(
        "STM32H7 camera board at 120 frames/s on LTE (1 to 20 Mbit/s, 50 ms round "
        "trip): most accurate answer within 100 ms"
    ),
    device="stm32h7",
    network="lte",
    reward="deadline",
    reward_overrides={"w_latency": 0.1},
    frame_interval_s=1 / 120,
    deadline_s=0.1,
)

#: the named scenarios
SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        DEFAULT_SCENARIO,
        dataclasses.replace(
            DEFAULT_SCENARIO,
            name="default-timeout",
            description=(
                "the default scenario, where the device gives up an uplink transfer after 50 ms "
                "(it could no longer meet the 60 ms deadline) and answers at the action's exit itself"
            ),
            transfer_timeout_s=0.05,
        ),
        dataclasses.replace(
            DEFAULT_SCENARIO,
            name="default-timeout-gate",
            description=(
                "default-timeout, where the device also stops a request at an early exit it "
                "computes when the exit's confidence is above 0.65 (a confidence gate)"
            ),
            transfer_timeout_s=0.05,
            exit_gate=DEFAULT_EXIT_GATE,
        ),
        Scenario(
            name="mcu-latency",
            description="STM32H7 at 5 frames/s on slow Wi-Fi, accuracy against mean latency",
            device="stm32h7",
            network="wifi",
            uplink_mbps=(0.5, 12.0),
            episode_s=40.0,
        ),
        Scenario(
            name="pizero-lte",
            description="Raspberry Pi Zero 2 W on LTE, latency vs accuracy",
            device="pi_zero_2w",
            network="lte",
            episode_s=40.0,
        ),
        Scenario(
            name="nano-5g",
            description="Jetson Nano on 5G (NR sub-6), latency vs accuracy, fading channel",
            device="jetson_nano",
            network="nr5g",
            channel="fading",
            frame_interval_s=0.05,
            deadline_s=0.05,
        ),
        Scenario(
            name="mcu-ltem",
            description="STM32H7 on LTE-M (Cat-M1), Edgent-style deadline of one second",
            device="stm32h7",
            network="lte_m",
            reward="deadline",
            frame_interval_s=1.0,
            deadline_s=1.0,
            episode_s=200.0,
        ),
        MCU_LTE_VIDEO_SCENARIO,
        dataclasses.replace(
            MCU_LTE_VIDEO_SCENARIO,
            name="mcu-lte-video-timeout",
            description=(
                "mcu-lte-video, where the device gives up an uplink transfer after 50 ms (with "
                "the LTE round trip, 50 ms on average, it could rarely still meet the 100 ms "
                "deadline) and answers at the action's exit itself"
            ),
            transfer_timeout_s=0.05,
        ),
        dataclasses.replace(
            MCU_LTE_VIDEO_SCENARIO,
            name="mcu-lte-video-timeout-gate",
            description=(
                "mcu-lte-video-timeout, where the device also stops a request at an early exit "
                "it computes when the exit's confidence is above 0.65 (a confidence gate)"
            ),
            transfer_timeout_s=0.05,
            exit_gate=DEFAULT_EXIT_GATE,
        ),
        Scenario(
            name="mcu-energy",
            description="battery-powered STM32H7 on slow Wi-Fi, energy-aware",
            device="stm32h7",
            network="wifi",
            uplink_mbps=(0.5, 12.0),
            reward="energy-aware",
            episode_s=40.0,
        ),
    )
}


@dataclass(frozen=True)
class ScenarioParts:
    """Everything the env runs on, resolved from a scenario and overrides."""

    name: str
    profile: Profile
    device: DevicePreset
    server: DevicePreset
    network: NetworkPreset
    channel: Channel
    server_load: ServerLoad
    rtt: RTTModel
    reward: RewardSpec
    frame_interval_s: float
    horizon: int
    link_quality: bool
    server_job_s: float
    uplink_mbps: tuple[float, float]
    nominal_mbps: float
    link_overheads: LinkOverheads | None = None
    transfer_timeout_s: float | None = None
    exit_gate: float | None = None


#: file name endings of a scenario file (``--scenario PATH``)
SCENARIO_FILE_SUFFIXES = (".yaml", ".yml")


def get_scenario(name: str) -> Scenario:
    """The scenario called ``name``, or the one in the scenario file ``name``.

    A scenario file is a YAML mapping of :class:`Scenario` fields (``Scenario.to_dict``), such as
    ``splitrl scenario fit --out`` writes; its name ends in ``.yaml`` or ``.yml``.

    :raises ValueError: for an unknown name, or a file that is not a mapping of scenario fields
    :raises FileNotFoundError: for a scenario file that does not exist
    """
    if name.endswith(SCENARIO_FILE_SUFFIXES):
        document = read_yaml_mapping(Path(name), "scenario file", "a mapping of scenario fields")
        try:
            return scenario_from_dict(document)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
    if name not in SCENARIOS:
        raise ValueError(
            f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}, "
            f"or a scenario file ({' or '.join(SCENARIO_FILE_SUFFIXES)})"
        )
    return SCENARIOS[name]


def scenario_from_dict(data: Mapping[str, Any]) -> Scenario:
    """The :class:`Scenario` of a mapping of its fields (the inverse of ``Scenario.to_dict``).

    :raises ValueError: naming unknown or missing fields
    """
    names = {f.name for f in dataclasses.fields(Scenario)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown scenario fields {unknown}; known: {sorted(names)}")
    values = dict(data)
    if values.get("uplink_mbps") is not None:
        values["uplink_mbps"] = tuple(values["uplink_mbps"])
    try:
        return Scenario(**values)
    except TypeError as error:
        raise ValueError(f"malformed scenario: {error}") from error


def network_channel(
    spec: str | Mapping[str, Any], uplink_mbps: tuple[float, float], typical_mbps: float
) -> Channel:
    """A channel for a network whose uplink ranges over ``uplink_mbps``.

    :param spec: a :data:`SCENARIO_CHANNELS` name, a ``"traces:PATH,PATH,..."`` trace mix, a
        ``"mix:SPEC|SPEC|..."`` mixture of any of these (one member drawn every episode), or any
        ``make_channel`` spec (used as is).
        ``"fading"`` keeps the block-fading model's own link budget (a 20 MHz cell, about 1 to
        60 Mbit/s over positions): its range comes from physics, not from ``uplink_mbps``
    :param uplink_mbps: ``(low, high)`` capacity range in Mbit/s
    :param typical_mbps: the typical capacity in Mbit/s
    """
    low, high = uplink_mbps
    if not 0 < low < high:
        raise ValueError(f"uplink range must satisfy 0 < low < high, got {uplink_mbps}")
    if spec == "markov":
        levels = np.geomspace(low, high, 6) * 1e6
        return make_channel(
            {
                "model": "markov",
                "levels_bps": levels.tolist(),
                "transition_matrix": _birth_death(6, 0.15),
            }
        )
    if spec == "gilbert-elliott":
        return make_channel(
            {
                "model": "gilbert-elliott",
                "good_rate_bps": typical_mbps * 1e6,
                "bad_rate_bps": low * 1e6,
            }
        )
    if spec == "constant":
        return make_channel(f"constant:{typical_mbps * 1e6}")
    if spec == "randomized":
        return RandomizedChannel(uplink_mbps)
    if spec == "cellular":
        return make_channel({"model": "cellular", "mean_rate_bps": typical_mbps * 1e6})
    if spec == "randomized-cellular":
        return RandomizedChannel(uplink_mbps, models=("cellular",))
    if spec == "randomized-all":
        return RandomizedChannel(uplink_mbps, models=RANDOMIZED_MODELS)
    if isinstance(spec, str) and spec.startswith(TRACE_MIX_PREFIX):
        return make_trace_mix(spec)
    if isinstance(spec, str) and spec.startswith(MIXTURE_PREFIX):
        members = mixture_specs(spec)
        return ChannelMixture(
            [network_channel(member, uplink_mbps, typical_mbps) for member in members], members
        )
    return make_channel(spec)


def episode_requests(episode_s: float, frame_interval_s: float, horizon: int | None = None) -> int:
    """Requests per episode: ``horizon`` if given, else ``ceil(episode_s / frame_interval_s)``.

    :raises ValueError: a horizon below 1 or a non-positive episode length
    """
    if horizon is not None:
        if int(horizon) < 1:
            raise ValueError(f"horizon must be at least 1, got {horizon}")
        return int(horizon)
    if not (math.isfinite(episode_s) and episode_s > 0.0):
        raise ValueError(f"episode_s must be positive, got {episode_s}")
    # the tolerance keeps 20 s at 1/60 s from becoming 1201 requests through rounding
    return math.ceil(episode_s / frame_interval_s - 1e-9)


def _birth_death(n: int, move: float) -> list[list[float]]:
    """A chain that moves one level up or down with probability ``move`` per slot."""
    matrix = np.zeros((n, n))
    for i in range(n):
        if i > 0:
            matrix[i, i - 1] = move
        if i < n - 1:
            matrix[i, i + 1] = move
        matrix[i, i] = 1.0 - matrix[i].sum()
    return matrix.tolist()


def resolve_scenario(
    scenario: str | Scenario = "default",
    *,
    profile: str | Profile | None = None,
    device: str | DevicePreset | None = None,
    server: str | DevicePreset | None = None,
    network: str | NetworkPreset | None = None,
    channel: str | Mapping[str, Any] | Channel | None = None,
    reward: str | RewardSpec | None = None,
    frame_interval_s: float | None = None,
    deadline_s: float | None = None,
    horizon: int | None = None,
    link_overheads: LinkOverheads | Mapping[str, Any] | None = None,
    transfer_timeout_s: float | None = None,
    exit_gate: float | None = None,
) -> ScenarioParts:
    """Resolve ``scenario`` with overrides into the objects the env needs.

    Every override accepts a name or a ready object; ``None`` keeps the scenario's choice. Warns
    when the device is slower than the frame rate even at its cheapest action.
    """
    base = get_scenario(scenario) if isinstance(scenario, str) else scenario
    profile_ = profile if isinstance(profile, Profile) else load_profile(profile or base.profile)
    device_ = _preset(device if device is not None else base.device, "device")
    server_ = _preset(server if server is not None else base.server, "server")
    network_ = (
        network
        if isinstance(network, NetworkPreset)
        else get_network_preset(network or base.network)
    )
    if base.uplink_mbps is not None and network is None:
        uplink = base.uplink_mbps
        nominal = float(np.sqrt(uplink[0] * uplink[1]))
    else:
        uplink = (network_.uplink_mbps_low, network_.uplink_mbps_high)
        nominal = network_.uplink_mbps_typical
    if channel is None:
        channel_: Channel = network_channel(base.channel, uplink, nominal)
    elif isinstance(channel, (str, Mapping)):
        channel_ = network_channel(channel, uplink, nominal)
    else:
        channel_ = channel
    if isinstance(reward, RewardSpec):
        reward_ = reward
    else:
        reward_name = reward or base.reward
        if reward_name not in REWARD_PRESETS:
            raise ValueError(
                f"unknown reward preset {reward_name!r}; known: {sorted(REWARD_PRESETS)}"
            )
        reward_ = get_reward_spec(reward_name, deadline_s=base.deadline_s, **base.reward_overrides)
    if deadline_s is not None:
        reward_ = reward_.with_overrides(deadline_s=deadline_s)
    frame = base.frame_interval_s if frame_interval_s is None else float(frame_interval_s)
    if not frame > 0:
        raise ValueError(f"frame_interval_s must be positive, got {frame}")
    steps = episode_requests(base.episode_s, frame, base.horizon if horizon is None else horizon)
    timeout = base.transfer_timeout_s if transfer_timeout_s is None else transfer_timeout_s
    if timeout is not None and not (
        isinstance(timeout, (int, float))
        and not isinstance(timeout, bool)
        and math.isfinite(timeout)
        and timeout > 0
    ):
        raise ValueError(
            f"transfer_timeout_s must be a positive number of seconds or null, got {timeout!r}"
        )
    gate = exit_gate_of(base.exit_gate if exit_gate is None else exit_gate)
    jitter = network_.rtt_jitter_ms * 1e-3
    parts = ScenarioParts(
        name=base.name,
        profile=profile_,
        device=device_,
        server=server_,
        network=network_,
        channel=channel_,
        server_load=ServerLoad(discipline="fcfs"),
        rtt=RTTModel(base_s=max(network_.rtt_ms * 1e-3 - jitter, 0.0), jitter_mean_s=jitter),
        reward=reward_,
        frame_interval_s=frame,
        horizon=steps,
        link_quality=base.link_quality,
        server_job_s=base.server_job_s,
        uplink_mbps=(float(uplink[0]), float(uplink[1])),
        nominal_mbps=nominal,
        link_overheads=_link_overheads(
            base.link_overheads if link_overheads is None else link_overheads
        ),
        transfer_timeout_s=None if timeout is None else float(timeout),
        exit_gate=gate,
    )
    from splitrl.envs.mean_times import keep_up_warning

    warning = keep_up_warning(parts)
    if warning is not None:
        warnings.warn(f"scenario {base.name}: {warning}", stacklevel=2)
    return parts


def _link_overheads(value: LinkOverheads | Mapping[str, Any] | None) -> LinkOverheads | None:
    if value is None or isinstance(value, LinkOverheads):
        return value
    names = {f.name for f in dataclasses.fields(LinkOverheads)}
    unknown = sorted(set(value) - names)
    if unknown:
        raise ValueError(f"unknown link_overheads fields {unknown}; known: {sorted(names)}")
    return LinkOverheads(**value)


def _preset(value: str | DevicePreset, role: str) -> DevicePreset:
    preset = value if isinstance(value, DevicePreset) else get_device_preset(value)
    if preset.role != role and not preset.measured:
        raise ValueError(f"preset {preset.name!r} has role {preset.role!r}, expected a {role}")
    return preset
