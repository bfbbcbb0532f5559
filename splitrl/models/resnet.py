"""Adapter that exposes a torchvision-style ResNet as a :class:`StagedModel`.

Any module with the attributes of ``torchvision.models.ResNet`` (``conv1``, ``bn1``, ``relu``,
``maxpool``, ``layer1`` .. ``layer4``, ``avgpool``, ``fc``) can be wrapped; torchvision itself is
not needed. The stages are ``[stem, layer1, layer2, layer3, layer4]`` (stem = conv1, bn1, relu,
maxpool), the final exit is ``avgpool -> flatten -> fc`` after stage 5, and early-exit heads may
be attached after stages 1..4. The stem starts with the input normalization
(:class:`~splitrl.models.normalization.CameraInput`, ImageNet's by default), so the model takes the
camera's ``uint8`` frame and can be profiled as it is. The wrapper shares the ResNet's modules (no
copies), so its final exit computes exactly what the ResNet's own ``forward`` computes on the
normalized frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from splitrl.models.normalization import IMAGENET_MEAN, IMAGENET_STD, CameraInput
from splitrl.models.protocol import ExitSpec, InputSpec, StagedModule

IMAGENET_INPUT = InputSpec(
    shape=(3, 224, 224),
    dtype=torch.uint8,
    value_range=(0.0, 255.0),
    description="RGB camera frame; stage 1 normalizes it with the ImageNet mean and std",
)
RESNET_ATTRIBUTES = (
    "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc",
)  # fmt: skip


def pooled_linear_head(in_channels: int, num_classes: int) -> nn.Sequential:
    """A minimal exit head: global average pooling, flatten, linear.

    :param in_channels: channels of the stage output it reads (ResNet-18: 64, 64, 128, 256).
    :param num_classes: number of classes.
    """
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(in_channels, num_classes)
    )


class ResNetStaged(StagedModule):
    """A torchvision-style ResNet cut into 5 stages, with optional early exits.

    :param resnet: the ResNet (e.g. ``torchvision.models.resnet18(weights=None)``).
    :param early_exits: extra exits with ``after_stage`` in 1..4, ordered; the final exit
        (``avgpool`` + ``fc`` after stage 5) is always added last.
    :param input_spec: what stage 1 takes (default: a 3x224x224 uint8 RGB frame); a smaller
        size works too, as the ResNet pools globally.
    :param normalization: the first module of the stem, mapping the raw input to what the ResNet
        was trained on (``None``: ImageNet's mean and std on ``x / 255``); ``nn.Identity()`` when
        the input already is.
    """

    def __init__(
        self,
        resnet: nn.Module,
        early_exits: Sequence[ExitSpec] = (),
        input_spec: InputSpec = IMAGENET_INPUT,
        normalization: nn.Module | None = None,
    ) -> None:
        parts = {name: getattr(resnet, name, None) for name in RESNET_ATTRIBUTES}
        missing = [name for name, part in parts.items() if not isinstance(part, nn.Module)]
        if missing:
            raise ValueError(f"not a torchvision-style ResNet: missing modules {missing}")
        modules: dict[str, nn.Module] = {k: v for k, v in parts.items() if isinstance(v, nn.Module)}
        first = CameraInput(IMAGENET_MEAN, IMAGENET_STD) if normalization is None else normalization
        stem = nn.Sequential(
            first, *(modules[name] for name in ("conv1", "bn1", "relu", "maxpool"))
        )
        stages = [stem, *(modules[f"layer{k}"] for k in range(1, 5))]
        final_head = nn.Sequential(modules["avgpool"], nn.Flatten(1), modules["fc"])
        final = ExitSpec(after_stage=len(stages), head=final_head)
        super().__init__(stages, [*early_exits, final], input_spec)
