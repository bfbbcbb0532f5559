"""Bit-packing of unsigned integers at a fixed bit-width, with no wasted bits.

The packed stream is the MSB-first concatenation of the ``width``-bit values, zero-padded to a
whole byte at the end: ``ceil(count * width / 8)`` bytes.
"""

from __future__ import annotations

import numpy as np

from splitrl.codecs import kernels
from splitrl.codecs.errors import CodecError

MAX_WIDTH = 32
# Eight values of at most 8 bits fill one 64-bit word: the first value sits in the highest bits.
_GROUP_SHIFTS = {width: np.arange(7, -1, -1, dtype=np.uint64) * width for width in range(1, 9)}
# A matrix product with the place values builds the words; float64 is exact up to 2**53, which
# covers eight values of up to 6 bits and is several times faster than the integer product.
_FLOAT_EXACT_WIDTH = 6
_GROUP_PLACES = {
    width: (np.uint64(1) << shifts).astype(np.float64 if width <= _FLOAT_EXACT_WIDTH else np.uint64)
    for width, shifts in _GROUP_SHIFTS.items()
}


def packed_size(count: int, width: int) -> int:
    """Number of bytes that ``count`` values of ``width`` bits occupy when packed."""
    return (count * width + 7) // 8


def pack_bits(values: np.ndarray, width: int) -> bytes:
    """Pack unsigned integers into ``width`` bits each.

    :param values: 1-D array of non-negative integers, each below ``2**width`` (not checked: the
        higher bits are dropped).
    :param width: bits per value, 0 to 32; width 0 packs to nothing.
    :return: ``packed_size(len(values), width)`` bytes.
    """
    count = values.size
    if width == 0 or count == 0:
        return b""
    compiled = kernels.compiled
    if (
        compiled is not None
        and width <= 8
        and values.dtype == np.uint8
        and values.ndim == 1
        and values.flags.c_contiguous
    ):
        return compiled.pack_codes(values, width)
    if width == 8:
        return values.astype(np.uint8, copy=False).tobytes()
    if width == 1:
        return np.packbits(values.astype(np.uint8, copy=False)).tobytes()
    if width < 8:
        groups = -(-count // 8)
        places = _GROUP_PLACES[width]
        group_values = np.zeros(groups * 8, dtype=places.dtype)
        group_values[:count] = values
        words = group_values.reshape(groups, 8) @ places
        packed = words.astype(">u8").view(np.uint8).reshape(groups, 8)[:, 8 - width :]
        return packed.tobytes()[: packed_size(count, width)]
    bit_matrix = np.unpackbits(values.astype(">u4").view(np.uint8).reshape(count, 4), axis=1)
    return np.packbits(bit_matrix[:, 32 - width :]).tobytes()


def unpack_bits(buffer: bytes | memoryview, width: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`.

    :param buffer: exactly ``packed_size(count, width)`` bytes.
    :param width: bits per value, 0 to 32.
    :param count: number of values.
    :return: ``uint8`` array for widths up to 8, else ``uint32``, of length ``count``.
    :raises CodecError: if the buffer has the wrong length.
    """
    expected = packed_size(count, width)
    if len(buffer) != expected:
        raise CodecError(
            f"bit-packed stream of {count} values x {width} bits needs {expected} bytes, "
            f"got {len(buffer)}"
        )
    if width == 0:
        return np.zeros(count, dtype=np.uint8)
    compiled = kernels.compiled
    if compiled is not None and width <= 8:
        return np.frombuffer(compiled.unpack_codes(buffer, width, count), dtype=np.uint8)
    raw = np.frombuffer(buffer, dtype=np.uint8)
    if width == 8:
        return raw.copy()
    if width == 1:
        return np.unpackbits(raw, count=count)
    if width < 8:
        groups = -(-count // 8)
        group_bytes = np.zeros(groups * width, dtype=np.uint8)
        group_bytes[: raw.size] = raw
        padded = np.zeros((groups, 8), dtype=np.uint8)
        padded[:, 8 - width :] = group_bytes.reshape(groups, width)
        words = padded.view(">u8").astype(np.uint64)
        mask = np.uint64((1 << width) - 1)
        codes = (words >> _GROUP_SHIFTS[width]) & mask
        return codes.reshape(-1)[:count].astype(np.uint8)
    bits = np.unpackbits(raw, count=count * width).reshape(count, width)
    full = np.zeros((count, 32), dtype=np.uint8)
    full[:, 32 - width :] = bits
    return np.packbits(full, axis=1).view(">u4").reshape(count).astype(np.uint32)
