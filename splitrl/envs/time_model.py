"""The time and energy model of one request, precomputed per action from a profile and two presets.

What does not depend on the channel or the server load is computed once per ``(exit, split, bits)``:
device compute, encoding on the device, server compute at no load, decoding on the server. The env adds
the uplink transfer (integrated over the time-varying capacity), the round trip, server queueing and the
load's slowdown per request.

Stage and head times come from the device preset's compute model (FLOPs and layer count), or, for a
``measured`` preset such as ``host``, from the latencies measured on the profiling host (one thread on
the device side, all threads on the server side).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np

from splitrl.profiles.presets import DevicePreset
from splitrl.profiles.schema import BlockInfo, Profile


def block_time_s(block: BlockInfo, preset: DevicePreset, all_threads: bool) -> float:
    """Seconds one block (stage or exit head) takes on ``preset`` for one sample."""
    if preset.measured:
        host = block.host
        return 1e-3 * (host.median_ms_all_threads if all_threads else host.median_ms_1_thread)
    return preset.compute_time_s(block.flops, block.n_layers)


@dataclass(frozen=True)
class CostTables:
    """Channel-independent costs of every action, in seconds.

    :param device_compute_s: device compute per ``(e, s)``: stages ``[0, min(s, k_e))`` plus the exit
        head when the pair is device-only, ``[E, S+1]``
    :param server_compute_s: unloaded server compute per ``(e, s)``: stages ``[s, k_e)`` plus the head,
        0 when device-only, ``[E, S+1]``
    :param encode_s: device encode time per ``(s, b)``, ``[S+1, B]`` (0 at ``s = n_stages``)
    :param decode_s: server decode time per ``(s, b)``, ``[S+1, B]``
    """

    device_compute_s: np.ndarray
    server_compute_s: np.ndarray
    encode_s: np.ndarray
    decode_s: np.ndarray

    @classmethod
    def build(cls, profile: Profile, device: DevicePreset, server: DevicePreset) -> CostTables:
        """Cost tables of ``profile`` with the device running on ``device`` and the tail on ``server``."""
        n_exits, n_splits, n_bits = profile.n_exits, profile.n_splits, profile.n_bit_options
        device_stage = [block_time_s(stage, device, all_threads=False) for stage in profile.stages]
        server_stage = [block_time_s(stage, server, all_threads=True) for stage in profile.stages]
        device_head = [block_time_s(head, device, all_threads=False) for head in profile.exits]
        server_head = [block_time_s(head, server, all_threads=True) for head in profile.exits]

        device_compute = np.zeros((n_exits, n_splits))
        server_compute = np.zeros((n_exits, n_splits))
        for e, k_e in enumerate(profile.exit_stages):
            for s in range(n_splits):
                if s >= k_e:
                    device_compute[e, s] = sum(device_stage[:k_e]) + device_head[e]
                else:
                    device_compute[e, s] = sum(device_stage[:s])
                    server_compute[e, s] = sum(server_stage[s:k_e]) + server_head[e]

        encode = np.zeros((n_splits, n_bits))
        decode = np.zeros((n_splits, n_bits))
        for s in range(n_splits - 1):
            n_elements = prod(profile.split_shape(s))
            for b in range(n_bits):
                encode[s, b] = (
                    1e-3 * float(profile.encode_ms[s, b])
                    if device.measured
                    else device.codec_time_s(n_elements)
                )
                decode[s, b] = (
                    1e-3 * float(profile.decode_ms[s, b])
                    if server.measured
                    else server.codec_time_s(n_elements)
                )
        return cls(device_compute, server_compute, encode, decode)
