"""Codec benchmark on real post-ReLU activations: size and speed against zlib, lz4 and zstd.

Run with ``python -m benchmarks.bench_codecs``; writes ``results/bench_codecs.json`` and prints a
table. For every activation set and bit-width it measures the three codec variants (run-length,
run-length + entropy, plain bit-packing) end to end, and beside them, on the same quantization
codes (a ``uint8`` array), zlib, lz4 and zstd and the order-0 entropy of the codes. The goals
(coding stage at least as fast as zstd-3 at most 1.1x its size; with the entropy stage at most
zstd-19's size) are evaluated stage against stage: codes in, codes out.
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
from splitrl.codecs import decode, encode
from splitrl.codecs.entropy import ENTROPY_LEVEL, entropy_decode, entropy_encode
from splitrl.codecs.quantize import quantize
from splitrl.codecs.rle import run_length_decode, run_length_encode

SEED = 0
TRAIN_STEPS = 300
TRAIN_IMAGES = 8000  # of the 10,000 test-split images; activations come from the rest
SAMPLES = 16  # tensors per activation set for sizes
TIMED_SAMPLES = 3  # of those, tensors timed one by one
BITS = tuple(range(1, 9))
SIZE_GOAL_RLE_VS_ZSTD3 = 1.1


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
    baselines = _baselines()
    for index, tensor in enumerate(stack):
        codes = quantize(tensor, bits).codes.reshape(-1)
        code_bytes = codes.tobytes()
        entropy_bits += _order0_entropy_bits(codes)
        cases: list[tuple[str, bytes, Callable[[], object], Callable[[], object]]] = []
        for variant, options in _VARIANTS.items():
            frame = encode(tensor, bits, **options)
            cases.append(
                (variant, frame, partial(encode, tensor, bits, **options), partial(decode, frame))
            )
        stage = run_length_encode(codes, bits)
        cases.append(
            (
                "stage:rle",
                stage,
                partial(run_length_encode, codes, bits),
                partial(run_length_decode, stage, bits, codes.size),
            )
        )
        stage_entropy = entropy_encode(stage)
        cases.append(
            (
                "stage:rle+zstd",
                stage_entropy,
                partial(_rle_entropy_encode, codes, bits),
                partial(_rle_entropy_decode, stage_entropy, bits, codes.size),
            )
        )
        for method, (compress, decompress) in baselines.items():
            compressed = compress(code_bytes)
            cases.append(
                (method, compressed, partial(compress, code_bytes), partial(decompress, compressed))
            )
        for method, output, encode_call, decode_call in cases:
            if index < TIMED_SAMPLES:
                add(method, len(output), best_time(encode_call), best_time(decode_call))
            else:
                add(method, len(output), None, None)
    samples = len(stack)
    rows = []
    for method, entry in totals.items():
        encode_s = entry["encode_s"] / TIMED_SAMPLES
        decode_s = entry["decode_s"] / TIMED_SAMPLES
        rows.append(
            {
                "set": name,
                "bits": bits,
                "method": method,
                "bits_per_element": 8 * entry["bytes"] / samples / elements,
                "ratio_vs_float32": float_bytes * samples / entry["bytes"],
                "encode_us": encode_s * 1e6,
                "decode_us": decode_s * 1e6,
                "encode_mb_s": float_bytes / encode_s / 1e6,
                "decode_mb_s": float_bytes / decode_s / 1e6,
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
        }
    )
    return rows


def _goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Goal ratios per set and bit-width, coding stage against the baseline on the same codes."""
    by_key = {(row["set"], row["bits"], row["method"]): row for row in rows}
    goals = []
    for name, bits in sorted({(row["set"], row["bits"]) for row in rows}):
        rle = by_key[(name, bits, "stage:rle")]
        rle_entropy = by_key[(name, bits, "stage:rle+zstd")]
        zstd3 = by_key[(name, bits, "zstd-3")]
        zstd19 = by_key[(name, bits, "zstd-19")]
        speed = (zstd3["encode_us"] + zstd3["decode_us"]) / (rle["encode_us"] + rle["decode_us"])
        size = rle["bits_per_element"] / zstd3["bits_per_element"]
        entropy_size = rle_entropy["bits_per_element"] / zstd19["bits_per_element"]
        goals.append(
            {
                "set": name,
                "bits": bits,
                "speed_ratio_rle_vs_zstd3": speed,
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
    sets = activation_sets()
    if sets is None:
        return 0
    rows = []
    descriptions = {}
    for name, stack in sets.items():
        descriptions[name] = {
            "shape": list(stack.shape[1:]),
            "samples": len(stack),
            "zero_fraction": float((stack == 0).mean()),
        }
        for bits in BITS:
            rows.extend(_measure(name, stack, bits))
    goals = _goals(rows)
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
            ("speed_ratio_rle_vs_zstd3", "speed vs zstd-3", ".2f"),
            ("size_ratio_rle_vs_zstd3", "size vs zstd-3", ".3f"),
            ("size_ratio_rle_zstd_vs_zstd19", "size+zstd vs zstd-19", ".3f"),
            ("speed_goal_met", "speed ok", "b"),
            ("size_goal_met", "size ok", "b"),
            ("entropy_goal_met", "entropy ok", "b"),
        ],
    )
    path = write_results(
        "codecs",
        {
            "settings": {
                "seed": SEED,
                "samples": SAMPLES,
                "timed_samples": TIMED_SAMPLES,
                "entropy_level": ENTROPY_LEVEL,
                "size_goal_rle_vs_zstd3": SIZE_GOAL_RLE_VS_ZSTD3,
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
