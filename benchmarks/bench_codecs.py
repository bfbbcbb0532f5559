"""Codec benchmark on real post-ReLU activations: size and speed against zlib, lz4 and zstd.

Run with ``python -m benchmarks.bench_codecs``; writes ``results/bench_codecs.json`` and prints a
table. For every activation set and bit-width it measures the three codec variants (run-length,
run-length + entropy, plain bit-packing) end to end, and beside them, on the same quantization
codes (a ``uint8`` array), zlib, lz4 and zstd and the order-0 entropy of the codes. The sets are
the shipped model's split tensors at 1 to 8 bits and synthetic post-ReLU tensors (64x56x56 and
128x28x28) at 2, 4 and 8 bits. Two goals, each at most 1.1x the size and at least the speed:
the whole codec (``encode`` from float32 and ``decode`` back) against the zstd-3 pipeline
(numpy quantization, zstd-3, dequantization: :func:`zstd3_pipeline`), and the coding stage
against zstd-3, codes in, codes out; timings behind them are the best of 15 rounds, ratios
within one run (for the whole codec, encode + decode of both taken in alternating rounds:
:func:`paired_best`). With the entropy stage the goal is zstd-19's size. The fixed cost per
frame is ``decode(encode(x))`` of a one-element tensor.

The codec is timed on both implementations: the compiled kernels (``splitrl.codecs._kernels``,
when built) and the numpy reference (rows whose method ends in ``[numpy]``). For the shipped
model's split points, the whole-codec encode time is also given as a fraction of the head's
compute time (stages ``[0, s)`` with torch at batch 1 on one thread).
"""

from __future__ import annotations

import importlib
import sys
import time
import zlib
from collections.abc import Callable
from functools import partial
from typing import Any

import lz4.frame
import numpy as np
import zstandard

from benchmarks.common import best_time, print_table, write_results
from splitrl.codecs import decode, encode, kernels
from splitrl.codecs.entropy import ENTROPY_LEVEL, entropy_decode, entropy_encode
from splitrl.codecs.quantize import quantize
from splitrl.codecs.rle import run_length_decode, run_length_encode

SEED = 0
GOAL_REPEATS = 15  # best of 15 for the timings the goals compare
SYNTHETIC_SHAPES = ((64, 56, 56), (128, 28, 28))
SYNTHETIC_BITS = (2, 4, 8)
TRAIN_STEPS = 300
TRAIN_IMAGES = 8000  # of the 10,000 test-split images; activations come from the rest
SAMPLES = 16  # tensors per activation set for sizes
TIMED_SAMPLES = 3  # of those, tensors timed one by one
BITS = tuple(range(1, 9))
SIZE_GOAL_RLE_VS_ZSTD3 = 1.1
NUMPY_SUFFIX = " [numpy]"


def _load_images() -> tuple[np.ndarray, np.ndarray] | None:
    from splitrl.models.fashion_mnist import IdxFormatError, load_fashion_mnist

    try:
        return load_fashion_mnist("test")
    except IdxFormatError as error:
        print(f"skipped: Fashion-MNIST is not available ({error})")
        return None


def _profile_model_activations(images: np.ndarray) -> dict[str, np.ndarray] | None:
    """Hook for the shipped profile model: activations at every split point, or ``None``.

    Uses ``splitrl.models.load_default_model()`` when it exists and its weights load: every
    image is pasted in the centre of a blank input canvas (``model.input_spec``) and the output
    of every stage (``model.stages``) is a split tensor.
    """
    load_default_model = getattr(
        importlib.import_module("splitrl.models"), "load_default_model", None
    )
    if load_default_model is None:
        return None
    import torch

    try:
        model = load_default_model()
        spec = model.input_spec
        canvas = np.zeros((len(images), *spec.shape), dtype=np.float32)
        top = (spec.shape[-2] - images.shape[-2]) // 2
        left = (spec.shape[-1] - images.shape[-1]) // 2
        low, high = spec.value_range
        canvas[..., top : top + images.shape[-2], left : left + images.shape[-1]] = (
            low + (high - low) * images[:, None].astype(np.float32) / 255.0
        )
        tensor = torch.from_numpy(canvas).to(spec.dtype)
        sets = {}
        with torch.no_grad():
            for index, stage in enumerate(model.stages):
                tensor = stage(tensor)
                sets[f"split{index + 1} {tuple(tensor.shape[1:])}"] = tensor.numpy().copy()
        return sets
    except (OSError, ValueError, RuntimeError, AttributeError, TypeError) as error:
        print(f"note: the default model is not usable ({error}); using a small network instead")
        return None


def head_seconds() -> dict[str, float]:
    """Compute time of the head (stages ``[0, s)``) of the shipped model per split set name.

    Batch 1, one torch thread, best of :func:`best_time`; empty when there is no default model.
    """
    load_default_model = getattr(
        importlib.import_module("splitrl.models"), "load_default_model", None
    )
    if load_default_model is None:
        return {}
    import torch

    try:
        model = load_default_model()
    except (OSError, ValueError, RuntimeError, AttributeError, TypeError):
        return {}
    torch.set_num_threads(1)
    spec = model.input_spec
    sample = torch.zeros((1, *spec.shape), dtype=spec.dtype)
    stages = list(model.stages)

    def run_head(count: int) -> torch.Tensor:
        tensor = sample
        for stage in stages[:count]:
            tensor = stage(tensor)
        return tensor

    times = {}
    with torch.no_grad():
        for count in range(1, len(stages) + 1):
            shape = tuple(run_head(count).shape[1:])
            times[f"split{count} {shape}"] = best_time(partial(run_head, count))
    return times


def _small_network_activations(images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Post-ReLU activations of a small CNN briefly trained on Fashion-MNIST (fixed seed)."""
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    inputs = nn.functional.pad(torch.from_numpy(images.astype(np.float32) / 255.0), (2, 2, 2, 2))
    inputs = inputs.unsqueeze(1)  # N x 1 x 32 x 32
    targets = torch.from_numpy(labels.astype(np.int64))
    features = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 8, 3, padding=1), nn.ReLU(),
    )  # fmt: skip
    model = nn.Sequential(features, nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(TRAIN_STEPS):
        batch = torch.randint(0, TRAIN_IMAGES, (64,), generator=generator)
        loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    sets = {}
    with torch.no_grad():
        held_out = inputs[TRAIN_IMAGES:]
        accuracy = (model(held_out).argmax(1) == targets[TRAIN_IMAGES:]).float().mean().item()
        print(f"small network: {TRAIN_STEPS} SGD steps, held-out accuracy {accuracy:.3f}")
        tensor = held_out[:SAMPLES]
        for layer in features:
            tensor = layer(tensor)
            if isinstance(layer, nn.ReLU):
                sets[f"relu {tuple(tensor.shape[1:])}"] = tensor.numpy().copy()
    return sets


def activation_sets() -> dict[str, np.ndarray] | None:
    """Stacks ``[SAMPLES, C, H, W]`` of real post-ReLU activations, by split point name.

    Taken from the shipped profile model when :func:`_profile_model_activations` finds one,
    else from a small network trained here; ``None`` when the data set is missing.
    """
    loaded = _load_images()
    if loaded is None:
        return None
    images, labels = loaded
    held_out = images[TRAIN_IMAGES : TRAIN_IMAGES + SAMPLES]
    sets = _profile_model_activations(held_out)
    if sets is None:
        sets = _small_network_activations(images, labels)
    return {name: stack[:SAMPLES] for name, stack in sets.items()}


def synthetic_sets() -> dict[str, np.ndarray]:
    """Stacks of post-ReLU tensors: ReLU of a Gaussian of mean -0.3 (about 62% zeros)."""
    rng = np.random.default_rng(SEED)
    return {
        f"synthetic relu {shape}": np.maximum(
            rng.normal(-0.3, 1.0, size=(TIMED_SAMPLES, *shape)), 0
        ).astype(np.float32)
        for shape in SYNTHETIC_SHAPES
    }


def zstd3_pipeline(
    tensor: np.ndarray, bits: int
) -> tuple[bytes, Callable[[], object], Callable[[], object]]:
    """The reference the whole codec is held against: numpy min-max quantization, zstd-3 of the
    codes, and back (decompression and dequantization).

    :return: the compressed codes (payload only: no shape, no parameters), the encode call and
        the decode call.
    """
    compressor = zstandard.ZstdCompressor(level=3)
    decompressor = zstandard.ZstdDecompressor()
    levels = np.float32((1 << bits) - 1)

    def quantize_and_compress() -> tuple[bytes, np.float32, np.float32]:
        lo, hi = tensor.min(), tensor.max()
        scale = (hi - lo) / levels if hi > lo else np.float32(1)
        codes = np.clip(np.rint((tensor - lo) / scale), 0, levels).astype(np.uint8)
        return compressor.compress(codes.tobytes()), lo, scale

    compressed, lo, scale = quantize_and_compress()

    def decompress_and_dequantize() -> np.ndarray:
        codes = np.frombuffer(decompressor.decompress(compressed), np.uint8)
        return codes.reshape(tensor.shape) * scale + lo

    return compressed, quantize_and_compress, decompress_and_dequantize


def paired_best(
    first: Callable[[], object], second: Callable[[], object], repeat: int = GOAL_REPEATS
) -> tuple[float, float]:
    """Seconds per call of two functions, the best of ``repeat`` rounds each, taken in
    alternation so that a change in the machine's load affects both alike."""
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            first()
            second()
        if time.perf_counter() - start >= 0.004:
            break
        calls *= 2
    best = [float("inf"), float("inf")]
    for _ in range(repeat):
        for slot, function in enumerate((first, second)):
            start = time.perf_counter()
            for _ in range(calls):
                function()
            best[slot] = min(best[slot], (time.perf_counter() - start) / calls)
    return best[0], best[1]


def fixed_cost_us() -> float:
    """Microseconds of ``decode(encode(x, 8))`` for a one-element float32 tensor."""
    one = np.ones(1, np.float32)
    return best_time(lambda: decode(encode(one, 8)), repeat=GOAL_REPEATS) * 1e6


def _order0_entropy_bits(codes: np.ndarray) -> float:
    counts = np.bincount(codes)
    probabilities = counts[counts > 0] / codes.size
    return float(-(probabilities * np.log2(probabilities)).sum() * codes.size)


def _baselines() -> dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]]:
    def zstd_pair(level: int) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
        compressor = zstandard.ZstdCompressor(level=level)
        decompressor = zstandard.ZstdDecompressor()
        return compressor.compress, decompressor.decompress

    return {
        "zlib-1": (lambda data: zlib.compress(data, 1), zlib.decompress),
        "zlib-6": (lambda data: zlib.compress(data, 6), zlib.decompress),
        "lz4": (lz4.frame.compress, lz4.frame.decompress),
        "zstd-1": zstd_pair(1),
        "zstd-3": zstd_pair(3),
        "zstd-19": zstd_pair(19),
    }


_VARIANTS = {
    "rle": {"run_length": True, "entropy": False},
    "rle+zstd": {"run_length": True, "entropy": True},
    "packed": {"run_length": False, "entropy": False},
}


def _rle_entropy_encode(codes: np.ndarray, bits: int) -> bytes:
    return entropy_encode(run_length_encode(codes, bits))


def _rle_entropy_decode(data: bytes, bits: int, count: int) -> np.ndarray:
    return run_length_decode(entropy_decode(data, count), bits, count)


def _codec_cases(
    tensor: np.ndarray, codes: np.ndarray, bits: int, suffix: str
) -> list[tuple[str, bytes, Callable[[], object], Callable[[], object]]]:
    """The codec's variants and stages on one tensor, on the implementation selected now."""
    cases: list[tuple[str, bytes, Callable[[], object], Callable[[], object]]] = []
    for variant, options in _VARIANTS.items():
        frame = encode(tensor, bits, **options)
        cases.append(
            (
                variant + suffix,
                frame,
                partial(encode, tensor, bits, **options),
                partial(decode, frame),
            )
        )
    stage = run_length_encode(codes, bits)
    cases.append(
        (
            "stage:rle" + suffix,
            stage,
            partial(run_length_encode, codes, bits),
            partial(run_length_decode, stage, bits, codes.size),
        )
    )
    stage_entropy = entropy_encode(stage)
    cases.append(
        (
            "stage:rle+zstd" + suffix,
            stage_entropy,
            partial(_rle_entropy_encode, codes, bits),
            partial(_rle_entropy_decode, stage_entropy, bits, codes.size),
        )
    )
    return cases


_GOAL_METHODS = ("rle", "stage:rle", "zstd-3", "pipeline:zstd-3")


def _timed(
    cases: list[tuple[str, bytes, Callable[[], object], Callable[[], object]]],
) -> list[tuple[str, int, float, float]]:
    """Size, encode and decode seconds of every case, on the implementation selected now."""
    timed = []
    for method, output, encode_call, decode_call in cases:
        repeat = GOAL_REPEATS if method in _GOAL_METHODS else 5
        encode_s = best_time(encode_call, repeat=repeat)
        timed.append((method, len(output), encode_s, best_time(decode_call, repeat=repeat)))
    return timed


def _measure(name: str, stack: np.ndarray, bits: int) -> list[dict[str, Any]]:
    """All methods on one activation set at one bit-width: one row per method."""
    elements = stack[0].size
    float_bytes = 4 * elements
    totals: dict[str, dict[str, float]] = {}

    def add(method: str, size: int, encode_s: float | None, decode_s: float | None) -> None:
        entry = totals.setdefault(method, {"bytes": 0.0, "encode_s": 0.0, "decode_s": 0.0})
        entry["bytes"] += size
        if encode_s is not None and decode_s is not None:
            entry["encode_s"] += encode_s
            entry["decode_s"] += decode_s

    entropy_bits = 0.0
    roundtrip_s = {"rle": 0.0, "pipeline:zstd-3": 0.0}  # encode + decode, paired rounds
    baselines = _baselines()
    built = kernels.compiled
    for index, tensor in enumerate(stack):
        codes = quantize(tensor, bits).codes.reshape(-1)
        code_bytes = codes.tobytes()
        entropy_bits += _order0_entropy_bits(codes)
        cases = _codec_cases(tensor, codes, bits, "")
        pipeline = zstd3_pipeline(tensor, bits)
        cases.append(("pipeline:zstd-3", *pipeline))
        for method, (compress, decompress) in baselines.items():
            compressed = compress(code_bytes)
            cases.append(
                (method, compressed, partial(compress, code_bytes), partial(decompress, compressed))
            )
        if index >= TIMED_SAMPLES:
            for method, output, _, _ in cases:
                add(method, len(output), None, None)
            continue
        for method, size, encode_s, decode_s in _timed(cases):
            add(method, size, encode_s, decode_s)
        codec_s, pipeline_s = paired_best(
            partial(_codec_roundtrip, tensor, bits), partial(_roundtrip, *pipeline[1:])
        )
        roundtrip_s["rle"] += codec_s
        roundtrip_s["pipeline:zstd-3"] += pipeline_s
        if built is not None:
            try:
                kernels.compiled = None
                fallback = _timed(_codec_cases(tensor, codes, bits, NUMPY_SUFFIX))
            finally:
                kernels.compiled = built
            for method, size, encode_s, decode_s in fallback:
                add(method, size, encode_s, decode_s)
    samples = len(stack)
    rows = []
    for method, entry in totals.items():
        encode_s = entry["encode_s"] / TIMED_SAMPLES
        decode_s = entry["decode_s"] / TIMED_SAMPLES
        # the numpy rows are timed on the first tensors only; their sizes equal the compiled ones
        sized = samples if not method.endswith(NUMPY_SUFFIX) else TIMED_SAMPLES
        rows.append(
            {
                "set": name,
                "bits": bits,
                "method": method,
                "bits_per_element": 8 * entry["bytes"] / sized / elements,
                "ratio_vs_float32": float_bytes * sized / entry["bytes"],
                "encode_us": encode_s * 1e6,
                "decode_us": decode_s * 1e6,
                "encode_mb_s": float_bytes / encode_s / 1e6,
                "decode_mb_s": float_bytes / decode_s / 1e6,
                "roundtrip_us": roundtrip_s.get(method, float("nan")) / TIMED_SAMPLES * 1e6,
            }
        )
    rows.append(
        {
            "set": name,
            "bits": bits,
            "method": "order-0 entropy",
            "bits_per_element": entropy_bits / samples / elements,
            "ratio_vs_float32": 32 * samples * elements / entropy_bits
            if entropy_bits
            else float("inf"),
            "encode_us": float("nan"),
            "decode_us": float("nan"),
            "encode_mb_s": float("nan"),
            "decode_mb_s": float("nan"),
            "roundtrip_us": float("nan"),
        }
    )
    return rows


def _codec_roundtrip(tensor: np.ndarray, bits: int) -> np.ndarray:
    return decode(encode(tensor, bits))


def _roundtrip(encode_call: Callable[[], object], decode_call: Callable[[], object]) -> None:
    encode_call()
    decode_call()


def _goals(rows: list[dict[str, Any]], heads: dict[str, float]) -> list[dict[str, Any]]:
    """Goal ratios per set and bit-width, coding stage against the baseline on the same codes.

    :param heads: head compute seconds per set name (:func:`head_seconds`), where known.
    """
    by_key = {(row["set"], row["bits"], row["method"]): row for row in rows}
    goals = []
    for name, bits in sorted({(row["set"], row["bits"]) for row in rows}):
        rle = by_key[(name, bits, "stage:rle")]
        rle_numpy = by_key.get((name, bits, "stage:rle" + NUMPY_SUFFIX), rle)
        codec = by_key[(name, bits, "rle")]
        codec_numpy = by_key.get((name, bits, "rle" + NUMPY_SUFFIX), codec)
        rle_entropy = by_key[(name, bits, "stage:rle+zstd")]
        pipeline = by_key[(name, bits, "pipeline:zstd-3")]
        codec_speed = pipeline["roundtrip_us"] / codec["roundtrip_us"]
        codec_size = codec["bits_per_element"] / pipeline["bits_per_element"]
        zstd3 = by_key[(name, bits, "zstd-3")]
        zstd19 = by_key[(name, bits, "zstd-19")]
        zstd3_us = zstd3["encode_us"] + zstd3["decode_us"]
        speed = zstd3_us / (rle["encode_us"] + rle["decode_us"])
        speed_numpy = zstd3_us / (rle_numpy["encode_us"] + rle_numpy["decode_us"])
        size = rle["bits_per_element"] / zstd3["bits_per_element"]
        entropy_size = rle_entropy["bits_per_element"] / zstd19["bits_per_element"]
        head_us = heads[name] * 1e6 if name in heads else float("nan")
        goals.append(
            {
                "set": name,
                "bits": bits,
                "speed_ratio_codec_vs_zstd3_pipeline": codec_speed,
                "size_ratio_codec_vs_zstd3_pipeline": codec_size,
                "codec_goal_met": codec_speed >= 1.0 and codec_size <= SIZE_GOAL_RLE_VS_ZSTD3,
                "speed_ratio_rle_vs_zstd3": speed,
                "speed_ratio_rle_numpy_vs_zstd3": speed_numpy,
                "head_us": head_us,
                "encode_fraction_of_head": codec["encode_us"] / head_us,
                "encode_fraction_of_head_numpy": codec_numpy["encode_us"] / head_us,
                "size_ratio_rle_vs_zstd3": size,
                "size_ratio_rle_zstd_vs_zstd19": entropy_size,
                "speed_goal_met": speed >= 1.0,
                "size_goal_met": size <= SIZE_GOAL_RLE_VS_ZSTD3,
                "entropy_goal_met": entropy_size <= 1.0,
            }
        )
    return goals


def main() -> int:
    """Run the benchmark; returns the process exit code."""
    started = time.perf_counter()
    grid = [(name, stack, BITS) for name, stack in (activation_sets() or {}).items()]
    grid += [(name, stack, SYNTHETIC_BITS) for name, stack in synthetic_sets().items()]
    rows = []
    descriptions = {}
    for name, stack, widths in grid:
        descriptions[name] = {
            "shape": list(stack.shape[1:]),
            "samples": len(stack),
            "zero_fraction": float((stack == 0).mean()),
        }
        for bits in widths:
            rows.extend(_measure(name, stack, bits))
    goals = _goals(rows, head_seconds())
    print_table(
        rows,
        [
            ("set", "set", "s"),
            ("bits", "bits", "d"),
            ("method", "method", "s"),
            ("bits_per_element", "bits/el", ".3f"),
            ("ratio_vs_float32", "x f32", ".1f"),
            ("encode_us", "enc us", ".1f"),
            ("decode_us", "dec us", ".1f"),
            ("encode_mb_s", "enc MB/s", ".0f"),
            ("decode_mb_s", "dec MB/s", ".0f"),
        ],
    )
    print()
    print_table(
        goals,
        [
            ("set", "set", "s"),
            ("bits", "bits", "d"),
            ("speed_ratio_codec_vs_zstd3_pipeline", "codec speed vs pipeline", ".2f"),
            ("size_ratio_codec_vs_zstd3_pipeline", "codec size vs pipeline", ".3f"),
            ("codec_goal_met", "codec ok", "b"),
            ("speed_ratio_rle_vs_zstd3", "stage speed vs zstd-3", ".2f"),
            ("speed_ratio_rle_numpy_vs_zstd3", "numpy speed vs zstd-3", ".2f"),
            ("size_ratio_rle_vs_zstd3", "size vs zstd-3", ".3f"),
            ("size_ratio_rle_zstd_vs_zstd19", "size+zstd vs zstd-19", ".3f"),
            ("speed_goal_met", "speed ok", "b"),
            ("size_goal_met", "size ok", "b"),
            ("entropy_goal_met", "entropy ok", "b"),
            ("head_us", "head us", ".0f"),
            ("encode_fraction_of_head", "encode/head", ".3f"),
            ("encode_fraction_of_head_numpy", "numpy encode/head", ".3f"),
        ],
    )
    fixed_us = fixed_cost_us()
    met = sum(goal["codec_goal_met"] for goal in goals)
    print(f"\nwhole codec vs the zstd-3 pipeline: goal met at {met} of {len(goals)} pairs")
    print(f"fixed cost per frame (encode + decode of one element): {fixed_us:.1f} us")
    path = write_results(
        "codecs",
        {
            "fixed_cost_us": fixed_us,
            "settings": {
                "seed": SEED,
                "samples": SAMPLES,
                "timed_samples": TIMED_SAMPLES,
                "entropy_level": ENTROPY_LEVEL,
                "size_goal_rle_vs_zstd3": SIZE_GOAL_RLE_VS_ZSTD3,
                "goal_repeats": GOAL_REPEATS,
                "compiled_kernels": kernels.compiled is not None,
            },
            "sets": descriptions,
            "rows": rows,
            "goals": goals,
            "seconds": time.perf_counter() - started,
        },
    )
    print(f"\nwrote {path} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
