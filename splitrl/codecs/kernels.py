"""The compiled kernels of the codec's hot loops, when they are built and allowed.

``splitrl.codecs._kernels`` (C, built by ``setup.py`` where a compiler exists) runs the
run-length coder, the bit-packing of codes, the per-tensor quantizer of ``float32`` and
``uint8`` tensors, and whole ``float32`` frames with the per-tensor quantizer and no entropy
stage (one call for :func:`~splitrl.codecs.encode`, one for :func:`~splitrl.codecs.decode`).
The numpy modules stay the reference and the fallback: both paths produce the
same frames byte for byte and the same decoded arrays, and reject a bad frame with the same
message. Setting the environment variable ``SPLITRL_CODEC_KERNELS=numpy`` before the import
forces the numpy path.
"""

from __future__ import annotations

import os
from types import ModuleType

KERNELS_ENV = "SPLITRL_CODEC_KERNELS"


def load_kernels() -> ModuleType | None:
    """The compiled kernel module, or ``None`` when it is absent or ``SPLITRL_CODEC_KERNELS=numpy``."""
    if os.environ.get(KERNELS_ENV, "").strip().lower() == "numpy":
        return None
    try:
        from splitrl.codecs import _kernels
    except ImportError:
        return None
    return _kernels


compiled: ModuleType | None = load_kernels()
"""The kernels the codec uses; ``None`` selects the numpy implementation everywhere."""
