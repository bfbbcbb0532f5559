"""Round trips, quantizer guarantees and building blocks of splitrl.codecs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from splitrl.codecs import CodecConfig, CodecError, Coding, decode, encode, frame_info
from splitrl.codecs.bitpack import pack_bits, packed_size, unpack_bits
from splitrl.codecs.clipping import ACIQ_ONE_SIDED, ACIQ_TWO_SIDED
from splitrl.codecs.rle import run_length_decode, run_length_encode
from tests.codec_paths import codec_path  # noqa: F401  (runs every test on both paths)


def post_relu(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.maximum(rng.laplace(-0.3, 1.0, size=shape), 0).astype(np.float32)


def assert_within_half_step(x: np.ndarray, frame: bytes) -> None:
    info = frame_info(frame)
    restored = decode(frame)
    assert restored.shape == x.shape and restored.dtype == x.dtype
    scales = info.scales.reshape(-1, *([1] * (x.ndim - 1 - (x.ndim == 4))))
    offsets = info.offsets.reshape(scales.shape)
    if not info.per_channel:
        scales, offsets = info.scales[0], info.offsets[0]
    levels = (1 << info.bits) - 1
    clipped = np.clip(x.astype(np.float64), offsets, offsets + levels * scales)
    error = np.abs(restored.astype(np.float64) - clipped)
    assert np.all(error <= scales / 2 * (1 + 1e-5) + 1e-6 * np.abs(clipped))


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("entropy", [False, True])
@pytest.mark.parametrize("run_length", [False, True])
def test_round_trip_within_half_step(bits: int, entropy: bool, run_length: bool) -> None:
    x = post_relu((16, 32, 32))
    frame = encode(x, bits, entropy=entropy, run_length=run_length)
    assert_within_half_step(x, frame)
    info = frame_info(frame)
    assert info.entropy is entropy and info.bits == bits
    assert info.coding is (Coding.RUN_LENGTH if run_length else Coding.BIT_PACKED)


@pytest.mark.parametrize("shape", [(8, 4, 4), (2, 3, 5, 5)])
@pytest.mark.parametrize("clip", [None, 99.0, "percentile:99.9", "aciq"])
def test_per_channel_and_clipping(shape: tuple[int, ...], clip: float | str | None) -> None:
    x = post_relu(shape, seed=1) * np.linspace(0.1, 10.0, shape[-3])[:, None, None]
    frame = encode(x, 4, per_channel=True, clip=clip)
    assert frame_info(frame).scales.size == shape[-3]
    assert_within_half_step(x, frame)


@pytest.mark.parametrize("clip", [99.0, "aciq"])
def test_clipping_narrows_the_range(clip: float | str) -> None:
    x = post_relu((16, 16, 16))
    x[0, 0, 0] = 1000.0  # one outlier
    assert frame_info(encode(x, 4, clip=clip)).scales[0] < frame_info(encode(x, 4)).scales[0] / 10


def test_aciq_factors_solve_their_equations() -> None:
    for bits in range(1, 9):
        steps = (2**bits - 1) ** 2
        for factor, weight in ((ACIQ_ONE_SIDED[bits], 12), (ACIQ_TWO_SIDED[bits], 3)):
            assert factor == pytest.approx(weight * steps * np.exp(-factor), rel=1e-9)
    assert ACIQ_TWO_SIDED[8] == pytest.approx(9.89, abs=0.01)  # Banner et al., 2019


def test_per_channel_beats_per_tensor_on_scaled_channels() -> None:
    x = post_relu((8, 16, 16)) * np.geomspace(0.01, 100.0, 8)[:, None, None].astype(np.float32)
    per_tensor = np.abs(decode(encode(x, 4)) - x)[0].max()
    per_channel = np.abs(decode(encode(x, 4, per_channel=True)) - x)[0].max()
    assert per_channel < per_tensor / 10


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.bool_])
@pytest.mark.parametrize("bits", [8, "lossless"])
def test_one_byte_integers_are_exact(dtype: type, bits: int | str) -> None:
    rng = np.random.default_rng(2)
    image: np.ndarray = rng.integers(0, 256, size=(28, 28)).astype(np.uint8).astype(dtype)
    image[:10] = 0
    frame = encode(image, bits)
    restored = decode(frame)
    assert restored.dtype == image.dtype
    np.testing.assert_array_equal(restored, image)
    assert frame_info(frame).bits == 8


@pytest.mark.parametrize(
    ("dtype", "bits"),
    [(np.float32, "float32"), (np.float64, "lossless"), (np.int32, "lossless"), (np.float16, 8)],
)
@pytest.mark.parametrize("entropy", [False, True])
def test_other_dtypes_round_trip(dtype: type, bits: int | str, entropy: bool) -> None:
    x: np.ndarray = (post_relu((3, 5, 7)) * 50).astype(dtype)
    restored = decode(encode(x, bits, entropy=entropy))
    assert restored.dtype == x.dtype and restored.shape == x.shape
    if isinstance(bits, str):
        np.testing.assert_array_equal(restored, x)


def test_float16_option_rounds_to_half_precision() -> None:
    x = post_relu((4, 8, 8))
    np.testing.assert_array_equal(
        decode(encode(x, "float16")), x.astype(np.float16).astype(x.dtype)
    )


def test_integer_input_uses_an_integer_step() -> None:
    x = np.arange(-500, 500, dtype=np.int16).reshape(10, 100)
    frame = encode(x, 3)
    restored = decode(frame)
    step = frame_info(frame).scales[0]
    assert step == np.ceil(999 / 7) and np.abs(restored.astype(int) - x).max() <= step / 2


def test_torch_tensor_input() -> None:
    x = torch.relu(torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0)))
    restored = decode(encode(x, 8, per_channel=True))
    assert isinstance(restored, np.ndarray) and restored.dtype == np.float32
    np.testing.assert_allclose(restored, x.numpy(), atol=float(x.max()) / 255)


def test_config_convenience_matches_keywords() -> None:
    x = post_relu((4, 8, 8))
    config = CodecConfig(bits=3, per_channel=True, clip="aciq", entropy=True)
    assert encode(x, config) == encode(x, 3, per_channel=True, clip="aciq", entropy=True)
    with pytest.raises(CodecError, match="either a CodecConfig"):
        encode(x, config, entropy=True)


def test_run_length_is_smaller_than_bit_packing_on_sparse_data() -> None:
    x = post_relu((16, 32, 32))
    assert len(encode(x, 4)) < len(encode(x, 4, run_length=False)) * 0.6


def test_constant_and_empty_tensors() -> None:
    constant = np.full((3, 4, 4), 2.5, dtype=np.float32)
    np.testing.assert_array_equal(decode(encode(constant, 2)), constant)
    empty = np.zeros((0, 5), dtype=np.float32)
    assert decode(encode(empty, 4)).shape == (0, 5)
    scalar = np.float32(1.5)
    assert decode(encode(np.asarray(scalar), "lossless")) == scalar


@pytest.mark.parametrize(
    ("x", "kwargs", "message"),
    [
        (np.ones(4), {"bits": 9}, "bits must be"),
        (np.ones(4), {"bits": "int4"}, "bits must be"),
        (np.ones(4), {"bits": 4, "clip": 20.0}, "percentile"),
        (np.ones(4), {"bits": 4, "clip": "median"}, "clip must be"),
        (np.ones(4), {"bits": 4, "per_channel": True}, "3-D CHW or 4-D NCHW"),
        (np.ones(4), {"bits": "float32", "clip": 99.0}, "linear quantizer"),
        (np.array([1.0, np.nan]), {"bits": 4}, "NaN"),
        (np.array(["a"]), {"bits": 4}, "unsupported dtype"),
        (np.ones(4, dtype=np.int32), {"bits": "float16"}, "floating-point"),
    ],
)
def test_invalid_encode_arguments(x: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        encode(x, **kwargs)


@pytest.mark.parametrize("width", [0, 1, 2, 3, 5, 7, 8, 9, 17, 32])
@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 1001])
def test_bit_packing_round_trip_without_waste(width: int, count: int) -> None:
    values = np.random.default_rng(width * 1000 + count).integers(0, 2**width, size=count)
    packed = pack_bits(values, width)
    assert len(packed) == packed_size(count, width) == (count * width + 7) // 8
    np.testing.assert_array_equal(unpack_bits(packed, width, count), values)


@pytest.mark.parametrize("zero_code", [0, 5])
def test_run_length_round_trip_for_any_codes(zero_code: int) -> None:
    rng = np.random.default_rng(zero_code)
    codes = rng.integers(0, 8, size=5000).astype(np.uint8)
    codes[100:900] = zero_code
    codes[2000:2003] = 7
    payload = run_length_encode(codes, 3, zero_code)
    np.testing.assert_array_equal(run_length_decode(payload, 3, codes.size), codes)


@settings(max_examples=100, deadline=None)
@given(
    x=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=9),
        elements=st.floats(-1e4, 1e4, width=32),
    ),
    bits=st.integers(1, 8),
    entropy=st.booleans(),
    clip=st.sampled_from([None, 99.0, "aciq"]),
)
def test_property_round_trip(
    x: np.ndarray, bits: int, entropy: bool, clip: float | str | None
) -> None:
    frame = encode(x, bits, entropy=entropy, clip=clip)
    assert_within_half_step(x, frame)
