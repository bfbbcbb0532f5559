"""The compiled codec kernels against the numpy reference: same bytes, same arrays, same errors."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from splitrl.codecs import CodecError, decode, encode, frame_info, kernels
from splitrl.codecs.bitpack import pack_bits, unpack_bits
from splitrl.codecs.quantize import dequantize, quantize
from splitrl.codecs.rle import run_length_decode, run_length_encode

BUILT = kernels.compiled
pytestmark = pytest.mark.skipif(BUILT is None, reason="the compiled codec kernels are not built")


def on_both_paths(function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """The call on the compiled kernels and on numpy; an exception becomes its type and message."""
    outcomes = []
    for path in (BUILT, None):
        kernels.compiled = path
        try:
            outcomes.append(function(*args, **kwargs))
        except (CodecError, ValueError) as error:
            outcomes.append((type(error), str(error)))
        finally:
            kernels.compiled = BUILT
    return outcomes[0], outcomes[1]


def assert_same_arrays(compiled: Any, reference: Any) -> None:
    if isinstance(reference, np.ndarray):
        assert isinstance(compiled, np.ndarray)
        assert compiled.dtype == reference.dtype and compiled.shape == reference.shape
        assert compiled.tobytes() == reference.tobytes()
    else:
        assert compiled == reference


def code_patterns(bits: int, seed: int) -> Iterator[np.ndarray]:
    """Codes below ``2**bits``: edge lengths, runs of every kind, noise, post-ReLU-like."""
    rng = np.random.default_rng(seed)
    top = (1 << bits) - 1
    for length in range(8):
        yield rng.integers(0, top + 1, size=length).astype(np.uint8)
    yield np.zeros(70_000, np.uint8)  # one run longer than 2**16: a wide run-length stream
    yield np.full(1000, top, np.uint8)
    yield np.tile(np.array([0, top], np.uint8), 500)
    yield rng.integers(0, top + 1, size=5000).astype(np.uint8)
    sparse = np.maximum(rng.laplace(-0.5, 1.0, size=4096), 0)
    yield np.minimum(np.rint(sparse * top / 4), top).astype(np.uint8)
    runs = np.repeat(rng.integers(0, top + 1, size=300), rng.geometric(0.3, size=300))
    yield runs.astype(np.uint8)
    mixed = rng.integers(0, top + 1, size=3000).astype(np.uint8)
    mixed[rng.integers(0, 3000, size=40)] = top  # rare large literals: escapes in patched streams
    mixed[500:2900] = 0
    yield mixed


@pytest.mark.parametrize("bits", range(1, 9))
def test_run_length_coding_is_identical(bits: int) -> None:
    for index, codes in enumerate(code_patterns(bits, seed=bits)):
        for zero in sorted({0, 1 % (1 << bits), (1 << bits) - 1}):
            payload, reference = on_both_paths(run_length_encode, codes, bits, zero)
            assert payload == reference, (index, zero)
            decoded = on_both_paths(run_length_decode, payload, bits, codes.size)
            assert_same_arrays(*decoded)
            np.testing.assert_array_equal(decoded[0], codes)


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_hostile_run_length_payloads_get_the_same_answer(bits: int) -> None:
    rng = np.random.default_rng(bits)
    answers = {"decoded": 0, "rejected": 0}
    for codes in list(code_patterns(bits, seed=7))[8:]:
        payload, count = run_length_encode(codes, bits, 0), codes.size
        for _ in range(150):
            mutated = bytearray(payload)
            action = rng.integers(4)
            if action == 0:
                for position in rng.integers(0, len(mutated), size=rng.integers(1, 4)):
                    mutated[position] ^= 1 << int(rng.integers(8))
            elif action == 1:
                del mutated[rng.integers(0, len(mutated)) :]
            elif action == 2:
                mutated += rng.bytes(int(rng.integers(1, 9)))
            else:
                mutated = bytearray(rng.bytes(int(rng.integers(1, 40))))
            claimed = int(rng.choice([count, count, count + 1, max(count - 1, 0), 0]))
            compiled, reference = on_both_paths(run_length_decode, bytes(mutated), bits, claimed)
            assert_same_arrays(compiled, reference)
            answers["decoded" if isinstance(reference, np.ndarray) else "rejected"] += 1
    assert answers["rejected"] > answers["decoded"] > 0


@pytest.mark.parametrize("width", range(1, 9))
def test_bit_packing_is_identical(width: int) -> None:
    rng = np.random.default_rng(width)
    for count in [*range(20), 1001]:
        values = rng.integers(0, 1 << width, size=count).astype(np.uint8)
        packed, reference = on_both_paths(pack_bits, values, width)
        assert packed == reference
        assert_same_arrays(*on_both_paths(unpack_bits, packed, width, count))


def quantizer_inputs() -> Iterator[np.ndarray]:
    rng = np.random.default_rng(3)
    yield np.maximum(rng.laplace(-0.3, 1.0, size=(16, 8, 8)), 0).astype(np.float32)
    yield rng.normal(size=(3, 5, 7)).astype(np.float32)
    yield np.full((2, 3), -2.5, np.float32)
    yield np.array([0.0, -0.0, 1.0, 0.0], np.float32)  # both zeros at the low end: numpy decides
    yield np.array([-1.0, -0.0, 0.0, -0.0], np.float32)
    yield np.array([-3e38, 3e38, 0.0], np.float32)  # the range overflows float32
    yield np.array([1e-30, 2e-30, 1.5e-30], np.float32)
    yield np.array([1.0, np.nan], np.float32)
    yield np.array([np.inf, 0.0], np.float32)
    yield rng.integers(0, 256, size=(28, 28)).astype(np.uint8)
    yield np.array([7, 7, 7], np.uint8)
    yield np.arange(300, dtype=np.float32)[::2]  # not contiguous


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy on the overflowing range
@pytest.mark.parametrize("bits", range(1, 9))
def test_quantizer_is_identical(bits: int) -> None:
    for x in quantizer_inputs():
        compiled, reference = on_both_paths(quantize, x, bits)
        if isinstance(reference, tuple):
            assert compiled == reference  # the same error
            continue
        for name in ("codes", "offsets", "scales"):
            assert_same_arrays(getattr(compiled, name), getattr(reference, name))
        for dtype in (x.dtype, np.dtype(np.float32)):
            restored = on_both_paths(
                dequantize, reference.codes, reference.offsets, reference.scales, dtype, False
            )
            assert_same_arrays(*restored)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize(
    "options",
    [{}, {"entropy": True}, {"run_length": False}, {"per_channel": True}, {"clip": "aciq"}],
)
def test_frames_are_identical(bits: int, options: dict[str, Any]) -> None:
    rng = np.random.default_rng(bits)
    for shape in [(16, 32, 32), (8, 8, 8), (2, 4, 5, 5), (1, 1, 1)]:
        x = np.maximum(rng.laplace(-0.3, 1.0, size=shape), 0).astype(np.float32) * 3
        frame, reference = on_both_paths(encode, x, bits, **options)
        assert frame == reference
        assert_same_arrays(*on_both_paths(decode, frame))


def test_environment_variable_forces_numpy() -> None:
    script = "from splitrl.codecs import kernels; print(kernels.compiled is None)"
    env = {**os.environ, kernels.KERNELS_ENV: "numpy"}
    output = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert output.stdout.strip() == "True"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy on the overflowing range
@pytest.mark.parametrize("bits", [1, 4, 8])
def test_whole_frames_of_edge_tensors_are_identical(bits: int) -> None:
    """The one-call float32 frame path against numpy, where it must hand over to Python too."""
    rng = np.random.default_rng(bits)
    tensors = [x for x in quantizer_inputs() if x.dtype == np.float32]
    tensors += [
        np.array(2.5, np.float32),  # 0-d
        rng.normal(size=(3, 5, 7)).astype(np.float32),  # zero code in the middle of the range
        np.full((4, 70_000), 1.25, np.float32),  # one long run
        np.zeros((2, 0, 3), np.float32),
        np.array([0.0, 3.4e38], np.float32),  # 255 * scale overflows float32
    ]
    for x in tensors:
        frame, reference = on_both_paths(encode, x, bits)
        assert frame == reference
        if isinstance(reference, bytes):
            assert_same_arrays(*on_both_paths(decode, frame))


def test_hostile_whole_frames_get_the_same_answer() -> None:
    rng = np.random.default_rng(5)
    x = np.maximum(rng.laplace(-0.3, 1.0, size=(8, 12, 12)), 0).astype(np.float32)
    answers = {"decoded": 0, "rejected": 0}
    for frame in (encode(x, 3), encode(x, 6, run_length=False), encode(x[0, 0], 8)):
        header_length = frame_info(frame).header_length
        for _ in range(200):
            mutated = bytearray(frame)
            for position in rng.integers(0, len(mutated), size=rng.integers(1, 3)):
                mutated[position] ^= 1 << int(rng.integers(8))
            if rng.random() < 0.7:  # a forger's CRC, so that the payload is decoded
                crc = zlib.crc32(mutated[header_length:], zlib.crc32(mutated[: header_length - 4]))
                mutated[header_length - 4 : header_length] = struct.pack("<I", crc)
            bounds = [{}, {"max_elements": 100}, {"expected_shape": x.shape}][rng.integers(3)]
            compiled, reference = on_both_paths(decode, bytes(mutated), **bounds)
            assert_same_arrays(compiled, reference)
            answers["decoded" if isinstance(reference, np.ndarray) else "rejected"] += 1
    assert answers["rejected"] > answers["decoded"] > 0
