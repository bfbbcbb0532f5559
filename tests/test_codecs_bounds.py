"""Bounded decoding and the forged frames that once decoded wrongly: each one is refused or exact."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import zstandard

from splitrl.codecs import MAX_ELEMENTS, CodecError, decode, encode
from splitrl.codecs.frame import Coding, build_frame
from splitrl.codecs.quantize import parameter_dtype
from splitrl.codecs.reader import encode_varint
from tests.codec_paths import codec_path  # noqa: F401  (runs every test on both paths)

DECODE_BYTES_PER_ELEMENT = 40
"""The documented worst case of decoding memory per declared element (docs/codecs.md)."""


def width_zero_literals_frame(count: int, dtype: type = np.float32) -> bytes:
    """A run-length frame of ``count`` literals, all in a width-0 stream: 45 bytes for 2**26."""
    empty_stream = bytes((0, 0))
    payload = b"\x00" + encode_varint(0) + encode_varint(count) + empty_stream * 4
    return build_frame(
        coding=Coding.RUN_LENGTH,
        entropy=False,
        dtype=np.dtype(dtype),
        shape=(count,),
        payload=payload,
        bits=8,
        offsets=np.zeros(1, parameter_dtype(np.dtype(dtype))),
        scales=np.ones(1, parameter_dtype(np.dtype(dtype))),
    )


def test_the_45_byte_frame_is_refused_above_max_elements_without_allocating() -> None:
    frame = width_zero_literals_frame(MAX_ELEMENTS)
    assert len(frame) == 45
    tracemalloc.start()
    try:
        with pytest.raises(CodecError, match="above max_elements=4096"):
            decode(frame, max_elements=4096)
        with pytest.raises(CodecError, match="differs from the expected"):
            decode(frame, expected_shape=(64, 64))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_decoding_memory_stays_within_the_documented_bound_per_element(dtype: type) -> None:
    count = 2**18
    frame = width_zero_literals_frame(count, dtype)
    tracemalloc.start()
    try:
        decoded = decode(frame, max_elements=count)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert decoded.shape == (count,) and not decoded.any()
    assert peak <= DECODE_BYTES_PER_ELEMENT * count


def test_frames_within_the_bounds_decode() -> None:
    x = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    frame = encode(x, "lossless")
    assert np.array_equal(decode(frame, expected_shape=(2, 3, 4), max_elements=24), x)
    assert np.array_equal(decode(frame, expected_shape=[2, 3, 4]), x)


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ({"max_elements": -1}, "max_elements must be"),
        ({"max_elements": 2.5}, "max_elements must be"),
        ({"max_elements": True}, "max_elements must be"),
        ({"expected_shape": (2, -3)}, "expected_shape must be"),
        ({"expected_shape": "abc"}, "expected_shape must be"),
    ],
)
def test_bad_bounds_are_refused(bounds: dict[str, object], message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode(encode(np.ones(4, np.float32), 4), **bounds)  # type: ignore[arg-type]


def test_a_zero_sized_shape_cannot_hide_huge_dimensions() -> None:
    frame = bytes.fromhex("53504c430100000a000a0300000000ffffffffffffffff00000000a49f66ba")
    with pytest.raises(CodecError, match="above MAX_ELEMENTS"):
        decode(frame)
    with pytest.raises(CodecError, match="above MAX_ELEMENTS"):
        encode(np.zeros((0, MAX_ELEMENTS + 1), np.float32), 8)


def raw_zstd_frame(payload: bytes) -> bytes:
    return build_frame(
        coding=Coding.RAW, entropy=True, dtype=np.dtype(np.uint8), shape=(16,), payload=payload
    )


@pytest.mark.parametrize("extra", [b"junk", zstandard.ZstdCompressor().compress(bytes(16))])
def test_bytes_after_the_zstd_frame_are_refused(extra: bytes) -> None:
    compressed = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(16))
    assert decode(raw_zstd_frame(compressed)).shape == (16,)
    with pytest.raises(CodecError, match="entropy stage"):
        decode(raw_zstd_frame(compressed + extra))


@pytest.mark.parametrize(
    ("dtype", "offset", "scale"),
    [
        (np.float32, 0.0, 3e38),  # 255 * scale overflows float32
        (np.float32, -3e38, 2.6e36),
        (np.float16, 0.0, 1e3),  # finite in the float32 parameters, not in float16
        (np.float64, 0.0, 1e307),
    ],
)
def test_parameters_that_decode_to_infinity_are_refused(
    dtype: type, offset: float, scale: float
) -> None:
    parameter = np.float64 if dtype == np.float64 else np.float32
    frame = build_frame(
        coding=Coding.BIT_PACKED,
        entropy=False,
        dtype=np.dtype(dtype),
        shape=(4,),
        payload=bytes((255, 0, 1, 255)),
        bits=8,
        offsets=np.array([offset], parameter),
        scales=np.array([scale], parameter),
    )
    with pytest.raises(CodecError, match="quantizer parameters"):
        decode(frame)


@pytest.mark.parametrize(
    ("value", "bits"),
    [(np.float32(-1.5), 8), (np.float64(2.0), 3), (np.uint8(7), "lossless"), (np.int16(9), 4)],
)
def test_zero_dimensional_arrays_keep_their_shape(value: np.generic, bits: int | str) -> None:
    x = np.array(value)
    decoded = decode(encode(x, bits))
    assert decoded.shape == () and decoded.dtype == x.dtype
    assert decoded == x


@pytest.mark.parametrize(
    "values",
    [
        np.array([-(2**63), 2**63 - 1], np.int64),
        np.array([2**64 - 1, 0], np.uint64),
        np.array([2**64 - 1], np.uint64),
    ],
)
def test_64_bit_extremes_saturate_instead_of_wrapping(values: np.ndarray) -> None:
    assert np.array_equal(decode(encode(values, 8)), values)
