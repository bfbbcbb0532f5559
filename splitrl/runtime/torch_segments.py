"""A torch :class:`~splitrl.models.protocol.StagedModel` behind the numpy segment interface.

The server may run the tail with torch instead of exported ONNX segments; this adapter gives it the
same :class:`~splitrl.runtime.segments.SegmentRunner` interface.
"""

from __future__ import annotations

import numpy as np
import torch

from splitrl.models.protocol import StagedModel


class TorchSegments:
    """Run stages and exit heads of a torch staged model on numpy batches.

    :param model: the staged model (put in eval mode here).
    """

    def __init__(self, model: StagedModel) -> None:
        self.model = model
        for module in (*model.stages, *(spec.head for spec in model.exits)):
            module.eval()
        self._exit_stages = tuple(spec.after_stage for spec in model.exits)
        spec = model.input_spec
        shapes = [tuple(spec.shape)]
        with torch.no_grad():
            x = torch.zeros((1, *spec.shape), dtype=torch.float32)
            for index in range(len(model.stages)):
                x = model.run_stages(x, index, index + 1)
                shapes.append(tuple(x.shape[1:]))
        self._split_shapes = tuple(shapes)

    @property
    def n_stages(self) -> int:
        """Number of stages."""
        return len(self.model.stages)

    @property
    def exit_stages(self) -> tuple[int, ...]:
        """``k_e`` of every exit."""
        return self._exit_stages

    @property
    def split_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Per-sample shape of the tensor at every split."""
        return self._split_shapes

    @torch.no_grad()
    def run_stages(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Run stages ``[start, stop)`` on a batch (cast to float32)."""
        tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return self.model.run_stages(tensor, start, stop).numpy()

    @torch.no_grad()
    def run_exit(self, features: np.ndarray, exit_index: int) -> np.ndarray:
        """Logits of exit ``exit_index`` from the output of its stage."""
        tensor = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        return self.model.run_exit(tensor, exit_index).numpy()
