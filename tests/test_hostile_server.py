"""The edge server and the runtime commands under hostile and careless input."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from splitrl.cli import main
from splitrl.codecs import encode
from splitrl.runtime.onnx_export import export_segments
from splitrl.runtime.protocol import (
    LENGTH_PREFIX,
    REQUEST_HEADER,
    REQUEST_MAGIC,
    UNKNOWN_REQUEST_ID,
    Reply,
    ReplyStatus,
    Request,
    frame_message,
    recv_message,
)
from splitrl.runtime.segments import OnnxSegments, SegmentError, SegmentManifest, file_sha256
from splitrl.runtime.server import ServerSettings, ServerThread
from splitrl.runtime.torch_segments import TorchSegments
from tests.conftest import tiny_inputs, tiny_staged_model
from tests.test_runtime import SlowSegments, ask, connect


@pytest.fixture()
def server() -> Iterator[ServerThread]:
    with ServerThread(TorchSegments(tiny_staged_model()), ServerSettings(read_timeout_s=2.0)) as s:
        yield s


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("export")
    export_segments(tiny_staged_model(), directory)
    return directory


def good_request(request_id: int = 1) -> bytes:
    return Request(request_id, 1, 0, encode(tiny_inputs(n=1)[0][0], "lossless")).encode()


def test_amplifying_frames_are_refused_from_their_header(server: ServerThread) -> None:
    # 54 bytes that declare 2**26 elements; the split-0 tensor of the tiny model has 256.
    forged = encode(np.zeros((1, 8192, 8192), np.uint8), 1)
    assert len(forged) < 100
    tracemalloc.start()
    try:
        with connect(server.port) as sock:
            for request_id in range(8):
                sock.sendall(frame_message(Request(request_id, 0, 0, forged).encode()))
            replies = [Reply.decode(recv_message(sock)) for _ in range(8)]
            assert ask(sock, good_request(100)).ok
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(reply.status is ReplyStatus.BAD_REQUEST for reply in replies)
    assert all("(1, 8192, 8192)" in reply.error for reply in replies)
    assert peak < 4 * 2**20  # one decode would allocate 64 MiB
    assert server.server.load_meter.load(time.perf_counter()) < 1.0


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            REQUEST_HEADER.pack(REQUEST_MAGIC, UNKNOWN_REQUEST_ID, 1, 0, 0)
            + encode(np.zeros((1, 16, 16), np.uint8), "lossless"),
            "reserved",
        ),
        (Request(3, 1, 0, encode(np.full((1, 16, 16), np.nan, np.float32), "float32")).encode(), "NaN"),
        (Request(3, 1, 0, encode(np.full((1, 16, 16), np.inf, np.float32), "float32")).encode(), "infinite"),
    ],
)  # fmt: skip
def test_reserved_ids_and_non_finite_tensors_get_error_replies(
    server: ServerThread, body: bytes, problem: str
) -> None:
    with connect(server.port) as sock:
        reply = ask(sock, body)
        assert reply.status is ReplyStatus.BAD_REQUEST and problem in reply.error
        assert ask(sock, good_request()).ok  # the connection stays usable


def test_empty_message_gets_an_error_reply_and_the_connection_closes(server: ServerThread) -> None:
    with connect(server.port) as sock:
        sock.sendall(LENGTH_PREFIX.pack(0))
        reply = Reply.decode(recv_message(sock))
        assert reply.status is ReplyStatus.BAD_REQUEST and "empty message" in reply.error
        assert reply.request_id == UNKNOWN_REQUEST_ID
        assert sock.recv(1) == b""


def test_connections_beyond_the_cap_are_refused_with_a_reply() -> None:
    settings = ServerSettings(max_connections=2)
    with ServerThread(TorchSegments(tiny_staged_model()), settings) as server:
        first, second = connect(server.port), connect(server.port)
        for sock in (first, second):
            assert ask(sock, good_request()).ok
        with connect(server.port) as third:
            reply = Reply.decode(recv_message(third))
            assert reply.status is ReplyStatus.SERVER_ERROR and "limit of 2" in reply.error
            assert third.recv(1) == b""
        first.close()
        deadline = time.monotonic() + 5.0
        while len(server.server._handlers) > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        with connect(server.port) as fourth:
            assert ask(fourth, good_request()).ok
        second.close()


class WideSegments:
    """A one-stage runner whose split-0 tensor is 1 MiB of float32, slow to answer."""

    n_stages = 1
    exit_stages = (1,)
    split_shapes = ((1, 512, 512), (4,))

    def run_stages(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        time.sleep(0.02)
        return x.reshape(len(x), -1)[:, :4] if stop > start else x

    def run_exit(self, features: np.ndarray, exit_index: int) -> np.ndarray:
        return np.asarray(features, np.float32)


def test_buffered_bytes_stay_under_the_cap_with_back_pressure() -> None:
    frame = encode(np.ones((1, 512, 512), np.float32), "float32")
    body = Request(0, 0, 0, frame).encode()
    budget = 3 * len(body)
    settings = ServerSettings(max_message_bytes=len(body), max_buffered_bytes=budget)
    results: list[list[Reply]] = []

    def client(port: int) -> None:
        with connect(port) as sock:
            for request_id in range(6):
                sock.sendall(frame_message(Request(request_id, 0, 0, frame).encode()))
            results.append([Reply.decode(recv_message(sock)) for _ in range(6)])

    with ServerThread(WideSegments(), settings) as server:
        tracemalloc.start()
        try:
            clients = [threading.Thread(target=client, args=(server.port,)) for _ in range(4)]
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join(60)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert server.server.budget.peak <= budget
    assert len(results) == 4 and all(reply.ok for replies in results for reply in replies)
    # 24 MiB were sent; the server held at most 3 bodies (and their frame copies and tensors)
    assert peak < 4 * budget + 8 * 2**20


def test_stop_answers_every_request_already_read() -> None:
    x = tiny_inputs(n=1)[0][0]
    for _ in range(3):
        server = ServerThread(SlowSegments(TorchSegments(tiny_staged_model()), 0.03))
        server.start()
        sock = connect(server.port)
        try:
            for request_id in range(8):
                sock.sendall(
                    frame_message(Request(request_id, 1, 0, encode(x, "lossless")).encode())
                )
            time.sleep(0.1)  # every request is read; the first ones compute
        finally:
            server.stop()
        replies = [Reply.decode(recv_message(sock)) for _ in range(8)]
        assert sorted(reply.request_id for reply in replies) == list(range(8))
        assert all(reply.ok for reply in replies)
        assert sock.recv(1) == b""
        sock.close()


# ---------------------------------------------------------------------- command line
def one_error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"splitrl {command}: error:"), error
    return error


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "99999"], "at most 65535"),
        (["--port", "-1"], "at least 0"),
        (["--max-message-bytes", "0"], "at least 1"),
        (["--threads", "-1"], "at least 0"),
        (["--workers", "0"], "at least 1"),
        (["--read-timeout", "nan"], "positive number"),
    ],
)
def test_bad_serve_flags_are_refused(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", *flags])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "splitrl serve: error: argument" in error and message in error


def test_serve_settings_that_cannot_hold_a_message_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--max-message-bytes", "100", "--max-buffered-bytes", "10"]) == 2
    assert "max_buffered_bytes (10) must be at least max_message_bytes (100)" in one_error_line(
        capsys, "serve"
    )


def test_serve_on_a_bad_or_busy_address_fails_in_one_line(
    tiny_export: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--export", str(tiny_export), "--host", "256.1.1.1"]) == 2
    assert "cannot listen on 256.1.1.1" in one_error_line(capsys, "serve")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--export", str(tiny_export), "--port", str(port)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in one_error_line(capsys, "serve")


def test_garbage_or_swapped_onnx_segments_are_named(tiny_export: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    shutil.copytree(tiny_export, garbage)
    (garbage / "stage_1.onnx").write_bytes(b"not a protobuf at all" * 10)
    manifest = SegmentManifest.load(garbage)
    files = {**manifest.files, "stage_1.onnx": file_sha256(garbage / "stage_1.onnx")}
    SegmentManifest(**{**manifest.__dict__, "files": files}).save(garbage)
    with pytest.raises(SegmentError, match=r"stage_1\.onnx: not a loadable ONNX graph"):
        OnnxSegments(garbage)

    swapped = tmp_path / "swapped"
    shutil.copytree(tiny_export, swapped)
    (swapped / "stage_0.onnx").write_bytes((tiny_export / "stage_1.onnx").read_bytes())
    (swapped / "stage_1.onnx").write_bytes((tiny_export / "stage_0.onnx").read_bytes())
    manifest = SegmentManifest.load(swapped)
    files = {name: file_sha256(swapped / name) for name in manifest.files}
    SegmentManifest(**{**manifest.__dict__, "files": files}).save(swapped)
    with pytest.raises(
        SegmentError, match=r"stage_0\.onnx: the graph takes .* a batch of \(1, 16, 16\)"
    ):
        OnnxSegments(swapped)


def test_first_sample_off_the_end_is_refused() -> None:
    from splitrl.runtime.device import load_test_canvases

    try:
        with pytest.raises(ValueError, match=r"samples 9990\.\.10009 exceed the 10000"):
            list(load_test_canvases(9990, 20, None))
        with pytest.raises(ValueError, match="exceed"):
            list(load_test_canvases(-1, 2, None))
    except FileNotFoundError:
        pytest.skip("the Fashion-MNIST test set is not installed")


@pytest.mark.parametrize("opset", ["5", "99"])
def test_export_refuses_an_opset_outside_the_exporters_range(
    opset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    assert main(["export", str(tmp_path / "run"), "--out", str(out), "--opset", opset]) == 2
    assert (
        f"--opset must be in 7..20 (what the ONNX exporter writes), got {opset}"
        in one_error_line(capsys, "export")
    )
    assert not out.exists()


@pytest.fixture(scope="module")
def policy_export(tiny_profile_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export of an untrained SACD on the tiny profile, with the tiny model's segments."""
    from splitrl.agents.sacd import SACD
    from splitrl.envs import SplitComputingEnv
    from splitrl.runtime.onnx_export import export_env_policy

    env = SplitComputingEnv(profile=str(tiny_profile_path), horizon=5)
    agent = SACD("MlpPolicy", env, policy_kwargs={"net_arch": [8]}, seed=0, device="cpu")
    export = tmp_path_factory.mktemp("policy_export")
    export_env_policy(agent, export, env)
    export_segments(tiny_staged_model(), export)
    return export


def test_run_device_to_a_closed_port_fails_in_one_line(
    policy_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    trace = tmp_path / "uplink.csv"
    trace.write_text("0,1\n10,5\n")
    address = f"127.0.0.1:{port}"
    flags = ["--server", address, "--export", str(policy_export), "--trace", str(trace)]
    status = main(["run-device", *flags])
    error = capsys.readouterr().err
    if "Fashion-MNIST" in error:
        pytest.skip("the Fashion-MNIST test set is not installed")
    assert status == 2
    assert f"cannot reach the server at {address}: Connection refused" in error
    assert error.count("\n") == 1


def test_garbage_policy_graph_with_a_matching_hash_is_named(
    policy_export: Path, tmp_path: Path
) -> None:
    from splitrl.runtime.exported_policy import POLICY_JSON, POLICY_ONNX, OnnxPolicy

    export = tmp_path / "export"
    shutil.copytree(policy_export, export)
    (export / POLICY_ONNX).write_bytes(b"\x08garbage" * 20)
    document = json.loads((export / POLICY_JSON).read_text())
    document["files"][POLICY_ONNX] = file_sha256(export / POLICY_ONNX)
    (export / POLICY_JSON).write_text(json.dumps(document))
    with pytest.raises(SegmentError, match=r"policy\.onnx: not a loadable ONNX graph"):
        OnnxPolicy(export)
