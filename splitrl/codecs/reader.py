"""Bounds-checked sequential reading of a byte buffer, for parsing untrusted frames."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from splitrl.codecs.errors import CodecError

_MAX_VARINT_BYTES = 5  # enough for any 32-bit count


class ByteReader:
    """Reads fields one after another; running past the end raises :class:`CodecError`.

    :param buffer: the bytes to read.
    :param what: name of the buffer in error messages (e.g. ``"header"``).
    """

    def __init__(self, buffer: bytes | bytearray | memoryview, what: str) -> None:
        self._view = memoryview(buffer)
        self._offset = 0
        self.what = what

    @property
    def offset(self) -> int:
        """Number of bytes consumed so far."""
        return self._offset

    @property
    def remaining(self) -> int:
        """Number of bytes not consumed yet."""
        return len(self._view) - self._offset

    def take(self, size: int, field: str) -> memoryview:
        """Consume ``size`` bytes.

        :param size: number of bytes.
        :param field: name of the field in the error message.
        :raises CodecError: if fewer than ``size`` bytes remain.
        """
        if size > self.remaining:
            raise CodecError(
                f"{self.what} truncated: {field} needs {size} bytes at offset {self._offset}, "
                f"only {self.remaining} left"
            )
        chunk = self._view[self._offset : self._offset + size]
        self._offset += size
        return chunk

    def unpack(self, fmt: str, field: str) -> tuple[Any, ...]:
        """Consume a :mod:`struct` format (little-endian formats expected)."""
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), field))

    def u8(self, field: str) -> int:
        """Consume one unsigned byte."""
        return int(self.take(1, field)[0])

    def array(self, dtype: np.dtype, count: int, field: str) -> np.ndarray:
        """Consume ``count`` elements of ``dtype`` as a read-only array."""
        return np.frombuffer(self.take(count * dtype.itemsize, field), dtype=dtype)

    def varint(self, field: str) -> int:
        """Consume an unsigned LEB128 integer of at most 32 bits."""
        value = 0
        for index in range(_MAX_VARINT_BYTES):
            byte = self.u8(field)
            value |= (byte & 0x7F) << (7 * index)
            if byte < 0x80:
                return value
        raise CodecError(f"{self.what}: {field} is not a valid variable-length integer")

    def expect_end(self) -> None:
        """Raise :class:`CodecError` if bytes are left over."""
        if self.remaining:
            raise CodecError(f"{self.what} has {self.remaining} unexpected trailing bytes")


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128 encoding of a non-negative integer below ``2**32``."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
