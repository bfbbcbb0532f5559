"""Runtime tests over loopback: wire protocol, edge server, device runtime and pacing."""

from __future__ import annotations

import argparse
import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from splitrl.codecs import encode
from splitrl.envs.actions import ActionTable
from splitrl.envs.channels import TraceChannel
from splitrl.envs.link_quality import LinkQualityModel
from splitrl.envs.observation import DeviceKnowledge, ObservationLayout, scale_throughput
from splitrl.envs.split_computing import SplitComputingEnv
from splitrl.envs.traces import Trace
from splitrl.profiles.schema import Profile
from splitrl.runtime.device import (
    DeviceError,
    DeviceRuntime,
    RequestRecord,
    RunSummary,
    ServerConnection,
    link_quality_source,
    load_link_quality_callback,
    transfer_timeout_argument,
)
from splitrl.runtime.onnx_export import export_segments
from splitrl.runtime.pacing import TraceLinkQuality, TracePacer
from splitrl.runtime.protocol import (
    LENGTH_PREFIX,
    UNKNOWN_REQUEST_ID,
    ProtocolError,
    Reply,
    ReplyStatus,
    Request,
    frame_message,
    recv_message,
)
from splitrl.runtime.segments import OnnxSegments, SegmentRunner
from splitrl.runtime.server import LoadMeter, ServerSettings, ServerThread
from splitrl.runtime.torch_segments import TorchSegments
from tests.conftest import TINY_BITS, tiny_inputs, tiny_staged_model

TINY_ACTIONS = ActionTable((1, 3), 4, TINY_BITS)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("export")
    export_segments(tiny_staged_model(), directory)
    return directory


@pytest.fixture()
def server() -> Iterator[ServerThread]:
    with ServerThread(TorchSegments(tiny_staged_model()), ServerSettings(read_timeout_s=0.5)) as s:
        yield s


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10.0)
    return sock


def ask(sock: socket.socket, body: bytes) -> Reply:
    sock.sendall(frame_message(body))
    return Reply.decode(recv_message(sock))


def run_with_server(
    server: ServerThread,
    export: Path,
    policy: Callable[[np.ndarray], tuple[int, int, int]],
    knowledge: DeviceKnowledge,
    inputs: np.ndarray,
    labels: np.ndarray,
    pacer: TracePacer | None = None,
    **settings: Any,
) -> list[RequestRecord]:
    """Run the tiny model's requests through a device runtime connected to ``server``, 20 ms
    apart, with the runtime's other ``settings``."""
    connection = ServerConnection(("127.0.0.1", server.port), pacer)
    try:
        runtime = DeviceRuntime(
            OnnxSegments(export), policy, TINY_ACTIONS, knowledge, connection, **settings
        )
        return runtime.run(zip(inputs, labels.tolist(), strict=True), frame_interval_s=0.02)
    finally:
        connection.close()


def torch_prediction(x: np.ndarray, exit_index: int) -> int:
    with torch.no_grad():
        logits = tiny_staged_model()(torch.as_tensor(x[None], dtype=torch.float32), exit_index)
    return int(logits.argmax())


# ---------------------------------------------------------------------- protocol
@pytest.mark.parametrize("deadline", [None, 0.25])
def test_request_round_trip(deadline: float | None) -> None:
    request = Request(7, 1, 2, b"frame-bytes", deadline)
    assert Request.decode(request.encode()) == request


def test_reply_round_trip() -> None:
    reply = Reply(3, ReplyStatus.BAD_REQUEST, error="bad split")
    assert Reply.decode(reply.encode()) == reply
    ok = Reply.decode(Reply(4, ReplyStatus.OK, 2, 0.5, 0.25, 1e-3, 2e-3, 3e-3, 4e-3).encode())
    assert (ok.ok, ok.predicted, ok.confidence, ok.server_load) == (True, 2, 0.5, 0.25)


@pytest.mark.parametrize(
    ("body", "message"), [(b"SRQ1\x00", "shorter"), (b"XXXX" + bytes(20), "magic")]
)
def test_malformed_request_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        Request.decode(body)


def test_request_fields_are_checked() -> None:
    with pytest.raises(ProtocolError, match=r"0\.\.255"):
        Request(0, 300, 0, b"").encode()
    with pytest.raises(ProtocolError, match="request_id"):
        Request(UNKNOWN_REQUEST_ID, 0, 0, b"").encode()


def test_load_meter_counts_busy_time_in_the_window() -> None:
    meter = LoadMeter(workers=2, window_s=1.0)
    meter.begin(1, 10.0)
    meter.end(1, 10.5)
    meter.begin(2, 10.8)
    assert meter.load(11.0) == pytest.approx((0.5 + 0.2) / 2)
    assert meter.load(12.6) == pytest.approx(1.0 / 2)  # only job 2, running all window


# ---------------------------------------------------------------------- server
@pytest.mark.parametrize(("exit_index", "split"), [(0, 0), (1, 0), (1, 1), (1, 2)])
def test_server_predicts_like_the_model(server: ServerThread, exit_index: int, split: int) -> None:
    inputs, _ = tiny_inputs(n=4, seed=1)
    model = tiny_staged_model()
    with connect(server.port) as sock:
        for request_id, x in enumerate(inputs):
            with torch.no_grad():
                tensor = model.run_stages(torch.as_tensor(x[None], dtype=torch.float32), 0, split)
            frame = encode(x if split == 0 else tensor[0].numpy(), "lossless")
            reply = ask(sock, Request(request_id, exit_index, split, frame).encode())
            assert reply.ok and reply.request_id == request_id
            assert reply.predicted == torch_prediction(x, exit_index)
            assert 0.0 <= reply.server_load <= 1.0 and reply.service_s >= reply.compute_s > 0


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"garbage that is no request", "magic"),
        (Request(1, 0, 0, b"SPLC\x01").encode(), "codec"),
        (Request(1, 0, 0, encode(np.zeros((1, 16, 16), np.uint8))[:-5]).encode(), "codec"),
        (Request(1, 0, 1, encode(np.zeros((4, 8, 8), np.float32))).encode(), "split 1"),
        (Request(1, 5, 0, encode(np.zeros((1, 16, 16), np.uint8))).encode(), "exit 5"),
        (Request(1, 1, 1, encode(np.zeros((1, 16, 16), np.uint8))).encode(), "shape"),
    ],
)
def test_bad_requests_get_error_replies(server: ServerThread, body: bytes, problem: str) -> None:
    x = tiny_inputs(n=1)[0][0]
    with connect(server.port) as bad, connect(server.port) as good:
        reply = ask(bad, body)
        assert reply.status is ReplyStatus.BAD_REQUEST and problem in reply.error
        # the same connection and another one keep being served
        for sock in (bad, good):
            assert ask(sock, Request(2, 1, 0, encode(x, "lossless")).encode()).ok


def test_oversized_message_is_refused_and_the_connection_closed(server: ServerThread) -> None:
    with connect(server.port) as sock:
        sock.sendall(LENGTH_PREFIX.pack(2**31))
        reply = Reply.decode(recv_message(sock))
        assert reply.status is ReplyStatus.BAD_REQUEST and "exceeds" in reply.error
        assert sock.recv(1) == b""


def test_stuck_client_is_timed_out_without_blocking_others(server: ServerThread) -> None:
    x = tiny_inputs(n=1)[0][0]
    message = frame_message(Request(0, 1, 0, encode(x, "lossless")).encode())
    with connect(server.port) as stuck, connect(server.port) as other:
        stuck.sendall(message[: len(message) // 2])
        assert ask(other, Request(1, 1, 0, encode(x, "lossless")).encode()).ok
        stuck.settimeout(5.0)
        assert stuck.recv(1) == b""  # closed by the server's read timeout (0.5 s)
        assert ask(other, Request(2, 1, 0, encode(x, "lossless")).encode()).ok


class SlowSegments:
    """A runner whose exit heads take ``delay_s``: requests stay in flight for a while."""

    def __init__(self, runner: SegmentRunner, delay_s: float) -> None:
        self.runner = runner
        self.delay_s = delay_s
        self.n_stages = runner.n_stages
        self.exit_stages = runner.exit_stages
        self.split_shapes = runner.split_shapes

    def run_stages(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        return self.runner.run_stages(x, start, stop)

    def run_exit(self, features: np.ndarray, exit_index: int) -> np.ndarray:
        time.sleep(self.delay_s)
        return self.runner.run_exit(features, exit_index)


def test_stop_finishes_requests_in_flight() -> None:
    x = tiny_inputs(n=1)[0][0]
    server = ServerThread(SlowSegments(TorchSegments(tiny_staged_model()), 0.4))
    server.start()
    try:
        sock = connect(server.port)
        sock.sendall(frame_message(Request(9, 1, 0, encode(x, "lossless")).encode()))
        time.sleep(0.1)  # the request is computing
    finally:
        server.stop()
    reply = Reply.decode(recv_message(sock))
    assert reply.ok and reply.request_id == 9
    assert sock.recv(1) == b""
    sock.close()
    with pytest.raises(OSError):
        connect(server.port).close()


def test_serve_command_stops_on_sigterm(tiny_export: Path) -> None:
    command = [sys.executable, "-m", "splitrl", "serve", "--export", str(tiny_export)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        x = tiny_inputs(n=1)[0][0]
        with connect(port) as sock:
            reply = ask(sock, Request(0, 0, 0, encode(x, "lossless")).encode())
        assert reply.ok and reply.predicted == torch_prediction(x, 0)
        process.terminate()
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# ---------------------------------------------------------------------- device
def test_device_runs_local_and_offloaded_requests(server: ServerThread, tiny_export: Path) -> None:
    inputs, labels = tiny_inputs(n=8, seed=2)
    plan = [(0, 1, 0), (1, 1, 3), (1, 0, 3), (1, 2, 2), (1, 3, 0), (0, 0, 3), (1, 2, 3), (0, 1, 0)]
    observations: list[np.ndarray] = []

    def policy(observation: np.ndarray) -> tuple[int, int, int]:
        observations.append(observation)
        return plan[len(observations) - 1]

    knowledge = DeviceKnowledge(ObservationLayout(4), 1e6, deadline_s=0.2, frame_interval_s=0.02)
    trace = Trace.from_rates([8e6], slot_s=1.0)
    pacer = TracePacer(trace)
    link_quality = TraceLinkQuality(pacer.channel, LinkQualityModel(), frame_interval_s=0.02)
    records = run_with_server(
        server, tiny_export, policy, knowledge, inputs, labels, pacer, link_quality=link_quality
    )
    assert [r.status for r in records] == ["ok"] * 8
    assert [r.device_only for r in records] == [True, False, False, False, True, False, False, True]
    for record, x in zip(records, inputs, strict=True):
        e, _, b = record.action
        if TINY_BITS[b] == "lossless" or record.device_only:  # exact: same answer as torch
            assert record.predicted == torch_prediction(x, e)
        if not record.device_only:  # the server's time and the transfer are parts of the latency
            assert record.latency_s >= max(record.transfer_s, record.server_s) > 0
    # the first transfer replaced the prior in the observed throughput history
    assert observations[0][0] == pytest.approx(scale_throughput(1e6))
    assert observations[2][0] != pytest.approx(scale_throughput(1e6))
    # the radio's report: the trace's 8 Mbit/s with an error, never the rate itself
    reports = [float(o[4]) for o in observations]
    assert all(abs(r - scale_throughput(8e6)) < 0.2 for r in reports)
    assert scale_throughput(8e6) not in reports


@pytest.mark.parametrize("predictor", ["robust-mpc", "mpc-quantile"])
def test_device_appends_the_predicted_values_to_the_observation(
    server: ServerThread, tiny_profile: Profile, tiny_export: Path, predictor: str
) -> None:
    """A policy that observes predicted values gets them after the observation, computed from the
    runtime's own knowledge (with the learned link forecast for ``mpc-quantile``), and they follow
    what the device measured."""
    from splitrl.agents.features import DeviceActionValues
    from splitrl.envs.forecast import DeviceForecast

    env = SplitComputingEnv(profile=tiny_profile, frame_interval_s=0.02, link_quality=False)
    inputs, labels = tiny_inputs(n=6, seed=3)
    plan = [(1, 2, 0), (1, 2, 0), (1, 1, 3), (0, 1, 0), (1, 0, 3), (1, 3, 0)]
    observations: list[np.ndarray] = []

    def policy(observation: np.ndarray) -> tuple[int, int, int]:
        observations.append(observation)
        return plan[len(observations) - 1]

    knowledge = DeviceKnowledge(env.layout, 2e5, env.reward_spec.deadline_s, 0.02)
    with pytest.raises(ValueError, match="the runtime's own knowledge"):
        DeviceRuntime(
            OnnxSegments(tiny_export),
            policy,
            env.actions,
            knowledge,
            features=DeviceActionValues(DeviceForecast(env, env.knowledge)),
        )
    connection = ServerConnection(
        ("127.0.0.1", server.port), TracePacer(Trace.from_rates([8e6], slot_s=1.0))
    )
    try:
        runtime = DeviceRuntime(
            OnnxSegments(tiny_export),
            policy,
            env.actions,
            knowledge,
            connection,
            features=DeviceActionValues(DeviceForecast(env, knowledge, 0.02), predictor),
        )
        records = runtime.run(zip(inputs, labels.tolist(), strict=True), frame_interval_s=0.02)
    finally:
        connection.close()
    assert [r.status for r in records] == ["ok"] * 6
    n_base = len(env.layout.names)
    features = np.array(observations)[:, n_base:]
    assert features.shape == (6, env.actions.n_actions)
    mask = env.actions.mask()
    assert np.all(features[:, ~mask] == 0.0) and np.all(features <= 0.0)
    assert np.all(features[:, mask].max(axis=1) == 0.0)  # the best action of every request
    assert features[:, mask].min() < 0.0
    # the offloads of requests 0 and 1 replaced the 0.2 Mbit/s prior: the forecast changed
    assert not np.array_equal(features[0], features[2])
    assert len(records[0].observation) == n_base + env.actions.n_actions


def test_device_observes_what_the_env_observes(tiny_profile: Profile, tiny_export: Path) -> None:
    """Parity: on the same trace and requests the runtime builds the env's observation."""
    trace = Trace.from_rates([1e6, 8e6, 2e5, 3e6, 5e7], slot_s=0.4)
    frame_s, n_requests, action = 0.1, 16, (0, 1, 0)  # exit 0 on the device: nothing is sent
    # reports describe mid-slot times: 50 ms from any rate change, wider than the runtime's jitter
    model = LinkQualityModel(delay_s=0.05)
    env = SplitComputingEnv(
        profile=tiny_profile,
        channel=TraceChannel(trace, random_start=False),
        frame_interval_s=frame_s,
        link_quality=model,
        horizon=n_requests,
    )
    first, _ = env.reset(seed=9)
    expected = np.array([first] + [env.step(np.array(action))[0] for _ in range(n_requests - 1)])
    assert env.link_quality_report is not None
    observed: list[np.ndarray] = []

    def policy(observation: np.ndarray) -> tuple[int, int, int]:
        observed.append(observation)
        return action

    knowledge = DeviceKnowledge(
        env.layout, env.knowledge.prior_bps, env.reward_spec.deadline_s, frame_s
    )
    link_quality = TraceLinkQuality(
        TracePacer(trace).channel, model, frame_s, seed=env.link_quality_report.seed
    )
    runtime = DeviceRuntime(
        OnnxSegments(tiny_export), policy, env.actions, knowledge, link_quality=link_quality
    )
    inputs, labels = tiny_inputs(n=n_requests, seed=4)
    records = runtime.run(zip(inputs, labels.tolist(), strict=True), frame_interval_s=frame_s)
    assert [r.status for r in records] == ["ok"] * n_requests
    names = env.layout.names
    exact = [names.index(name) for name in names if name not in ("last_latency", "backlog")]
    timed = [names.index("last_latency"), names.index("backlog")]
    np.testing.assert_array_equal(np.array(observed)[:, exact], expected[:, exact])
    # latency and waiting are the host's real times, the env's from its device preset
    np.testing.assert_allclose(np.array(observed)[:, timed], expected[:, timed], atol=0.25)
    reports = expected[:, names.index("link_quality")]
    assert reports.max() - reports.min() > 0.3  # the reports followed the trace's rate changes


def test_link_quality_sources_are_checked(tiny_export: Path) -> None:
    knowledge = DeviceKnowledge(ObservationLayout(4), 1e6, deadline_s=0.2, frame_interval_s=0.02)
    with pytest.raises(ValueError, match="observes link quality"):
        DeviceRuntime(OnnxSegments(tiny_export), lambda _: (0, 1, 0), TINY_ACTIONS, knowledge)
    with pytest.raises(ValueError, match="--link-quality MODULE:FUNCTION"):
        link_quality_source(LinkQualityModel(), None, None, 0.1)
    with pytest.raises(ValueError, match="does not observe link quality"):
        link_quality_source(None, "math:sqrt", None, 0.1)
    assert link_quality_source(None, None, None, 0.1) is None
    assert load_link_quality_callback("math:sqrt")(4.0) == 2.0
    for spec, message in (
        ("sqrt", "MODULE:FUNCTION"),
        ("no_such_module:f", "cannot import"),
        ("math:no_such_function", "no function"),
    ):
        with pytest.raises(ValueError, match=message):
            load_link_quality_callback(spec)
    # a callback that returns no rate stops the run with a clear error
    runtime = DeviceRuntime(
        OnnxSegments(tiny_export),
        lambda _: (0, 1, 0),
        TINY_ACTIONS,
        knowledge,
        link_quality=lambda _: math.nan,
    )
    inputs, labels = tiny_inputs(n=1, seed=5)
    with pytest.raises(DeviceError, match="link-quality source returned nan"):
        runtime.run(zip(inputs, labels.tolist(), strict=True), frame_interval_s=0.01)


# ---------------------------------------------------------------------- pacing
def test_release_times_integrate_the_trace() -> None:
    trace = Trace((0.0, 1.0, 2.0), (8_000.0, 16_000.0))  # 1 kB/s, then 2 kB/s
    pacer = TracePacer(trace, chunk_bytes=500)
    releases = pacer.release_offsets(2000, start_s=0.5)
    assert [end for end, _ in releases] == [500, 1000, 1500, 2000]
    assert [t for _, t in releases] == pytest.approx([1.0, 1.25, 1.5, 1.75])


def test_paced_transfer_takes_the_traces_time() -> None:
    rate_bps, n_bytes = 4e6, 100_000
    sender, receiver = socket.socketpair()
    received = bytearray()

    def drain() -> None:
        while chunk := receiver.recv(65536):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        timing = TracePacer(Trace.from_rates([rate_bps], 10.0), chunk_bytes=2048).send(
            sender, bytes(n_bytes)
        )
    finally:
        sender.close()
        reader.join()
        receiver.close()
    assert len(received) == n_bytes
    assert 0.8 < timing.duration_s / (8 * n_bytes / rate_bps) < 1.5


def test_device_gives_up_slow_sends_and_answers_itself(
    server: ServerThread, tiny_export: Path
) -> None:
    """On a trace whose first half second crawls at 1 kbit/s, offloaded requests are given up at
    the 50 ms timeout and answered on the device from the unquantized tensor (torch's answer);
    once the link is fast, the new connection carries the requests to the server again."""
    inputs, labels = tiny_inputs(n=8, seed=3)
    offload = (1, 0, 3)
    knowledge = DeviceKnowledge(
        ObservationLayout(4, link_quality=False), 1e6, deadline_s=0.2, frame_interval_s=0.1
    )
    pacer = TracePacer(Trace.from_rates([1e3, 8e6], slot_s=0.5))
    connection = ServerConnection(("127.0.0.1", server.port), pacer)
    try:
        runtime = DeviceRuntime(
            OnnxSegments(tiny_export),
            lambda observation: offload,
            TINY_ACTIONS,
            knowledge,
            connection,
            transfer_timeout_s=0.05,
        )
        records = runtime.run(zip(inputs, labels.tolist(), strict=True), frame_interval_s=0.1)
    finally:
        connection.close()
    assert [r.status for r in records] == ["ok"] * 8
    given_up = [r for r in records if r.gave_up]
    served = [r for r in records if not r.gave_up]
    assert [r.request_id for r in given_up] == [0, 1, 2, 3, 4]  # sent before 0.45 s
    for record in given_up:
        assert record.predicted == torch_prediction(inputs[record.request_id], offload[0])
        assert 0.05 <= record.transfer_s < 0.1
        assert record.message_bytes < 8 * record.payload_bytes  # it stopped before the end
        assert record.server_s == 0.0 and record.latency_s < 0.5
    assert len(served) == 3 and all(r.server_s > 0 for r in served)
    assert RunSummary.of(records).gave_up == 5


def test_unpaced_send_gives_up_when_the_socket_does_not_drain() -> None:
    """A server that never reads: the send stops at its timeout with what the socket took, and
    the reply reader (blocked on the same socket) is not disturbed."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    acceptor = threading.Thread(target=lambda: accepted.append(listener.accept()[0]))
    acceptor.start()
    connection = ServerConnection(listener.getsockname()[:2], send_buffer_bytes=4096)
    acceptor.join()
    try:
        frame = bytes(20_000_000)
        timing = connection.send(Request(0, 1, 0, frame), time.perf_counter, timeout_s=0.1)
        assert timing.gave_up
        assert 0 < timing.n_bytes < len(frame)
        assert 0.1 <= timing.duration_s < 1.0
        assert connection.replies.empty() and connection._reader.is_alive()
    finally:
        connection.close()
        accepted[0].close()
        listener.close()


@pytest.mark.parametrize(("text", "parsed"), [("0.05", 0.05), ("none", "none"), ("None", "none")])
def test_transfer_timeout_flag(text: str, parsed: object) -> None:
    assert transfer_timeout_argument(text) == parsed


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "soon"])
def test_bad_transfer_timeout_flag_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="positive number of seconds"):
        transfer_timeout_argument(text)


def test_a_connection_that_cannot_be_reopened_gives_the_send_up(server: ServerThread) -> None:
    """After a reset, the next send opens a new connection within its timeout; one that cannot
    be opened (an outage) is a given-up send of no bytes, and without a timeout an error."""
    attempts: list[float] = []

    def connect_once(address: tuple[str, int], timeout_s: float) -> socket.socket:
        attempts.append(timeout_s)
        if len(attempts) > 1:
            raise TimeoutError("no route in an outage")
        return socket.create_connection(address, timeout=timeout_s)

    connection = ServerConnection(("127.0.0.1", server.port), connect=connect_once)
    try:
        connection.abandon()
        assert connection.sock is None
        timing = connection.send(Request(0, 1, 0, b"x" * 100), time.perf_counter, timeout_s=0.05)
        assert timing.gave_up and timing.n_bytes == 0
        assert attempts[-1] == 0.05  # the reconnect had the send's timeout, not the default 10 s
        with pytest.raises(TimeoutError, match="outage"):
            connection.send(Request(1, 1, 0, b"x" * 100), time.perf_counter)
    finally:
        connection.close()


def test_paced_send_gives_up_when_the_server_stops_reading() -> None:
    """A fast trace releases every chunk at once, but the peer never reads: the paced send stops
    at its timeout instead of blocking in the socket."""
    sender, receiver = socket.socketpair()
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    try:
        pacer = TracePacer(Trace.from_rates([1e10], slot_s=10.0), chunk_bytes=65536)
        timing = pacer.send(sender, bytes(20_000_000), timeout_s=0.1)
    finally:
        sender.close()
        receiver.close()
    assert timing.gave_up
    assert 0 < timing.n_bytes < 20_000_000
    assert 0.1 <= timing.duration_s < 1.0


def torch_exit_confidence(x: np.ndarray, exit_index: int) -> tuple[int, float]:
    with torch.no_grad():
        logits = tiny_staged_model()(torch.as_tensor(x[None], dtype=torch.float32), exit_index)
    probabilities = torch.softmax(logits.double(), dim=-1)[0]
    return int(probabilities.argmax()), float(probabilities.max())


def test_the_exit_gate_stops_a_confident_request_at_the_exit_its_action_computes(
    server: ServerThread, tiny_export: Path
) -> None:
    inputs, labels = tiny_inputs(n=12, seed=6)
    answers = [torch_exit_confidence(x, 0) for x in inputs]
    gate = float(np.median([confidence for _, confidence in answers]))
    # even requests offload after exit 0's stage (the gate reads exit 0); odd ones send the input
    plan = [(1, 2, 3) if i % 2 == 0 else (1, 0, 3) for i in range(len(inputs))]
    actions = iter(plan)
    layout = ObservationLayout(4, link_quality=False)
    knowledge = DeviceKnowledge(layout, 1e6, deadline_s=0.2, frame_interval_s=0.02)
    records = run_with_server(
        server, tiny_export, lambda _: next(actions), knowledge, inputs, labels, exit_gate=gate
    )
    assert [r.status for r in records] == ["ok"] * len(inputs)
    stopped = 0
    for record, action, (predicted, confidence) in zip(records, plan, answers, strict=True):
        assert record.action == action
        if action == (1, 2, 3) and confidence > gate:
            stopped += 1
            assert record.gate_exit == 0 and record.device_only and record.payload_bytes == 0
            assert record.predicted == predicted
            assert record.confidence == pytest.approx(confidence, abs=1e-5)
        else:
            assert record.gate_exit is None and not record.device_only
            assert record.payload_bytes > 0
    assert 0 < stopped < len(inputs) // 2
    assert RunSummary.of(records).gated == stopped
    for bad in (0.0, 1.0, math.nan):
        with pytest.raises(ValueError, match="exit_gate"):
            DeviceRuntime(
                OnnxSegments(tiny_export),
                lambda _: (0, 1, 0),
                TINY_ACTIONS,
                knowledge,
                exit_gate=bad,
            )
