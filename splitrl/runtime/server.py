"""The edge server: finishes split requests and reports its load (the ``splitrl serve`` subcommand).

An asyncio TCP server reads length-prefixed requests (:mod:`splitrl.runtime.protocol`), decodes the
codec frame, runs stages ``[s, k_e)`` and the exit head in a thread pool (so the event loop stays
responsive while a request computes) and replies with the prediction, its load and its timings.

* Requests of one connection run concurrently (up to ``max_in_flight`` each); replies carry the
  request id and may come out of order.
* A bad request (malformed header, the reserved request id, :class:`~splitrl.codecs.CodecError`,
  a split or exit out of range, a tensor of the wrong shape, NaN or infinite values) gets an error
  reply and a log line; the connection stays open. A bad length prefix (empty, or above
  ``max_message_bytes``) gets an error reply and the connection is closed, since the stream cannot
  be resynchronized.
* A client that sends nothing for ``idle_timeout_s``, or takes longer than ``read_timeout_s`` to
  finish a message it started, is disconnected; other clients are not affected.
* :meth:`EdgeServer.stop` (SIGTERM or SIGINT under ``splitrl serve``) stops accepting and reading,
  lets the requests already read finish and be answered, then closes every connection.

Resource envelope (the defaults of :class:`ServerSettings`; ``docs/deploy.md``):

* at most ``max_connections`` connections; one more is answered with an error and closed;
* at most ``max_buffered_bytes`` bytes of request bodies read and not yet answered, over all
  connections: a connection whose next message does not fit is not read until replies free room
  (back-pressure through TCP), so memory for requests stays bounded whatever clients send;
* per request, the codec frame's header is checked against the split's tensor shape before
  anything is decoded, so decoding allocates at most that tensor: a frame that declares a larger
  tensor (an amplifying frame: 54 bytes can declare 2^26 elements) is refused from its header,
  without a worker's time.

The reported load is the utilization of the inference workers: the fraction of worker time spent
computing over the last ``load_window_s`` seconds (see :class:`LoadMeter`), the quantity the
environment's ``server_load`` observation stands for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from splitrl.arguments import integer_at_least, port_number, positive_number
from splitrl.codecs import CodecError, decode, frame_info
from splitrl.runtime.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    UNKNOWN_REQUEST_ID,
    BadLengthPrefix,
    ProtocolError,
    Reply,
    ReplyStatus,
    Request,
    frame_message,
    read_body,
    read_length,
)
from splitrl.runtime.segments import SegmentRunner, softmax_prediction

logger = logging.getLogger(__name__)


class LoadMeter:
    """Utilization of ``workers`` inference workers over a sliding window.

    ``load = busy worker-seconds in [now - window_s, now] / (workers x window_s)``, counting jobs
    still running up to ``now``. Thread-safe.

    :param workers: number of workers.
    :param window_s: window length in seconds.
    """

    def __init__(self, workers: int, window_s: float = 1.0) -> None:
        if workers < 1 or not window_s > 0:
            raise ValueError(f"need workers >= 1 and window_s > 0, got {workers}, {window_s}")
        self.workers = workers
        self.window_s = window_s
        self._finished: deque[tuple[float, float]] = deque()
        self._running: dict[int, float] = {}
        self._lock = threading.Lock()

    def begin(self, job: int, start: float) -> None:
        """Job ``job`` started at ``start`` (``time.perf_counter`` seconds)."""
        with self._lock:
            self._running[job] = start

    def end(self, job: int, end: float) -> None:
        """Job ``job`` finished at ``end``."""
        with self._lock:
            self._finished.append((self._running.pop(job), end))

    def load(self, now: float) -> float:
        """Utilization in ``[0, 1]`` over ``[now - window_s, now]``."""
        horizon = now - self.window_s
        with self._lock:
            while self._finished and self._finished[0][1] <= horizon:
                self._finished.popleft()
            busy = sum(min(end, now) - max(start, horizon) for start, end in self._finished)
            busy += sum(now - max(start, horizon) for start in self._running.values())
        return min(max(busy / (self.workers * self.window_s), 0.0), 1.0)


class ByteBudget:
    """Bytes of request bodies held by the server, with a cap; :meth:`acquire` waits for room.

    Used from one event loop.

    :param capacity: the most bytes held at once.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        #: the most bytes held at once so far
        self.peak = 0
        self._freed = asyncio.Event()

    async def acquire(self, n_bytes: int) -> None:
        """Wait until ``n_bytes`` fit (``n_bytes <= capacity``), then take them."""
        if n_bytes > self.capacity:
            raise ValueError(f"{n_bytes} bytes can never fit a budget of {self.capacity}")
        while self.used + n_bytes > self.capacity:
            self._freed.clear()
            await self._freed.wait()
        self.used += n_bytes
        self.peak = max(self.peak, self.used)

    def release(self, n_bytes: int) -> None:
        """Give ``n_bytes`` back."""
        self.used -= n_bytes
        self._freed.set()


#: seconds between log lines about rejected requests
REJECTION_LOG_INTERVAL_S = 1.0
#: default cap on connections
DEFAULT_MAX_CONNECTIONS = 256
#: default cap on request bytes read and not yet answered, over all connections
DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    """Settings of an :class:`EdgeServer`.

    :param host: address to listen on (``127.0.0.1`` by default: loopback only).
    :param port: TCP port; 0 picks a free one (see :attr:`EdgeServer.port`).
    :param workers: inference threads; 1 serves requests first come, first served.
    :param max_message_bytes: largest accepted request body.
    :param max_connections: connections served at once; one more gets an error reply and is closed.
    :param max_buffered_bytes: request bytes read and not yet answered, over all connections;
        reading waits (back-pressure) while the next message does not fit. At least
        ``max_message_bytes``.
    :param idle_timeout_s: a connection with no new message for this long is closed.
    :param read_timeout_s: a message must be complete this long after its first byte.
    :param bad_request_pause_s: after a bad request, its connection is not read for this long, so
        that a client sending bad requests (a flood of forged frames) slows itself, not the others.
    :param max_in_flight: requests of one connection computing or waiting at once; the
        connection is not read further until one finishes.
    :param load_window_s: window of the :class:`LoadMeter`.
    :param shutdown_grace_s: how long :meth:`EdgeServer.stop` waits for requests in flight.
    """

    host: str = "127.0.0.1"
    port: int = 0
    workers: int = 1
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES
    idle_timeout_s: float = 300.0
    read_timeout_s: float = 10.0
    bad_request_pause_s: float = 0.01
    max_in_flight: int = 16
    load_window_s: float = 1.0
    shutdown_grace_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        for name in ("workers", "max_message_bytes", "max_connections", "max_in_flight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_buffered_bytes < self.max_message_bytes:
            raise ValueError(
                f"max_buffered_bytes ({self.max_buffered_bytes}) must be at least "
                f"max_message_bytes ({self.max_message_bytes})"
            )
        if not (math.isfinite(self.bad_request_pause_s) and self.bad_request_pause_s >= 0):
            raise ValueError(f"bad_request_pause_s must be >= 0, got {self.bad_request_pause_s}")
        for name in ("idle_timeout_s", "read_timeout_s", "load_window_s", "shutdown_grace_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")


class EdgeServer:
    """Serve the tails of a staged model over TCP.

    Use it as an async context manager, or call :meth:`start` and :meth:`stop`::

        async with EdgeServer(TorchSegments(load_default_model())) as server:
            print(server.port)
            await server.wait_stopped()     # until request_stop() (e.g. from a signal handler)

    :param runner: runs stages and exit heads (ONNX segments or a torch model).
    :param settings: network, timeout and worker settings.
    """

    def __init__(self, runner: SegmentRunner, settings: ServerSettings | None = None) -> None:
        self.runner = runner
        self.settings = settings or ServerSettings()
        self.load_meter = LoadMeter(self.settings.workers, self.settings.load_window_s)
        self._executor: ThreadPoolExecutor | None = None
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._reads: set[asyncio.Task[tuple[bytes, float] | None]] = set()
        self._requests: set[asyncio.Task[None]] = set()
        self.budget = ByteBudget(self.settings.max_buffered_bytes)
        self._stop_requested: asyncio.Event | None = None
        self._stopping = False
        self._job_counter = 0
        self.served = 0
        self.rejected = 0
        self._last_rejection_log = -math.inf
        self._read_after: dict[asyncio.StreamWriter, float] = {}

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    async def start(self) -> None:
        """Bind and start accepting connections."""
        self._stop_requested = asyncio.Event()
        try:
            self._server = await asyncio.start_server(
                self._handle_connection, self.settings.host, self.settings.port
            )
        except OSError as error:
            raise ConnectionError(
                f"cannot listen on {self.settings.host}:{self.settings.port}: "
                f"{error.strerror or error}"
            ) from None
        self._executor = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="infer")
        self._port = int(self._server.sockets[0].getsockname()[1])

    def request_stop(self) -> None:
        """Ask :meth:`wait_stopped` to return (safe to call from a signal handler in the loop)."""
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def wait_stopped(self) -> None:
        """Wait until :meth:`request_stop` is called, then stop gracefully."""
        if self._stop_requested is None:
            raise RuntimeError("the server is not started")
        await self._stop_requested.wait()
        await self.stop()

    async def stop(self) -> None:
        """Stop accepting and reading, answer the requests already read, close every connection.

        Each connection closes once its own replies are written; after ``shutdown_grace_s`` the
        rest are cancelled.
        """
        if self._server is None or self._stopping:
            return
        self._stopping = True
        self._server.close()
        for read in list(self._reads):
            read.cancel()
        if self._handlers:
            _, late = await asyncio.wait(self._handlers, timeout=self.settings.shutdown_grace_s)
            for task in (*self._requests, *late):
                task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        logger.info("stopped after %d replies (%d rejected)", self.served, self.rejected)

    async def __aenter__(self) -> EdgeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ connections
    async def _handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        write_lock = asyncio.Lock()
        if len(self._handlers) >= self.settings.max_connections or self._stopping:
            problem = f"the server is at its limit of {self.settings.max_connections} connections"
            await self._reject(
                writer, write_lock, UNKNOWN_REQUEST_ID, problem, peer, ReplyStatus.SERVER_ERROR
            )
            writer.close()
            return
        self._handlers.add(task)
        slots = asyncio.Semaphore(self.settings.max_in_flight)
        mine: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping:
                await slots.acquire()
                pause = self._read_after.get(writer, 0.0) - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(
                        pause
                    )  # this client sent a bad request: it waits, not others
                read = asyncio.create_task(self._read_request(reader))
                self._reads.add(read)
                read.add_done_callback(self._reads.discard)
                try:
                    message = await read
                except asyncio.CancelledError:
                    if task.cancelling():
                        raise
                    break  # stop() cancelled the read: answer what was read, then close
                except TimeoutError:
                    logger.warning("%s: timed out waiting for data, closing", peer)
                    break
                except BadLengthPrefix as error:
                    await self._reject(writer, write_lock, UNKNOWN_REQUEST_ID, str(error), peer)
                    break
                except ProtocolError as error:
                    logger.warning("%s: %s, closing", peer, error)
                    break
                except ConnectionError as error:
                    logger.info("%s: connection lost (%s)", peer, error)
                    break
                if message is None:
                    break
                body, first_byte = message
                received = time.perf_counter()
                request_task = asyncio.create_task(
                    self._serve_request(body, first_byte, received, writer, write_lock, peer)
                )
                for group in (mine, self._requests):
                    group.add(request_task)
                    request_task.add_done_callback(group.discard)
                request_task.add_done_callback(partial(self._release, slots, len(body)))
            if mine:
                await asyncio.wait(mine)
        except asyncio.CancelledError:
            pass
        finally:
            self._handlers.discard(task)
            self._read_after.pop(writer, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _release(self, slots: asyncio.Semaphore, size: int, _: object) -> None:
        """A request was answered: free its connection slot and its bytes."""
        self.budget.release(size)
        slots.release()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[bytes, float] | None:
        """The next request body, read once it fits the byte budget (which it then holds), and
        when its length prefix was read (``time.perf_counter``)."""
        settings = self.settings
        length = await read_length(
            reader,
            max_bytes=settings.max_message_bytes,
            idle_timeout_s=settings.idle_timeout_s,
            read_timeout_s=settings.read_timeout_s,
        )
        if length is None:
            return None
        first_byte = time.perf_counter()
        await self.budget.acquire(length)
        try:
            return await read_body(
                reader, length, read_timeout_s=settings.read_timeout_s
            ), first_byte
        except BaseException:
            self.budget.release(length)
            raise

    async def _send(
        self, writer: asyncio.StreamWriter, lock: asyncio.Lock, reply: Reply, peer: object
    ) -> None:
        async with lock:
            if writer.is_closing():
                return
            writer.write(frame_message(reply.encode()))
            try:
                await asyncio.wait_for(writer.drain(), self.settings.read_timeout_s)
            except (TimeoutError, ConnectionError) as error:
                logger.warning("%s: cannot deliver reply %d (%r)", peer, reply.request_id, error)
                writer.close()

    async def _reject(
        self,
        writer: asyncio.StreamWriter,
        lock: asyncio.Lock,
        request_id: int,
        problem: str,
        peer: object,
        status: ReplyStatus = ReplyStatus.BAD_REQUEST,
    ) -> None:
        self.rejected += 1
        now = time.monotonic()
        if status is ReplyStatus.BAD_REQUEST:
            self._read_after[writer] = now + self.settings.bad_request_pause_s
        if now - self._last_rejection_log >= REJECTION_LOG_INTERVAL_S:
            # One line per interval: a flood of bad requests must not become a flood of log lines.
            logger.warning(
                "%s: request %s rejected: %s (%d rejected in all)",
                peer,
                _id_text(request_id),
                problem,
                self.rejected,
            )
            self._last_rejection_log = now
        reply = Reply(
            request_id,
            status,
            server_load=self.load_meter.load(time.perf_counter()),
            error=problem,
        )
        await self._send(writer, lock, reply, peer)

    async def _serve_request(
        self,
        body: bytes,
        first_byte: float,
        received: float,
        writer: asyncio.StreamWriter,
        lock: asyncio.Lock,
        peer: object,
    ) -> None:
        try:
            request = Request.decode(body)
        except ProtocolError as error:
            await self._reject(writer, lock, UNKNOWN_REQUEST_ID, str(error), peer)
            return
        problem = self._check_request(request)
        if problem:
            await self._reject(writer, lock, request.request_id, problem, peer)
            return
        assert self._executor is not None
        self._job_counter += 1
        loop = asyncio.get_running_loop()
        try:
            reply = await loop.run_in_executor(
                self._executor, self._infer, request, received, self._job_counter
            )
        except Exception as error:  # a fault of the model must not take the server down
            logger.exception("%s: request %d failed", peer, request.request_id)
            await self._reject(
                writer, lock, request.request_id, repr(error), peer, ReplyStatus.SERVER_ERROR
            )
            return
        if reply.ok:
            self.served += 1
            await self._send(writer, lock, replace(reply, receive_s=received - first_byte), peer)
        else:
            await self._reject(writer, lock, request.request_id, reply.error, peer, reply.status)

    def _check_request(self, request: Request) -> str:
        """What is wrong with a request, from its header and its frame's header alone."""
        n_exits = len(self.runner.exit_stages)
        if request.exit_index >= n_exits:
            return f"exit {request.exit_index} out of range 0..{n_exits - 1}"
        k_e = self.runner.exit_stages[request.exit_index]
        if request.split >= k_e:
            return (
                f"split {request.split} is not before exit {request.exit_index} "
                f"(after stage {k_e}); valid splits are 0..{k_e - 1}"
            )
        try:
            shape = frame_info(request.frame).shape
        except CodecError as error:
            return f"codec: {error}"
        expected = tuple(self.runner.split_shapes[request.split])
        if shape != expected:
            return f"tensor of shape {shape} at split {request.split}, expected {expected}"
        return ""

    def _infer(self, request: Request, received: float, job: int) -> Reply:
        """Decode and finish one request (runs in a worker thread)."""
        start = time.perf_counter()
        queue_s = start - received
        if request.deadline_s is not None and queue_s > request.deadline_s:
            return Reply(
                request.request_id,
                ReplyStatus.EXPIRED,
                error=f"waited {queue_s:.4f} s for a worker, past the {request.deadline_s} s deadline",
            )
        self.load_meter.begin(job, start)
        try:
            expected = self.runner.split_shapes[request.split]
            try:
                tensor = decode(request.frame, expected_shape=expected)
            except CodecError as error:
                return Reply(request.request_id, ReplyStatus.BAD_REQUEST, error=f"codec: {error}")
            if not np.isfinite(tensor).all():
                return Reply(
                    request.request_id,
                    ReplyStatus.BAD_REQUEST,
                    error=f"the tensor at split {request.split} holds NaN or infinite values",
                )
            decoded = time.perf_counter()
            k_e = self.runner.exit_stages[request.exit_index]
            features = self.runner.run_stages(tensor[None], request.split, k_e)
            logits = self.runner.run_exit(features, request.exit_index)
            predicted, confidence = softmax_prediction(logits[0])
            done = time.perf_counter()
        finally:
            self.load_meter.end(job, time.perf_counter())
        return Reply(
            request.request_id,
            ReplyStatus.OK,
            predicted=predicted,
            confidence=confidence,
            server_load=self.load_meter.load(done),
            queue_s=queue_s,
            decode_s=decoded - start,
            compute_s=done - decoded,
            service_s=done - received,
        )


class ServerThread:
    """An :class:`EdgeServer` on its own event loop in a background thread.

    For synchronous programs, tests and benchmarks::

        with ServerThread(runner) as server:
            connect(("127.0.0.1", server.port))

    :param runner: runs stages and exit heads.
    :param settings: server settings.
    """

    def __init__(self, runner: SegmentRunner, settings: ServerSettings | None = None) -> None:
        self.server = EdgeServer(runner, settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return self.server.port

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the loop and the server."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the server gracefully, then the loop."""
        if not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout_s)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)
            self._loop.close()

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _id_text(request_id: int) -> str:
    return "?" if request_id == UNKNOWN_REQUEST_ID else str(request_id)


# ---------------------------------------------------------------------- command line
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``splitrl serve``."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--model",
        default="default",
        help="'default' (the shipped EarlyExitNet, run with torch) or a checkpoint sidecar NAME.json",
    )
    source.add_argument(
        "--export", type=Path, help="an export directory: run its ONNX segments with onnxruntime"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=port_number, default=0, help="TCP port 0..65535 (0: pick a free one)"
    )
    parser.add_argument("--workers", type=integer_at_least(1), default=1, help="inference threads")
    parser.add_argument(
        "--threads", type=integer_at_least(0), default=0, help="compute threads (0: all cores)"
    )
    parser.add_argument(
        "--read-timeout", type=positive_number, default=10.0, help="seconds per message"
    )
    parser.add_argument(
        "--idle-timeout", type=positive_number, default=300.0, help="seconds between messages"
    )
    parser.add_argument(
        "--max-message-bytes",
        type=integer_at_least(1),
        default=DEFAULT_MAX_MESSAGE_BYTES,
        help=f"largest request (default: {DEFAULT_MAX_MESSAGE_BYTES})",
    )
    parser.add_argument(
        "--max-connections",
        type=integer_at_least(1),
        default=DEFAULT_MAX_CONNECTIONS,
        help=f"connections served at once (default: {DEFAULT_MAX_CONNECTIONS})",
    )
    parser.add_argument(
        "--max-buffered-bytes",
        type=integer_at_least(1),
        default=DEFAULT_MAX_BUFFERED_BYTES,
        help="request bytes read and not yet answered, over all connections "
        f"(default: {DEFAULT_MAX_BUFFERED_BYTES})",
    )
    parser.add_argument(
        "--load-window", type=positive_number, default=1.0, help="load window in seconds"
    )


def load_runner(model: str, export: Path | None, threads: int) -> SegmentRunner:
    """The segment runner of ``splitrl serve``: ONNX segments of ``export`` or a torch model.

    :param model: ``"default"`` or the path of a checkpoint sidecar.
    :param export: an export directory, which takes precedence over ``model``.
    :param threads: compute threads (0: all cores).
    """
    if export is not None:
        from splitrl.runtime.segments import OnnxSegments

        return OnnxSegments(export, threads=threads)
    import torch

    from splitrl.models.checkpoint import load_checkpoint, load_default_model
    from splitrl.runtime.torch_segments import TorchSegments

    if threads > 0:
        torch.set_num_threads(threads)
    return TorchSegments(load_default_model() if model == "default" else load_checkpoint(model))


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT."""
    settings = ServerSettings(
        host=args.host,
        port=args.port,
        workers=args.workers,
        max_message_bytes=args.max_message_bytes,
        max_connections=args.max_connections,
        max_buffered_bytes=args.max_buffered_bytes,
        idle_timeout_s=args.idle_timeout,
        read_timeout_s=args.read_timeout,
        load_window_s=args.load_window,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    runner = load_runner(args.model, args.export, args.threads)

    async def serve() -> None:
        server = EdgeServer(runner, settings)
        await server.start()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, server.request_stop)
        print(f"listening on {settings.host}:{server.port}", flush=True)
        await server.wait_stopped()

    asyncio.run(serve())
    return 0
