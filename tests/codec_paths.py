"""A fixture that runs a codec test module on both implementations: compiled kernels and numpy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from splitrl.codecs import kernels


@pytest.fixture(params=["compiled", "numpy"], scope="module", autouse=True)
def codec_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Select the codec implementation for every test of the module that imports this fixture."""
    built = kernels.compiled
    if request.param == "compiled" and built is None:
        pytest.skip("the compiled codec kernels are not built (or SPLITRL_CODEC_KERNELS=numpy)")
    kernels.compiled = built if request.param == "compiled" else None
    yield request.param
    kernels.compiled = built
