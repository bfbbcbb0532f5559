"""Coverage-guided fuzzer (atheris, libFuzzer) of the codec's decoder and the server's parser.

The first byte of an input picks the target (its value modulo 3), the rest is its data:

* ``0``: :func:`splitrl.codecs.decode`, bounded by :data:`MAX_ELEMENTS`; where the compiled
  kernels are in use, the numpy reference must give the same array or the same error message.
  When bit 2 of the first byte is set, the frame's CRC is repaired first, as a forger would, so
  that mutations reach the payload decoders instead of stopping at the checksum;
* ``1``: :func:`splitrl.codecs.frame_info`;
* ``2``: a byte stream as the edge server reads it: length-prefixed messages
  (:func:`splitrl.runtime.protocol.read_message`), each parsed as a request whose frame is
  decoded, and as a reply.

Anything but :class:`~splitrl.codecs.CodecError` or
:class:`~splitrl.runtime.protocol.ProtocolError` is a finding, and so is a decoded array whose
shape or dtype differs from the header. Run with ``make fuzz`` (coverage reaches the C kernels)
or directly; arguments are libFuzzer's::

    python fuzz/fuzz_codec.py build/fuzz/corpus fuzz/seeds -runs=20000

``SPLITRL_FUZZ_KERNELS=PATH`` loads the kernels from a build instrumented with
``-fsanitize=fuzzer-no-link`` (``fuzz/run.sh compiled`` builds it); ``SPLITRL_CODEC_KERNELS=numpy`` fuzzes
the numpy implementation alone. ``python fuzz/fuzz_codec.py --write-seeds DIR`` writes the seed
corpus.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import struct
import sys
import zlib
from pathlib import Path
from types import ModuleType

import atheris
import numpy as np

with atheris.instrument_imports(include=["splitrl.codecs", "splitrl.runtime.protocol"]):
    from splitrl.codecs import CodecError, decode, encode, frame_info, kernels
    from splitrl.codecs.frame import parse_frame
    from splitrl.runtime.protocol import (
        LENGTH_PREFIX,
        ProtocolError,
        Reply,
        ReplyStatus,
        Request,
        frame_message,
        read_message,
    )

MAX_ELEMENTS = 2**16
"""Element bound of every decode: a fuzzed header may declare up to ``MAX_ELEMENTS`` of the codec."""
MAX_MESSAGE_BYTES = 2**16
INSTRUMENTED_KERNELS_ENV = "SPLITRL_FUZZ_KERNELS"
DECODE, FRAME_INFO, SERVER_STREAM = range(3)
REPAIR_CRC = 4
_LOOP = asyncio.new_event_loop()


def load_instrumented_kernels(path: str) -> ModuleType:
    """Load the kernel module from an instrumented build, in place of the installed one."""
    spec = importlib.util.spec_from_file_location("splitrl.codecs._kernels", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{INSTRUMENTED_KERNELS_ENV}={path} is not an extension module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outcome(data: bytes) -> np.ndarray | str:
    try:
        return decode(data, max_elements=MAX_ELEMENTS)
    except CodecError as error:
        return f"CodecError: {error}"


def with_valid_crc(data: bytes) -> bytes:
    """The frame with its CRC recomputed, where the header can be read; else unchanged."""
    try:
        info, payload = parse_frame(data, verify_crc=False)
    except CodecError:
        return data
    crc_offset = info.header_length - 4
    crc = zlib.crc32(payload, zlib.crc32(data[:crc_offset]))
    return data[:crc_offset] + struct.pack("<I", crc) + data[info.header_length :]


def check_decode(data: bytes, repair_crc: bool = False) -> None:
    """Decode on the selected path; the compiled path must agree with the numpy reference."""
    if repair_crc:
        data = with_valid_crc(data)
    outcome = _outcome(data)
    if isinstance(outcome, np.ndarray):
        info = frame_info(data)
        assert outcome.shape == info.shape and outcome.dtype == info.dtype, (outcome, info)
    compiled = kernels.compiled
    if compiled is None:
        return
    kernels.compiled = None
    try:
        reference = _outcome(data)
    finally:
        kernels.compiled = compiled
    if isinstance(outcome, str) or isinstance(reference, str):
        assert outcome == reference, (outcome, reference)
    else:
        assert outcome.dtype == reference.dtype and outcome.shape == reference.shape
        assert outcome.tobytes() == reference.tobytes(), "compiled and numpy decode differ"


def check_frame_info(data: bytes) -> None:
    try:
        info = frame_info(data)
    except CodecError:
        return
    assert info.header_length + info.payload_length == len(data), info


async def _serve(data: bytes) -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    while (body := await read_message(reader, max_bytes=MAX_MESSAGE_BYTES)) is not None:
        try:
            reply = Reply.decode(body)
            assert isinstance(reply.status, ReplyStatus)
        except ProtocolError:
            pass
        request = Request.decode(body)
        try:
            decode(request.frame, max_elements=MAX_ELEMENTS)
        except CodecError:
            pass


def check_server_stream(data: bytes) -> None:
    try:
        _LOOP.run_until_complete(_serve(data))
    except ProtocolError:
        pass


def test_one_input(data: bytes) -> None:
    """The libFuzzer entry point."""
    if not data:
        return
    target = data[0] % 3
    if target == DECODE:
        check_decode(data[1:], repair_crc=bool(data[0] & REPAIR_CRC))
    elif target == FRAME_INFO:
        check_frame_info(data[1:])
    else:
        check_server_stream(data[1:])


def seed_inputs() -> dict[str, bytes]:
    """A small seed corpus: one valid frame of every coding and option, and server streams."""
    rng = np.random.default_rng(0)
    activation = np.maximum(rng.normal(-0.3, 1.0, size=(4, 6, 6)), 0).astype(np.float32)
    frames = {
        "rle-f32-b4": encode(activation, 4),
        "rle-f32-b1": encode(activation, 1),
        "rle-f32-b8-per-channel": encode(activation, 8, per_channel=True),
        "rle-zstd-f32-b3": encode(activation, 3, entropy=True),
        "packed-f32-b5": encode(activation, 5, run_length=False),
        "packed-f64-b7-clip": encode(activation.astype(np.float64), 7, clip="aciq"),
        "raw-f16-zstd": encode(activation[:1], "float16", entropy=True),
        "raw-u8": encode(rng.integers(0, 256, size=(3, 5)).astype(np.uint8), "lossless"),
        "rle-i16-b2": encode(rng.integers(-40, 40, size=20).astype(np.int16), 2),
        "rle-bool-0d": encode(np.array(True), 8),
    }
    seeds = {f"decode-{name}": bytes((DECODE,)) + frame for name, frame in frames.items()}
    seeds["decode-repair-crc-rle-f32-b4"] = bytes((DECODE | REPAIR_CRC,)) + frames["rle-f32-b4"]
    seeds["frame-info-rle"] = bytes((FRAME_INFO,)) + frames["rle-f32-b4"]
    request = Request(7, 1, 2, frames["rle-f32-b4"], deadline_s=0.05).encode()
    reply = Reply(7, ReplyStatus.OK, predicted=3, confidence=0.9).encode()
    seeds["server-request-and-reply"] = (
        bytes((SERVER_STREAM,)) + frame_message(request) + frame_message(reply)
    )
    seeds["server-empty-message"] = bytes((SERVER_STREAM,)) + LENGTH_PREFIX.pack(0)
    return seeds


def write_seeds(directory: Path) -> None:
    """Write :func:`seed_inputs` into ``directory``, one file per seed."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seed_inputs().items():
        (directory / name).write_bytes(data)


def main() -> None:
    if sys.argv[1:2] == ["--write-seeds"]:
        write_seeds(Path(sys.argv[2]))
        return
    instrumented = os.environ.get(INSTRUMENTED_KERNELS_ENV)
    if instrumented and kernels.compiled is not None:
        kernels.compiled = load_instrumented_kernels(instrumented)
    path = "numpy" if kernels.compiled is None else f"compiled ({kernels.compiled.__file__})"
    print(f"fuzzing the {path} codec path", flush=True)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
