"""The camera's uint8 frame to what a pretrained network expects, inside the first stage.

A pretrained network expects normalized floats (ImageNet: ``(x / 255 - mean) / std``); splitrl
profiles and sends the frame as the camera delivers it, ``uint8``. :class:`CameraInput` is the first
module of stage 1, so the device sends raw pixels at split 0 and every later stage sees what the
network was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: the per-channel mean and standard deviation torchvision's ImageNet weights expect (RGB)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CameraInput(nn.Module):
    """``(x / 255 - mean) / std`` per channel, for ``[batch, channels, ...]`` pixels in 0..255.

    :param mean: per-channel mean on the 0..1 scale (one value per channel)
    :param std: per-channel standard deviation on the 0..1 scale, positive
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or not mean:
            raise ValueError(f"need one mean and one std per channel, got {mean} and {std}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {std}")
        shape = (1, len(mean), 1, 1)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize a batch of raw pixels (any dtype holding 0..255)."""
        return (x.float() / 255.0 - self.mean) / self.std
