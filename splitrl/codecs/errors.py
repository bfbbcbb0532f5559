"""The one exception type of the codec."""


class CodecError(ValueError):
    """A tensor cannot be encoded, or a frame is malformed, truncated, corrupted or forged.

    The message names the problem (for example ``"CRC mismatch"`` or ``"shape (4, 4) holds 16
    elements but the payload decodes to 12"``).
    """
