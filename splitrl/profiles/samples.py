"""Where the profile builder reads its test samples: arrays, an image folder or an NPZ file.

A sample source (:class:`~splitrl.models.protocol.SampleSource`) knows all labels up front and
reads the inputs a batch at a time, so the builder holds one batch of images in memory whatever
the size of the data set::

    source = ImageFolderSamples("data/val", shape=(3, 96, 96))
    len(source), source.labels[:5], source.read(0, 32).shape   # (N,), uint8 [32, 3, 96, 96]

``open_samples("imagefolder:PATH" | "npz:PATH", shape)`` picks the source from a command-line text.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from splitrl.models.protocol import SampleSource

#: file name endings an image folder's images may have
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ArraySamples:
    """Samples held in memory.

    :param inputs: ``uint8 [N, *shape]``
    :param labels: ``[N]`` non-negative integer classes
    """

    def __init__(self, inputs: np.ndarray, labels: np.ndarray) -> None:
        if inputs.dtype != np.uint8:
            raise ValueError(f"inputs must be uint8 as delivered by the camera, got {inputs.dtype}")
        self._labels = _checked_labels(labels, len(inputs))
        self.inputs = inputs

    @property
    def labels(self) -> np.ndarray:
        """Every sample's class."""
        return self._labels

    def __len__(self) -> int:
        return len(self.inputs)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)``."""
        return self.inputs[start:stop]

    def fingerprint(self) -> str:
        """SHA-256 of the inputs, their shape and the labels."""
        digest = hashlib.sha256(str(self.inputs.shape).encode())
        digest.update(np.ascontiguousarray(self.inputs).tobytes())
        digest.update(self._labels.tobytes())
        return digest.hexdigest()


class ImageFolderSamples:
    """Images in one sub-folder per class (``root/CLASS/*.png``), read from disk a batch at a time.

    Classes are the sub-folder names in sorted order (class 0 is the first), as in torchvision's
    ``ImageFolder``. Each image is converted to grayscale (1 channel) or RGB (3 channels), its
    shorter side resized to the target size and the centre cropped. The samples come in a
    seeded random order, so that the first ``limit`` of them are a fair subset of every class.

    :param root: the folder
    :param shape: ``(channels, height, width)`` of a sample, channels 1 or 3
    :param limit: keep only the first ``limit`` samples of the order (``None``: all)
    :param seed: seed of the order
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        shape: Sequence[int],
        limit: int | None = None,
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        if len(shape) != 3 or shape[0] not in (1, 3) or min(shape) < 1:
            raise ValueError(
                f"an image folder gives (channels, height, width) with 1 or 3 channels, got {shape}"
            )
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        if not self.root.is_dir():
            raise ValueError(f"{self.root}: image folder not found")
        self.shape = (int(shape[0]), int(shape[1]), int(shape[2]))
        self.classes = sorted(entry.name for entry in self.root.iterdir() if entry.is_dir())
        files = [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in sorted((self.root / name).iterdir())
            if path.suffix.lower() in IMAGE_EXTENSIONS
        ]
        if not files:
            raise ValueError(
                f"{self.root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in class sub-folders"
            )
        order = np.random.default_rng(seed).permutation(len(files))[:limit]
        self.files = [files[i][0] for i in order]
        self._labels = np.array([files[i][1] for i in order], dtype=np.int64)

    @property
    def labels(self) -> np.ndarray:
        """Every sample's class (the index of its sub-folder)."""
        return self._labels

    def __len__(self) -> int:
        return len(self.files)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Load, convert, resize and crop images ``[start, stop)``."""
        return np.stack([self.load(path) for path in self.files[start:stop]])

    def load(self, path: Path) -> np.ndarray:
        """One image as ``uint8 [channels, height, width]``."""
        from PIL import Image, ImageOps

        channels, height, width = self.shape
        try:
            with Image.open(path) as image:
                converted = image.convert("L" if channels == 1 else "RGB")
        except OSError as error:
            raise ValueError(f"{path}: not a readable image ({error})") from error
        fitted = ImageOps.fit(converted, (width, height), method=Image.Resampling.BILINEAR)
        pixels = np.asarray(fitted, dtype=np.uint8)
        return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1).copy()

    def fingerprint(self) -> str:
        """SHA-256 of the target shape and every file's relative path, size and time stamp."""
        digest = hashlib.sha256(str(self.shape).encode())
        for path in self.files:
            stat = path.stat()
            digest.update(
                f"{path.relative_to(self.root)}:{stat.st_size}:{stat.st_mtime_ns}".encode()
            )
        return digest.hexdigest()


def load_npz_samples(path: str | os.PathLike[str], limit: int | None = None) -> ArraySamples:
    """Samples from an NPZ file with arrays ``inputs`` (``uint8 [N, *shape]``) and ``labels``.

    The arrays are held in memory; for a large data set use an image folder.

    :param path: the ``.npz`` file
    :param limit: keep only the first ``limit`` samples (``None``: all)
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: NPZ file not found")
    with np.load(path, allow_pickle=False) as arrays:
        missing = [name for name in ("inputs", "labels") if name not in arrays.files]
        if missing:
            raise ValueError(f"{path}: NPZ file lacks the arrays {missing}")
        return ArraySamples(arrays["inputs"][:limit], arrays["labels"][:limit])


def open_samples(text: str, shape: Sequence[int], limit: int | None = None) -> SampleSource:
    """The source a command line names: ``imagefolder:PATH`` or ``npz:PATH``.

    :param text: ``KIND:PATH``
    :param shape: per-sample ``(channels, height, width)`` the model takes (for image folders)
    :param limit: keep only the first ``limit`` samples
    """
    kind, _, location = text.partition(":")
    if kind == "imagefolder" and location:
        return ImageFolderSamples(location, shape, limit=limit)
    if kind == "npz" and location:
        return load_npz_samples(location, limit=limit)
    raise ValueError(f"--data: expected imagefolder:PATH or npz:PATH, got {text!r}")


def _checked_labels(labels: np.ndarray, n_inputs: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n_inputs or n_inputs == 0:
        raise ValueError(
            f"need one label per input and at least one input (got {n_inputs} inputs and "
            f"labels of shape {labels.shape})"
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError("labels must be non-negative integers")
    return labels.astype(np.int64)
