"""Bring your own network: RGB and grayscale models, image folders, resumable builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from splitrl.models.protocol import ExitSpec, InputSpec, StagedModule
from splitrl.profiles.builder import BuildSettings, build_profile, png_size
from splitrl.profiles.io import load_profile, save_profile
from splitrl.profiles.samples import ArraySamples, ImageFolderSamples, open_samples

BITS: tuple[int | str, ...] = (2, 8, "lossless")
CLASSES = 3


class _Scale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / 255.0


def small_staged_model(channels: int, size: int = 16, seed: int = 0) -> StagedModule:
    """Three convolution stages on ``channels x size x size`` uint8 frames, exits after 2 and 3."""
    torch.manual_seed(seed)
    stages = [
        nn.Sequential(_Scale(), nn.Conv2d(channels, 8, 3, stride=2, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU()),
    ]

    def head(width: int) -> nn.Module:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, CLASSES))

    exits = [ExitSpec(2, head(4)), ExitSpec(3, head(8))]
    spec = InputSpec((channels, size, size), torch.uint8, (0.0, 255.0))
    return StagedModule(stages, exits, spec).eval()


def write_image_folder(root: Path, n_per_class: int = 8, mode: str = "RGB", seed: int = 0) -> Path:
    """``root/class_k/*.png`` with random 20x24 images (not the model's size: they get fitted)."""
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    for k in range(CLASSES):
        folder = root / f"class_{k}"
        folder.mkdir(parents=True)
        for i in range(n_per_class):
            pixels = rng.integers(0, 256, size=(20, 24, channels), dtype=np.uint8)
            Image.fromarray(pixels if channels == 3 else pixels[:, :, 0]).save(folder / f"{i}.png")
    return root


def settings(**changes: object) -> BuildSettings:
    base: dict[str, object] = {
        "name": "byo",
        "bit_options": BITS,
        "batch_size": 8,
        "latency_repeats": 2,
        "codec_timing_samples": 2,
    }
    return BuildSettings(**{**base, **changes})  # type: ignore[arg-type]


class CountingSamples:
    """A sample source that records which batches it read and can fail at a given batch start."""

    def __init__(self, source: ImageFolderSamples, fail_at: int | None = None) -> None:
        self.source = source
        self.fail_at = fail_at
        self.reads: list[tuple[int, int]] = []

    @property
    def labels(self) -> np.ndarray:
        return self.source.labels

    def __len__(self) -> int:
        return len(self.source)

    def read(self, start: int, stop: int) -> np.ndarray:
        if start == self.fail_at:
            raise KeyboardInterrupt
        self.reads.append((start, stop))
        return self.source.read(start, stop)

    def fingerprint(self) -> str:
        return self.source.fingerprint()


@pytest.mark.parametrize("channels", [3, 1])
def test_png_size_of_rgb_and_grayscale_frames(channels: int) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(channels, 12, 10), dtype=np.uint8)
    flat = np.zeros((channels, 12, 10), dtype=np.uint8)
    assert png_size(image) > png_size(flat) > 0


def test_png_size_rejects_other_layouts() -> None:
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        png_size(np.zeros((2, 8, 8), dtype=np.uint8))


def test_image_folder_reads_classes_in_a_seeded_order(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images", n_per_class=4)
    source = ImageFolderSamples(root, (3, 16, 16))
    again = ImageFolderSamples(root, (3, 16, 16))
    assert len(source) == 12
    assert sorted(np.bincount(source.labels)) == [4, 4, 4]
    assert np.array_equal(source.labels, again.labels)
    batch = source.read(2, 7)
    assert batch.dtype == np.uint8 and batch.shape == (5, 3, 16, 16)
    assert np.array_equal(batch, again.read(2, 7))
    assert source.fingerprint() == again.fingerprint()
    gray = ImageFolderSamples(root, (1, 8, 12), limit=5)
    assert gray.read(0, 5).shape == (5, 1, 8, 12)


def test_open_samples_names_the_bad_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="imagefolder:PATH or npz:PATH"):
        open_samples(f"folder:{tmp_path}", (3, 16, 16))
    with pytest.raises(ValueError, match="not found"):
        open_samples(f"npz:{tmp_path / 'missing.npz'}", (3, 16, 16))
    path = tmp_path / "samples.npz"
    np.savez(path, inputs=np.zeros((4, 3, 16, 16), np.uint8), labels=np.arange(4))
    assert len(open_samples(f"npz:{path}", (3, 16, 16), limit=3)) == 3


@pytest.mark.parametrize("mode, channels", [("RGB", 3), ("L", 1)])
def test_build_from_an_image_folder_rgb_and_grayscale(
    tmp_path: Path, mode: str, channels: int, one_torch_thread: None
) -> None:
    root = write_image_folder(tmp_path / "images", mode=mode)
    source = ImageFolderSamples(root, (channels, 16, 16))
    profile = build_profile(small_staged_model(channels), source, None, settings(), progress=False)
    loaded = load_profile(save_profile(profile, tmp_path / "profiles"))
    assert loaded.input_shape == (channels, 16, 16)
    assert loaded.n_samples == len(source)
    assert np.array_equal(loaded.labels, source.labels)
    assert (loaded.input_png_bytes > 0).all()
    assert (loaded.payload_bytes[:, :3] > 0).all()


def test_interrupted_build_resumes_where_it_stopped(tmp_path: Path, one_torch_thread: None) -> None:
    root = write_image_folder(tmp_path / "images")
    checkpoint = tmp_path / "byo.checkpoint.npz"
    model = small_staged_model(3)
    interrupted = CountingSamples(ImageFolderSamples(root, (3, 16, 16)), fail_at=16)
    with pytest.raises(KeyboardInterrupt):
        build_profile(model, interrupted, None, settings(), False, checkpoint=checkpoint)
    assert checkpoint.exists()

    resumed_source = CountingSamples(ImageFolderSamples(root, (3, 16, 16)))
    resumed = build_profile(model, resumed_source, None, settings(), False, checkpoint=checkpoint)
    # the check reads sample 0, then only the batch that was never measured
    assert resumed_source.reads == [(0, 1), (16, 24)]
    assert not checkpoint.exists()

    whole = build_profile(model, ImageFolderSamples(root, (3, 16, 16)), None, settings(), False)
    assert np.array_equal(resumed.payload_bytes, whole.payload_bytes)
    assert np.array_equal(resumed.correct, whole.correct)
    assert np.array_equal(resumed.confidence, whole.confidence)
    assert np.array_equal(resumed.input_png_bytes, whole.input_png_bytes)


def test_checkpoint_of_another_build_is_refused(tmp_path: Path, one_torch_thread: None) -> None:
    root = write_image_folder(tmp_path / "images")
    checkpoint = tmp_path / "byo.checkpoint.npz"
    source = CountingSamples(ImageFolderSamples(root, (3, 16, 16)), fail_at=8)
    with pytest.raises(KeyboardInterrupt):
        build_profile(small_staged_model(3), source, None, settings(), False, checkpoint=checkpoint)
    other_model = small_staged_model(3, seed=1)
    with pytest.raises(ValueError, match="checkpoint of another build"):
        build_profile(
            other_model, ImageFolderSamples(root, (3, 16, 16)), None, settings(), False,
            checkpoint=checkpoint,
        )  # fmt: skip


def test_cheap_checks_fail_before_the_long_loop(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images")
    wrong_size = CountingSamples(ImageFolderSamples(root, (3, 20, 20)))
    with pytest.raises(ValueError, match=r"shape \(3, 20, 20\), the model takes \(3, 16, 16\)"):
        build_profile(small_staged_model(3), wrong_size, None, settings(), False)
    assert wrong_size.reads == [(0, 1)]

    too_many_classes = ArraySamples(np.zeros((4, 3, 16, 16), np.uint8), np.array([0, 1, 2, 5]))
    with pytest.raises(ValueError, match="labels go up to 5"):
        build_profile(small_staged_model(3), too_many_classes, None, settings(), False)


def test_build_settings_and_device_are_checked() -> None:
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        settings(batch_size=0)
    inputs = np.zeros((2, 3, 16, 16), np.uint8)
    with pytest.raises(ValueError, match="expected cpu or cuda"):
        build_profile(small_staged_model(3), inputs, np.zeros(2, int), settings(), device="mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            build_profile(
                small_staged_model(3), inputs, np.zeros(2, int), settings(), device="cuda"
            )
