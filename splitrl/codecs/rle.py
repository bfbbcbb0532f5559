"""Run-length coding of quantization codes: runs of a repeated value, with literals between.

The codes are split into maximal runs of equal values. A run of at least :data:`MIN_RUN` codes
is coded as (value, length); shorter runs are left as literals. Post-ReLU activations give long
runs of the zero code, and (where a channel's bias is positive) of a constant background code;
measurements behind this choice are in ``docs/codecs.md``.

Codes are first mapped to ``(code - zero_code) mod 2**bits`` so that the zero point becomes 0
and small activations become small numbers; every stream is then patch-packed
(:mod:`splitrl.codecs.patched`), which adapts its width to the stream.

Payload layout:

=================  ====================================================================
field              encoding
=================  ====================================================================
zero code          1 byte
run count ``m``    LEB128
trailing literals  LEB128: literals after the last run
literal counts     patched stream, ``m`` values: literals before each run
run lengths        patched stream, ``m`` values: run length minus :data:`MIN_RUN`
run values         patched stream, ``m`` values (mapped codes)
literals           patched stream, sum of literal counts plus trailing literals (mapped codes)
=================  ====================================================================
"""

from __future__ import annotations

import numpy as np

from splitrl.codecs import kernels
from splitrl.codecs.errors import CodecError
from splitrl.codecs.patched import decode_patched, encode_patched
from splitrl.codecs.reader import ByteReader, encode_varint

MIN_RUN = 3


def run_length_encode(codes: np.ndarray, bits: int, zero_code: int = 0) -> bytes:
    """Run-length code a flat array of quantization codes.

    :param codes: 1-D ``uint8`` array, every value below ``2**bits``.
    :param bits: bit-width of the codes, 1 to 8.
    :param zero_code: the code of the zero point (mapped to 0 before coding).
    :return: the payload (layout in the module docstring).
    """
    compiled = kernels.compiled
    if (
        compiled is not None
        and codes.dtype == np.uint8
        and codes.ndim == 1
        and codes.flags.c_contiguous
        and codes.size <= compiled.MAX_COUNT
    ):
        return compiled.run_length_encode(codes, bits, zero_code)
    mapped = (codes - np.uint8(zero_code)) & np.uint8((1 << bits) - 1) if zero_code else codes
    count = mapped.size
    boundaries = np.concatenate(([0], np.flatnonzero(mapped[1:] != mapped[:-1]) + 1, [count]))
    lengths = np.diff(boundaries)
    is_run = lengths >= MIN_RUN
    run_starts = boundaries[:-1][is_run]
    run_lengths = lengths[is_run]
    run_ends = run_starts + run_lengths
    literal_counts = run_starts - np.concatenate(([0], run_ends[:-1]))
    trailing = count - (int(run_ends[-1]) if run_ends.size else 0)
    literals = mapped[np.repeat(~is_run, lengths)]
    return b"".join(
        (
            bytes((zero_code,)),
            encode_varint(run_starts.size),
            encode_varint(trailing),
            encode_patched(literal_counts),
            encode_patched(run_lengths - MIN_RUN),
            encode_patched(mapped[run_starts]),
            encode_patched(literals),
        )
    )


def run_length_decode(payload: bytes | memoryview, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`run_length_encode`, validating the payload against ``count``.

    :param payload: the run-length payload.
    :param bits: bit-width of the codes, 1 to 8.
    :param count: number of codes the frame header promises (at most ``MAX_ELEMENTS``).
    :return: 1-D ``uint8`` array of ``count`` codes.
    :raises CodecError: if the runs and literals do not add up to ``count``, a value exceeds the
        bit-width, or the payload is truncated or too long.
    """
    compiled = kernels.compiled
    if compiled is not None and count <= compiled.MAX_COUNT:
        return np.frombuffer(compiled.run_length_decode(payload, bits, count), dtype=np.uint8)
    reader = ByteReader(payload, "run-length payload")
    zero_code = reader.u8("zero code")
    run_count = reader.varint("run count")
    trailing = reader.varint("trailing literal count")
    if zero_code >= 1 << bits:
        raise CodecError(f"run-length payload: zero code {zero_code} exceeds {bits} bits")
    if run_count * MIN_RUN + trailing > count:
        raise CodecError(
            f"run-length payload: {run_count} runs and {trailing} trailing literals overflow "
            f"a tensor of {count} elements"
        )
    literal_counts = decode_patched(reader, run_count, "literal counts")
    run_lengths = decode_patched(reader, run_count, "run lengths") + MIN_RUN
    run_values = decode_patched(reader, run_count, "run values")
    segment_lengths = np.empty(2 * run_count + 1, dtype=np.int64)
    segment_lengths[0:-1:2] = literal_counts
    segment_lengths[1::2] = run_lengths
    segment_lengths[-1] = trailing
    total = int(segment_lengths.sum())
    if total != count:
        raise CodecError(
            f"run-length payload: runs and literals cover {total} elements, the header says {count}"
        )
    literal_total = count - int(run_lengths.sum())
    literals = decode_patched(reader, literal_total, "literals")
    reader.expect_end()
    limit = 1 << bits
    if (run_count and int(run_values.max()) >= limit) or (
        literal_total and int(literals.max()) >= limit
    ):
        raise CodecError(f"run-length payload: a code exceeds {bits} bits")
    segment_is_run = np.zeros(2 * run_count + 1, dtype=bool)
    segment_is_run[1::2] = True
    in_run = np.repeat(segment_is_run, segment_lengths)
    codes = np.empty(count, dtype=np.uint8)
    codes[in_run] = np.repeat(run_values, run_lengths)
    codes[~in_run] = literals
    if zero_code:
        codes = (codes + np.uint8(zero_code)) & np.uint8(limit - 1)
    return codes
