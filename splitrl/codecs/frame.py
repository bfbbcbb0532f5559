"""The self-describing wire format: a header, then the payload (layout in ``docs/codecs.md``).

All integers are little-endian. The CRC32 (:func:`zlib.crc32`) covers every header byte before
it and the payload. A frame with a valid CRC may still be forged, so :func:`parse_frame` checks
the header on its own (sizes, limits, parameters) and the decoder checks the payload against it.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from splitrl.codecs.errors import CodecError
from splitrl.codecs.quantize import MAX_BITS, channel_axis
from splitrl.codecs.reader import ByteReader

MAGIC = b"SPLC"
VERSION = 1
MAX_ELEMENTS = 2**26
"""Largest element count a frame may declare (64 Mi elements, 256 MiB as float32)."""
MAX_NDIM = 8

_DTYPES = (
    np.dtype(np.bool_),
    np.dtype(np.uint8),
    np.dtype(np.int8),
    np.dtype(np.uint16),
    np.dtype(np.int16),
    np.dtype(np.uint32),
    np.dtype(np.int32),
    np.dtype(np.uint64),
    np.dtype(np.int64),
    np.dtype(np.float16),
    np.dtype(np.float32),
    np.dtype(np.float64),
)
_DTYPE_CODES = {dtype: code for code, dtype in enumerate(_DTYPES)}
_FLAG_ENTROPY = 1
_FLAG_PER_CHANNEL = 2
_FLAG_FLOAT64_PARAMETERS = 4
_FLAGS_KNOWN = _FLAG_ENTROPY | _FLAG_PER_CHANNEL | _FLAG_FLOAT64_PARAMETERS
_FIXED = struct.Struct("<4sBBBBBBB")  # magic, version, coding, flags, dtype, bits, wire dtype, ndim
_TRAILER = struct.Struct("<II")  # payload length, CRC32


class Coding(enum.IntEnum):
    """How the elements are laid out in the (possibly zstd-compressed) payload."""

    RAW = 0
    """Elements of the wire dtype, little-endian (the lossless options)."""
    BIT_PACKED = 1
    """Quantization codes bit-packed at ``bits`` bits each."""
    RUN_LENGTH = 2
    """Quantization codes run-length coded (:mod:`splitrl.codecs.rle`)."""


def check_shape(shape: tuple[int, ...]) -> int:
    """The element count of a shape within the limits.

    A zero-sized dimension does not lift the limit on the others: numpy cannot even describe
    an array whose non-zero dimensions multiply beyond its address space.

    :return: the number of elements.
    :raises CodecError: for more than ``MAX_NDIM`` dimensions, or non-zero dimensions whose
        product exceeds ``MAX_ELEMENTS``.
    """
    if len(shape) > MAX_NDIM:
        raise CodecError(f"{len(shape)} dimensions exceed the limit of {MAX_NDIM}")
    extent = 1
    for size in shape:
        extent *= size or 1
    if extent > MAX_ELEMENTS:
        raise CodecError(
            f"shape {shape} spans {extent} elements, above MAX_ELEMENTS={MAX_ELEMENTS}"
        )
    return extent if all(shape) else 0


def check_parameters(offsets: np.ndarray, scales: np.ndarray, bits: int, dtype: np.dtype) -> None:
    """Refuse quantizer parameters that do not decode to finite values of ``dtype``.

    Every decoded value ``offset + code * scale`` lies between ``offset`` and
    ``offset + (2**bits - 1) * scale``, so the two ends decide.

    :raises CodecError: for a non-finite or non-positive parameter, or a range that overflows the
        parameters' or the output's floating-point type.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        span = scales * scales.dtype.type((1 << bits) - 1)
        ends = np.concatenate((offsets, offsets + span))
        if dtype.kind == "f":
            ends = ends.astype(dtype)
    if not (np.isfinite(span).all() and np.isfinite(ends).all() and (scales > 0).all()):
        raise CodecError(
            "quantizer parameters must be finite with positive scales, and decode to finite "
            f"{dtype} values"
        )


def dtype_code(dtype: np.dtype) -> int:
    """Wire code of a supported dtype.

    :raises CodecError: for an unsupported dtype (complex, object, strings, ...).
    """
    try:
        return _DTYPE_CODES[dtype.newbyteorder("=")]
    except KeyError:
        supported = ", ".join(str(d) for d in _DTYPES)
        raise CodecError(f"unsupported dtype {dtype}; supported: {supported}") from None


@dataclass(frozen=True)
class FrameInfo:
    """The parsed header of a frame.

    :param version: wire format version.
    :param coding: payload layout.
    :param entropy: whether the payload went through the zstd stage.
    :param per_channel: whether there is one quantizer range per channel.
    :param dtype: dtype of the decoded tensor.
    :param bits: bit-width of the codes (1..8), 0 for a raw frame.
    :param wire_dtype: dtype of the raw elements (the decoded dtype's own for quantized frames).
    :param shape: shape of the decoded tensor.
    :param offsets: quantizer offsets (empty for a raw frame).
    :param scales: quantizer steps (empty for a raw frame).
    :param header_length: bytes before the payload.
    :param payload_length: bytes of payload.
    :param crc32: the stored checksum.
    """

    version: int
    coding: Coding
    entropy: bool
    per_channel: bool
    dtype: np.dtype
    bits: int
    wire_dtype: np.dtype
    shape: tuple[int, ...]
    offsets: np.ndarray
    scales: np.ndarray
    header_length: int
    payload_length: int
    crc32: int

    @property
    def element_count(self) -> int:
        """Number of elements of the decoded tensor."""
        return int(np.prod(self.shape, dtype=np.int64))


def build_frame(
    *,
    coding: Coding,
    entropy: bool,
    dtype: np.dtype,
    shape: tuple[int, ...],
    payload: bytes,
    bits: int = 0,
    wire_dtype: np.dtype | None = None,
    per_channel: bool = False,
    offsets: np.ndarray | None = None,
    scales: np.ndarray | None = None,
) -> bytes:
    """Assemble header and payload into a frame (arguments as in :class:`FrameInfo`)."""
    flags = (_FLAG_ENTROPY if entropy else 0) | (_FLAG_PER_CHANNEL if per_channel else 0)
    parameters = b""
    if offsets is not None and scales is not None:
        if offsets.dtype == np.float64:
            flags |= _FLAG_FLOAT64_PARAMETERS
        little = offsets.dtype.newbyteorder("<")
        parameters = offsets.astype(little).tobytes() + scales.astype(little).tobytes()
    wire = dtype_code(wire_dtype if wire_dtype is not None else dtype)
    fixed = _FIXED.pack(MAGIC, VERSION, coding, flags, dtype_code(dtype), bits, wire, len(shape))
    head = fixed + struct.pack(f"<{len(shape)}I", *shape) + parameters
    crc = zlib.crc32(payload, zlib.crc32(head + struct.pack("<I", len(payload))))
    return head + _TRAILER.pack(len(payload), crc) + payload


def parse_frame(
    frame: bytes | bytearray | memoryview, *, verify_crc: bool = True
) -> tuple[FrameInfo, memoryview]:
    """Parse and check a frame's header, length and CRC; the payload is not decoded.

    :param frame: the frame bytes.
    :param verify_crc: ``False`` skips the CRC comparison, for tools that repair or forge frames
        (the fuzzer); a decoder always verifies it.
    :return: the header and a view of the payload.
    :raises CodecError: naming the first problem found.
    """
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise CodecError(f"a frame must be bytes, got {type(frame).__name__}")
    reader = ByteReader(frame, "frame header")
    magic, version, coding, flags, dtype_id, bits, wire_id, ndim = reader.unpack(
        _FIXED.format, "fixed header"
    )
    if magic != MAGIC:
        raise CodecError(f"bad magic {magic!r}: not a splitrl codec frame (expected {MAGIC!r})")
    if version != VERSION:
        raise CodecError(f"unsupported frame version {version} (this decoder reads {VERSION})")
    if coding not in Coding._value2member_map_:
        raise CodecError(f"unknown coding id {coding}")
    if flags & ~_FLAGS_KNOWN:
        raise CodecError(f"unknown flag bits {flags:#04x}")
    if dtype_id >= len(_DTYPES) or wire_id >= len(_DTYPES):
        raise CodecError(f"unknown dtype code {max(dtype_id, wire_id)}")
    if ndim > MAX_NDIM:
        raise CodecError(f"{ndim} dimensions exceed the limit of {MAX_NDIM}")
    shape = tuple(int(size) for size in reader.unpack(f"<{ndim}I", "shape"))
    check_shape(shape)
    coding_kind = Coding(coding)
    per_channel = bool(flags & _FLAG_PER_CHANNEL)
    quantized = coding_kind is not Coding.RAW
    if quantized != (1 <= bits <= MAX_BITS):
        raise CodecError(f"bits={bits} does not fit a {coding_kind.name.lower()} frame")
    if per_channel and not quantized:
        raise CodecError("a raw frame cannot have per-channel parameters")
    if quantized and wire_id != dtype_id:
        raise CodecError("a quantized frame must name its own dtype as wire dtype")
    parameter_count = 0
    if quantized:
        parameter_count = shape[channel_axis(ndim)] if per_channel else 1
    parameter_dtype = np.dtype("<f8" if flags & _FLAG_FLOAT64_PARAMETERS else "<f4")
    offsets = reader.array(parameter_dtype, parameter_count, "quantizer offsets")
    scales = reader.array(parameter_dtype, parameter_count, "quantizer scales")
    if quantized:
        check_parameters(offsets, scales, bits, _DTYPES[dtype_id])
    checked_length = reader.offset + 4
    payload_length, crc = reader.unpack(_TRAILER.format, "payload length and CRC")
    if reader.remaining != payload_length:
        problem = "truncated" if reader.remaining < payload_length else "too long"
        raise CodecError(
            f"frame {problem}: header promises {payload_length} payload bytes, "
            f"{reader.remaining} follow"
        )
    view = memoryview(frame)
    payload = view[reader.offset :]
    if verify_crc:
        actual = zlib.crc32(payload, zlib.crc32(view[:checked_length]))
        if actual != crc:
            raise CodecError(f"CRC mismatch: stored {crc:#010x}, computed {actual:#010x}")
    info = FrameInfo(
        version=version,
        coding=coding_kind,
        entropy=bool(flags & _FLAG_ENTROPY),
        per_channel=per_channel,
        dtype=_DTYPES[dtype_id],
        bits=bits,
        wire_dtype=_DTYPES[wire_id],
        shape=shape,
        offsets=offsets.astype(parameter_dtype.newbyteorder("=")),
        scales=scales.astype(parameter_dtype.newbyteorder("=")),
        header_length=reader.offset,
        payload_length=payload_length,
        crc32=crc,
    )
    return info, payload
