"""Tensor codec for the uplink: linear quantization, run-length coding, bit-packing, zstd.

:func:`encode` turns a numpy array or CPU torch tensor into a self-describing frame (bytes) and
:func:`decode` restores it; any malformed frame raises :class:`CodecError`. The wire format, the
quantizer, the run-length coder and the limits are documented in ``docs/codecs.md``.
"""

from splitrl.codecs.codec import LOSSLESS_OPTIONS, CodecConfig, decode, encode, frame_info
from splitrl.codecs.errors import CodecError
from splitrl.codecs.frame import MAX_ELEMENTS, Coding, FrameInfo

__all__ = [
    "LOSSLESS_OPTIONS",
    "MAX_ELEMENTS",
    "CodecConfig",
    "CodecError",
    "Coding",
    "FrameInfo",
    "decode",
    "encode",
    "frame_info",
]
