"""The canvas task: a Fashion-MNIST item somewhere in a cluttered, noisy camera-like frame.

A bare 28x28 Fashion-MNIST image is so small that sending it to the server always beats sending
any intermediate tensor, which would make the split decision trivial. Each canvas therefore places
one item (the labelled object) at a random position on a larger frame, over dimmer, partially
visible crops of *other* items of the same split (clutter), on a random background level with
Gaussian sensor noise. Everything about sample ``i`` comes from a generator seeded with
``(seed, i)``, so a sample is the same whatever the batch or the order it is drawn in, and the
canvases of the test split are made from test items only.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from splitrl.models.fashion_mnist import Split, load_fashion_mnist

TEST_CANVAS_SEED = 20_240_601
"""Seed of the canonical test canvases (used for the reported accuracies and the profiles)."""

VALIDATION_CANVAS_SEED = 20_240_602
"""Seed of the validation canvases (held-out training items, used to choose the architecture)."""


@dataclass(frozen=True)
class CanvasConfig:
    """How canvases are drawn.

    :param size: side of the square canvas in pixels (at least 64).
    :param clutter_items: inclusive range of the number of clutter crops per canvas.
    :param clutter_crop: inclusive range of the side lengths (pixels) of a clutter crop.
    :param clutter_brightness: range of the factor that dims a clutter crop.
    :param item_brightness: range of the factor applied to the labelled item.
    :param item_scale: range of the labelled item's scale (nearest-neighbour resampling of the
        28x28 image; 1.0 keeps it as is), as objects at different distances from a camera.
    :param background: range of the uniform background level (0..255 scale).
    :param noise_std: standard deviation of the additive Gaussian sensor noise (0..255 scale).
    """

    size: int = 64
    clutter_items: tuple[int, int] = (2, 4)
    clutter_crop: tuple[int, int] = (10, 20)
    clutter_brightness: tuple[float, float] = (0.25, 0.55)
    item_brightness: tuple[float, float] = (0.8, 1.0)
    item_scale: tuple[float, float] = (1.0, 1.0)
    background: tuple[float, float] = (0.0, 24.0)
    noise_std: float = 6.0

    def __post_init__(self) -> None:
        if self.size < 64:
            raise ValueError(f"canvas size must be at least 64 pixels, got {self.size}")
        low, high = self.clutter_items
        if not 0 <= low <= high:
            raise ValueError(f"clutter_items must be 0 <= low <= high, got {self.clutter_items}")
        low, high = self.clutter_crop
        if not 1 <= low <= high <= 28:
            raise ValueError(
                f"clutter_crop must be 1 <= low <= high <= 28, got {self.clutter_crop}"
            )
        smallest, largest = self.item_scale
        if not 0.25 <= smallest <= largest or round(28 * largest) > self.size:
            raise ValueError(
                f"item_scale must be 0.25 <= low <= high with the item fitting the canvas, "
                f"got {self.item_scale}"
            )
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON form (tuples become lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()
        }


@dataclass(frozen=True)
class CanvasSources:
    """Which source items one canvas was drawn from (indices into the split's items)."""

    item: int
    clutter: tuple[int, ...]


class CanvasDataset(Dataset[tuple[torch.Tensor, int]]):
    """Deterministic canvases built from one split of Fashion-MNIST.

    Sample ``i`` shows item ``i`` of ``images`` (its label is ``labels[i]``) over clutter cut
    from other items of the same ``images`` array.

    :param images: ``uint8 [N, 28, 28]`` source items of one split.
    :param labels: ``[N]`` class labels.
    :param seed: dataset seed; sample ``i`` uses ``numpy.random.default_rng((seed, i))``.
    :param config: drawing parameters.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        seed: int,
        config: CanvasConfig | None = None,
    ) -> None:
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N, 28, 28], got {images.dtype} {images.shape}")
        if labels.shape != (len(images),):
            raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
        if len(images) < 2:
            raise ValueError("at least 2 source items are needed (clutter comes from other items)")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.images = images
        self.labels = labels.astype(np.int64)
        self.seed = int(seed)
        self.config = config or CanvasConfig()

    @classmethod
    def from_fashion_mnist(
        cls,
        split: Split,
        seed: int,
        data_dir: str | os.PathLike[str] | None = None,
        config: CanvasConfig | None = None,
    ) -> CanvasDataset:
        """Canvases of one Fashion-MNIST split (test canvases use test items only).

        :param split: ``"train"`` or ``"test"``.
        :param seed: dataset seed (:data:`TEST_CANVAS_SEED` for the canonical test set).
        :param data_dir: directory of the IDX files, see
            :func:`splitrl.models.fashion_mnist.resolve_data_dir`.
        :param config: drawing parameters.
        """
        images, labels = load_fashion_mnist(split, data_dir)
        return cls(images, labels, seed, config)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Canvas ``index`` as ``uint8 [1, H, W]`` tensor and its label."""
        canvas, _ = self.render(index)
        return torch.from_numpy(canvas), int(self.labels[index])

    def render(self, index: int) -> tuple[np.ndarray, CanvasSources]:
        """Draw canvas ``index``.

        :return: ``uint8 [1, H, W]`` canvas and the indices of the items it was drawn from.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"canvas index {index} out of range 0..{len(self) - 1}")
        cfg = self.config
        rng = np.random.default_rng((self.seed, index))
        size = cfg.size
        frame = np.full((size, size), rng.uniform(*cfg.background), dtype=np.float32)

        n_clutter = int(rng.integers(cfg.clutter_items[0], cfg.clutter_items[1] + 1))
        others = rng.integers(0, len(self) - 1, size=n_clutter)
        others = others + (others >= index)  # skip the labelled item itself
        for other in others:
            height, width = rng.integers(cfg.clutter_crop[0], cfg.clutter_crop[1] + 1, size=2)
            src_y, src_x = rng.integers(0, 29 - height), rng.integers(0, 29 - width)
            crop = self.images[other, src_y : src_y + height, src_x : src_x + width]
            crop = crop.astype(np.float32) * rng.uniform(*cfg.clutter_brightness)
            # Crops may hang over the border: only part of a clutter object is visible.
            top = int(rng.integers(-height // 2, size - height // 2))
            left = int(rng.integers(-width // 2, size - width // 2))
            y0, x0 = max(top, 0), max(left, 0)
            y1, x1 = min(top + height, size), min(left + width, size)
            region = frame[y0:y1, x0:x1]
            np.maximum(region, crop[y0 - top : y1 - top, x0 - left : x1 - left], out=region)

        item = self.images[index].astype(np.float32) * rng.uniform(*cfg.item_brightness)
        side = round(28 * rng.uniform(*cfg.item_scale))
        pick = (np.arange(side) * 28) // side  # nearest-neighbour source rows and columns
        item = item[np.ix_(pick, pick)]
        top, left = rng.integers(0, size - side + 1, size=2)
        region = frame[top : top + side, left : left + side]
        region[...] = np.where(item > 0, item, region)  # the item occludes what lies behind it

        frame += rng.normal(0.0, cfg.noise_std, size=frame.shape).astype(np.float32)
        canvas = np.clip(np.rint(frame), 0, 255).astype(np.uint8)[None]
        return canvas, CanvasSources(int(index), tuple(int(o) for o in others))

    def materialize(
        self, indices: np.ndarray | None = None, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw many canvases at once.

        :param indices: which samples (default: all, in order).
        :param progress: show a tqdm progress bar.
        :return: ``uint8 [n, 1, H, W]`` canvases and ``int64 [n]`` labels.
        """
        chosen = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        size = self.config.size
        canvases = np.empty((len(chosen), 1, size, size), dtype=np.uint8)
        for row, index in enumerate(tqdm(chosen, desc="canvases", disable=not progress)):
            canvases[row] = self.render(int(index))[0]
        return canvases, self.labels[chosen]
