"""Patched bit-packing: a stream of unsigned integers with a few large outliers.

Most values are packed at a narrow width ``k`` chosen per stream; a value that does not fit is
written as the escape symbol ``2**k - 1`` and its excess ``value - (2**k - 1)`` goes to a second
packed stream of width ``k2`` (the "patch"). The widths are chosen to minimize the total size,
from a histogram of the values' bit lengths, so the stream adapts to run lengths (a few long
runs among many short ones) and to the skewed code distribution of post-ReLU activations.

Layout: ``k`` (1 byte), ``k2`` (1 byte), ``count`` values at ``k`` bits, then one excess per
escape symbol at ``k2`` bits. ``count`` is known to the reader from context.
"""

from __future__ import annotations

import numpy as np

from splitrl.codecs.bitpack import MAX_WIDTH, pack_bits, packed_size, unpack_bits
from splitrl.codecs.errors import CodecError
from splitrl.codecs.reader import ByteReader


def choose_widths(values: np.ndarray) -> tuple[int, int, int]:
    """Pick the widths that minimize the packed size of ``values``.

    :param values: 1-D array of non-negative integers below ``2**32``.
    :return: ``(k, k2, escapes)``: main width, patch width and number of escaped values.
    """
    count = values.size
    if count == 0:
        return 0, 0, 0
    # A value v escapes at width k iff v >= 2**k - 1, i.e. bit_length(v + 1) > k; frexp's
    # exponent is the bit length (exact below 2**53). The arrays here are tiny: plain ints.
    histogram = np.bincount(np.frexp(values + 1.0)[1]).tolist()
    largest = int(values.max())
    best = (count * len(histogram), 0, 0, 0)
    fitting = 0
    for width, values_of_this_length in enumerate(histogram):
        fitting += values_of_this_length
        escapes = count - fitting
        excess_width = max(largest - ((1 << width) - 1), 0).bit_length() if escapes else 0
        size = count * width + escapes * excess_width
        if size < best[0]:
            best = (size, width, excess_width, escapes)
    return best[1], best[2], best[3]


def encode_patched(values: np.ndarray) -> bytes:
    """Pack non-negative integers below ``2**32`` with the size-minimizing widths.

    :param values: 1-D integer array.
    :return: the stream bytes (layout in the module docstring).
    """
    width, excess_width, escapes = choose_widths(values)
    header = bytes((width, excess_width))
    if not escapes:
        return header + pack_bits(values, width)
    escape = (1 << width) - 1
    escaped = values >= escape
    main = np.where(escaped, escape, values)
    return header + pack_bits(main, width) + pack_bits(values[escaped] - escape, excess_width)


def decode_patched(reader: ByteReader, count: int, field: str) -> np.ndarray:
    """Read one stream of ``count`` values written by :func:`encode_patched`.

    :param reader: positioned at the stream.
    :param count: number of values (bounded by the caller).
    :param field: name of the stream in error messages.
    :return: ``int64`` array of length ``count``.
    :raises CodecError: on a width above 32 or a truncated stream.
    """
    width, excess_width = reader.u8(f"{field} width"), reader.u8(f"{field} width")
    if width > MAX_WIDTH or excess_width > MAX_WIDTH:
        raise CodecError(f"{field}: bit-width {max(width, excess_width)} exceeds {MAX_WIDTH}")
    main_bytes = reader.take(packed_size(count, width), field)
    values = unpack_bits(main_bytes, width, count).astype(np.int64)
    escape = (1 << width) - 1
    escaped = np.flatnonzero(values == escape)
    excess_bytes = reader.take(packed_size(escaped.size, excess_width), f"{field} patch")
    values[escaped] += unpack_bits(excess_bytes, excess_width, escaped.size)
    return values
