"""Build of the optional compiled codec kernels; the project metadata lives in pyproject.toml.

``splitrl.codecs._kernels`` speeds up the codec's hot loops. It is optional: where it cannot be
compiled the installation goes on and the codec uses its numpy implementation.
"""

import sys

from setuptools import Extension, setup

# The kernels must round like numpy: no fused multiply-add contraction of float arithmetic.
_FLOAT_FLAGS = [] if sys.platform == "win32" else ["-ffp-contract=off"]

setup(
    ext_modules=[
        Extension(
            "splitrl.codecs._kernels",
            sources=["splitrl/codecs/_kernels.c"],
            extra_compile_args=_FLOAT_FLAGS,
            optional=True,
        )
    ]
)
