"""A sender that paces its bytes to a bandwidth trace, so that a real socket sees the trace's uplink.

The pacer is a token bucket whose tokens are the bits the trace's capacity delivers: it starts
empty when a transfer begins, fills at the capacity of the trace at that moment (integrated over
every change of rate), and a chunk of ``chunk_bytes`` leaves as soon as the bucket holds all its
bits. The last chunk therefore leaves exactly when the environment's channel
(:meth:`~splitrl.envs.channels.base.PiecewiseConstantChannel.transfer_time`, the same code) says
the transfer ends, and the transfer time the device measures is what the trace allows plus the
socket's own (small) cost.

The trace's time 0 is the pacer's ``epoch`` (by default the moment it is created); the trace loops.

On loopback the trace is also what the device's radio would measure: :class:`TraceLinkQuality`
reports the link rate from it exactly as the environment does from its channel.
"""

from __future__ import annotations

import math
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from splitrl.envs.channels.base import Channel
from splitrl.envs.channels.trace_replay import TraceChannel
from splitrl.envs.link_quality import LinkQualityModel, LinkQualityReport
from splitrl.envs.traces import Trace

DEFAULT_CHUNK_BYTES = 2048


@dataclass(frozen=True)
class TransferTiming:
    """One paced transfer.

    :param n_bytes: bytes sent.
    :param start_s: when the transfer began, seconds since the pacer's epoch.
    :param end_s: when its last byte was handed to the socket, or when the sender gave up.
    :param gave_up: the sender stopped at its timeout; ``n_bytes`` is what it had sent by then.
    """

    n_bytes: int
    start_s: float
    end_s: float
    gave_up: bool = False

    @property
    def duration_s(self) -> float:
        """Measured transfer time."""
        return self.end_s - self.start_s


class TracePacer:
    """Send bytes no faster than a trace's capacity.

    :param trace: the uplink capacity over time.
    :param chunk_bytes: size of the chunks released onto the socket (1-4 kB keeps the pacing smooth
        without a system call per packet).
    :param scale: factor applied to every rate of the trace.
    :param clock: monotonic clock in seconds.
    """

    def __init__(
        self,
        trace: Trace,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        scale: float = 1.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        self.trace = trace
        self.chunk_bytes = chunk_bytes
        self.clock = clock
        self.channel = TraceChannel(trace, scale=scale, random_start=False)
        self.channel.reset(np.random.default_rng(0))
        self.epoch = clock()

    def restart(self, epoch: float | None = None) -> None:
        """Put the trace's time 0 at ``epoch`` (default: now)."""
        self.channel.reset(np.random.default_rng(0))
        self.epoch = self.clock() if epoch is None else epoch

    def now(self) -> float:
        """Seconds since the epoch."""
        return self.clock() - self.epoch

    def release_offsets(self, n_bytes: int, start_s: float) -> list[tuple[int, float]]:
        """Where each chunk ends and when it may leave, for a transfer starting at ``start_s``.

        :return: ``(end byte offset, release time in seconds since the epoch)`` per chunk.
        """
        ends = [*range(self.chunk_bytes, n_bytes, self.chunk_bytes), n_bytes]
        return [(end, start_s + self.channel.transfer_time(end, start_s)) for end in ends]

    def send(
        self, sock: socket.socket, data: bytes, timeout_s: float | None = None
    ) -> TransferTiming:
        """Send ``data`` on a blocking socket, paced to the trace; returns the measured timing.

        :param timeout_s: give up once the next chunk would leave more than this many seconds
            after the transfer began, or a chunk the socket does not take by then (a server that
            stops reading); the timing then says so, with the bytes sent by then
        """
        start = self.now()
        deadline = math.inf if timeout_s is None else start + timeout_s
        view = memoryview(data)
        sent = 0
        for end, release in self.release_offsets(len(data), start):
            if release > deadline:
                delay = deadline - self.now()
                if delay > 0:
                    time.sleep(delay)
                return TransferTiming(sent, start, self.now(), gave_up=True)
            delay = release - self.now()
            if delay > 0:
                time.sleep(delay)
            if timeout_s is None:
                sock.sendall(view[sent:end])
                sent = end
                continue
            sent += send_before(sock, view[sent:end], self.now, deadline)
            if sent < end:
                return TransferTiming(sent, start, self.now(), gave_up=True)
        return TransferTiming(len(data), start, self.now())


def send_before(
    sock: socket.socket, data: memoryview | bytes, clock: Callable[[], float], deadline: float
) -> int:
    """Send ``data`` on a blocking socket unless ``deadline`` (on ``clock``) passes first;
    returns the bytes sent. The socket stays blocking for the reply reader that shares it: each
    send waits for room with ``select`` and does not block."""
    view = memoryview(data)
    sent = 0
    while sent < len(view):
        remaining = deadline - clock()
        if remaining <= 0 or not select.select([], [sock], [], remaining)[1]:
            break
        try:
            sent += sock.send(view[sent:], socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
    return sent


class TraceLinkQuality:
    """The radio's link-rate report on loopback: the environment's model on the paced trace.

    A callable ``now_s -> bit/s`` for :class:`~splitrl.runtime.device.DeviceRuntime`: one report per
    request, from the trace's capacity ``delay_s`` before ``now_s`` and the model's error, as
    :class:`~splitrl.envs.link_quality.LinkQualityReport` computes it in the environment.

    :param channel: the true capacity, with time 0 at the start of the run (``TracePacer.channel``)
    :param model: the policy's link-quality model (``PolicyMetadata.link_quality``)
    :param frame_interval_s: the request period
    :param seed: seed of the error
    """

    def __init__(
        self, channel: Channel, model: LinkQualityModel, frame_interval_s: float, seed: int = 0
    ) -> None:
        self.channel = channel
        self.report = LinkQualityReport(model, frame_interval_s, seed)

    def __call__(self, now_s: float) -> float:
        """The report for the request decided at ``now_s`` (seconds since the run started)."""
        return self.report.report(self.channel.capacity, now_s)
