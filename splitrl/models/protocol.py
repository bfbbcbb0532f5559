"""The staged-model protocol: what splitrl needs to know about a DNN to split it and stop it early.

A staged model is an ordered list of stages; stage ``k`` maps the output of stage ``k - 1`` (stage
0 takes the input) to its own output, and every stage output is a candidate split tensor. An exit
is a head attached after ``after_stage`` stages (a 1-based count, ``k_e``); the last exit sits
after the last stage and is the full model. Split ``s`` means the device runs stages ``[0, s)``
and sends the input (``s = 0``) or the output of stage ``s - 1``.

Any object with ``stages``, ``exits``, ``input_spec``, ``run_stages`` and ``run_exit`` satisfies
:class:`StagedModel`. The simplest way to get one is :class:`StagedModule`: give it the stages,
the exits and the input spec, and it provides the helpers and a ``forward``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class InputSpec:
    """What stage 0 accepts, per sample (the batch dimension comes first and is not listed).

    :param shape: per-sample shape, e.g. ``(1, 64, 64)`` for a grayscale frame.
    :param dtype: dtype of a raw input as the camera delivers it (e.g. ``torch.uint8``).
    :param value_range: inclusive range of the raw values, e.g. ``(0.0, 255.0)``.
    :param description: one line for humans (normalization, layout, colour order).
    """

    shape: tuple[int, ...]
    dtype: torch.dtype
    value_range: tuple[float, float]
    description: str = ""


@runtime_checkable
class SampleSource(Protocol):
    """Samples of a model's input as the camera delivers them, with labels, read a batch at a time.

    The profile builder measures a model on them and the exit heads train on them
    (:mod:`splitrl.profiles.samples` has arrays, image folders and NPZ files).
    """

    @property
    def labels(self) -> np.ndarray:
        """Every sample's class, ``int64 [N]``."""
        ...

    def __len__(self) -> int:
        """Number of samples ``N``."""
        ...

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` as ``uint8 [stop - start, *shape]``."""
        ...

    def fingerprint(self) -> str:
        """A digest that changes when the samples or their order change (for resuming builds)."""
        ...


@dataclass(frozen=True)
class ExitSpec:
    """An exit head.

    :param after_stage: ``k_e``, the number of stages run before the head (1-based).
    :param head: module mapping the output of stage ``k_e - 1`` to class logits ``[batch, classes]``.
    """

    after_stage: int
    head: nn.Module


@runtime_checkable
class StagedModel(Protocol):
    """A DNN cut into stages with exit heads (see the module docstring for the terms)."""

    @property
    def stages(self) -> Sequence[nn.Module]:
        """The ordered stages; their outputs are the candidate split tensors."""
        ...

    @property
    def exits(self) -> Sequence[ExitSpec]:
        """The exits, ordered by ``after_stage``; the last one follows the last stage."""
        ...

    @property
    def input_spec(self) -> InputSpec:
        """What stage 0 accepts."""
        ...

    def run_stages(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Run stages ``[start, stop)`` on ``x`` (the input if ``start == 0``, else the output of
        stage ``start - 1``) and return the output of stage ``stop - 1`` (``x`` if equal)."""
        ...

    def run_exit(self, features: torch.Tensor, exit_index: int) -> torch.Tensor:
        """Apply exit head ``exit_index`` to the output of its stage ``k_e - 1``; return logits."""
        ...


class StagedModule(nn.Module):
    """A :class:`StagedModel` built from a list of stages and exits.

    Subclass it or instantiate it directly to make a model usable by splitrl::

        staged = StagedModule(
            stages=[stem, block1, block2],
            exits=[ExitSpec(after_stage=1, head=early_head), ExitSpec(3, final_head)],
            input_spec=InputSpec((3, 224, 224), torch.float32, (0.0, 1.0)),
        )

    :param stages: the ordered stages (at least one).
    :param exits: the exits, ordered by ``after_stage``; the last one must follow the last stage.
    :param input_spec: what stage 0 accepts.
    """

    def __init__(
        self, stages: Sequence[nn.Module], exits: Sequence[ExitSpec], input_spec: InputSpec
    ) -> None:
        super().__init__()
        validate_layout(len(stages), [spec.after_stage for spec in exits])
        # Stages and heads are registered as submodules in ``backbone`` and ``heads`` (so they
        # appear in ``state_dict``); ``stages`` and ``exits`` refer to the same module objects.
        self.backbone = nn.ModuleList(stages)
        self.heads = nn.ModuleList(spec.head for spec in exits)
        self._stages: tuple[nn.Module, ...] = tuple(stages)
        self._exits: tuple[ExitSpec, ...] = tuple(exits)
        self._input_spec = input_spec

    @property
    def stages(self) -> tuple[nn.Module, ...]:
        """The ordered stages."""
        return self._stages

    @property
    def exits(self) -> tuple[ExitSpec, ...]:
        """The exits, ordered by ``after_stage``."""
        return self._exits

    @property
    def input_spec(self) -> InputSpec:
        """What stage 0 accepts."""
        return self._input_spec

    @property
    def n_stages(self) -> int:
        """Number of stages (split points are ``0..n_stages``)."""
        return len(self.stages)

    @property
    def n_exits(self) -> int:
        """Number of exits (the last one is the full model)."""
        return len(self.exits)

    def run_stages(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Run stages ``[start, stop)``.

        :param x: the input (``start == 0``) or the output of stage ``start - 1``.
        :param start: first stage to run, ``0..n_stages``.
        :param stop: one past the last stage to run, ``start..n_stages``.
        :return: the output of stage ``stop - 1`` (``x`` itself when ``start == stop``).
        """
        if not 0 <= start <= stop <= self.n_stages:
            raise ValueError(
                f"need 0 <= start <= stop <= {self.n_stages}, got start={start}, stop={stop}"
            )
        for stage in self.stages[start:stop]:
            x = stage(x)
        return x

    def run_exit(self, features: torch.Tensor, exit_index: int) -> torch.Tensor:
        """Apply an exit head.

        :param features: output of stage ``exits[exit_index].after_stage - 1``.
        :param exit_index: ``0..n_exits - 1``; negative values count from the end.
        :return: logits ``[batch, classes]``.
        """
        return self.exits[self._exit_position(exit_index)].head(features)

    def forward(self, x: torch.Tensor, exit_index: int = -1) -> torch.Tensor:
        """Logits of one exit for an input batch (default: the final exit)."""
        spec = self.exits[self._exit_position(exit_index)]
        return spec.head(self.run_stages(x, 0, spec.after_stage))

    def forward_all_exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit, sharing the stage computations (used for joint training)."""
        logits = []
        done = 0
        for spec in self.exits:
            x = self.run_stages(x, done, spec.after_stage)
            done = spec.after_stage
            logits.append(spec.head(x))
        return logits

    def _exit_position(self, exit_index: int) -> int:
        if not -self.n_exits <= exit_index < self.n_exits:
            raise ValueError(f"exit_index must be in 0..{self.n_exits - 1}, got {exit_index}")
        return exit_index % self.n_exits


def validate_layout(n_stages: int, exit_after: Sequence[int]) -> None:
    """Check a stage/exit layout.

    :param n_stages: number of stages.
    :param exit_after: ``after_stage`` of every exit, in order.
    :raises ValueError: unless there is a stage, an exit, exits are strictly increasing in
        ``1..n_stages`` and the last exit follows the last stage.
    """
    if n_stages < 1:
        raise ValueError("a staged model needs at least one stage")
    if not exit_after:
        raise ValueError("a staged model needs at least one exit")
    if any(not 1 <= k <= n_stages for k in exit_after):
        raise ValueError(f"exit after_stage values must lie in 1..{n_stages}, got {exit_after}")
    if any(b <= a for a, b in itertools.pairwise(exit_after)):
        raise ValueError(f"exits must be ordered by strictly increasing after_stage: {exit_after}")
    if exit_after[-1] != n_stages:
        raise ValueError(
            f"the last exit must follow the last stage ({n_stages}), got {exit_after[-1]}"
        )
