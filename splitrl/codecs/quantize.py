"""Linear (uniform, asymmetric min-max) quantization to 1..8-bit codes.

``code = clip(round((x - offset) / scale), 0, 2**bits - 1)`` and ``x_hat = offset + code * scale``
with ``offset = lo`` and ``scale = (hi - lo) / (2**bits - 1)`` for the range ``[lo, hi]`` chosen
by the clipping rule (:mod:`splitrl.codecs.clipping`). Every ``x_hat`` lies within half a step of
the input clipped to ``[lo, hi]`` (up to the rounding of the output dtype). The zero point, the
code of the value 0, is ``round(-offset / scale)``; for a post-ReLU tensor ``lo = 0`` and it is 0.

Integer inputs (``uint8`` images, ``bool`` masks) use an integer step
``scale = max(1, ceil((hi - lo) / (2**bits - 1)))`` so ``x_hat`` stays an integer; with 8 bits
any tensor whose range spans at most 255 (every ``uint8`` or ``int8`` tensor) is exact.

Per-channel parameters use the channel axis :func:`channel_axis`: axis 0 of a 3-D ``CHW``
tensor, axis 1 of a 4-D ``NCHW`` tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from splitrl.codecs import kernels
from splitrl.codecs.clipping import clip_range
from splitrl.codecs.errors import CodecError

MAX_BITS = 8


@dataclass(frozen=True)
class LinearQuantization:
    """Codes and parameters of one quantized tensor.

    :param codes: ``uint8`` codes, same shape as the input.
    :param offsets: value of code 0, one per channel (or a single one), ``float32`` or ``float64``.
    :param scales: step between codes, same length and dtype as ``offsets``.
    """

    codes: np.ndarray
    offsets: np.ndarray
    scales: np.ndarray


def channel_axis(ndim: int) -> int:
    """The per-channel axis: 0 for ``CHW`` (3-D), 1 for ``NCHW`` (4-D).

    :raises CodecError: for any other number of dimensions.
    """
    if ndim == 3:
        return 0
    if ndim == 4:
        return 1
    raise CodecError(f"per-channel quantization needs a 3-D CHW or 4-D NCHW tensor, got {ndim}-D")


def parameter_dtype(dtype: np.dtype) -> np.dtype:
    """``float32`` parameters where they represent the input exactly enough, else ``float64``."""
    if (dtype.kind == "f" and dtype.itemsize <= 4) or (dtype.kind in "biu" and dtype.itemsize <= 2):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _broadcast_shape(shape: tuple[int, ...], axis: int | None) -> tuple[int, ...]:
    if axis is None:
        return (1,) * len(shape)
    return tuple(size if dim == axis else 1 for dim, size in enumerate(shape))


def _rows(x: np.ndarray, axis: int | None) -> np.ndarray:
    if axis is None:
        return x.reshape(1, -1)
    return np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)


def quantize(
    x: np.ndarray, bits: int, *, per_channel: bool = False, clip: float | str | None = None
) -> LinearQuantization:
    """Quantize a numeric tensor to ``bits``-bit codes.

    :param x: numeric array (bool, integer or floating point), finite.
    :param bits: 1 to 8.
    :param per_channel: one range per channel (:func:`channel_axis`) instead of one per tensor.
    :param clip: a parsed clip specification (:func:`splitrl.codecs.clipping.parse_clip`).
    :return: the codes and parameters.
    :raises CodecError: for NaN or infinite values, or per-channel on a tensor that is not 3-D/4-D.
    """
    axis = channel_axis(x.ndim) if per_channel else None
    if x.ndim == 0:  # numpy arithmetic turns 0-d arrays into scalars: quantize one element
        flat = quantize(x.reshape(1), bits, clip=clip)
        return LinearQuantization(flat.codes.reshape(()), flat.offsets, flat.scales)
    if kernels.compiled is not None and axis is None and clip is None:
        compiled = _quantize_compiled(x, bits, kernels.compiled)
        if compiled is not None:
            return compiled
    integer_input = x.dtype.kind in "biu"
    param_dtype = parameter_dtype(x.dtype)
    work = x.astype(param_dtype, copy=False)
    if not integer_input and not np.isfinite(work).all():
        raise CodecError("the linear quantizer needs finite values; the input has NaN or infinity")
    levels = (1 << bits) - 1
    count_per_row = x.size // (x.shape[axis] if axis is not None else 1) if x.size else 0
    if count_per_row == 0:
        channels = x.shape[axis] if axis is not None else 1
        zeros = np.zeros(channels, dtype=param_dtype)
        return LinearQuantization(np.zeros(x.shape, np.uint8), zeros, np.ones_like(zeros))
    lo, hi = clip_range(_rows(work, axis), clip, bits)
    if integer_input:
        lo, hi = np.floor(lo), np.ceil(hi)
        scale = np.maximum(1.0, np.ceil((hi - lo) / levels))
    else:
        scale = (hi - lo) / levels
        scale = np.where(scale > 0, scale, 1.0)
    offsets, scales = lo.astype(param_dtype), scale.astype(param_dtype)
    shape = _broadcast_shape(x.shape, axis)
    scaled = (work - offsets.reshape(shape)) / scales.reshape(shape)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, levels, out=scaled)
    return LinearQuantization(scaled.astype(np.uint8), offsets, scales)


def _quantize_compiled(x: np.ndarray, bits: int, compiled: ModuleType) -> LinearQuantization | None:
    """The per-tensor min-max case on the compiled kernels, where they reproduce numpy exactly."""
    if x.size == 0 or x.size > compiled.MAX_COUNT or not x.flags.c_contiguous:
        return None
    if x.dtype == np.float32:
        result = compiled.quantize_float32(x, bits)
    elif x.dtype == np.uint8:
        result = compiled.quantize_uint8(x, bits)
    else:
        return None
    if result is None:
        return None
    codes, offset, scale = result
    return LinearQuantization(
        np.frombuffer(codes, dtype=np.uint8).reshape(x.shape),
        np.array([offset], dtype=np.float32),
        np.array([scale], dtype=np.float32),
    )


def dequantize(
    codes: np.ndarray, offsets: np.ndarray, scales: np.ndarray, dtype: np.dtype, per_channel: bool
) -> np.ndarray:
    """Map codes back to values of ``dtype``: ``offset + code * scale``.

    :param codes: ``uint8`` codes in their tensor shape.
    :param offsets: per-tensor (length 1) or per-channel offsets.
    :param scales: same length as ``offsets``.
    :param dtype: the output dtype; integer outputs are rounded and kept inside the dtype's range.
    :param per_channel: whether the parameters are per channel (:func:`channel_axis`).
    :return: the dequantized tensor.
    """
    if codes.ndim == 0:  # numpy arithmetic turns 0-d arrays into scalars
        return dequantize(codes.reshape(1), offsets, scales, dtype, per_channel).reshape(())
    compiled = kernels.compiled
    if (
        compiled is not None
        and not per_channel
        and dtype == np.float32
        and scales.dtype == np.float32
        and codes.dtype == np.uint8
        and codes.flags.c_contiguous
    ):
        values = compiled.dequantize_float32(codes, float(offsets[0]), float(scales[0]))
        return np.frombuffer(values, dtype=np.float32).reshape(codes.shape)
    axis = channel_axis(codes.ndim) if per_channel else None
    shape = _broadcast_shape(codes.shape, axis)
    values = codes * scales.reshape(shape) + offsets.reshape(shape)
    if dtype.kind == "b":
        return values >= 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        rounded = np.rint(values)
        # float(2**63 - 1) and float(2**64 - 1) round up out of range: saturate those by hand
        top = float(info.max)
        ceiling = top if int(top) <= info.max else np.nextafter(top, 0.0)
        result = np.clip(rounded, info.min, ceiling).astype(dtype)
        result[rounded >= top] = info.max
        return result
    return values.astype(dtype, copy=False)


def zero_code(offsets: np.ndarray, scales: np.ndarray, bits: int) -> int:
    """The code of the value 0 (the zero point); with per-channel parameters, the most common."""
    codes = np.clip(np.rint(-offsets / scales), 0, (1 << bits) - 1).astype(np.int64)
    return int(np.bincount(codes).argmax()) if codes.size else 0
