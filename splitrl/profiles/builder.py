"""Build a profile by running a staged model and the real codec on every test sample.

For every sample, split and bit option the builder encodes the real tensor with the real codec,
records the frame size, decodes it and runs the rest of the network to every exit reachable from
that split. The env then replays these outcomes exactly instead of guessing from a curve. It also
measures the host latency of every stage and exit head and the host codec times.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from splitrl import codecs
from splitrl.files import atomic_write
from splitrl.models.card import state_sha256
from splitrl.models.describe import describe_exits, describe_stages
from splitrl.models.protocol import SampleSource, StagedModel
from splitrl.profiles.samples import ArraySamples
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

    def __post_init__(self) -> None:
        for name in ("batch_size", "latency_repeats", "codec_timing_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


def build_profile(
    model: StagedModel,
    inputs: np.ndarray | SampleSource,
    labels: np.ndarray | None = None,
    settings: BuildSettings | None = None,
    progress: bool = True,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "cpu",
) -> Profile:
    """Measure ``model`` on the test samples and return the profile.

    Before the long measuring loop, the first sample goes through every split, bit option and
    exit, and its PNG size is taken, so a model or data set that cannot be profiled fails in
    seconds (:func:`check_build`). Every phase shows a progress bar.

    :param model: the staged early-exit model, in eval mode
    :param inputs: the test inputs as the camera delivers them, ``uint8 [N, *input_shape]``, or a
        :class:`~splitrl.models.protocol.SampleSource` that reads them a batch at a time
    :param labels: their classes, ``[N]``, when ``inputs`` is an array (a source has its own)
    :param settings: what to measure
    :param progress: show progress bars
    :param checkpoint: a file where the measurements are saved after every batch; a build that
        finds one of the same model, samples and settings resumes after its last batch, and the
        file is removed once the profile is complete (``None``: no checkpoint)
    :param device: where the model runs, ``"cpu"`` or ``"cuda"`` (``"cuda:N"``); the codec and
        the host latencies always run on the CPU
    """
    settings = settings or BuildSettings()
    source = _as_source(inputs, labels)
    torch_device = _torch_device(device)
    labels_all = source.labels
    n_samples = len(source)
    n_stages = len(model.stages)
    n_exits, n_bits = len(model.exits), len(settings.bit_options)
    n_timed = min(settings.codec_timing_samples, settings.batch_size, n_samples)
    first_input = check_build(model, source, settings, progress=progress)

    _move(model, torch_device)
    state = _BuildState.empty(n_samples, n_stages, n_bits, n_exits, n_timed)
    checkpoint_path = Path(checkpoint) if checkpoint is not None else None
    fingerprint = _build_fingerprint(model, source, settings, torch_device)
    if checkpoint_path is not None and checkpoint_path.exists():
        state = _BuildState.load(checkpoint_path, fingerprint, state)
    bar = tqdm(
        total=n_samples,
        initial=state.done,
        desc=f"profile {settings.name}: measuring",
        unit="sample",
        disable=not progress,
    )
    with torch.inference_mode():
        for start in range(state.done, n_samples, settings.batch_size):
            stop = min(start + settings.batch_size, n_samples)
            batch = source.read(start, stop)
            _check_batch(batch, first_input.shape[1:], start)
            measured = _measure_batch(
                model,
                batch,
                labels_all[start:stop],
                settings,
                torch_device,
                n_timed if start == 0 else 0,
            )
            state.store(start, stop, measured)
            if checkpoint_path is not None:
                state.save(checkpoint_path, fingerprint)
            bar.update(stop - start)
    bar.close()
    _move(model, torch.device("cpu"))

    stage_latency, exit_latency = measure_host_latencies(
        model, first_input, settings.latency_repeats, progress=progress
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
    encode_ms[:n_stages] = 1e3 * np.median(state.encode_seconds, axis=2)
    decode_ms[:n_stages] = 1e3 * np.median(state.decode_seconds, axis=2)
    profile = Profile(
        name=settings.name,
        stages=stages,
        exits=exits,
        bit_options=tuple(settings.bit_options),
        input_shape=tuple(int(d) for d in first_input.shape[1:]),
        input_dtype="uint8",
        codec={
            "per_channel": settings.per_channel,
            "clip": settings.clip,
            "entropy": settings.entropy,
        },
        encode_ms=encode_ms,
        decode_ms=decode_ms,
        labels=labels_all.astype(np.int16),
        payload_bytes=state.payload,
        correct=state.correct,
        confidence=state.confidence,
        input_png_bytes=state.png_bytes,
        metadata={
            **settings.metadata,
            "model": {**settings.metadata.get("model", {}), "state_sha256": state_sha256(model)},
            "build": {key: value for key, value in asdict(settings).items() if key != "metadata"},
            "host": {**host_description(), "build_device": str(torch_device)},
        },
    )
    if checkpoint_path is not None:
        checkpoint_path.unlink(missing_ok=True)
    return profile


def check_build(
    model: StagedModel, source: SampleSource, settings: BuildSettings, progress: bool = True
) -> np.ndarray:
    """The cheap checks a build runs before its long loop; returns the first sample, ``[1, ...]``.

    The first sample must have the shape the model declares, its PNG size must be measurable,
    and it must go through every split, bit option and exit, with as many classes at every exit
    as the labels need.

    :param model: the staged model
    :param source: the test samples
    :param settings: what the build measures
    :param progress: say what is being checked
    :raises ValueError: naming the first problem found
    """
    if len(source) == 0:
        raise ValueError("need at least one test sample")
    first = source.read(0, 1)
    if first.dtype != np.uint8:
        raise ValueError(f"inputs must be uint8 as delivered by the camera, got {first.dtype}")
    declared = tuple(getattr(getattr(model, "input_spec", None), "shape", ()) or ())
    if declared and tuple(first.shape[1:]) != declared:
        raise ValueError(
            f"the samples have shape {tuple(first.shape[1:])}, the model takes {declared}"
        )
    png_size(first[0])
    bar = tqdm(total=1, desc=f"profile {settings.name}: checking sample 0", disable=not progress)
    try:
        with torch.inference_mode():
            measured = _measure_batch(
                model, first, source.labels[:1], settings, torch.device("cpu"), n_timed=0
            )
    except Exception as error:
        raise ValueError(
            f"sample 0 does not go through every split, bit option and exit: {error}"
        ) from error
    bar.update()
    bar.close()
    classes = min(measured.n_classes)
    if int(source.labels.max()) >= classes:
        raise ValueError(
            f"the labels go up to {int(source.labels.max())}, an exit gives only {classes} classes"
        )
    return first


_Measured = TypeVar("_Measured", bound="_Measurements")


@dataclass
class _Measurements:
    """Per-sample arrays indexed like the profile's, and the codec times of the timed samples."""

    payload: np.ndarray
    correct: np.ndarray
    confidence: np.ndarray
    png_bytes: np.ndarray
    encode_seconds: np.ndarray
    decode_seconds: np.ndarray

    @classmethod
    def empty(
        cls: type[_Measured],
        n_samples: int,
        n_stages: int,
        n_bits: int,
        n_exits: int,
        n_timed: int,
    ) -> _Measured:
        return cls(
            payload=np.zeros((n_samples, n_stages + 1, n_bits), dtype=np.int32),
            correct=np.zeros((n_samples, n_stages + 1, n_bits, n_exits), dtype=bool),
            confidence=np.zeros((n_samples, n_stages + 1, n_bits, n_exits), dtype=np.float16),
            png_bytes=np.zeros(n_samples, dtype=np.int32),
            encode_seconds=np.zeros((n_stages, n_bits, n_timed)),
            decode_seconds=np.zeros((n_stages, n_bits, n_timed)),
        )


@dataclass
class _BatchMeasurements(_Measurements):
    """What one batch contributes to the profile."""

    n_classes: list[int] = field(default_factory=list)


def _measure_batch(
    model: StagedModel,
    inputs: np.ndarray,
    labels: np.ndarray,
    settings: BuildSettings,
    device: torch.device,
    n_timed: int,
) -> _BatchMeasurements:
    """Measure one batch: every split, bit option and reachable exit, and the PNG sizes.

    :param n_timed: how many of its samples have their codec times kept
    """
    n_stages = len(model.stages)
    exit_stages = [spec.after_stage for spec in model.exits]
    n_exits, n_bits = len(exit_stages), len(settings.bit_options)
    measured = _BatchMeasurements.empty(len(inputs), n_stages, n_bits, n_exits, n_timed)
    batch_labels = torch.as_tensor(labels, dtype=torch.long)
    tensors = _stage_outputs(model, torch.from_numpy(inputs).to(device).float())
    clean_correct, clean_conf, measured.n_classes = _exit_outcomes(model, tensors, batch_labels)
    measured.correct[:] = clean_correct[:, None, None, :]
    measured.confidence[:] = clean_conf[:, None, None, :]
    for split in range(n_stages):
        reachable = [e for e, k_e in enumerate(exit_stages) if k_e > split]
        sent = tensors[split].to(torch.uint8) if split == 0 else tensors[split]
        for b, option in enumerate(settings.bit_options):
            restored, sizes = _code_batch(
                sent.cpu().numpy(),
                option,
                settings,
                measured.encode_seconds[split, b],
                measured.decode_seconds[split, b],
            )
            measured.payload[:, split, b] = sizes
            outcome_correct, outcome_conf = _outcomes_from(
                model,
                split,
                torch.from_numpy(restored).to(device).float(),
                reachable,
                batch_labels,
            )
            for e in reachable:
                measured.correct[:, split, b, e] = outcome_correct[e]
                measured.confidence[:, split, b, e] = outcome_conf[e]
    measured.png_bytes[:] = [png_size(image) for image in inputs]
    return measured


@dataclass
class _BuildState(_Measurements):
    """The measurements of a build so far (``done`` samples): what a checkpoint holds."""

    done: int = 0

    def store(self, start: int, stop: int, measured: _BatchMeasurements) -> None:
        self.payload[start:stop] = measured.payload
        self.correct[start:stop] = measured.correct
        self.confidence[start:stop] = measured.confidence
        self.png_bytes[start:stop] = measured.png_bytes
        if measured.encode_seconds.shape[2]:
            self.encode_seconds[:] = measured.encode_seconds
            self.decode_seconds[:] = measured.decode_seconds
        self.done = stop

    def save(self, path: Path, fingerprint: str) -> None:
        """Write the state atomically (a kill leaves the previous checkpoint or this one)."""
        arrays = {name: getattr(self, name) for name in _CHECKPOINT_ARRAYS}
        atomic_write(
            path,
            lambda file: np.savez(
                file, fingerprint=np.array(fingerprint), done=np.array(self.done), **arrays
            ),
        )

    @classmethod
    def load(cls, path: Path, fingerprint: str, empty: _BuildState) -> _BuildState:
        """Resume from a checkpoint of the same build; raises ``ValueError`` for another build's."""
        try:
            with np.load(path, allow_pickle=False) as stored:
                if str(stored["fingerprint"]) != fingerprint:
                    raise ValueError(
                        f"{path}: checkpoint of another build (model, samples or settings "
                        "differ); delete it to start afresh"
                    )
                arrays = {name: stored[name] for name in _CHECKPOINT_ARRAYS}
                done = int(stored["done"])
        except (OSError, KeyError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path}: not a profile build checkpoint ({error})") from error
        for name, array in arrays.items():
            expected = getattr(empty, name)
            if array.shape != expected.shape or array.dtype != expected.dtype:
                raise ValueError(f"{path}: checkpoint array {name} does not fit this build")
        return cls(done=done, **arrays)


_CHECKPOINT_ARRAYS = tuple(item.name for item in fields(_Measurements))


def _build_fingerprint(
    model: StagedModel, source: SampleSource, settings: BuildSettings, device: torch.device
) -> str:
    """A digest of everything a build's measurements depend on."""
    digest = hashlib.sha256()
    build = {key: value for key, value in asdict(settings).items() if key != "metadata"}
    digest.update(json.dumps(build, sort_keys=True, default=str).encode())
    digest.update(f"{device.type}:{source.fingerprint()}:{state_sha256(model)}".encode())
    return digest.hexdigest()


def _as_source(inputs: np.ndarray | SampleSource, labels: np.ndarray | None) -> SampleSource:
    if isinstance(inputs, np.ndarray):
        if labels is None:
            raise ValueError("labels are needed when the inputs are an array")
        return ArraySamples(inputs, labels)
    if labels is not None:
        raise ValueError("a sample source has its own labels; pass labels=None")
    return inputs


def _torch_device(name: str) -> torch.device:
    """The torch device a build runs on; a clear error when it does not exist here."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device: {name!r} is not a torch device ({error})") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: torch sees no CUDA GPU on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type != "cpu":
        raise ValueError(f"--device: expected cpu or cuda, got {name!r}")
    return device


def _move(model: StagedModel, device: torch.device) -> None:
    for module in (*model.stages, *(spec.head for spec in model.exits)):
        module.to(device)


def _check_batch(batch: np.ndarray, shape: tuple[int, ...], start: int) -> None:
    if batch.dtype != np.uint8 or batch.shape[1:] != shape:
        raise ValueError(
            f"samples from {start} on are {batch.dtype} {batch.shape[1:]}, sample 0 was uint8 {shape}"
        )


def _stage_outputs(model: StagedModel, x: torch.Tensor) -> list[torch.Tensor]:
    """The input and every stage output for a batch."""
    tensors = [x]
    for k in range(len(model.stages)):
        tensors.append(model.run_stages(tensors[-1], k, k + 1))
    return tensors


def _exit_outcomes(
    model: StagedModel, tensors: Sequence[torch.Tensor], labels: torch.Tensor
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Unquantized correctness and confidence of every exit, ``[batch, E]`` each, and its classes."""
    correct, confidence, n_classes = [], [], []
    for e, spec in enumerate(model.exits):
        logits = model.run_exit(tensors[spec.after_stage], e)
        if logits.ndim != 2 or logits.shape[0] != len(labels):
            raise ValueError(
                f"exit {e} gives logits of shape {tuple(logits.shape)}, not [batch, classes]"
            )
        ok, conf = _judge(logits, labels)
        correct.append(ok)
        confidence.append(conf)
        n_classes.append(int(logits.shape[1]))
    return np.stack(correct, axis=1), np.stack(confidence, axis=1), n_classes


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
    probabilities = torch.softmax(logits.float(), dim=1).cpu()
    top, predicted = probabilities.max(dim=1)
    return (predicted == labels).numpy(), top.numpy()


def _code_batch(
    tensors: np.ndarray,
    option: int | str,
    settings: BuildSettings,
    encode_seconds: np.ndarray,
    decode_seconds: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode and decode every sample separately (the quantizer's range is per sample).

    The codec times of the first ``len(encode_seconds)`` samples are written to the two arrays.
    """
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
        if j < len(encode_seconds):
            encode_seconds[j] = t1 - t0
            decode_seconds[j] = t2 - t1
    return restored, sizes


def measure_host_latencies(
    model: StagedModel, example: np.ndarray, repeats: int, progress: bool = False
) -> tuple[list[HostLatency], list[HostLatency]]:
    """Batch-1 latency of every stage and exit head on the CPU, with one thread and all threads.

    :param model: the staged model (on the CPU)
    :param example: one input, ``uint8 [1, *input_shape]``
    :param repeats: timed repeats per block (after a short warm-up)
    :param progress: show a progress bar
    """
    previous_threads = torch.get_num_threads()
    all_threads = max(previous_threads, 1)
    timings: dict[int, tuple[list[list[float]], list[list[float]]]] = {}
    bar = tqdm(
        total=2 * (_warmup(repeats) + repeats),
        desc="host latencies",
        unit="pass",
        disable=not progress,
    )
    try:
        for threads in (1, all_threads):
            torch.set_num_threads(threads)
            timings[threads] = _time_blocks(model, torch.from_numpy(example).float(), repeats, bar)
    finally:
        torch.set_num_threads(previous_threads)
        bar.close()

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


def _warmup(repeats: int) -> int:
    return max(3, repeats // 10)


def _time_blocks(
    model: StagedModel, x: torch.Tensor, repeats: int, bar: tqdm
) -> tuple[list[list[float]], list[list[float]]]:
    stage_times: list[list[float]] = [[] for _ in model.stages]
    exit_times: list[list[float]] = [[] for _ in model.exits]
    warmup = _warmup(repeats)
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
            bar.update()
    return stage_times, exit_times


def png_size(image: np.ndarray) -> int:
    """Bytes of ``image`` as an optimized PNG.

    :param image: ``uint8 [H, W]`` or ``[C, H, W]`` with 1 (grayscale), 3 (RGB) or 4 (RGBA)
        channels
    :raises ValueError: for any other shape or dtype
    """
    from PIL import Image

    if (
        image.dtype != np.uint8
        or image.ndim not in (2, 3)
        or (image.ndim == 3 and image.shape[0] not in (1, 3, 4))
    ):
        raise ValueError(
            "a PNG holds uint8 [H, W] or [C, H, W] with 1, 3 or 4 channels, "
            f"got {image.dtype} {image.shape}"
        )
    pixels = image if image.ndim == 2 else np.moveaxis(image, 0, -1)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", optimize=True)
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
