"""Live mode: run the real model and codec for every request instead of replaying the profile.

Live mode exists to keep replay honest: for the same sample and action, both must give the same
payload size and the same correctness. It needs what the profile was built from: the network's
weights (checked against the profile's record of their SHA-256) and the Fashion-MNIST test set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from splitrl.profiles.schema import Profile, ProfileError


class LiveOutcomes:
    """Per-request outcomes computed live for a profile's model and test canvases.

    :param profile: the profile whose model, dataset and bit options are used
    :param weights: checkpoint sidecar (``NAME.json``) of the network; default: the shipped one
    :param data_dir: Fashion-MNIST folder (default: ``$SPLITRL_FASHION_MNIST`` or the Debian path)
    """

    def __init__(
        self,
        profile: Profile,
        weights: str | Path | None = None,
        data_dir: str | Path | None = None,
    ) -> None:
        from splitrl.models import CanvasConfig, CanvasDataset, LiveInference, load_checkpoint
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
        self.dataset = CanvasDataset.from_fashion_mnist(
            "test", seed=int(dataset_info.get("canvas_seed", 0)), data_dir=data_dir, config=config
        )
        codec_options = dict(profile.codec)
        self.live = LiveInference(
            load_checkpoint(sidecar), codec_options=lambda split: codec_options
        )
        self.bit_options = profile.bit_options

    def outcome(
        self, sample: int, exit_index: int, split: int, bits_index: int
    ) -> tuple[int, float]:
        """``(payload bytes, correct)`` of one request run live."""
        canvas, _ = self.dataset.render(sample)
        result = self.live.infer(
            torch.from_numpy(canvas),
            exit_index,
            split,
            self.bit_options[bits_index],
            label=int(self.dataset.labels[sample]),
        )
        return result.payload_bytes, float(bool(result.correct))


def _tuples(config: dict[str, Any]) -> dict[str, Any]:
    """JSON lists back to the tuples ``CanvasConfig`` holds."""
    return {
        key: tuple(value) if isinstance(value, list) else value for key, value in config.items()
    }
