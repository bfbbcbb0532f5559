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

import math
from dataclasses import dataclass
from math import prod

import numpy as np

from splitrl.envs.channels.base import Channel
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


@dataclass(frozen=True)
class LinkOverheads:
    """What a real TCP/IP link adds to a payload's transfer over the channel's capacity.

    With the defaults (all zero) :meth:`transfer` takes the channel's own
    :meth:`~splitrl.envs.channels.base.Channel.transfer_time` of the payload, the environment's
    transfer. The terms, measured on a veth pair shaped by ``htb`` (``docs/deploy.md``):

    * every packet carries ``header_bytes_per_packet`` besides at most ``mss_bytes`` of payload
      (66 and 1448 for Ethernet + IPv4 + TCP with timestamps on a 1500-byte MTU; 52 on a link
      whose capacity counts IP packets, such as a Mahimahi trace);
    * a token-bucket shaper of ``burst_bytes`` (``htb``): its bucket holds time, filling at one
      second per second up to the time ``burst_bytes`` take at the current rate; it sends a
      packet whenever the bucket is not empty and charges it the packet's time at the current
      rate. A transfer that starts after an idle time thus gets up to a burst for free, and its
      last packet leaves without waiting for its own tokens, which the next transfer then pays
      for;
    * the device acknowledges every reply on the uplink too: ``reply_ack_bytes`` (one header-only
      packet) more per request.

    :param header_bytes_per_packet: header bytes the capacity also carries, per packet.
    :param mss_bytes: payload bytes per packet.
    :param burst_bytes: the shaper's bucket (0: no shaper).
    :param reply_ack_bytes: uplink bytes per request that acknowledge its reply.
    """

    header_bytes_per_packet: int = 0
    mss_bytes: int = 1448
    burst_bytes: int = 0
    reply_ack_bytes: int = 0

    def __post_init__(self) -> None:
        if min(self.header_bytes_per_packet, self.burst_bytes, self.reply_ack_bytes) < 0:
            raise ValueError(
                "header_bytes_per_packet, burst_bytes and reply_ack_bytes must be >= 0, got "
                f"{self.header_bytes_per_packet}, {self.burst_bytes}, {self.reply_ack_bytes}"
            )
        if self.mss_bytes < 1:
            raise ValueError(f"mss_bytes must be >= 1, got {self.mss_bytes}")

    def wire_bytes(self, n_bytes: int) -> int:
        """Bytes the capacity must carry for a request of ``n_bytes`` (with its reply's ACK)."""
        if n_bytes == 0:
            return 0
        packets = -(-n_bytes // self.mss_bytes)
        return n_bytes + packets * self.header_bytes_per_packet + self.reply_ack_bytes

    def transfer(
        self, channel: Channel, n_bytes: int, t0: float, bucket: tuple[float, float] | None
    ) -> tuple[float, tuple[float, float] | None]:
        """Seconds to deliver ``n_bytes`` starting at ``t0``, and the shaper's bucket after it.

        :param channel: the uplink.
        :param n_bytes: payload bytes.
        :param t0: start of the transfer (seconds since the channel's start).
        :param bucket: ``(time, seconds)``: the bucket when the previous transfer ended
            (negative: owed); ``None``: full (no transfer yet).
        :return: the duration and the bucket at its end (``None`` without a shaper).
        """
        wire = self.wire_bytes(n_bytes)
        if not self.burst_bytes or wire == 0:
            return channel.transfer_time(wire, t0), bucket
        if bucket is None:
            since, credit_s = t0, math.inf
        else:
            since, credit_s = bucket
        # a transfer that starts before the previous one left queues behind it; in an outage
        # nothing leaves before the capacity returns
        start = max(t0, since)
        if channel.capacity(start) == 0.0:
            start += channel.transfer_time(1, start)
        rate_bps = channel.capacity(start) or channel.capacity(start - 1e-9)
        credit_s += start - since
        tokens = min(credit_s * rate_bps / 8.0, float(self.burst_bytes))
        last_packet = n_bytes - (n_bytes - 1) // self.mss_bytes * self.mss_bytes
        last_packet += self.header_bytes_per_packet
        needed = wire - last_packet - tokens
        if needed <= 0:
            return start - t0, (start, 8.0 * (tokens - wire) / rate_bps)
        end = start + channel.transfer_time(math.ceil(needed), start)
        end_rate_bps = channel.capacity(end) or channel.capacity(end - 1e-9)
        return end - t0, (end, -8.0 * last_packet / end_rate_bps)
