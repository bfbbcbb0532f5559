"""Live mode: run the real model and codec for every request instead of replaying the profile.

Live mode exists to keep replay honest: for the same sample and action, both must give the same
payload size and the same correctness. It needs what the profile was built from: the network's
weights (checked against the profile's record of their SHA-256) and the test samples: the
Fashion-MNIST canvases for the shipped network, the model card (or factory) and the ``--data``
samples the profile names for a user's model (:mod:`splitrl.profiles.profiled_model`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splitrl.models.protocol import StagedModel
from splitrl.profiles.schema import Profile, ProfileError


class LiveOutcomes:
    """Per-request outcomes computed live for a profile's model and test canvases.

    :param profile: the profile whose model, dataset and bit options are used
    :param weights: checkpoint sidecar (``NAME.json``) of the network, or for a profile of a
        user's model its card or factory; default: the shipped network, or what the profile names
    :param data_dir: Fashion-MNIST folder (default: ``$SPLITRL_FASHION_MNIST`` or the Debian path)
    """

    def __init__(
        self,
        profile: Profile,
        weights: str | Path | None = None,
        data_dir: str | Path | None = None,
    ) -> None:
        from splitrl.models import LiveInference
        from splitrl.profiles.profiled_model import (
            load_profiled_model,
            names_own_model,
            open_profiled_samples,
        )

        codec_options = dict(profile.codec)
        self.bit_options = profile.bit_options
        if names_own_model(profile):
            model = load_profiled_model(profile, weights)
            samples = open_profiled_samples(profile)
            self._sample: Callable[[int], tuple[np.ndarray, int]] = lambda i: (
                samples.read(i, i + 1)[0],
                int(samples.labels[i]),
            )
        else:
            model = self._open_canvases(profile, weights, data_dir)
        self.live = LiveInference(model, codec_options=lambda split: codec_options)

    def _open_canvases(
        self, profile: Profile, weights: str | Path | None, data_dir: str | Path | None
    ) -> StagedModel:
        """The shipped architecture's checkpoint; its test canvases become the samples."""
        from splitrl.models import CanvasConfig, CanvasDataset, load_checkpoint
        from splitrl.models.checkpoint import DEFAULT_MODEL_NAME, WEIGHTS_DIR, read_sidecar

        sidecar = (
            Path(weights) if weights is not None else WEIGHTS_DIR / f"{DEFAULT_MODEL_NAME}.json"
        )
        recorded = profile.metadata.get("model", {}).get("weights_sha256")
        actual = read_sidecar(sidecar).get("weights_sha256")
        if recorded is not None and recorded != actual:
            raise ProfileError(
                f"profile {profile.name!r} was built from weights {str(recorded)[:12]}..., but {sidecar} "
                f"holds {str(actual)[:12]}...: live outcomes would not match the replay"
            )
        dataset_info = profile.metadata.get("dataset", {})
        config = (
            CanvasConfig(**_tuples(dataset_info["canvas"])) if "canvas" in dataset_info else None
        )
        dataset = CanvasDataset.from_fashion_mnist(
            "test", seed=int(dataset_info.get("canvas_seed", 0)), data_dir=data_dir, config=config
        )
        self._sample = lambda i: (dataset.render(i)[0], int(dataset.labels[i]))
        return load_checkpoint(sidecar)

    def outcome(
        self, sample: int, exit_index: int, split: int, bits_index: int
    ) -> tuple[int, float]:
        """``(payload bytes, correct)`` of one request run live."""
        frame, label = self._sample(sample)
        result = self.live.infer(
            torch.from_numpy(frame), exit_index, split, self.bit_options[bits_index], label=label
        )
        return result.payload_bytes, float(bool(result.correct))


def _tuples(config: dict[str, Any]) -> dict[str, Any]:
    """JSON lists back to the tuples ``CanvasConfig`` holds."""
    return {
        key: tuple(value) if isinstance(value, list) else value for key, value in config.items()
    }
