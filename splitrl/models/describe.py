"""Static facts about a staged model: per-stage and per-exit FLOPs, parameters, shapes, layer counts.

FLOPs count the multiply-adds of convolutions and linear layers, times two, per sample (biases,
normalization, activations and pooling are not counted). The layer count is the number of
convolution and linear layers a stage executes, the unit in which the device presets' per-layer
overhead is calibrated (normalization and activations are usually fused into them).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from splitrl.models.protocol import StagedModel


@dataclass(frozen=True)
class StageInfo:
    """Facts about one stage.

    :param index: 0-based stage index (split ``index + 1`` sends this stage's output).
    :param output_shape: per-sample shape of the stage output.
    :param flops: per-sample FLOPs (2 x conv/linear multiply-adds).
    :param params: number of parameters.
    :param n_layers: convolution and linear layers executed.
    """

    index: int
    output_shape: tuple[int, ...]
    flops: int
    params: int
    n_layers: int


@dataclass(frozen=True)
class ExitInfo:
    """Facts about one exit head.

    :param index: exit index.
    :param after_stage: ``k_e``, stages run before the head.
    :param num_classes: width of the logits.
    :param flops: per-sample FLOPs of the head alone.
    :param params: parameters of the head alone.
    :param n_layers: convolution and linear layers the head executes.
    """

    index: int
    after_stage: int
    num_classes: int
    flops: int
    params: int
    n_layers: int


@dataclass(frozen=True)
class _Measured:
    output: torch.Tensor
    flops: int
    n_layers: int


def _measure(module: nn.Module, x: torch.Tensor) -> _Measured:
    """Run ``module`` on a batch of one, counting FLOPs and executed convolution/linear layers."""
    flops = 0
    n_layers = 0

    def hook(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal flops, n_layers
        per_sample = output.numel() // output.shape[0]
        if isinstance(layer, nn.Conv2d):
            kernel = layer.kernel_size[0] * layer.kernel_size[1]
            flops += 2 * per_sample * (layer.in_channels // layer.groups) * kernel
            n_layers += 1
        elif isinstance(layer, nn.Linear):
            flops += 2 * per_sample * layer.in_features
            n_layers += 1

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [leaf.register_forward_hook(hook) for leaf in leaves]
    try:
        output = module(x)
    finally:
        for handle in handles:
            handle.remove()
    return _Measured(output, flops, n_layers)


def count_flops(module: nn.Module, example: torch.Tensor) -> int:
    """Per-sample FLOPs of ``module`` on ``example`` (a batch; only its first sample is run).

    :param module: any module built from ``Conv2d``/``Linear`` and uncounted layers.
    :param example: an input batch.
    :return: 2 x multiply-adds of all convolutions and linear layers, for one sample.
    """
    with torch.no_grad(), _eval_mode([module]):
        return _measure(module, example[:1]).flops


@contextmanager
def _eval_mode(modules: list[nn.Module]) -> Iterator[None]:
    """Eval mode (BatchNorm statistics untouched) for the duration of a measurement."""
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, flag in zip(modules, was_training, strict=True):
            m.train(flag)


def _example_input(model: StagedModel) -> torch.Tensor:
    spec = model.input_spec
    return torch.full((1, *spec.shape), spec.value_range[0], dtype=spec.dtype)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe_stages(model: StagedModel) -> list[StageInfo]:
    """Shapes, FLOPs, parameters and layer counts of every stage.

    :param model: any :class:`~splitrl.models.protocol.StagedModel`.
    :return: one :class:`StageInfo` per stage, in order.
    """
    infos = []
    x = _example_input(model)
    with torch.no_grad(), _eval_mode(list(model.stages)):
        for index, stage in enumerate(model.stages):
            measured = _measure(stage, x)
            x = measured.output
            infos.append(
                StageInfo(
                    index=index,
                    output_shape=tuple(x.shape[1:]),
                    flops=measured.flops,
                    params=_params(stage),
                    n_layers=measured.n_layers,
                )
            )
    return infos


def describe_exits(model: StagedModel) -> list[ExitInfo]:
    """FLOPs, parameters and layer counts of every exit head (without the stages before it).

    :param model: any :class:`~splitrl.models.protocol.StagedModel`.
    :return: one :class:`ExitInfo` per exit, in order.
    """
    outputs = [_example_input(model)]
    infos = []
    modules = [*model.stages, *(spec.head for spec in model.exits)]
    with torch.no_grad(), _eval_mode(modules):
        for stage in model.stages:
            outputs.append(stage(outputs[-1]))
        for index, spec in enumerate(model.exits):
            measured = _measure(spec.head, outputs[spec.after_stage])
            infos.append(
                ExitInfo(
                    index=index,
                    after_stage=spec.after_stage,
                    num_classes=int(measured.output.shape[-1]),
                    flops=measured.flops,
                    params=_params(spec.head),
                    n_layers=measured.n_layers,
                )
            )
    return infos
