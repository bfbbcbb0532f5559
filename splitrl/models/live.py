"""Live split inference: run a staged model with the real codec on the split tensor.

One request (:meth:`LiveInference.infer`): the device runs stages ``[0, s)``, the tensor at split
``s`` is encoded with the codec at ``bits``, decoded, and the server runs stages ``[s, k_e)`` and
the head of exit ``e``. When ``s >= k_e`` the request is device-only: nothing is quantized or sent
and the payload is 0 bytes.

The batched building blocks (:meth:`~LiveInference.stage_outputs`, :meth:`~LiveInference.transmit`,
:meth:`~LiveInference.exit_logits_from`) do the same for a batch, and :meth:`infer` is built from
them. The codec always sees one sample's tensor at a time (its quantizer takes the minimum and
maximum per tensor), so a batched outcome equals the per-request one::

    live = LiveInference(load_default_model())
    outputs = live.stage_outputs(frames)                   # [input, stage 1 out, ...]
    restored, payload = live.transmit(outputs[s], s, bits=4)
    logits = live.exit_logits_from(s, restored, exit_index=e)   # needs s < k_e
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import torch

from splitrl.models.protocol import StagedModel

Bits = int | str
"""Bit-width of the linear quantizer (1..8) or a lossless option such as ``"lossless"``."""


class TensorCodec(Protocol):
    """What :class:`LiveInference` needs from a codec (``splitrl.codecs`` satisfies it)."""

    def encode(self, x: np.ndarray, bits: Bits = ..., **options: Any) -> bytes:
        """Encode one tensor into a self-describing frame."""
        ...

    def decode(self, frame: bytes) -> np.ndarray:
        """Restore a tensor (shape and dtype) from a frame."""
        ...


def _default_codec() -> TensorCodec:
    codec = importlib.import_module("splitrl.codecs")
    if not (hasattr(codec, "encode") and hasattr(codec, "decode")):
        raise ImportError("splitrl.codecs provides no encode/decode; pass a codec explicitly")
    return cast(TensorCodec, codec)


@dataclass(frozen=True)
class LiveOutcome:
    """Result of one live request.

    :param predicted: predicted class.
    :param confidence: max-softmax probability of the chosen exit.
    :param payload_bytes: encoded size sent over the uplink (0 for device-only).
    :param device_only: ``True`` when ``split >= k_e`` (nothing sent, ``bits`` unused).
    :param correct: whether ``predicted`` equals the label, ``None`` when no label was given.
    """

    predicted: int
    confidence: float
    payload_bytes: int
    device_only: bool
    correct: bool | None = None


class LiveInference:
    """Split inference of a staged model with a real codec.

    :param model: the staged model (put in eval mode here).
    :param codec_options: optional function of the split returning extra keyword arguments for
        ``codec.encode`` (e.g. ``lambda s: {"per_channel": s > 0}``).
    :param codec: the codec; default ``splitrl.codecs``.
    """

    def __init__(
        self,
        model: StagedModel,
        codec_options: Callable[[int], Mapping[str, Any]] | None = None,
        codec: TensorCodec | None = None,
    ) -> None:
        self.model = model
        self.codec = codec if codec is not None else _default_codec()
        self.codec_options = codec_options
        for module in (*model.stages, *(spec.head for spec in model.exits)):
            module.eval()

    @property
    def n_stages(self) -> int:
        """Number of stages; splits are ``0..n_stages``."""
        return len(self.model.stages)

    def exit_stage(self, exit_index: int) -> int:
        """``k_e`` of an exit."""
        if not 0 <= exit_index < len(self.model.exits):
            raise ValueError(
                f"exit_index must be in 0..{len(self.model.exits) - 1}, got {exit_index}"
            )
        return self.model.exits[exit_index].after_stage

    def _check_split(self, split: int) -> None:
        if not 0 <= split <= self.n_stages:
            raise ValueError(f"split must be in 0..{self.n_stages}, got {split}")

    @torch.no_grad()
    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every candidate split tensor of a batch.

        :param x: input batch ``[batch, *input_spec.shape]``.
        :return: ``n_stages + 1`` tensors: the input itself (split 0), then each stage output.
        """
        outputs = [x]
        for index in range(self.n_stages):
            outputs.append(self.model.run_stages(outputs[-1], index, index + 1))
        return outputs

    def transmit(
        self, tensor: torch.Tensor, split: int, bits: Bits
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Encode and decode each sample of a split tensor separately, as the uplink would.

        :param tensor: batch of split tensors ``[batch, ...]`` (the input for split 0).
        :param split: the split the tensor belongs to (selects ``codec_options``).
        :param bits: bit-width 1..8 or a lossless option of the codec.
        :return: the decoded batch (same shape and dtype) and ``int64 [batch]`` frame sizes.
        """
        self._check_split(split)
        if len(tensor) == 0:
            raise ValueError("transmit needs a batch of at least one sample")
        options = dict(self.codec_options(split)) if self.codec_options else {}
        restored = []
        sizes = np.empty(len(tensor), dtype=np.int64)
        for row, sample in enumerate(tensor.detach().cpu().numpy()):
            frame = self.codec.encode(sample, bits, **options)
            sizes[row] = len(frame)
            restored.append(torch.from_numpy(np.array(self.codec.decode(frame), order="C")))
        return torch.stack(restored).to(tensor.dtype), sizes

    @torch.no_grad()
    def exit_logits_from(self, split: int, tensor: torch.Tensor, exit_index: int) -> torch.Tensor:
        """Finish the network from a split tensor: stages ``[split, k_e)`` then the exit head.

        :param split: where ``tensor`` was taken, at most ``k_e`` of the exit.
        :param tensor: the (possibly decoded) batch of split tensors.
        :param exit_index: which exit.
        :return: logits ``[batch, classes]``.
        """
        after = self.exit_stage(exit_index)
        self._check_split(split)
        if split > after:
            raise ValueError(f"split {split} lies past exit {exit_index} (after stage {after})")
        return self.model.run_exit(self.model.run_stages(tensor, split, after), exit_index)

    def infer(
        self, x: torch.Tensor, exit_index: int, split: int, bits: Bits, label: int | None = None
    ) -> LiveOutcome:
        """Run one request.

        :param x: one input sample ``input_spec.shape`` (no batch dimension).
        :param exit_index: where the network stops.
        :param split: device runs stages ``[0, split)``; ``split >= k_e`` is device-only.
        :param bits: quantizer bit-width for the uplink tensor (ignored when device-only).
        :param label: true class, to fill :attr:`LiveOutcome.correct`.
        :return: prediction, confidence, payload size and correctness.
        """
        after = self.exit_stage(exit_index)
        self._check_split(split)
        expected = tuple(self.model.input_spec.shape)
        if tuple(x.shape) != expected:
            raise ValueError(f"infer takes one sample of shape {expected}, got {tuple(x.shape)}")
        batch = x.unsqueeze(0)
        device_only = split >= after
        if device_only:
            payload = 0
            with torch.no_grad():
                logits = self.model.run_exit(self.model.run_stages(batch, 0, after), exit_index)
        else:
            with torch.no_grad():
                features = self.model.run_stages(batch, 0, split)
            restored, sizes = self.transmit(features, split, bits)
            payload = int(sizes[0])
            logits = self.exit_logits_from(split, restored, exit_index)
        probabilities = torch.softmax(logits[0].float(), dim=0)
        predicted = int(probabilities.argmax())
        return LiveOutcome(
            predicted=predicted,
            confidence=float(probabilities[predicted]),
            payload_bytes=payload,
            device_only=device_only,
            correct=None if label is None else predicted == int(label),
        )
