"""Build a profile by running a staged model and the real codec on every test sample.

For every sample, split and bit option the builder encodes the real tensor with the real codec,
records the frame size, decodes it and runs the rest of the network to every exit reachable from
that split. The env then replays these outcomes exactly instead of guessing from a curve. It also
measures the host latency of every stage and exit head and the host codec times.
"""

from __future__ import annotations

import io
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from splitrl import codecs
from splitrl.models.describe import describe_exits, describe_stages
from splitrl.models.protocol import StagedModel
from splitrl.profiles.schema import (
    LOSSLESS,
    BlockInfo,
    ExitInfo,
    HostLatency,
    Profile,
)

#: bit options of the default action space
DEFAULT_BIT_OPTIONS: tuple[int | str, ...] = (1, 2, 3, 4, 6, 8, LOSSLESS)


@dataclass(frozen=True)
class BuildSettings:
    """What the builder measures and how.

    :param name: profile name (file stem)
    :param bit_options: the bit options of the action space
    :param per_channel: quantize per channel instead of per tensor
    :param clip: outlier clipping rule passed to the codec (``None`` for plain min-max)
    :param entropy: add the codec's entropy stage after run-length coding
    :param batch_size: samples per forward pass
    :param latency_repeats: timed repeats per block for the host latencies
    :param codec_timing_samples: samples whose codec times are measured per ``(s, b)``
    :param metadata: provenance stored in the profile (model, dataset, training settings)
    """

    name: str = "default"
    bit_options: tuple[int | str, ...] = DEFAULT_BIT_OPTIONS
    per_channel: bool = False
    clip: str | None = None
    entropy: bool = False
    batch_size: int = 250
    latency_repeats: int = 50
    codec_timing_samples: int = 64
    metadata: dict[str, Any] = field(default_factory=dict)


def build_profile(
    model: StagedModel,
    inputs: np.ndarray,
    labels: np.ndarray,
    settings: BuildSettings | None = None,
    progress: bool = True,
) -> Profile:
    """Measure ``model`` on ``inputs`` and return the profile.

    :param model: the staged early-exit model, in eval mode
    :param inputs: the test inputs as the camera delivers them, ``uint8 [N, *input_shape]``
    :param labels: their classes, ``[N]``
    :param settings: what to measure
    :param progress: show progress bars
    """
    settings = settings or BuildSettings()
    if inputs.dtype != np.uint8:
        raise ValueError(f"inputs must be uint8 as delivered by the camera, got {inputs.dtype}")
    if len(inputs) != len(labels) or len(inputs) == 0:
        raise ValueError(f"need as many labels as inputs (got {len(inputs)} and {len(labels)})")
    n_samples = len(inputs)
    n_stages = len(model.stages)
    exit_stages = [spec.after_stage for spec in model.exits]
    n_exits, n_bits = len(exit_stages), len(settings.bit_options)

    payload = np.zeros((n_samples, n_stages + 1, n_bits), dtype=np.int32)
    correct = np.zeros((n_samples, n_stages + 1, n_bits, n_exits), dtype=bool)
    confidence = np.zeros((n_samples, n_stages + 1, n_bits, n_exits), dtype=np.float16)
    encode_times: list[list[list[float]]] = [[[] for _ in range(n_bits)] for _ in range(n_stages)]
    decode_times: list[list[list[float]]] = [[[] for _ in range(n_bits)] for _ in range(n_stages)]

    batches = range(0, n_samples, settings.batch_size)
    bar = tqdm(
        total=n_samples, desc=f"profile {settings.name}", unit="sample", disable=not progress
    )
    with torch.inference_mode():
        for start in batches:
            stop = min(start + settings.batch_size, n_samples)
            batch_labels = torch.as_tensor(labels[start:stop], dtype=torch.long)
            tensors = _stage_outputs(model, torch.from_numpy(inputs[start:stop]).float())
            clean_correct, clean_conf = _exit_outcomes(model, tensors, batch_labels)
            correct[start:stop] = clean_correct[:, None, None, :]
            confidence[start:stop] = clean_conf[:, None, None, :]
            for split in range(n_stages):
                reachable = [e for e, k_e in enumerate(exit_stages) if k_e > split]
                sent = tensors[split].to(torch.uint8) if split == 0 else tensors[split]
                for b, option in enumerate(settings.bit_options):
                    time_codec = start == 0  # time the codec on the first batch's samples only
                    restored, sizes = _code_batch(
                        sent.numpy(),
                        option,
                        settings,
                        encode_times[split][b] if time_codec else None,
                        decode_times[split][b] if time_codec else None,
                        settings.codec_timing_samples,
                    )
                    payload[start:stop, split, b] = sizes
                    outcome_correct, outcome_conf = _outcomes_from(
                        model, split, torch.from_numpy(restored).float(), reachable, batch_labels
                    )
                    for e in reachable:
                        correct[start:stop, split, b, e] = outcome_correct[e]
                        confidence[start:stop, split, b, e] = outcome_conf[e]
            bar.update(stop - start)
    bar.close()

    stage_latency, exit_latency = measure_host_latencies(
        model, inputs[:1], settings.latency_repeats
    )
    stages = tuple(
        BlockInfo(
            name=f"stage{info.index + 1}",
            output_shape=info.output_shape,
            flops=info.flops,
            params=info.params,
            n_layers=info.n_layers,
            host=latency,
        )
        for info, latency in zip(describe_stages(model), stage_latency, strict=True)
    )
    exits = tuple(
        ExitInfo(
            name=f"exit{info.index}",
            output_shape=(info.num_classes,),
            flops=info.flops,
            params=info.params,
            n_layers=info.n_layers,
            host=latency,
            after_stage=info.after_stage,
        )
        for info, latency in zip(describe_exits(model), exit_latency, strict=True)
    )
    encode_ms = np.zeros((n_stages + 1, n_bits), dtype=np.float32)
    decode_ms = np.zeros((n_stages + 1, n_bits), dtype=np.float32)
    for split in range(n_stages):
        for b in range(n_bits):
            encode_ms[split, b] = 1e3 * statistics.median(encode_times[split][b])
            decode_ms[split, b] = 1e3 * statistics.median(decode_times[split][b])
    return Profile(
        name=settings.name,
        stages=stages,
        exits=exits,
        bit_options=tuple(settings.bit_options),
        input_shape=tuple(int(d) for d in inputs.shape[1:]),
        input_dtype="uint8",
        codec={
            "per_channel": settings.per_channel,
            "clip": settings.clip,
            "entropy": settings.entropy,
        },
        encode_ms=encode_ms,
        decode_ms=decode_ms,
        labels=labels.astype(np.int16),
        payload_bytes=payload,
        correct=correct,
        confidence=confidence,
        input_png_bytes=np.array([png_size(image) for image in inputs], dtype=np.int32),
        metadata={
            **settings.metadata,
            "build": {key: value for key, value in asdict(settings).items() if key != "metadata"},
            "host": host_description(),
        },
    )


def _stage_outputs(model: StagedModel, x: torch.Tensor) -> list[torch.Tensor]:
    """The input and every stage output for a batch."""
    tensors = [x]
    for k in range(len(model.stages)):
        tensors.append(model.run_stages(tensors[-1], k, k + 1))
    return tensors


def _exit_outcomes(
    model: StagedModel, tensors: Sequence[torch.Tensor], labels: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Unquantized correctness and confidence of every exit, ``[batch, E]`` each."""
    correct, confidence = [], []
    for e, spec in enumerate(model.exits):
        ok, conf = _judge(model.run_exit(tensors[spec.after_stage], e), labels)
        correct.append(ok)
        confidence.append(conf)
    return np.stack(correct, axis=1), np.stack(confidence, axis=1)


def _outcomes_from(
    model: StagedModel,
    split: int,
    restored: torch.Tensor,
    reachable: Sequence[int],
    labels: torch.Tensor,
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Correctness and confidence of the reachable exits when the tensor at ``split`` is ``restored``."""
    correct, confidence = {}, {}
    x, done = restored, split
    for e in reachable:
        k_e = model.exits[e].after_stage
        x = model.run_stages(x, done, k_e)
        done = k_e
        correct[e], confidence[e] = _judge(model.run_exit(x, e), labels)
    return correct, confidence


def _judge(logits: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    probabilities = torch.softmax(logits.float(), dim=1)
    top, predicted = probabilities.max(dim=1)
    return (predicted == labels).numpy(), top.numpy()


def _code_batch(
    tensors: np.ndarray,
    option: int | str,
    settings: BuildSettings,
    encode_times: list[float] | None,
    decode_times: list[float] | None,
    n_timed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode and decode every sample separately (the quantizer's range is per sample)."""
    restored = np.empty(tensors.shape, dtype=tensors.dtype)
    sizes = np.empty(len(tensors), dtype=np.int32)
    for j, tensor in enumerate(tensors):
        t0 = time.perf_counter()
        frame = codecs.encode(
            tensor,
            bits=option,
            per_channel=settings.per_channel,
            clip=settings.clip,
            entropy=settings.entropy,
        )
        t1 = time.perf_counter()
        restored[j] = codecs.decode(frame)
        t2 = time.perf_counter()
        sizes[j] = len(frame)
        if encode_times is not None and decode_times is not None and j < n_timed:
            encode_times.append(t1 - t0)
            decode_times.append(t2 - t1)
    return restored, sizes


def measure_host_latencies(
    model: StagedModel, example: np.ndarray, repeats: int
) -> tuple[list[HostLatency], list[HostLatency]]:
    """Batch-1 latency of every stage and exit head, with one thread and with all threads.

    :param model: the staged model
    :param example: one input, ``uint8 [1, *input_shape]``
    :param repeats: timed repeats per block (after a short warm-up)
    """
    previous_threads = torch.get_num_threads()
    all_threads = max(previous_threads, 1)
    timings: dict[int, tuple[list[list[float]], list[list[float]]]] = {}
    try:
        for threads in (1, all_threads):
            torch.set_num_threads(threads)
            timings[threads] = _time_blocks(model, torch.from_numpy(example).float(), repeats)
    finally:
        torch.set_num_threads(previous_threads)

    def summarize(index: int, which: int) -> HostLatency:
        one = np.array(timings[1][which][index]) * 1e3
        every = np.array(timings[all_threads][which][index]) * 1e3
        return HostLatency(
            median_ms_1_thread=float(np.median(one)),
            p90_ms_1_thread=float(np.percentile(one, 90)),
            median_ms_all_threads=float(np.median(every)),
            p90_ms_all_threads=float(np.percentile(every, 90)),
            n_threads=all_threads,
        )

    return (
        [summarize(k, 0) for k in range(len(model.stages))],
        [summarize(e, 1) for e in range(len(model.exits))],
    )


def _time_blocks(
    model: StagedModel, x: torch.Tensor, repeats: int
) -> tuple[list[list[float]], list[list[float]]]:
    stage_times: list[list[float]] = [[] for _ in model.stages]
    exit_times: list[list[float]] = [[] for _ in model.exits]
    warmup = max(3, repeats // 10)
    with torch.inference_mode():
        for repeat in range(warmup + repeats):
            tensors = [x]
            for k in range(len(model.stages)):
                t0 = time.perf_counter()
                tensors.append(model.run_stages(tensors[-1], k, k + 1))
                if repeat >= warmup:
                    stage_times[k].append(time.perf_counter() - t0)
            for e, spec in enumerate(model.exits):
                t0 = time.perf_counter()
                model.run_exit(tensors[spec.after_stage], e)
                if repeat >= warmup:
                    exit_times[e].append(time.perf_counter() - t0)
    return stage_times, exit_times


def png_size(image: np.ndarray) -> int:
    """Bytes of ``image`` (``uint8 [1, H, W]`` or ``[H, W]``) as an optimized grayscale PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image.reshape(image.shape[-2:]))).save(
        buffer, format="PNG", optimize=True
    )
    return buffer.tell()


def host_description() -> dict[str, Any]:
    """Where the host latencies were measured."""
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
