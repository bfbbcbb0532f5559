"""The fuzz harness runs over its seed corpus (committed and generated) and mutations of it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.codec_paths import codec_path  # noqa: F401  (runs every test on both paths)

pytest.importorskip("atheris")
FUZZ_DIR = Path(__file__).resolve().parent.parent / "fuzz"


@pytest.fixture(scope="module")
def harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_codec", FUZZ_DIR / "fuzz_codec.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mutated_seeds_raise_no_finding(harness: ModuleType) -> None:
    rng = np.random.default_rng(11)
    committed = [path.read_bytes() for path in sorted((FUZZ_DIR / "seeds").iterdir())]
    assert len(committed) >= len(harness.seed_inputs()) > 10
    for seed in [*committed, *harness.seed_inputs().values()]:
        harness.test_one_input(seed)
        for _ in range(100):
            mutated = bytearray(seed)
            for position in rng.integers(0, len(mutated), size=rng.integers(1, 4)):
                mutated[position] = int(rng.integers(256))
            harness.test_one_input(bytes(mutated[: int(rng.integers(1, len(mutated) + 1))]))
