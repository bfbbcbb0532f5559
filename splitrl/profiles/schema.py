"""The profile: measured facts about one early-exit model on one dataset, replayed exactly by the env.

A profile answers, for every test sample ``i``, split ``s`` and bit option ``b``: how many bytes the coded
tensor takes on the wire, and for every exit ``e``: whether the prediction is correct and how confident
it is when the tensor at ``s`` was coded with ``b``. It also holds per-stage and per-exit FLOPs,
parameters, shapes and host latencies, and the host's codec times. It is device independent: device
presets turn FLOPs into time and energy.

Indices and conventions (see ``docs/profiles.md``):

* ``s`` in ``0..n_stages``: the device runs stages ``[0, s)``; ``s = 0`` sends the input.
* exit ``e`` sits after stage ``k_e = exits[e].after_stage``; the last exit sits after the last stage.
* a pair ``(e, s)`` with ``s >= k_e`` is *device-only*: nothing is sent, the outcome is the unquantized
  one and is stored identically for every ``b``; ``payload_bytes[:, n_stages, :]`` is 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROFILE_FORMAT = "splitrl-profile"
PROFILE_VERSION = 1

#: the bit options a profile may use: quantizer bit-widths and the lossless option
LOSSLESS = "lossless"
VALID_BIT_OPTIONS: tuple[int | str, ...] = (1, 2, 3, 4, 5, 6, 7, 8, LOSSLESS)


class ProfileError(ValueError):
    """A profile file is missing, malformed, inconsistent or not a splitrl profile."""


@dataclass(frozen=True)
class HostLatency:
    """Latency of one block measured on the profiling host at batch size 1, in milliseconds.

    :param median_ms_1_thread: median over repeats with ``torch.set_num_threads(1)``
    :param p90_ms_1_thread: 90th percentile with one thread
    :param median_ms_all_threads: median with all threads of the host
    :param p90_ms_all_threads: 90th percentile with all threads
    :param n_threads: how many threads "all threads" was
    """

    median_ms_1_thread: float
    p90_ms_1_thread: float
    median_ms_all_threads: float
    p90_ms_all_threads: float
    n_threads: int


@dataclass(frozen=True)
class BlockInfo:
    """A stage of the backbone or an exit head.

    :param name: human readable name (``stage1``, ``exit0``)
    :param output_shape: shape of one sample's output, without the batch dimension
    :param flops: floating point operations for one sample (a multiply-add counts 2)
    :param params: number of parameters
    :param n_layers: number of compute layers (convolutions, linear layers), for per-layer overheads
    :param host: latency measured on the profiling host
    """

    name: str
    output_shape: tuple[int, ...]
    flops: int
    params: int
    n_layers: int
    host: HostLatency


@dataclass(frozen=True)
class ExitInfo(BlockInfo):
    """An exit head and where it is attached.

    :param after_stage: ``k_e``, the number of backbone stages that run before this head
    """

    after_stage: int = 0


@dataclass(frozen=True, eq=False)
class Profile:
    """A loaded, validated profile. Build one with ``splitrl profile build``; load with ``load_profile``.

    :param name: profile name
    :param stages: the backbone stages, in order
    :param exits: the exit heads, ordered by ``after_stage``; the last one is the full model
    :param bit_options: the bit options of the action space, e.g. ``(1, 2, 3, 4, 6, 8, "lossless")``
    :param input_shape: shape of one input sample (the tensor sent at ``s = 0``)
    :param input_dtype: dtype of the input as sent (``uint8`` for camera images)
    :param codec: codec settings used for every payload (``per_channel``, ``clip``, ``entropy``)
    :param encode_ms: host codec encode time per ``(s, b)``, median over samples, ``[S+1, B]``
    :param decode_ms: host codec decode time per ``(s, b)``, ``[S+1, B]``
    :param labels: true class per sample, ``[N]``
    :param payload_bytes: coded frame size per ``(i, s, b)``, ``[N, S+1, B]``
    :param correct: correctness per ``(i, s, b, e)``, ``[N, S+1, B, E]``
    :param confidence: max-softmax confidence per ``(i, s, b, e)``, ``[N, S+1, B, E]``
    :param input_png_bytes: PNG size of every input, for comparison with the coded payloads, ``[N]``
    :param metadata: provenance: model, weights hash, dataset, host, versions, build settings
    """

    name: str
    stages: tuple[BlockInfo, ...]
    exits: tuple[ExitInfo, ...]
    bit_options: tuple[int | str, ...]
    input_shape: tuple[int, ...]
    input_dtype: str
    codec: dict[str, Any]
    encode_ms: np.ndarray
    decode_ms: np.ndarray
    labels: np.ndarray
    payload_bytes: np.ndarray
    correct: np.ndarray
    confidence: np.ndarray
    input_png_bytes: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        """Number of test samples ``N``."""
        return int(self.labels.shape[0])

    @property
    def n_stages(self) -> int:
        """Number of backbone stages; splits run from 0 to ``n_stages``."""
        return len(self.stages)

    @property
    def n_splits(self) -> int:
        """Number of split choices, ``n_stages + 1``."""
        return len(self.stages) + 1

    @property
    def n_exits(self) -> int:
        """Number of exits ``E``."""
        return len(self.exits)

    @property
    def n_bit_options(self) -> int:
        """Number of bit options ``B``."""
        return len(self.bit_options)

    @property
    def exit_stages(self) -> tuple[int, ...]:
        """``k_e`` for every exit."""
        return tuple(exit_.after_stage for exit_ in self.exits)

    def is_device_only(self, exit_index: int, split: int) -> bool:
        """Whether exit ``exit_index`` with split ``split`` runs entirely on the device."""
        return split >= self.exits[exit_index].after_stage

    def split_shape(self, split: int) -> tuple[int, ...]:
        """Shape of the tensor sent at ``split`` (the input for 0)."""
        return self.input_shape if split == 0 else self.stages[split - 1].output_shape

    def accuracy(self) -> np.ndarray:
        """Accuracy per ``(s, b, e)``, averaged over samples, ``[S+1, B, E]``."""
        return self.correct.mean(axis=0)

    def clean_accuracy(self) -> np.ndarray:
        """Accuracy of every exit without quantization (device-only outcome), ``[E]``."""
        return self.correct[:, self.n_stages, 0, :].mean(axis=0)

    def mean_payload_bytes(self) -> np.ndarray:
        """Mean coded payload per ``(s, b)``, ``[S+1, B]``."""
        return self.payload_bytes.mean(axis=0)
