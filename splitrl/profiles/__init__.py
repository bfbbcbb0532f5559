"""Profiles (measured facts about an early-exit DNN), their builder, and device and network presets."""

from splitrl.profiles.io import DEFAULT_PROFILE, list_shipped_profiles, load_profile, save_profile
from splitrl.profiles.presets import (
    DevicePreset,
    NetworkPreset,
    PresetError,
    get_device_preset,
    get_network_preset,
    load_device_presets,
    load_network_presets,
)
from splitrl.profiles.schema import (
    LOSSLESS,
    BlockInfo,
    ExitInfo,
    HostLatency,
    Profile,
    ProfileError,
)

__all__ = [
    "DEFAULT_PROFILE",
    "LOSSLESS",
    "BlockInfo",
    "DevicePreset",
    "ExitInfo",
    "HostLatency",
    "NetworkPreset",
    "PresetError",
    "Profile",
    "ProfileError",
    "get_device_preset",
    "get_network_preset",
    "list_shipped_profiles",
    "load_device_presets",
    "load_network_presets",
    "load_profile",
    "save_profile",
]
