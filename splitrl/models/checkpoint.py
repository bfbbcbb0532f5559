"""Save and load EarlyExitNet checkpoints: ``NAME.pt`` (state_dict) plus ``NAME.json`` (sidecar).

The sidecar holds the architecture config, the training seed and settings, the measured accuracy
of every exit and the SHA-256 of the weights file, which is checked on load.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from splitrl.models.early_exit import EarlyExitConfig, EarlyExitNet

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL_NAME = "canvas_eenet"
SIDECAR_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, altered or inconsistent with its sidecar."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_checkpoint(
    model: EarlyExitNet, directory: str | os.PathLike[str], name: str, metrics: dict[str, Any]
) -> Path:
    """Write ``directory/name.pt`` and its sidecar ``directory/name.json``.

    :param model: the trained network.
    :param directory: target directory (created if needed).
    :param name: base name of both files.
    :param metrics: training metrics as returned by
        :func:`~splitrl.models.training.train_early_exit_net` (stored in the sidecar).
    :return: path of the sidecar.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_path = directory / f"{name}.pt"
    torch.save(model.state_dict(), weights_path)
    sidecar = {
        "format": SIDECAR_FORMAT,
        "model": type(model).__name__,
        "config": model.config.to_dict(),
        "weights_file": weights_path.name,
        "weights_sha256": file_sha256(weights_path),
        **metrics,
    }
    sidecar_path = directory / f"{name}.json"
    sidecar_path.write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar_path


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint sidecar (``NAME.json``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint sidecar not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: sidecar is not valid JSON ({error})") from error
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise CheckpointError(f"{path}: not a format-{SIDECAR_FORMAT} checkpoint sidecar")
    return data


def load_checkpoint(sidecar_path: str | os.PathLike[str]) -> EarlyExitNet:
    """Build the network described by a sidecar and load its verified weights.

    :param sidecar_path: the ``NAME.json`` written by :func:`save_checkpoint`.
    :return: the network in eval mode.
    :raises CheckpointError: if a file is missing or the weights do not match their SHA-256.
    """
    sidecar_path = Path(sidecar_path)
    sidecar = read_sidecar(sidecar_path)
    weights_path = sidecar_path.parent / sidecar["weights_file"]
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: weights file not found")
    digest = file_sha256(weights_path)
    if digest != sidecar["weights_sha256"]:
        raise CheckpointError(
            f"{weights_path}: SHA-256 {digest} does not match the sidecar "
            f"({sidecar['weights_sha256']})"
        )
    model = EarlyExitNet(EarlyExitConfig.from_dict(sidecar["config"]))
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def load_default_model() -> EarlyExitNet:
    """The shipped, trained network for the 64x64 canvas task (eval mode)."""
    return load_checkpoint(WEIGHTS_DIR / f"{DEFAULT_MODEL_NAME}.json")
