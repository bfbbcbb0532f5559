"""EarlyExitNet: a five-stage CNN with three exits for the canvas task.

Stages (for a 64x64 canvas; ``c`` = channels, see :class:`EarlyExitConfig`):

====  ================================================================  ==================
 k    layers                                                            output
====  ================================================================  ==================
 1    x/255, conv3x3/2 -> BN -> ReLU                                    ``c0 x 32 x 32``
 2    conv3x3/2 -> BN -> ReLU, **bottleneck** conv1x1 -> ReLU           ``b1 x 16 x 16``
 3    conv3x3 -> BN -> ReLU, maxpool 2                                  ``c2 x 8 x 8``
 4    conv3x3 -> BN -> ReLU, **bottleneck** conv1x1 -> ReLU             ``b2 x 8 x 8``
 5    conv3x3 -> BN -> ReLU, residual block, maxpool 2,                 ``t2 x 4 x 4``
      conv3x3 -> BN -> ReLU, residual block
====  ================================================================  ==================

The device side (stages 1..4) is lean, because the device it runs on is slow; the server-side
tail (stage 5) holds most of the compute and is where the accuracy of the final exit comes from.
The bottlenecks (1x1 convolutions that cut the channels, followed by ReLU) make the tensors after
stages 2 and 4 smaller than the stage outputs on either side, so they are the natural split points. Exits sit after stages 2,
3 and 5: the two early exits are what the device can afford on its own, the final exit needs the
tail. The early heads are one small conv3x3 -> BN -> ReLU, global average pooling and a linear
layer, the final head is global average pooling and a linear layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from splitrl.models.protocol import ExitSpec, InputSpec, StagedModule


@dataclass(frozen=True)
class EarlyExitConfig:
    """Architecture of an :class:`EarlyExitNet`.

    :param canvas_size: side of the square grayscale input (divisible by 16).
    :param num_classes: number of classes.
    :param stem_channels: ``c0``, channels after stage 1.
    :param block_channels: ``(c1, c2, c3)``, channels of the 3x3 convolutions of stages 2..4
        (the device side).
    :param bottleneck_channels: ``(b1, b2)``, channels of the bottlenecks ending stages 2 and 4.
    :param tail_channels: ``(t1, t2)``, channels of the server-side tail (stage 5) at 8x8 and at
        4x4 resolution (each width has one conv3x3 and one residual block).
    :param head_channels: channels of the 3x3 convolution of each early exit head.
    :param exit_after: ``after_stage`` of every exit (the last must be 5).
    """

    canvas_size: int = 64
    num_classes: int = 10
    stem_channels: int = 16
    block_channels: tuple[int, int, int] = (32, 40, 40)
    bottleneck_channels: tuple[int, int] = (8, 16)
    tail_channels: tuple[int, int] = (64, 128)
    head_channels: int = 8
    exit_after: tuple[int, ...] = (2, 3, 5)

    def __post_init__(self) -> None:
        if self.canvas_size < 16 or self.canvas_size % 16:
            raise ValueError(f"canvas_size must be a multiple of 16, got {self.canvas_size}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if (
            len(self.block_channels) != 3
            or len(self.bottleneck_channels) != 2
            or len(self.tail_channels) != 2
        ):
            raise ValueError(
                "block_channels needs 3 values, bottleneck_channels 2 and tail_channels 2"
            )
        widths = (
            self.stem_channels,
            *self.block_channels,
            *self.bottleneck_channels,
            *self.tail_channels,
            self.head_channels,
        )
        if min(widths) < 1:
            raise ValueError(f"channel counts must be positive, got {self}")

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON form (tuples become lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> EarlyExitConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**{key: tuple(v) if isinstance(v, list) else v for key, v in data.items()})  # type: ignore[arg-type]


class ScaleInput(nn.Module):
    """Map raw 0..255 pixel values (uint8 or float) to 0..1 floats."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32) / 255.0


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> list[nn.Module]:
    """3x3 convolution (no bias), BatchNorm, ReLU."""
    return [
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def bottleneck(in_channels: int, out_channels: int) -> list[nn.Module]:
    """1x1 convolution that cuts the channels, then ReLU (sparse, compressible output)."""
    return [nn.Conv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    """Two conv3x3 -> BN with an identity shortcut, then ReLU (the basic block of ResNet)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *conv_bn_relu(channels, channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.body(x))


def early_head(in_channels: int, hidden: int, num_classes: int) -> nn.Sequential:
    """Early exit head: conv3x3 -> BN -> ReLU, global average pooling, linear."""
    return nn.Sequential(
        *conv_bn_relu(in_channels, hidden),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(hidden, num_classes),
    )


class EarlyExitNet(StagedModule):
    """Five-stage CNN with three exits for :class:`~splitrl.models.canvas.CanvasDataset` frames.

    Input: ``[batch, 1, H, W]`` grayscale frames with raw values 0..255, as ``uint8`` or as a float
    tensor holding the same values; stage 1 divides by 255 itself. Use ``model.eval()`` for
    inference (BatchNorm).

    :param config: the architecture (default: the shipped one).
    """

    def __init__(self, config: EarlyExitConfig | None = None) -> None:
        cfg = config or EarlyExitConfig()
        c0 = cfg.stem_channels
        c1, c2, c3 = cfg.block_channels
        b1, b2 = cfg.bottleneck_channels
        t1, t2 = cfg.tail_channels
        stages = [
            nn.Sequential(ScaleInput(), *conv_bn_relu(1, c0, stride=2)),
            nn.Sequential(*conv_bn_relu(c0, c1, stride=2), *bottleneck(c1, b1)),
            nn.Sequential(*conv_bn_relu(b1, c2), nn.MaxPool2d(2)),
            nn.Sequential(*conv_bn_relu(c2, c3), *bottleneck(c3, b2)),
            nn.Sequential(
                *conv_bn_relu(b2, t1),
                ResidualBlock(t1),
                nn.MaxPool2d(2),
                *conv_bn_relu(t1, t2),
                ResidualBlock(t2),
            ),
        ]
        stage_channels = (c0, b1, c2, b2, t2)
        exits = []
        for after in cfg.exit_after:
            channels = stage_channels[after - 1]
            head: nn.Module
            if after == len(stages):
                head = nn.Sequential(
                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, cfg.num_classes)
                )
            else:
                head = early_head(channels, cfg.head_channels, cfg.num_classes)
            exits.append(ExitSpec(after_stage=after, head=head))
        size = cfg.canvas_size
        super().__init__(
            stages,
            exits,
            InputSpec(
                shape=(1, size, size),
                dtype=torch.uint8,
                value_range=(0.0, 255.0),
                description="grayscale frame, raw 0..255 values (uint8 or float); "
                "stage 1 divides by 255",
            ),
        )
        self.config = cfg
