"""The time and energy model of one request.

What does not depend on the channel or the server load is computed once per ``(exit, split, bits)``
(:class:`CostTables`): device compute, encoding on the device, server compute at no load, decoding on
the server. :class:`RequestModel` adds, per request, the uplink transfer, the round trip, server
queueing and the load's slowdown, and the device's energy: for one action against the world (the
env's step), or for every action at once from the device's estimates (its prediction).

Stage and head times come from the device preset's compute model (FLOPs and layer count), or, for a
``measured`` preset such as ``host``, from the latencies measured on the profiling host (one thread on
the device side, all threads on the server side).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from typing import Any, TypeVar

import numpy as np

from splitrl.envs.actions import exits_passed_on_device
from splitrl.envs.channels.base import Channel
from splitrl.envs.server_load import ServerLoad
from splitrl.profiles.presets import DevicePreset, NetworkPreset
from splitrl.profiles.schema import BlockInfo, Profile

#: a float, or an array of them (one per action): the model's arithmetic is the same on both
FloatOrArray = TypeVar("FloatOrArray", float, np.ndarray)
#: a byte count, or an array of them
IntOrArray = TypeVar("IntOrArray", int, np.ndarray)


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
    def build(
        cls,
        profile: Profile,
        device: DevicePreset,
        server: DevicePreset,
        gate_heads: bool = False,
    ) -> CostTables:
        """Cost tables of ``profile`` with the device running on ``device`` and the tail on ``server``.

        :param gate_heads: the device also computes the head of every earlier exit whose stages it
            runs (a confidence gate reads each one's softmax before going on): ``(e, s)`` costs the
            heads of :func:`~splitrl.envs.actions.exits_passed_on_device` more on the device
        """
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
                if gate_heads:
                    device_compute[e, s] += sum(
                        device_head[g] for g in exits_passed_on_device(profile.exit_stages, e, s)
                    )

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


#: How one action served one request (:meth:`RequestModel.serve`), in this order: device compute,
#: encode, transfer, round trip, queueing and server time (seconds), the server's utilization when
#: the request arrived, when the device is free again and when the answer is there (seconds since
#: the episode start), the device's energy (joules), the link's shaper bucket after the request
#: (``None`` without one), and whether the device gave up the transfer and answered itself. When it
#: gave up, the transfer is the timeout, the device compute includes the local rest of the model,
#: and there is no round trip, queueing or server time. A plain tuple: the env unpacks one per step.
RequestTiming = tuple[
    float,
    float,
    float,
    float,
    float,
    float,
    float,
    float,
    float,
    float,
    "ShaperBucket | None",
    bool,
]


class RequestModel:
    """Time and device energy of a request served with an action (the env's time model).

    A request starts at ``start``; the device computes stages ``[0, s)`` (and the exit head when it
    answers itself), encodes, and sends the payload; it is free again when the transfer ends. The
    request reaches the server half a round trip later, waits and is computed there (both stretched
    by the server's load) and the reply takes the other half of the round trip. The device draws
    ``compute power x (compute + encode) + radio energy of the transfer + idle power x waiting for
    the reply``.

    :meth:`serve` times one action against the world: the uplink's capacity integrated over the
    transfer, the server's load when the request arrives, this request's RTT and queueing draws.
    :meth:`predict` times every canonical action at once (numpy) from what the device can estimate.
    Both are built from the same parts: the server load's
    :meth:`~splitrl.envs.server_load.ServerLoad.queueing_delay` and
    :meth:`~splitrl.envs.server_load.ServerLoad.compute_slowdown`, :meth:`reply_at`,
    :attr:`radio_energy_j` and :meth:`energy_j`, whose arithmetic is the same on floats and arrays.

    :param costs: the channel-independent costs of every action
    :param exit_stages: the stage count ``k_e`` after which each exit sits
    :param canonical_actions: the canonical ``(e, s, b)`` actions, shape ``(n, 3)``, in the order
        of :meth:`predict`'s arrays
    :param device: the device preset (compute, idle and radio power)
    :param network: the network preset (the radio's energy when the device has no radio power of
        its own)
    :param server_job_s: mean service time of the server's other jobs (the scale of queueing)
    :param link: what a real TCP/IP link adds (:class:`LinkOverheads`: headers, the shaper's
        bucket, the reply's ACK, the software stack's time); ``None``: the payload alone crosses
        the channel. With a shaper, the bucket carries over from one request to the next: both
        :meth:`serve` and :meth:`predict` take the bucket after the previous transfer.
    :param transfer_timeout_s: the device gives up an uplink transfer still running after this
        many seconds, and answers the request itself: it runs the rest of the model up to the
        action's exit on the full-precision tensor it kept (its accuracy is then the device-only
        accuracy of that exit). What a device does so that an outage costs at most the timeout
        instead of a backlog that lasts as long as the outage. ``None``: it waits however long the
        transfer takes. With a shaper, the bucket is empty when the device gives up.
    """

    def __init__(
        self,
        costs: CostTables,
        exit_stages: tuple[int, ...],
        canonical_actions: np.ndarray,
        device: DevicePreset,
        network: NetworkPreset,
        server_job_s: float,
        link: LinkOverheads | None = None,
        transfer_timeout_s: float | None = None,
    ) -> None:
        if transfer_timeout_s is not None and not (
            math.isfinite(transfer_timeout_s) and transfer_timeout_s > 0.0
        ):
            raise ValueError(
                f"transfer_timeout_s must be a positive number of seconds or None, got "
                f"{transfer_timeout_s!r}"
            )
        self.server_job_s = server_job_s
        self.link = link
        self.transfer_timeout_s = transfer_timeout_s
        self._exit_stages = exit_stages
        self._compute_power_w = device.compute_power_w
        self._idle_power_w = device.idle_power_w
        self._radio_power_w = device.radio_power_w
        #: the radio's energy of sending ``n_bytes`` in ``transfer_s`` seconds: the device's own radio
        #: power, or else the network's model
        self.radio_energy_j: Callable[[int, float], float] = (
            network.transmit_energy_j
            if device.radio_power_w is None
            else functools.partial(_energy_at_power, device.radio_power_w)
        )
        # Python lists: indexing them per step is several times cheaper than numpy scalars.
        self._device_compute: list[list[float]] = costs.device_compute_s.tolist()
        self._server_compute: list[list[float]] = costs.server_compute_s.tolist()
        self._encode: list[list[float]] = costs.encode_s.tolist()
        self._decode: list[list[float]] = costs.decode_s.tolist()
        # the device's rest of the model after giving up a transfer at split s: up to exit e with
        # its head (device compute is the same for every split at or after the exit)
        rest_s = costs.device_compute_s[:, -1:] - costs.device_compute_s
        self._fallback: list[list[float]] = rest_s.tolist()
        # per canonical action, for predict() and serve_actions()
        self._canonical_array = np.asarray(canonical_actions, dtype=np.int64).reshape(-1, 3)
        self._canonical: list[tuple[int, int, int]] = [
            (int(e), int(s), int(b)) for e, s, b in self._canonical_array.tolist()
        ]
        e, s, b = self._canonical_array.T
        self._device_only = s >= np.asarray(exit_stages)[e]
        self._action_compute_s = costs.device_compute_s[e, s]
        self._action_fallback_s = rest_s[e, s]
        self._action_encode_s = np.where(self._device_only, 0.0, costs.encode_s[s, b])
        self._action_service_s = costs.server_compute_s[e, s] + costs.decode_s[s, b]

    def serve(
        self,
        e: int,
        s: int,
        b: int,
        start: float,
        n_bytes: int,
        rtt_s: float,
        queue_u: float | None,
        server_load: ServerLoad,
        channel: Channel,
        capacity_bps: float | None = None,
        bucket: ShaperBucket | None = None,
    ) -> RequestTiming:
        """Serve one request with the canonical action ``(e, s, b)``.

        A device-only action has no encode, transfer, round trip, queueing or server time, and no
        server load (NaN).

        :param start: when the device starts the request (seconds since the episode start)
        :param n_bytes: the payload's size (0 when device-only)
        :param rtt_s: the round-trip time
        :param queue_u: the uniform variate of the queueing delay; ``None``: its mean
        :param server_load: the server's load process and service model
        :param channel: the uplink, whose capacity the transfer integrates
        :param capacity_bps: a constant capacity to assume instead of the channel's
        :param bucket: the link's shaper bucket after the previous transfer (``None``: full)
        """
        compute_s = self._device_compute[e][s]
        if s >= self._exit_stages[e]:
            device_free = start + compute_s
            energy_j = self.energy_j(compute_s, 0.0, 0.0)
            return (
                compute_s,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                math.nan,
                device_free,
                device_free,
                energy_j,
                bucket,
                False,
            )
        encode_s = self._encode[s][b]
        tx_start = start + compute_s + encode_s
        if self.link is not None:
            transfer_s, bucket = self.link.transfer(
                channel, n_bytes, tx_start, bucket, capacity_bps
            )
            rtt_s += self.link.stack_s
        elif capacity_bps is None:
            transfer_s = channel.transfer_time(n_bytes, tx_start)
        else:
            transfer_s = 8.0 * n_bytes / capacity_bps
        timeout_s = self.transfer_timeout_s
        if timeout_s is not None and transfer_s > timeout_s:
            return self._give_up(
                e, s, compute_s, encode_s, tx_start, n_bytes, channel, capacity_bps
            )
        device_free = tx_start + transfer_s
        at_server = device_free + 0.5 * rtt_s
        load = server_load.load(at_server)
        service_s = self._server_compute[e][s] + self._decode[s][b]
        queue_s = server_load.queueing_delay(load, self.server_job_s, queue_u)
        server_s = service_s * server_load.compute_slowdown(load)
        done = self.reply_at(at_server, rtt_s, queue_s, server_s)
        energy_j = self.energy_j(
            compute_s + encode_s, self.radio_energy_j(n_bytes, transfer_s), done - device_free
        )
        return (
            compute_s,
            encode_s,
            transfer_s,
            rtt_s,
            queue_s,
            server_s,
            load,
            device_free,
            done,
            energy_j,
            bucket,
            False,
        )

    def serve_from(
        self,
        e: int,
        s: int,
        b: int,
        starts: np.ndarray,
        n_bytes: int,
        rtt_s: float,
        queue_u: float | None,
        server_load: ServerLoad,
        channel: Channel,
        bucket: ShaperBucket | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`serve` of one request with one action from many start times at once.

        What the request would have cost had the device been free at each of ``starts``: with
        numpy over the start times when the channel times many transfers at once
        (``transfer_times``, as every built-in channel does), the server load looks up many times
        at once (``loads``) and there are no link overheads; else one :meth:`serve` per start.
        Equal to :meth:`serve` elementwise.

        :return: per start: when the device is free again, when the answer is there, the
            device's energy and whether the device gave up the transfer
        """
        starts = np.asarray(starts, dtype=float)
        compute_s = self._device_compute[e][s]
        if s >= self._exit_stages[e]:
            device_free = starts + compute_s
            energy = np.full(starts.shape, self.energy_j(compute_s, 0.0, 0.0))
            return device_free, device_free.copy(), energy, np.zeros(starts.shape, dtype=bool)
        transfer_times = getattr(channel, "transfer_times", None)
        if self.link is not None or transfer_times is None or not hasattr(server_load, "loads"):
            timings = [
                self.serve(
                    e, s, b, start, n_bytes, rtt_s, queue_u, server_load, channel, None, bucket
                )
                for start in starts.tolist()
            ]
            return _ends(timings)
        encode_s = self._encode[s][b]
        tx_start = starts + compute_s + encode_s
        return self._offloaded(
            np.full(starts.shape, e),
            np.full(starts.shape, s),
            np.full(starts.shape, compute_s),
            np.full(starts.shape, encode_s),
            np.full(starts.shape, self._server_compute[e][s] + self._decode[s][b]),
            tx_start,
            transfer_times(n_bytes, tx_start),
            np.full(starts.shape, n_bytes),
            rtt_s,
            queue_u,
            server_load,
            channel,
        )

    def serve_actions(
        self,
        start: float,
        payload_bytes: np.ndarray,
        rtt_s: float,
        queue_u: float | None,
        server_load: ServerLoad,
        channel: Channel,
        capacity_bps: float | None = None,
        bucket: ShaperBucket | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`serve` of one request with every canonical action at once.

        What each action would cost on the same channel, draws and load: with numpy over the
        actions when the channel times many transfers at once (``transfer_times``, as every
        built-in channel does) or ``capacity_bps`` is given, the server load looks up many times at
        once (``loads``) and there are no link overheads; else one :meth:`serve` per action. Equal
        to :meth:`serve` elementwise.

        :param payload_bytes: the payload of each canonical action (0 when device-only), in the
            order of :meth:`predict`'s arrays
        :return: per canonical action: when the device is free again, when the answer is there,
            the device's energy and whether the device gave up the transfer
        """
        payload_bytes = np.asarray(payload_bytes, dtype=np.int64)
        transfer_times = getattr(channel, "transfer_times", None)
        if (
            self.link is not None
            or (transfer_times is None and capacity_bps is None)
            or not hasattr(server_load, "loads")
        ):
            timings = [
                self.serve(
                    *action,
                    start,
                    n_bytes,
                    rtt_s,
                    queue_u,
                    server_load,
                    channel,
                    capacity_bps,
                    bucket,
                )
                for action, n_bytes in zip(self._canonical, payload_bytes.tolist(), strict=True)
            ]
            return _ends(timings)
        device_free = start + self._action_compute_s
        done = device_free.copy()
        nothing = np.zeros(device_free.shape)
        energy = self.energy_j(self._action_compute_s, nothing, nothing)
        gave_up = np.zeros(device_free.shape, dtype=bool)
        sent = np.flatnonzero(~self._device_only)
        e, s, _ = self._canonical_array[sent].T
        compute_s = self._action_compute_s[sent]
        encode_s = self._action_encode_s[sent]
        n_bytes = payload_bytes[sent]
        tx_start = start + compute_s + encode_s
        transfer_s = (
            8.0 * n_bytes / capacity_bps
            if capacity_bps is not None
            else transfer_times(n_bytes, tx_start)  # type: ignore[misc]
        )
        device_free[sent], done[sent], energy[sent], gave_up[sent] = self._offloaded(
            e,
            s,
            compute_s,
            encode_s,
            self._action_service_s[sent],
            tx_start,
            transfer_s,
            n_bytes,
            rtt_s,
            queue_u,
            server_load,
            channel,
            capacity_bps,
        )
        return device_free, done, energy, gave_up

    def _offloaded(
        self,
        e: np.ndarray,
        s: np.ndarray,
        compute_s: np.ndarray,
        encode_s: np.ndarray,
        service_s: np.ndarray,
        tx_start: np.ndarray,
        transfer_s: np.ndarray,
        n_bytes: np.ndarray,
        rtt_s: float,
        queue_u: float | None,
        server_load: ServerLoad,
        channel: Channel,
        capacity_bps: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The rest of :meth:`serve` for offloads whose transfers were timed at once (arrays over
        them: the action's exit and split, its compute, encode and service seconds, when its
        transfer starts and how long it takes, its payload): when the device is free again, when
        the answer is there, the device's energy and whether the device gave up the transfer."""
        gave_up = np.zeros(tx_start.shape, dtype=bool)
        if self.transfer_timeout_s is not None:
            gave_up = transfer_s > self.transfer_timeout_s
        device_free = tx_start + transfer_s
        at_server = device_free + 0.5 * rtt_s
        # a given-up request never reaches the server: no load to look up where it would have
        loads = server_load.loads(np.where(gave_up, tx_start, at_server)).tolist()
        queue_s = np.array(
            [server_load.queueing_delay(load, self.server_job_s, queue_u) for load in loads]
        )
        slowdown = np.array([server_load.compute_slowdown(load) for load in loads])
        done = self.reply_at(at_server, rtt_s, queue_s, service_s * slowdown)
        if self._radio_power_w is None:
            radio_j = np.array(
                [
                    self.radio_energy_j(size, seconds)
                    for size, seconds in zip(n_bytes.tolist(), transfer_s.tolist(), strict=True)
                ]
            )
        else:
            radio_j = _energy_at_power(self._radio_power_w, n_bytes, transfer_s)
        energy = self.energy_j(compute_s + encode_s, radio_j, done - device_free)
        for i in np.flatnonzero(gave_up).tolist():
            timing = self._give_up(
                int(e[i]),
                int(s[i]),
                float(compute_s[i]),
                float(encode_s[i]),
                float(tx_start[i]),
                int(n_bytes[i]),
                channel,
                capacity_bps,
            )
            device_free[i], done[i], energy[i] = timing[7], timing[8], timing[9]
        return device_free, done, energy, gave_up

    def _give_up(
        self,
        e: int,
        s: int,
        compute_s: float,
        encode_s: float,
        tx_start: float,
        n_bytes: int,
        channel: Channel,
        capacity_bps: float | None,
    ) -> RequestTiming:
        """The timing of a request whose transfer the device gave up at the timeout."""
        timeout_s = self.transfer_timeout_s
        assert timeout_s is not None
        sent = self.bytes_sent(channel, n_bytes, tx_start, timeout_s, capacity_bps)
        rest_s = self._fallback[e][s]
        done = tx_start + timeout_s + rest_s
        energy_j = self.energy_j(
            compute_s + encode_s + rest_s, self.radio_energy_j(sent, timeout_s), 0.0
        )
        bucket = (
            None if self.link is None or not self.link.burst_bytes else (tx_start + timeout_s, 0.0)
        )
        return (
            compute_s + rest_s,
            encode_s,
            timeout_s,
            0.0,
            0.0,
            0.0,
            math.nan,
            done,
            done,
            energy_j,
            bucket,
            True,
        )

    def fallback_s(self, e: int, s: int) -> float:
        """Device seconds of the rest of the model, stages ``[s, k_e)`` and exit ``e``'s head,
        after the device gave up the transfer of an action ``(e, s, b)``."""
        return self._fallback[e][s]

    def bytes_sent(
        self,
        channel: Channel,
        n_bytes: int,
        tx_start: float,
        seconds: float,
        capacity_bps: float | None = None,
    ) -> int:
        """Payload bytes of an ``n_bytes`` payload that crossed the uplink in the first
        ``seconds`` of a transfer that started at ``tx_start``: what the device measures of a
        transfer it gave up. With link overheads, the packets' headers take their share of the
        capacity (a shaper's burst credit is not counted). At least one byte: a measured rate
        stays positive (the device only knows that less than a byte in ``seconds`` got through),
        as every estimate that divides by it needs.

        :param capacity_bps: a constant capacity to assume instead of the channel's
        """
        rate_bps = (
            channel.mean_throughput(tx_start, tx_start + seconds)
            if capacity_bps is None
            else capacity_bps
        )
        wire_bytes = rate_bps * seconds / 8.0
        payload = wire_bytes if self.link is None else self.link.payload_bytes(wire_bytes)
        return max(1, int(min(n_bytes, payload)))

    def predict(
        self,
        start: float,
        payload_bytes: np.ndarray,
        capacity_bps: float,
        load: float,
        rtt_s: float,
        server_load: ServerLoad,
        bucket: ShaperBucket | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Time every canonical action at once from estimates: a constant capacity, a known load,
        one RTT and the mean queueing delay.

        :param start: when the device starts the request (seconds since the episode start)
        :param payload_bytes: the payload of each canonical action (0 when device-only)
        :param capacity_bps: the uplink capacity to assume
        :param load: the server's utilization to assume
        :param rtt_s: the round-trip time to assume
        :param server_load: the server's service model (only its effect of a load is used)
        :param bucket: the link's shaper bucket after the previous transfer (``None``: full)
        :return: per canonical action: when the device is free again, when the answer is there
            (both in seconds since the episode start), the device's energy, and whether the
            device would give up the transfer at the timeout (then it answers itself)
        """
        tx_start = start + self._action_compute_s + self._action_encode_s
        if self.link is None:
            transfer_s = 8.0 * payload_bytes / capacity_bps
        else:
            transfer_s, _, _ = self.link.transfer_at_rate(
                payload_bytes, tx_start, bucket, capacity_bps
            )
            rtt_s += self.link.stack_s
        gave_up = np.zeros(self._device_only.shape, dtype=bool)
        if self.transfer_timeout_s is not None:
            gave_up = transfer_s > self.transfer_timeout_s
            # the radio sends at the assumed capacity until the device gives up, as bytes_sent
            wire_bytes = capacity_bps * self.transfer_timeout_s / 8.0
            delivered = wire_bytes if self.link is None else self.link.payload_bytes(wire_bytes)
            sent = np.maximum(1, np.minimum(payload_bytes, np.floor(delivered)))
            payload_bytes = np.where(gave_up, sent, payload_bytes)
            transfer_s = np.minimum(transfer_s, self.transfer_timeout_s)
        device_free = tx_start + transfer_s
        queue_s = server_load.queueing_delay(load, self.server_job_s, None)
        server_s = self._action_service_s * server_load.compute_slowdown(load)
        done = np.where(
            self._device_only,
            device_free,
            self.reply_at(device_free + 0.5 * rtt_s, rtt_s, queue_s, server_s),
        )
        if self._radio_power_w is None:
            # the network's model takes one transfer at a time
            radio_j = np.array(
                [
                    self.radio_energy_j(n_bytes, seconds)
                    for n_bytes, seconds in zip(
                        payload_bytes.tolist(), transfer_s.tolist(), strict=True
                    )
                ]
            )
        else:
            radio_j = _energy_at_power(self._radio_power_w, payload_bytes, transfer_s)
        busy_s = self._action_compute_s + self._action_encode_s
        if gave_up.any():
            device_free = np.where(gave_up, device_free + self._action_fallback_s, device_free)
            done = np.where(gave_up, device_free, done)
            busy_s = np.where(gave_up, busy_s + self._action_fallback_s, busy_s)
        energy_j = self.energy_j(busy_s, radio_j, done - device_free)
        return device_free, done, energy_j, gave_up

    @staticmethod
    def reply_at(
        at_server: FloatOrArray, rtt_s: float, queue_s: Any, server_s: FloatOrArray
    ) -> FloatOrArray:
        """When the reply reaches the device, for a request that reached the server at ``at_server``
        (``queue_s``: a float, or an array like ``at_server``)."""
        return at_server + queue_s + server_s + 0.5 * rtt_s

    def energy_j(
        self, busy_s: FloatOrArray, radio_j: FloatOrArray, waiting_s: FloatOrArray
    ) -> FloatOrArray:
        """The device's energy: computing and encoding for ``busy_s``, the radio's ``radio_j``, and
        idling for ``waiting_s`` until the reply."""
        return self._compute_power_w * busy_s + radio_j + self._idle_power_w * waiting_s


def _ends(timings: list[RequestTiming]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the numpy forms of :meth:`RequestModel.serve` return, from one timing each: when the
    device is free again, when the answer is there, the device's energy, whether it gave up."""
    columns = np.array([t[7:10] for t in timings], dtype=float).reshape(-1, 3)
    gave_up = np.array([t[11] for t in timings], dtype=bool)
    return columns[:, 0], columns[:, 1], columns[:, 2], gave_up


def _energy_at_power(power_w: float, n_bytes: FloatOrArray, seconds: FloatOrArray) -> FloatOrArray:
    """Energy of drawing ``power_w`` for ``seconds``, whatever the bytes sent."""
    return power_w * seconds


#: a token-bucket shaper's state after a transfer: ``(time, seconds)``, when the transfer ended
#: and the bucket's time then (negative: owed)
ShaperBucket = tuple[float, float]


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
      packet) more per request;
    * the software stack of device and server (socket calls, thread and event-loop hops):
      ``stack_s`` more round trip per offloaded request, a constant measured on the host.

    :param header_bytes_per_packet: header bytes the capacity also carries, per packet.
    :param mss_bytes: payload bytes per packet.
    :param burst_bytes: the shaper's bucket (0: no shaper).
    :param reply_ack_bytes: uplink bytes per request that acknowledge its reply.
    :param stack_s: the software stack's time per offloaded request, added to its round trip.
    """

    header_bytes_per_packet: int = 0
    mss_bytes: int = 1448
    burst_bytes: int = 0
    reply_ack_bytes: int = 0
    stack_s: float = 0.0

    def __post_init__(self) -> None:
        if min(self.header_bytes_per_packet, self.burst_bytes, self.reply_ack_bytes) < 0:
            raise ValueError(
                "header_bytes_per_packet, burst_bytes and reply_ack_bytes must be >= 0, got "
                f"{self.header_bytes_per_packet}, {self.burst_bytes}, {self.reply_ack_bytes}"
            )
        if self.mss_bytes < 1:
            raise ValueError(f"mss_bytes must be >= 1, got {self.mss_bytes}")
        if not (math.isfinite(self.stack_s) and self.stack_s >= 0.0):
            raise ValueError(f"stack_s must be finite and >= 0, got {self.stack_s}")

    def wire_bytes(self, n_bytes: IntOrArray) -> IntOrArray:
        """Bytes the capacity must carry for a request of ``n_bytes`` (with its reply's ACK); 0
        for nothing sent."""
        packets = -(-n_bytes // self.mss_bytes)
        wire = n_bytes + packets * self.header_bytes_per_packet + self.reply_ack_bytes
        return (n_bytes > 0) * wire

    def payload_bytes(self, wire_bytes: FloatOrArray) -> FloatOrArray:
        """Payload bytes in the first ``wire_bytes`` the capacity carried of one transfer (a
        float or an array): full packets of ``mss_bytes``, then the part of the last one past its
        header."""
        packet = self.mss_bytes + self.header_bytes_per_packet
        full, rest = np.divmod(np.maximum(wire_bytes, 0.0), packet)
        return full * self.mss_bytes + np.maximum(rest - self.header_bytes_per_packet, 0.0)

    def transfer(
        self,
        channel: Channel,
        n_bytes: int,
        t0: float,
        bucket: ShaperBucket | None,
        capacity_bps: float | None = None,
    ) -> tuple[float, ShaperBucket | None]:
        """Seconds to deliver ``n_bytes`` starting at ``t0``, and the shaper's bucket after it.

        :param channel: the uplink, whose capacity the transfer integrates.
        :param n_bytes: payload bytes.
        :param t0: start of the transfer (seconds since the channel's start).
        :param bucket: the shaper's bucket when the previous transfer ended; ``None``: full (no
            transfer yet).
        :param capacity_bps: a constant capacity to assume instead of the channel's
            (:meth:`transfer_at_rate`).
        :return: the duration and the bucket at its end (``None`` without a shaper).
        """
        if capacity_bps is not None:
            seconds, ended, left_s = self.transfer_at_rate(n_bytes, t0, bucket, capacity_bps)
            return float(seconds), (float(ended), float(left_s)) if self.burst_bytes else None
        wire = self.wire_bytes(n_bytes)
        if not self.burst_bytes or wire == 0:
            return channel.transfer_time(wire, t0), bucket
        since, credit_s = (-math.inf, math.inf) if bucket is None else bucket
        # a transfer that starts before the previous one left queues behind it; in an outage
        # nothing leaves before the capacity returns
        start = max(t0, since)
        if channel.capacity(start) == 0.0:
            start += channel.transfer_time(1, start)
        rate_bps = channel.capacity(start) or channel.capacity(start - 1e-9)
        needed, last_packet, tokens = self._shaper_debt(
            n_bytes, wire, credit_s + start - since, rate_bps
        )
        if needed <= 0:
            return start - t0, (start, 8.0 * (tokens - wire) / rate_bps)
        end = start + channel.transfer_time(math.ceil(needed), start)
        end_rate_bps = channel.capacity(end) or channel.capacity(end - 1e-9)
        return end - t0, (end, -8.0 * last_packet / end_rate_bps)

    def transfer_at_rate(
        self,
        n_bytes: float | np.ndarray,
        t0: float | np.ndarray,
        bucket: ShaperBucket | None,
        capacity_bps: float,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`transfer` at a constant ``capacity_bps``, on one request or an array of them
        (every one after the same previous transfer).

        :return: the duration, and the bucket at its end as its two parts (without a shaper:
            the end and 0); arrays of the shape of ``n_bytes`` and ``t0``
        """
        wire = self.wire_bytes(np.asarray(n_bytes))
        if not self.burst_bytes:
            seconds = 8.0 * wire / capacity_bps
            return seconds, t0 + seconds, 0.0 * seconds
        since, credit_s = (-math.inf, math.inf) if bucket is None else bucket
        start = np.maximum(t0, since)
        needed, last_packet, tokens = self._shaper_debt(
            n_bytes, wire, credit_s + (start - since), capacity_bps
        )
        sending = needed > 0
        end = start + sending * 8.0 * np.ceil(needed) / capacity_bps
        left_s = np.where(sending, -8.0 * last_packet, 8.0 * (tokens - wire)) / capacity_bps
        # nothing sent: no time, and the bucket as it was
        sent = wire > 0
        return (
            np.where(sent, end - t0, 0.0),
            np.where(sent, end, since),
            np.where(sent, left_s, credit_s),
        )

    def _shaper_debt(
        self,
        n_bytes: float | np.ndarray,
        wire: float | np.ndarray,
        credit_s: float | np.ndarray,
        rate_bps: float,
    ) -> tuple[Any, Any, Any]:
        """The bytes that wait for tokens, the last packet's bytes (which leave on a non-empty
        bucket) and the tokens in the bucket at the transfer's start: floats or arrays, as
        ``n_bytes`` and ``credit_s``."""
        tokens = np.minimum(credit_s * rate_bps / 8.0, float(self.burst_bytes))
        last_packet = n_bytes - (n_bytes - 1) // self.mss_bytes * self.mss_bytes
        last_packet = last_packet + self.header_bytes_per_packet
        return wire - last_packet - tokens, last_packet, tokens
