"""Build of the optional compiled kernels; the project metadata lives in pyproject.toml.

``splitrl.codecs._kernels`` speeds up the codec's hot loops. It is the Python face of the codec's
C core (``splitrl/codecs/csrc``, which a device's encoder library compiles too). It is optional:
where it cannot be compiled the installation goes on and the codec uses its numpy implementation.
``splitrl.agents.baselines._backlog`` runs the backlog lookahead's value iteration (the hot loop of
every backlog-aware baseline, of the predicted-value features and of the hindsight values); it is
optional in the same way.
"""

import sys

from setuptools import Extension, setup

CODEC_CORE = "splitrl/codecs/csrc"
# The kernels must round like numpy: no fused multiply-add contraction of float arithmetic.
_FLOAT_FLAGS = [] if sys.platform == "win32" else ["-ffp-contract=off"]
# A host has the memory for the faster CRC32 (a device's library keeps the 1 KiB table alone).
_MACROS = [("SPLITRL_CRC_SLICE_BY_8", "1")]

setup(
    ext_modules=[
        Extension(
            "splitrl.codecs._kernels",
            sources=[
                "splitrl/codecs/_kernels.c",
                f"{CODEC_CORE}/splitrl_codec.c",
                f"{CODEC_CORE}/splitrl_codec_decode.c",
            ],
            depends=[f"{CODEC_CORE}/splitrl_codec.h", f"{CODEC_CORE}/splitrl_codec_internal.h"],
            define_macros=_MACROS,
            extra_compile_args=_FLOAT_FLAGS,
            optional=True,
        ),
        Extension(
            "splitrl.agents.baselines._backlog",
            sources=["splitrl/agents/baselines/_backlog.c"],
            extra_compile_args=_FLOAT_FLAGS,
            optional=True,
        ),
    ]
)
