"""The device runtime and the ``splitrl run-device`` subcommand.

For every request (a camera frame arriving every ``frame_interval_s``) the device

1. builds the observation with :class:`splitrl.envs.observation.DeviceKnowledge`, the same object
   the environment uses, fed only with what the device itself measured: the throughput of its own
   paced transfers and their end time, the link rate its radio reports (a user callback on a real
   radio, :class:`~splitrl.runtime.pacing.TraceLinkQuality` on loopback), the latency and server
   load of the replies that have arrived, and how long the request waited for the device (backlog);
   for a policy that observes predicted values (``sacd-prior``, ``sacd-hindsight``), it appends
   the predicted value of every action by the rule it was trained with (robust-mpc or mpc),
   computed from that knowledge by :class:`splitrl.agents.features.DeviceActionValues`, the same
   code as in training;
2. asks the policy for ``(exit, split, bits)`` and executes its canonical form;
3. runs stages ``[0, min(s, k_e))`` with onnxruntime; device-only requests finish locally at the
   exit head, the others encode the split tensor with :mod:`splitrl.codecs` and send it, paced to
   the uplink trace, to the edge server. With a transfer timeout (the scenario's, recorded in the
   export), a send still running after it is given up: the device reconnects and runs the rest of
   the model up to the exit itself, on the tensor it kept, as the environment's time model does.

The device is busy until its transfer ends (or its local compute ends), as in the environment's
time model; replies are read by a background thread, so a reply can arrive while the next request
is being computed. It depends on numpy, onnxruntime and splitrl's numpy-only modules, not on torch.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import queue
import socket
import statistics
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from splitrl.agents.features import DeviceActionValues
from splitrl.codecs import encode
from splitrl.envs.actions import ActionTable, exits_passed_on_device
from splitrl.envs.exit_gate import exit_gate_of
from splitrl.envs.link_quality import LinkQualityModel
from splitrl.envs.observation import DeviceKnowledge
from splitrl.envs.traces import Trace, load_trace
from splitrl.runtime.pacing import (
    DEFAULT_CHUNK_BYTES,
    TraceLinkQuality,
    TracePacer,
    TransferTiming,
    send_before,
)
from splitrl.runtime.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ProtocolError,
    Reply,
    Request,
    frame_message,
    recv_message,
)
from splitrl.runtime.segments import SegmentRunner, softmax_prediction

Policy = Callable[[np.ndarray], Sequence[int]]
"""Anything that maps an observation to ``(exit, split, bits)``, e.g. :class:`OnnxPolicy`."""

LinkQualitySource = Callable[[float], float]
"""The radio's link-rate report: seconds since the run started -> uplink rate in bit/s.

Called once per request, just before the decision, so it must return at once without sending
anything (``docs/deploy.md``: the callback's contract).
"""


class DeviceError(RuntimeError):
    """The device lost its server connection or a reply never came."""


#: how often a send ``until_acked`` looks at the socket's send queue
ACK_POLL_S = 0.0001


def unacknowledged_bytes(sock: socket.socket) -> int:
    """Bytes of ``sock``'s send queue the peer has not acknowledged yet (Linux ``SIOCOUTQ``)."""
    import fcntl  # Linux only, like the send queue's ioctl
    import termios

    queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4))
    return int(struct.unpack("i", queued)[0])


class ServerConnection:
    """A blocking TCP connection to the edge server with a paced sender and a reply reader thread.

    :param address: ``(host, port)`` of the server.
    :param pacer: paces every request to an uplink trace; ``None`` sends as fast as the socket
        allows (the measured transfer time is then the socket's).
    :param timeout_s: connect timeout.
    :param send_buffer_bytes: ``SO_SNDBUF`` to request; a small buffer makes the time to hand the
        bytes to the socket close to the time to push them through a shaped link.
    :param until_acked: a send returns once the server has acknowledged every byte (the socket's
        send queue is empty), not when the bytes are in the socket's buffer: on a real or shaped
        link, that is when the transfer ended (Linux).
    :param connect: opens the socket, ``(address, timeout_s) -> socket`` (e.g.
        :meth:`splitrl.runtime.netem.ShapedLink.connect` from another network namespace).

    A send given up at its timeout leaves a partial message in the stream: :meth:`abandon` resets
    the connection (its unsent bytes are dropped, so the uplink is free at once), and the next
    :meth:`send` opens a new one, within that send's timeout.
    """

    def __init__(
        self,
        address: tuple[str, int],
        pacer: TracePacer | None = None,
        timeout_s: float = 10.0,
        send_buffer_bytes: int | None = None,
        until_acked: bool = False,
        connect: Callable[[tuple[str, int], float], socket.socket] = socket.create_connection,
    ) -> None:
        self.pacer = pacer
        self.until_acked = until_acked
        self.address = address
        self.timeout_s = timeout_s
        self.send_buffer_bytes = send_buffer_bytes
        self._connect = connect
        self.sock: socket.socket | None = None
        self.replies: queue.Queue[tuple[Reply, float] | BaseException] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._open(timeout_s)

    def _open(self, connect_timeout_s: float) -> socket.socket:
        sock = self._connect(self.address, connect_timeout_s)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.send_buffer_bytes is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes)
        self.sock = sock
        self.replies = queue.Queue()
        self._reader = threading.Thread(
            target=self._read_replies, args=(sock, self.replies), daemon=True
        )
        self._reader.start()
        return sock

    def send(
        self, request: Request, clock: Callable[[], float], timeout_s: float | None = None
    ) -> TransferTiming:
        """Send one request; returns when its last byte was handed to the socket (or, with
        ``until_acked``, acknowledged), or when the send was given up.

        :param request: the request.
        :param clock: the device's clock (seconds since its epoch) for the timing of an unpaced
            send; a pacer times with its own epoch, which :meth:`DeviceRuntime.run` aligns.
        :param timeout_s: give up a send still running after this many seconds: the timing
            says so (``gave_up``) with the bytes handed over by then (acknowledged, with
            ``until_acked``); the connection then carries a partial message until
            :meth:`abandon`. After :meth:`abandon`, opening the new connection counts against
            it, and a connection that cannot be opened in time is a given-up send of no bytes.
        """
        message = frame_message(request.encode())
        start = clock()
        sock = self.sock
        if sock is None:
            try:
                sock = self._open(self.timeout_s if timeout_s is None else timeout_s)
            except OSError:
                if timeout_s is None:
                    raise
                return TransferTiming(0, start, clock(), gave_up=True)
        remaining = None if timeout_s is None else max(0.0, timeout_s - (clock() - start))
        if self.pacer is not None:
            timing = self.pacer.send(sock, message, remaining)
        elif remaining is None:
            sock.sendall(message)
            timing = TransferTiming(len(message), start, clock())
        else:
            sent = send_before(sock, message, clock, clock() + remaining)
            timing = TransferTiming(sent, start, clock(), gave_up=sent < len(message))
        if timing.gave_up or not self.until_acked:
            return TransferTiming(timing.n_bytes, start, timing.end_s, timing.gave_up)
        deadline = math.inf if timeout_s is None else start + timeout_s
        while (unacked := unacknowledged_bytes(sock)) > 0:
            if clock() >= deadline:
                return TransferTiming(len(message) - unacked, start, clock(), True)
            time.sleep(ACK_POLL_S)
        return TransferTiming(timing.n_bytes, start, clock())

    def abandon(self) -> None:
        """Reset the connection after a given-up send: its unsent bytes are dropped and replies
        still due on it are lost; the next :meth:`send` opens a new one."""
        sock, self.sock = self.sock, None
        if sock is None:
            return
        # linger 0: close with a reset, not by sending what the socket still holds
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        self.replies = queue.Queue()

    @staticmethod
    def _read_replies(
        sock: socket.socket, replies: queue.Queue[tuple[Reply, float] | BaseException]
    ) -> None:
        try:
            while True:
                body = recv_message(sock, max_bytes=DEFAULT_MAX_MESSAGE_BYTES)
                replies.put((Reply.decode(body), time.perf_counter()))
        except (OSError, ProtocolError) as error:
            replies.put(error)

    def close(self) -> None:
        """Close the connection."""
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if self._reader is not None:
            self._reader.join(timeout=5.0)


@dataclass
class RequestRecord:
    """What happened to one request (one line of the device's JSONL log).

    Times are seconds; ``arrival_s`` counts from the start of the run. ``transfer_s`` is the
    measured time to send the whole message, ``server_receive_s`` the time from its first byte to
    its last at the server, ``server_s`` the server's own time from reading the request to
    replying (queue + decode + compute) and ``latency_s`` the end-to-end latency from the frame's
    arrival to the answer. ``gave_up``: the send was given up at the transfer timeout and the
    device answered itself (``transfer_s`` is then the time until it gave up, ``device_compute_s``
    includes the rest of the model). ``gate_exit``: the early exit where the confidence gate
    stopped the request (``action`` is the one chosen; the request was answered on the device),
    ``None`` where it went on or without a gate.
    """

    request_id: int
    arrival_s: float
    action: tuple[int, int, int]
    label: str
    observation: list[float]
    device_only: bool
    wait_s: float = 0.0
    decision_s: float = 0.0
    device_compute_s: float = 0.0
    encode_s: float = 0.0
    payload_bytes: int = 0
    message_bytes: int = 0
    transfer_s: float = 0.0
    server_queue_s: float = 0.0
    server_decode_s: float = 0.0
    server_compute_s: float = 0.0
    server_s: float = 0.0
    server_receive_s: float = math.nan
    server_load: float | None = None
    latency_s: float = math.nan
    predicted: int | None = None
    confidence: float | None = None
    truth: int | None = None
    correct: bool | None = None
    status: str = "pending"
    gave_up: bool = False
    gate_exit: int | None = None

    def to_json(self) -> str:
        """One JSON line."""
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class RunSummary:
    """Aggregate of a device run."""

    requests: int
    completed: int
    errors: int
    accuracy: float
    median_latency_s: float
    p95_latency_s: float
    mean_payload_bytes: float
    offloaded_fraction: float
    gave_up: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    gated: int = 0

    @classmethod
    def of(cls, records: Sequence[RequestRecord]) -> RunSummary:
        """Summarize ``records``."""
        done = [r for r in records if r.status == "ok"]
        latencies = sorted(r.latency_s for r in done)
        judged = [r.correct for r in done if r.correct is not None]
        return cls(
            requests=len(records),
            completed=len(done),
            errors=len(records) - len(done),
            accuracy=float(np.mean(judged)) if judged else math.nan,
            median_latency_s=statistics.median(latencies) if latencies else math.nan,
            p95_latency_s=float(np.percentile(latencies, 95)) if latencies else math.nan,
            mean_payload_bytes=float(np.mean([r.payload_bytes for r in records]))
            if records
            else math.nan,
            offloaded_fraction=float(np.mean([not r.device_only for r in records]))
            if records
            else math.nan,
            gave_up=sum(r.gave_up for r in records),
            actions=dict(Counter(r.label for r in records).most_common()),
            gated=sum(r.gate_exit is not None for r in records),
        )


class DeviceRuntime:
    """Run requests on the device, deciding each with a policy.

    :param segments: runs the device's stages and exit heads (:class:`OnnxSegments`).
    :param policy: observation -> ``(exit, split, bits)``.
    :param actions: the action table of the policy.
    :param knowledge: the observation state (:meth:`PolicyMetadata.device_knowledge`).
    :param connection: the server connection; ``None`` allows device-only actions only.
    :param codec: keyword settings of :func:`splitrl.codecs.encode` (the profile's).
    :param reply_timeout_s: how long to wait for the last replies at the end of a run.
    :param link_quality: the radio's link-rate report; required when the policy observes link
        quality (``knowledge.layout.link_quality``), refused otherwise.
    :param features: the predicted-value features the policy observes after the observation
        (:func:`~splitrl.runtime.exported_policy.load_device_features`), built around
        ``knowledge``; ``None`` for a policy that observes the observation alone.
    :param transfer_timeout_s: give up a send still running after this many seconds and answer
        the request on the device (the policy's scenario's, ``PolicyMetadata.transfer_timeout_s``);
        ``None``: wait for every send.
    :param exit_gate: the confidence gate at the early exits (the policy's scenario's,
        ``PolicyMetadata.exit_gate``): a request whose action computes an earlier exit on the
        device stops there when the exit's softmax confidence is above it; ``None``: no gate.
    """

    def __init__(
        self,
        segments: SegmentRunner,
        policy: Policy,
        actions: ActionTable,
        knowledge: DeviceKnowledge,
        connection: ServerConnection | None = None,
        codec: dict[str, Any] | None = None,
        reply_timeout_s: float = 30.0,
        link_quality: LinkQualitySource | None = None,
        features: DeviceActionValues | None = None,
        transfer_timeout_s: float | None = None,
        exit_gate: float | None = None,
    ) -> None:
        exit_gate = exit_gate_of(exit_gate)
        if transfer_timeout_s is not None and not (
            math.isfinite(transfer_timeout_s) and transfer_timeout_s > 0
        ):
            raise ValueError(
                f"transfer_timeout_s must be a positive number of seconds or None, got "
                f"{transfer_timeout_s!r}"
            )
        if features is not None and features.forecast.knowledge is not knowledge:
            raise ValueError("the features must read the runtime's own knowledge")
        if knowledge.layout.link_quality != (link_quality is not None):
            raise ValueError(
                "the policy observes link quality: give the runtime the radio's link-rate report"
                if link_quality is None
                else "the policy does not observe link quality, but a link-quality source was given"
            )
        if segments.exit_stages != actions.exit_stages:
            raise ValueError(
                f"segments have exits after stages {segments.exit_stages}, the policy's action "
                f"table {actions.exit_stages}"
            )
        self.segments = segments
        self.policy = policy
        self.actions = actions
        self.knowledge = knowledge
        self.connection = connection
        self.codec = dict(codec or {})
        self.reply_timeout_s = reply_timeout_s
        self.link_quality = link_quality
        self.features = features
        self.transfer_timeout_s = transfer_timeout_s
        self.exit_gate = exit_gate
        self.epoch = time.perf_counter()
        self._pending: dict[int, RequestRecord] = {}

    def now(self) -> float:
        """Seconds since the start of the run."""
        return time.perf_counter() - self.epoch

    def run(
        self,
        samples: Iterable[tuple[np.ndarray, int | None]],
        frame_interval_s: float,
        epoch: float | None = None,
    ) -> list[RequestRecord]:
        """Serve one request per sample, frames arriving every ``frame_interval_s``.

        :param samples: ``(input, label)`` pairs; the input has the model's per-sample shape.
        :param frame_interval_s: time between frame arrivals.
        :param epoch: ``time.perf_counter()`` at which the first frame arrives, to align the run
            with a link shaped to a trace (default: now).
        :return: one record per request, in request order.
        :raises DeviceError: the connection broke.
        """
        self.knowledge.reset()
        if self.features is not None:
            self.features.reset()
        self.epoch = time.perf_counter() if epoch is None else epoch
        if self.connection is not None and self.connection.pacer is not None:
            self.connection.pacer.restart(self.epoch)
        records = []
        for request_id, (x, label) in enumerate(samples):
            arrival = request_id * frame_interval_s
            delay = arrival - self.now()
            if delay > 0:
                time.sleep(delay)
            records.append(self._serve(request_id, arrival, x, label))
        self._collect_replies(wait_until=self.now() + self.reply_timeout_s)
        for record in self._pending.values():
            record.status = "lost"
        self._pending.clear()
        return records

    def _serve(
        self, request_id: int, arrival: float, x: np.ndarray, label: int | None
    ) -> RequestRecord:
        self._collect_replies()
        start = self.now()
        observation = self.knowledge.observe(start, start - arrival, self._link_quality(start))
        if self.features is not None:
            observation = self.features.extend(observation, arrival, start)
        e, s, b = self.actions.canonical(*self.actions.validate(self.policy(observation)))
        decided = self.now()
        k_e = self.actions.exit_stages[e]
        record = RequestRecord(
            request_id=request_id,
            arrival_s=arrival,
            action=(e, s, b),
            label=self.actions.label(e, s, b),
            observation=[float(v) for v in observation],
            device_only=self.actions.is_device_only(e, s),
            wait_s=start - arrival,
            decision_s=decided - start,
            truth=None if label is None else int(label),
        )
        batch, computed_to = np.asarray(x)[None], 0
        if self.exit_gate is not None:
            batch, computed_to = self._through_gate(record, batch, e, s, decided)
            if record.gate_exit is not None:
                return record
        if record.device_only:
            logits = self.segments.run_exit(self.segments.run_stages(batch, computed_to, k_e), e)
            done = self.now()
            record.device_compute_s = done - decided
            record.latency_s = done - arrival
            self._finish(record, *softmax_prediction(logits[0]))
            self.knowledge.record_completion(done, record.latency_s, None)
            return record
        if self.connection is None:
            raise DeviceError(f"action {record.label} offloads, but there is no server connection")
        tensor = self.segments.run_stages(batch, computed_to, s)[0] if s > computed_to else batch[0]
        computed = self.now()
        frame = encode(tensor, self.actions.bit_options[b], **self.codec)
        encoded = self.now()
        record.device_compute_s = computed - decided
        record.encode_s = encoded - computed
        record.payload_bytes = len(frame)
        self._pending[request_id] = record
        try:
            timing = self.connection.send(
                Request(request_id, e, s, frame), self.now, self.transfer_timeout_s
            )
        except OSError as error:
            raise DeviceError(f"sending request {request_id} failed: {error}") from error
        record.message_bytes = timing.n_bytes
        record.transfer_s = timing.duration_s
        # a rate measured over a given-up send stays positive, as in the environment
        self.knowledge.record_transfer(max(timing.n_bytes, 1), timing.duration_s, timing.end_s)
        if timing.gave_up:
            # a reply that made it before the send was given up (until_acked) is taken first
            self._collect_replies()
            answered = self._pending.pop(request_id, None) is None
            self._abandon_connection()
            if not answered:
                self._answer_on_device(record, tensor, e, s, k_e)
        return record

    def _through_gate(
        self, record: RequestRecord, batch: np.ndarray, e: int, s: int, decided: float
    ) -> tuple[np.ndarray, int]:
        """Compute the early exits the action ``(e, s)`` passes on the device, in order, and stop
        at the first whose confidence clears the gate (``record`` is then answered).

        :return: the tensor after the last stage computed, and that stage
        """
        assert self.exit_gate is not None
        computed_to = 0
        for g in exits_passed_on_device(self.actions.exit_stages, e, s):
            k_g = self.actions.exit_stages[g]
            batch = self.segments.run_stages(batch, computed_to, k_g)
            computed_to = k_g
            predicted, confidence = softmax_prediction(self.segments.run_exit(batch, g)[0])
            if confidence > self.exit_gate:
                done = self.now()
                record.gate_exit = g
                record.device_only = True
                record.device_compute_s = done - decided
                record.latency_s = done - record.arrival_s
                self._finish(record, predicted, confidence)
                self.knowledge.record_completion(done, record.latency_s, None)
                break
        return batch, computed_to

    def _abandon_connection(self) -> None:
        """Reset the connection after a given-up send (it holds a partial message); the
        requests still waiting for a reply on it are lost."""
        assert self.connection is not None
        for pending in self._pending.values():
            pending.status = "lost: the connection was reset after a given-up send"
        self._pending.clear()
        self.connection.abandon()

    def _answer_on_device(
        self, record: RequestRecord, tensor: np.ndarray, e: int, s: int, k_e: int
    ) -> None:
        """After a given-up send: run stages ``[s, k_e)`` and exit ``e``'s head on the device's
        own, unquantized tensor."""
        started = self.now()
        logits = self.segments.run_exit(self.segments.run_stages(tensor[None], s, k_e), e)
        done = self.now()
        record.gave_up = True
        record.device_compute_s += done - started
        record.latency_s = done - record.arrival_s
        self._finish(record, *softmax_prediction(logits[0]))
        self.knowledge.record_completion(done, record.latency_s, None)

    def _link_quality(self, now: float) -> float | None:
        if self.link_quality is None:
            return None
        reported = self.link_quality(now)
        try:
            rate = float(reported)
        except (TypeError, ValueError):
            rate = math.nan
        if not (math.isfinite(rate) and rate >= 0.0):
            raise DeviceError(
                f"the link-quality source returned {reported!r}; it must return a rate in bit/s "
                "(a finite number >= 0)"
            )
        return rate

    def _finish(self, record: RequestRecord, predicted: int, confidence: float) -> None:
        record.predicted = predicted
        record.confidence = confidence
        record.correct = None if record.truth is None else predicted == record.truth
        record.status = "ok"

    def _collect_replies(self, wait_until: float | None = None) -> None:
        """Take in the replies that arrived; with ``wait_until``, wait for every pending one
        until that time."""
        if self.connection is None:
            return
        replies = self.connection.replies
        while True:
            try:
                if wait_until is None:
                    item = replies.get_nowait()
                else:
                    remaining = wait_until - self.now()
                    if not self._pending or remaining <= 0:
                        return
                    item = replies.get(timeout=remaining)
            except queue.Empty:
                return
            if isinstance(item, BaseException):
                if self._pending:
                    raise DeviceError(f"lost the server connection: {item!r}") from item
                return
            reply, received = item
            self._take_reply(reply, received - self.epoch)

    def _take_reply(self, reply: Reply, received: float) -> None:
        record = self._pending.pop(reply.request_id, None)
        if record is None:
            raise DeviceError(f"reply for unknown request {reply.request_id}: {reply.error}")
        record.latency_s = received - record.arrival_s
        record.server_queue_s = reply.queue_s
        record.server_decode_s = reply.decode_s
        record.server_compute_s = reply.compute_s
        record.server_s = reply.service_s
        record.server_receive_s = reply.receive_s
        record.server_load = reply.server_load
        if reply.ok:
            self._finish(record, reply.predicted, reply.confidence)
        else:
            record.status = f"{reply.status.name.lower()}: {reply.error}"
            record.correct = False
        self.knowledge.record_completion(received, record.latency_s, reply.server_load)


# ---------------------------------------------------------------------- command line
def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--server must be HOST:PORT, got {text!r}")
    return host, int(port)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``splitrl run-device``."""
    parser.add_argument("--server", required=True, help="HOST:PORT of `splitrl serve`")
    parser.add_argument("--export", required=True, type=Path, help="directory of `splitrl export`")
    parser.add_argument("--trace", type=Path, help="uplink trace to pace the sender to")
    parser.add_argument("--trace-scale", type=float, default=1.0, help="factor on the trace rates")
    parser.add_argument("--requests", type=int, default=200, help="number of requests")
    parser.add_argument(
        "--frame-interval", type=float, help="seconds between frames (default: the policy's)"
    )
    parser.add_argument("--first-sample", type=int, default=0, help="first test canvas to use")
    parser.add_argument("--data-dir", type=Path, help="Fashion-MNIST directory")
    parser.add_argument("--chunk-bytes", type=int, default=DEFAULT_CHUNK_BYTES, help="pacing chunk")
    parser.add_argument("--out", type=Path, help="JSONL log of every request")
    parser.add_argument(
        "--link-quality",
        metavar="MODULE:FUNCTION",
        help="the radio's link-rate report, a function now_s -> bit/s (default with --trace: "
        "the trace, with the policy's link-quality error)",
    )
    parser.add_argument(
        "--link-quality-seed", type=int, default=0, help="seed of the error added to the trace"
    )
    parser.add_argument(
        "--transfer-timeout",
        type=transfer_timeout_argument,
        metavar="SECONDS|none",
        help="give up a send after SECONDS and answer on the device; none: wait for every send "
        "(default: the policy's scenario's)",
    )


#: ``--transfer-timeout none``: wait for every send, whatever the policy's scenario says
NO_TIMEOUT = "none"


def transfer_timeout_argument(text: str) -> float | str:
    """``--transfer-timeout``: a positive number of seconds, or ``none``."""
    if text.strip().lower() == NO_TIMEOUT:
        return NO_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(
            f"must be a positive number of seconds or {NO_TIMEOUT!r}, got {text!r}"
        )
    return seconds


def load_link_quality_callback(spec: str) -> LinkQualitySource:
    """The function ``MODULE:FUNCTION`` names (``--link-quality``).

    :raises ValueError: a malformed spec, a module that does not import or a missing function.
    """
    module_name, sep, function_name = spec.partition(":")
    if not (sep and module_name and function_name):
        raise ValueError(f"--link-quality must be MODULE:FUNCTION, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"--link-quality: cannot import {module_name!r} ({error})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"--link-quality: {module_name!r} has no function {function_name!r}")
    source: LinkQualitySource = function
    return source


def link_quality_source(
    model: LinkQualityModel | None,
    callback: str | None,
    pacer: TracePacer | None,
    frame_interval_s: float,
    seed: int = 0,
) -> LinkQualitySource | None:
    """Where the runtime gets the radio's link-rate report for a policy.

    :param model: the policy's link-quality model (``None``: it does not observe link quality)
    :param callback: ``MODULE:FUNCTION`` of a real radio's report, preferred when given
    :param pacer: on loopback, the paced trace: the report is computed from it as in the env
    :param frame_interval_s: the request period
    :param seed: seed of the error added to the trace
    :raises ValueError: the policy needs a report and there is no source, or it needs none
    """
    if model is None:
        if callback is not None:
            raise ValueError("--link-quality: this policy does not observe link quality")
        return None
    if callback is not None:
        return load_link_quality_callback(callback)
    if pacer is not None:
        return TraceLinkQuality(pacer.channel, model, frame_interval_s, seed)
    raise ValueError(
        "this policy observes link quality: pass --link-quality MODULE:FUNCTION (the radio's "
        "link-rate report in bit/s) or --trace (loopback)"
    )


def load_test_canvases(
    first: int, count: int, data_dir: Path | None
) -> Iterable[tuple[np.ndarray, int]]:
    """The canonical test canvases ``first .. first + count - 1`` with their labels.

    :raises FileNotFoundError: the Fashion-MNIST files are missing.
    """
    # The canvas renderer is numpy code, but its module also defines a torch Dataset.
    from splitrl.models.canvas import TEST_CANVAS_SEED, CanvasDataset
    from splitrl.models.fashion_mnist import IdxFormatError

    try:
        dataset = CanvasDataset.from_fashion_mnist("test", seed=TEST_CANVAS_SEED, data_dir=data_dir)
    except IdxFormatError as error:
        raise FileNotFoundError(
            f"the Fashion-MNIST test set is needed for the canvases ({error}); "
            "pass --data-dir or install it under /usr/share/datasets/fashion-mnist"
        ) from None
    if not (0 <= first and first + count <= len(dataset)):
        raise ValueError(
            f"samples {first}..{first + count - 1} exceed the {len(dataset)} test canvases"
        )
    for index in range(first, first + count):
        yield dataset.render(index)[0], int(dataset.labels[index])


def run(args: argparse.Namespace) -> int:
    """Run requests against a server and log them."""
    from splitrl.runtime.exported_policy import OnnxPolicy, load_device_features
    from splitrl.runtime.segments import OnnxSegments

    if args.requests < 1:
        raise ValueError(f"--requests must be at least 1, got {args.requests}")
    address = parse_address(args.server)
    policy = OnnxPolicy(args.export)
    metadata = policy.metadata
    interval = metadata.frame_interval_s if args.frame_interval is None else args.frame_interval
    if not interval > 0:
        raise ValueError(f"--frame-interval must be positive, got {interval}")
    trace: Trace | None = load_trace(args.trace) if args.trace is not None else None
    pacer = TracePacer(trace, args.chunk_bytes, args.trace_scale) if trace is not None else None
    link_quality = link_quality_source(
        metadata.link_quality, args.link_quality, pacer, interval, args.link_quality_seed
    )
    timeout = (
        metadata.transfer_timeout_s
        if args.transfer_timeout is None
        else None
        if args.transfer_timeout == NO_TIMEOUT
        else args.transfer_timeout
    )
    knowledge = metadata.device_knowledge(interval)
    features = load_device_features(args.export, metadata, knowledge, interval)
    samples = list(load_test_canvases(args.first_sample, args.requests, args.data_dir))
    try:
        connection = ServerConnection(address, pacer)
    except OSError as error:
        raise ConnectionError(
            f"cannot reach the server at {args.server}: {error.strerror or error}"
        ) from None
    try:
        runtime = DeviceRuntime(
            OnnxSegments(args.export, threads=1),
            policy,
            metadata.actions,
            knowledge,
            connection,
            metadata.codec,
            link_quality=link_quality,
            features=features,
            transfer_timeout_s=timeout,
            exit_gate=metadata.exit_gate,
        )
        records = runtime.run(samples, interval)
    finally:
        connection.close()
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("".join(record.to_json() + "\n" for record in records))
    summary = RunSummary.of(records)
    print(json.dumps(asdict(summary), indent=2))
    return 0 if summary.errors == 0 else 1
