"""Reader for the Fashion-MNIST IDX files (gzip-compressed, as shipped by the data set's authors).

The files are looked up in a data directory: the ``data_dir`` argument, else the environment
variable ``SPLITRL_FASHION_MNIST``, else the path of the Debian package ``dataset-fashion-mnist``.
Every file is validated (magic number, dimensions, byte count) and a malformed one raises
:class:`IdxFormatError` naming the file and the problem.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Literal

import numpy as np

DEFAULT_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_DIR_ENV = "SPLITRL_FASHION_MNIST"
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
_FILE_PREFIX = {"train": "train", "test": "t10k"}

Split = Literal["train", "test"]


class IdxFormatError(ValueError):
    """An IDX file is missing, truncated or does not hold what its header promises."""


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the directory that holds the Fashion-MNIST files.

    :param data_dir: explicit directory; ``None`` uses ``$SPLITRL_FASHION_MNIST`` if set, else
        ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
    :return: the directory as a :class:`~pathlib.Path` (not checked for existence here).
    """
    if data_dir is not None:
        return Path(data_dir)
    from_env = os.environ.get(DATA_DIR_ENV)
    return Path(from_env) if from_env else DEFAULT_DATA_DIR


def idx_paths(split: Split, data_dir: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """Paths of the images and labels files of one split.

    :param split: ``"train"`` (60,000 items) or ``"test"`` (10,000 items).
    :param data_dir: see :func:`resolve_data_dir`.
    :return: ``(images_path, labels_path)``.
    """
    if split not in _FILE_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = resolve_data_dir(data_dir)
    prefix = _FILE_PREFIX[split]
    return root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"


def _read_gz(path: Path) -> bytes:
    if not path.is_file():
        raise IdxFormatError(
            f"{path}: file not found (install the Debian package dataset-fashion-mnist, "
            f"or point ${DATA_DIR_ENV} or data_dir at a directory with the IDX .gz files)"
        )
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read()
    except (OSError, EOFError) as error:
        raise IdxFormatError(f"{path}: not a readable gzip file ({error})") from error


def _parse_idx(raw: bytes, path: Path, magic: int, ndim: int) -> np.ndarray:
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise IdxFormatError(f"{path}: {len(raw)} bytes is shorter than the IDX header")
    (found_magic,) = struct.unpack(">I", raw[:4])
    if found_magic != magic:
        raise IdxFormatError(f"{path}: magic number 0x{found_magic:08x}, expected 0x{magic:08x}")
    dims = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected = int(np.prod(dims, dtype=np.int64))
    body = len(raw) - header_size
    if body != expected:
        raise IdxFormatError(f"{path}: header announces {dims} = {expected} bytes, found {body}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)


def read_idx_images(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a gzip-compressed IDX3 image file.

    :param path: the ``*-images-idx3-ubyte.gz`` file.
    :return: ``uint8`` array of shape ``[N, rows, cols]``.
    :raises IdxFormatError: if the file is missing, not gzip, or its header does not match its body.
    """
    path = Path(path)
    return _parse_idx(_read_gz(path), path, IMAGES_MAGIC, ndim=3)


def read_idx_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a gzip-compressed IDX1 label file.

    :param path: the ``*-labels-idx1-ubyte.gz`` file.
    :return: ``uint8`` array of shape ``[N]``.
    :raises IdxFormatError: if the file is missing, not gzip, or its header does not match its body.
    """
    path = Path(path)
    return _parse_idx(_read_gz(path), path, LABELS_MAGIC, ndim=1)


def load_fashion_mnist(
    split: Split, data_dir: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of Fashion-MNIST.

    :param split: ``"train"`` or ``"test"``.
    :param data_dir: see :func:`resolve_data_dir`.
    :return: ``(images, labels)``: ``uint8 [N, 28, 28]`` and ``uint8 [N]`` with values ``0..9``.
    :raises IdxFormatError: if a file is malformed or images and labels disagree.
    """
    images_path, labels_path = idx_paths(split, data_dir)
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path)
    if len(images) != len(labels):
        raise IdxFormatError(
            f"{images_path.parent}: {len(images)} images but {len(labels)} labels in split {split}"
        )
    if labels.size and int(labels.max()) >= len(CLASS_NAMES):
        raise IdxFormatError(f"{labels_path}: label {int(labels.max())} is not a class 0..9")
    return images, labels
