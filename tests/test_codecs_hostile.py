"""Truncated, corrupted and forged frames must raise CodecError and nothing else."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import zstandard

from splitrl.codecs import MAX_ELEMENTS, CodecError, decode, encode, frame_info
from splitrl.codecs.frame import Coding, build_frame
from splitrl.codecs.reader import encode_varint
from tests.codec_paths import codec_path  # noqa: F401  (runs every test on both paths)


def sample_frames() -> list[bytes]:
    rng = np.random.default_rng(0)
    x = np.maximum(rng.laplace(-0.3, 1.0, size=(4, 8, 8)), 0).astype(np.float32)
    return [
        encode(x, 2),
        encode(x, 8, per_channel=True),
        encode(x, 4, entropy=True),
        encode(x, 3, run_length=False),
        encode(x, "float16", entropy=True),
        encode(rng.integers(0, 255, size=(6, 6)).astype(np.uint8), "lossless"),
    ]


def with_fixed_crc(frame: bytes, header_length: int) -> bytes:
    """Recompute the CRC of a tampered frame, as a forger would (header layout of the original)."""
    if len(frame) < header_length:
        return frame
    head, payload = frame[: header_length - 4], frame[header_length:]
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def test_fuzzed_frames_raise_only_codec_error() -> None:
    rng = np.random.default_rng(1234)
    rejected = decoded = 0
    for frame in sample_frames():
        header_length = frame_info(frame).header_length
        for _ in range(150):
            mutated = bytearray(frame)
            action = rng.integers(3)
            if action == 0:
                for position in rng.integers(0, len(mutated), size=rng.integers(1, 4)):
                    mutated[position] ^= int(rng.integers(1, 256))
            elif action == 1:
                del mutated[rng.integers(0, len(mutated)) :]
            else:
                mutated += rng.bytes(int(rng.integers(1, 20)))
            for candidate in (bytes(mutated), with_fixed_crc(bytes(mutated), header_length)):
                try:
                    assert isinstance(decode(candidate), np.ndarray)
                    decoded += 1
                except CodecError:
                    rejected += 1
    assert rejected > decoded > 0  # forged CRCs let some payload corruptions decode


def forged_run_length_frame(payload: bytes, shape: tuple[int, ...] = (4, 4)) -> bytes:
    return build_frame(
        coding=Coding.RUN_LENGTH,
        entropy=False,
        dtype=np.dtype(np.float32),
        shape=shape,
        payload=payload,
        bits=8,
        offsets=np.zeros(1, np.float32),
        scales=np.ones(1, np.float32),
    )


def flip_last_byte(frame: bytes) -> bytes:
    return frame[:-1] + bytes((frame[-1] ^ 0x01,))


def raw_frame(shape: tuple[int, ...], payload: bytes, entropy: bool = False) -> bytes:
    return build_frame(
        coding=Coding.RAW, entropy=entropy, dtype=np.dtype(np.uint8), shape=shape, payload=payload
    )


def stream(width: int, values: list[int]) -> bytes:
    """A patched stream with no escapes (widths up to 8)."""
    bits = "".join(format(value, f"0{width}b") for value in values) if width else ""
    bits += "0" * (-len(bits) % 8)
    return bytes((width, 0)) + int(bits or "0", 2).to_bytes(len(bits) // 8, "big")


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"", "truncated"),
        (b"XXXX" + encode(np.ones(4), 4)[4:], "bad magic"),
        (encode(np.ones(4), 4)[:4] + b"\x09" + encode(np.ones(4), 4)[5:], "version"),
        (encode(np.ones(4), 4)[:-1], "truncated"),
        (encode(np.ones(4), 4) + b"\x00", "too long"),
        (flip_last_byte(encode(np.arange(64.0), 8)), "CRC mismatch"),
        (raw_frame((4, 4), bytes(15)), "needs 16 payload bytes"),
        (raw_frame((2**13, 2**13, 2), b""), "MAX_ELEMENTS"),
        (raw_frame((2**32 - 1,) * 8, b""), "MAX_ELEMENTS"),
        # 3 runs of >= 3 in a 4-element tensor
        (forged_run_length_frame(b"\x00\x03\x00", shape=(4,)), "overflow"),
        # one run of 3 + 13 literal counts: declares 16 elements, run length field says 2**31
        (
            forged_run_length_frame(
                b"\x00\x01\x00"
                + stream(4, [13])
                + bytes((32, 0))
                + (2**31).to_bytes(4, "big")
                + stream(0, [0])
                + stream(1, [0] * 13)
            ),
            "cover",
        ),
        # runs and literals add up to 15, not 16
        (
            forged_run_length_frame(
                b"\x00\x01\x00"
                + stream(4, [12])
                + stream(0, [0])
                + stream(0, [0])
                + stream(1, [0] * 12)
            ),
            "cover 15 elements",
        ),
        # 16 trailing literals promised, 15 present
        (
            forged_run_length_frame(
                b"\x00\x00" + encode_varint(16) + bytes(6) + stream(8, [0] * 15)
            ),
            "truncated",
        ),
        (forged_run_length_frame(b"\x00\x80\x80\x80\x80\x80"), "variable-length"),
    ],
)
def test_forged_frames_are_rejected_with_a_named_problem(frame: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode(frame)


def test_zstd_bomb_is_refused_before_decompressing() -> None:
    bomb = zstandard.ZstdCompressor(level=3).compress(bytes(10**8))
    with pytest.raises(CodecError, match="exceeds"):
        decode(raw_frame((4, 4), bomb, entropy=True))


def test_zstd_frame_without_content_size_is_refused() -> None:
    payload = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(16))
    with pytest.raises(CodecError, match="does not record"):
        decode(raw_frame((4, 4), payload, entropy=True))


def test_frame_info_reads_the_header_only() -> None:
    frame = encode(np.ones((2, 3, 4), np.float32), 5, per_channel=True)
    info = frame_info(frame)
    assert (info.shape, info.bits, info.per_channel, info.dtype) == ((2, 3, 4), 5, True, np.float32)
    assert info.header_length + info.payload_length == len(frame)
    assert MAX_ELEMENTS == 2**26


@pytest.mark.parametrize("not_a_frame", ["text", None, 42])
def test_non_bytes_input_is_rejected(not_a_frame: object) -> None:
    with pytest.raises(CodecError, match="must be bytes"):
        decode(not_a_frame)  # type: ignore[arg-type]
