"""The public codec: :func:`encode` a tensor into a self-describing frame, :func:`decode` it back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from splitrl.codecs import kernels
from splitrl.codecs.bitpack import pack_bits, packed_size, unpack_bits
from splitrl.codecs.clipping import ClipSpec, parse_clip
from splitrl.codecs.entropy import entropy_decode, entropy_encode
from splitrl.codecs.errors import CodecError
from splitrl.codecs.frame import (
    MAX_ELEMENTS,
    Coding,
    FrameInfo,
    build_frame,
    check_parameters,
    check_shape,
    dtype_code,
    parse_frame,
)
from splitrl.codecs.quantize import MAX_BITS, dequantize, quantize, zero_code
from splitrl.codecs.rle import run_length_decode, run_length_encode

LOSSLESS_OPTIONS = ("float16", "float32", "lossless")


def _parse_bits(bits: object) -> int | str:
    if isinstance(bits, str):
        if bits not in LOSSLESS_OPTIONS:
            raise CodecError(
                f"bits must be 1..{MAX_BITS} or one of {LOSSLESS_OPTIONS}, got {bits!r}"
            )
        return bits
    if isinstance(bits, (int, np.integer)) and not isinstance(bits, bool) and 1 <= bits <= MAX_BITS:
        return int(bits)
    raise CodecError(f"bits must be 1..{MAX_BITS} or one of {LOSSLESS_OPTIONS}, got {bits!r}")


@dataclass(frozen=True)
class CodecConfig:
    """Settings of :func:`encode`, validated on construction.

    :param bits: 1..8 for the linear quantizer; ``"float16"`` or ``"float32"`` to send floating
        point values cast to that type; ``"lossless"`` to send the input's own dtype (a 1-byte
        integer tensor, such as a ``uint8`` image, goes through the exact 8-bit quantizer and the
        run-length coder).
    :param per_channel: one quantizer range per channel (axis 0 of CHW, axis 1 of NCHW).
    :param clip: outlier clipping of the quantizer range: ``None``, a percentile such as
        ``99.9`` or ``"percentile:99.9"``, or ``"aciq"`` (see :mod:`splitrl.codecs.clipping`).
    :param entropy: compress the payload with zstd after the run-length coder.
    :param run_length: run-length code the quantization codes (falls back to plain bit-packing
        when that is smaller); ``False`` always bit-packs.
    """

    bits: int | str = 8
    per_channel: bool = False
    clip: ClipSpec = None
    entropy: bool = False
    run_length: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", _parse_bits(self.bits))
        object.__setattr__(self, "clip", parse_clip(self.clip))
        if isinstance(self.bits, str) and (self.per_channel or self.clip is not None):
            raise CodecError(
                f"per_channel and clip apply to the linear quantizer, not bits={self.bits!r}"
            )


def _as_array(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach") and hasattr(x, "numpy"):  # a torch tensor, without importing torch
        device = getattr(x, "device", None)
        if device is not None and getattr(device, "type", "cpu") != "cpu":
            raise CodecError(f"the tensor is on {device}; move it to the CPU before encoding")
        try:
            return np.asarray(x.detach().numpy())
        except (TypeError, RuntimeError) as error:
            raise CodecError(f"cannot convert the tensor to numpy: {error}") from None
    return np.asarray(x)


def encode(
    x: Any,
    bits: int | str | CodecConfig = 8,
    *,
    per_channel: bool = False,
    clip: ClipSpec = None,
    entropy: bool = False,
    run_length: bool = True,
) -> bytes:
    """Encode a tensor into a self-describing frame.

    :param x: a numpy array or a CPU torch tensor (bool, integer or floating point).
    :param bits: the bit option (see :class:`CodecConfig`), or a whole :class:`CodecConfig`, in
        which case the keyword arguments must keep their defaults.
    :param per_channel: see :class:`CodecConfig`.
    :param clip: see :class:`CodecConfig`.
    :param entropy: see :class:`CodecConfig`.
    :param run_length: see :class:`CodecConfig`.
    :return: the frame; :func:`decode` restores shape and dtype.
    :raises CodecError: for an unsupported dtype, a tensor above ``MAX_ELEMENTS`` elements,
        non-finite values with a linear quantizer, or invalid options.
    """
    compiled = kernels.compiled
    if (
        compiled is not None
        and type(bits) is int
        and isinstance(x, np.ndarray)
        and x.dtype == np.float32
        and not (per_channel or entropy)
        and clip is None
        and run_length
    ):
        # the common case in one call, byte for byte the frame of the code below; None leaves
        # the tensors it cannot reproduce exactly (and every error) to that code
        frame: bytes | None = compiled.encode_float32_frame(x, bits, MAX_ELEMENTS)
        if frame is not None:
            return frame
    if isinstance(bits, CodecConfig):
        if per_channel or clip is not None or entropy or not run_length:
            raise CodecError("pass either a CodecConfig or keyword options, not both")
        config = bits
    else:
        config = CodecConfig(bits, per_channel, clip, entropy, run_length)
    array = _as_array(x)
    dtype_code(array.dtype)
    check_shape(array.shape)
    if not array.flags.c_contiguous:
        array = array.copy(order="C")  # np.ascontiguousarray would turn a 0-d array into 1-d
    option = config.bits
    if option == "lossless" and array.dtype.itemsize == 1:
        option = 8  # exact: the integer quantizer's step is 1 for any 1-byte integer range
    if isinstance(option, str):
        return _encode_raw(array, option, config.entropy)
    quantized = quantize(array, option, per_channel=config.per_channel, clip=config.clip)
    try:
        check_parameters(quantized.offsets, quantized.scales, option, array.dtype)
    except CodecError:
        raise CodecError(
            f"the range of the tensor overflows {array.dtype} when quantized at {option} bits"
        ) from None
    codes = quantized.codes.reshape(-1)
    payload = b""
    coding = Coding.BIT_PACKED
    if config.run_length:
        zero = zero_code(quantized.offsets, quantized.scales, option)
        payload = run_length_encode(codes, option, zero)
        # plain bit-packing is only worth building when it is the smaller payload
        if len(payload) < packed_size(codes.size, option):
            coding = Coding.RUN_LENGTH
    if coding is Coding.BIT_PACKED:
        payload = pack_bits(codes, option)
    return build_frame(
        coding=coding,
        entropy=config.entropy,
        dtype=array.dtype,
        shape=array.shape,
        payload=entropy_encode(payload) if config.entropy else payload,
        bits=option,
        per_channel=config.per_channel,
        offsets=quantized.offsets,
        scales=quantized.scales,
    )


def _encode_raw(array: np.ndarray, option: str, entropy: bool) -> bytes:
    if option == "lossless":
        wire = array.dtype
    elif array.dtype.kind != "f":
        raise CodecError(
            f"bits={option!r} needs a floating-point tensor; use 'lossless' for {array.dtype}"
        )
    else:
        wire = np.dtype(option)
    payload = array.astype(wire.newbyteorder("<"), copy=False).tobytes()
    return build_frame(
        coding=Coding.RAW,
        entropy=entropy,
        dtype=array.dtype,
        shape=array.shape,
        payload=entropy_encode(payload) if entropy else payload,
        wire_dtype=wire,
    )


def frame_info(frame: bytes | bytearray | memoryview) -> FrameInfo:
    """The parsed and checked header of a frame, without decoding the payload.

    :raises CodecError: for a malformed, truncated or corrupted frame.
    """
    return parse_frame(frame)[0]


def _check_bound_arguments(
    expected_shape: Sequence[int] | None, max_elements: int | None
) -> tuple[int, ...] | None:
    """Validate the bounds of :func:`decode`; returns the expected shape as a tuple."""
    if expected_shape is not None and not (
        isinstance(expected_shape, Sequence)
        and all(isinstance(size, (int, np.integer)) and size >= 0 for size in expected_shape)
    ):
        raise CodecError(
            f"expected_shape must be a sequence of non-negative integers, got {expected_shape!r}"
        )
    if max_elements is not None and not (
        isinstance(max_elements, (int, np.integer))
        and not isinstance(max_elements, bool)
        and max_elements >= 0
    ):
        raise CodecError(f"max_elements must be a non-negative integer, got {max_elements!r}")
    return None if expected_shape is None else tuple(int(size) for size in expected_shape)


def _check_bounds(
    info: FrameInfo, expected_shape: tuple[int, ...] | None, max_elements: int | None
) -> None:
    """Refuse a frame whose header exceeds what the caller allows (nothing is allocated yet)."""
    if expected_shape is not None and info.shape != expected_shape:
        raise CodecError(f"frame shape {info.shape} differs from the expected {expected_shape}")
    if max_elements is not None and info.element_count > max_elements:
        raise CodecError(
            f"shape {info.shape} holds {info.element_count} elements, "
            f"above max_elements={max_elements}"
        )


def decode(
    frame: bytes | bytearray | memoryview,
    *,
    expected_shape: Sequence[int] | None = None,
    max_elements: int | None = None,
) -> np.ndarray:
    """Decode a frame made by :func:`encode`.

    The cost of decoding grows with the element count the header declares, not with the frame's
    length (a run-length frame of 46 bytes can declare ``MAX_ELEMENTS`` zeros), so a receiver of
    untrusted frames bounds it with ``expected_shape`` or ``max_elements``; both are checked
    from the header before anything is allocated (worst-case costs in ``docs/codecs.md``).

    :param frame: the frame bytes.
    :param expected_shape: the only shape accepted, or ``None`` for any.
    :param max_elements: the largest element count accepted, or ``None`` for ``MAX_ELEMENTS``.
    :return: a new array with the original shape and dtype.
    :raises CodecError: for a malformed, truncated, corrupted or forged frame, or one outside
        the bounds.
    """
    expected = None
    if expected_shape is not None or max_elements is not None:
        expected = _check_bound_arguments(expected_shape, max_elements)
    compiled = kernels.compiled
    if compiled is not None and isinstance(frame, (bytes, bytearray, memoryview)):
        # the common frame in one call; None leaves every other frame to the code below
        limit = MAX_ELEMENTS if max_elements is None else min(int(max_elements), MAX_ELEMENTS)
        decoded = compiled.decode_float32_frame(frame, limit, expected)
        if decoded is not None:
            return np.frombuffer(decoded[1], dtype=np.float32).reshape(decoded[0])
    info, payload = parse_frame(frame)
    _check_bounds(info, expected, max_elements)
    count = info.element_count
    if info.coding is Coding.RAW:
        stage_size = count * info.wire_dtype.itemsize
    else:
        stage_size = packed_size(count, info.bits)
    data: bytes | memoryview = entropy_decode(payload, stage_size) if info.entropy else payload
    if info.coding is Coding.RAW:
        if len(data) != stage_size:
            raise CodecError(
                f"shape {info.shape} of {info.wire_dtype} needs {stage_size} payload bytes, "
                f"got {len(data)}"
            )
        raw = np.frombuffer(data, dtype=info.wire_dtype.newbyteorder("<"))
        return raw.astype(info.dtype).reshape(info.shape)
    if info.coding is Coding.BIT_PACKED:
        codes = unpack_bits(data, info.bits, count)
    else:
        codes = run_length_decode(data, info.bits, count)
    return dequantize(
        codes.reshape(info.shape), info.offsets, info.scales, info.dtype, info.per_channel
    )
