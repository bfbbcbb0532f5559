"""The optional entropy stage: zstd over the run-length (or bit-packed, or raw) payload."""

from __future__ import annotations

import zstandard

from splitrl.codecs.errors import CodecError

ENTROPY_LEVEL = 19
"""zstd level of the entropy stage (payloads are small, so even level 19 takes microseconds)."""

_COMPRESSOR = zstandard.ZstdCompressor(level=ENTROPY_LEVEL, write_content_size=True)
_DECOMPRESSOR = zstandard.ZstdDecompressor()


def entropy_encode(payload: bytes) -> bytes:
    """Compress a payload into one zstd frame that records its content size."""
    return _COMPRESSOR.compress(payload)


def entropy_decode(data: bytes | memoryview, max_size: int) -> bytes:
    """Decompress one zstd frame, refusing to produce more than ``max_size`` bytes.

    The content size in the zstd frame header is checked against ``max_size`` before anything is
    allocated, so a decompression bomb costs nothing.

    :param data: one zstd frame.
    :param max_size: the largest payload the frame header allows.
    :raises CodecError: if the data is not exactly one valid zstd frame, the frame does not record
        its size, or the size is too large.
    """
    try:
        parameters = zstandard.get_frame_parameters(bytes(data))
    except zstandard.ZstdError as error:
        raise CodecError(f"entropy stage: not a valid zstd frame ({error})") from None
    size = parameters.content_size
    if size == zstandard.CONTENTSIZE_UNKNOWN or size == zstandard.CONTENTSIZE_ERROR:
        raise CodecError("entropy stage: the zstd frame does not record its decompressed size")
    if size > max_size:
        raise CodecError(
            f"entropy stage: decompressed size {size} exceeds the {max_size} bytes the header allows"
        )
    try:
        return _DECOMPRESSOR.decompress(
            bytes(data), max_output_size=max_size, allow_extra_data=False
        )
    except zstandard.ZstdError as error:
        raise CodecError(f"entropy stage: corrupted zstd data ({error})") from None
