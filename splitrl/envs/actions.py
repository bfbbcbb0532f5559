"""The action table: every (exit, split, bit option) triple, its canonical form and its flat index.

An action is ``(e, s, b)``: stop at exit ``e``, cut before stage ``s`` (the device runs stages
``[0, s)``), code the sent tensor with bit option ``b``. When ``s >= k_e`` the request never leaves the
device, so neither ``s`` beyond ``k_e`` nor ``b`` changes anything: such actions all mean the same
*device-only* decision, whose canonical form is ``(e, k_e, 0)``. The env accepts any action and executes
its canonical form; ``mask`` marks the canonical ones (the sb3-contrib ``action_masks()`` convention),
so a learner with masking never wastes probability on duplicates.

Flat indices follow ``numpy.ravel_multi_index`` in C order over ``(n_exits, n_splits, n_bits)``: the
exit is the most significant digit. :func:`flat_indices` and :func:`action_components` are the one
mapping between the two, for numpy arrays and torch tensors alike (the SACD policy, its ONNX graph,
the flat action view and the training metrics all use them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from splitrl.profiles.schema import Profile

if TYPE_CHECKING:
    import torch

#: numpy arrays or torch tensors: the mapping is written once for both
ArrayT = TypeVar("ArrayT", np.ndarray, "torch.Tensor")


def exits_passed_on_device(exit_stages: Sequence[int], e: int, s: int) -> list[int]:
    """The exits before ``e`` whose stages the action ``(e, s)`` runs on the device, in order.

    Those a confidence gate could stop at without computing another stage, and whose heads it
    computes to decide (:class:`~splitrl.envs.time_model.CostTables` with ``gate_heads``).
    """
    on_device = min(s, exit_stages[e])
    return [g for g in range(e) if exit_stages[g] <= on_device]


def index_strides(nvec: Sequence[int] | np.ndarray) -> np.ndarray:
    """The place value of each action component in the flat index, ``int64 [n_components]``.

    :param nvec: the sizes of the action components
    """
    sizes = [int(n) for n in nvec]
    return np.array([int(np.prod(sizes[k + 1 :])) for k in range(len(sizes))], dtype=np.int64)


def flat_indices(actions: ArrayT, strides: ArrayT) -> ArrayT:
    """The flat indices of actions ``[..., n_components]``, shape ``[...]``.

    :param actions: integer actions, components along the last axis
    :param strides: :func:`index_strides` of the action sizes, as the same array type
    """
    return (actions * strides).sum(-1)


def action_components(indices: ArrayT, strides: ArrayT, nvec: ArrayT) -> ArrayT:
    """The actions of flat indices ``[...]``, shape ``[..., n_components]``.

    :param indices: integer flat indices
    :param strides: :func:`index_strides` of ``nvec``, as the same array type
    :param nvec: the sizes of the action components
    """
    return indices[..., None] // strides % nvec


@dataclass(frozen=True)
class ActionTable:
    """Canonical forms, masks and labels of the actions of one profile.

    :param exit_stages: ``k_e`` for every exit
    :param n_splits: number of split choices (``n_stages + 1``)
    :param bit_options: the bit options, e.g. ``(1, 2, 4, 8, "lossless")``
    """

    exit_stages: tuple[int, ...]
    n_splits: int
    bit_options: tuple[int | str, ...]

    @classmethod
    def from_profile(cls, profile: Profile) -> ActionTable:
        """The action table of ``profile``."""
        return cls(profile.exit_stages, profile.n_splits, profile.bit_options)

    @property
    def nvec(self) -> tuple[int, int, int]:
        """Sizes of the three action components, for ``MultiDiscrete``."""
        return (len(self.exit_stages), self.n_splits, len(self.bit_options))

    @property
    def n_actions(self) -> int:
        """Number of flat actions (canonical or not)."""
        n_exits, n_splits, n_bits = self.nvec
        return n_exits * n_splits * n_bits

    def validate(self, action: object) -> tuple[int, int, int]:
        """Convert ``action`` to an ``(e, s, b)`` tuple of ints, or raise ``ValueError`` naming the problem."""
        if isinstance(action, np.ndarray) and action.shape == (3,) and action.dtype.kind in "iu":
            e, s, b = action.tolist()  # the common case, kept cheap: it runs on every step
        else:
            e, s, b = self._coerce(action)
        n_exits, n_splits, n_bits = self.nvec
        if 0 <= e < n_exits and 0 <= s < n_splits and 0 <= b < n_bits:
            return e, s, b
        for name, value, size in zip(("exit", "split", "bits"), (e, s, b), self.nvec, strict=True):
            if not 0 <= value < size:
                raise ValueError(
                    f"action {action!r}: {name} index {value} is outside [0, {size - 1}]"
                )
        raise AssertionError("unreachable")

    @staticmethod
    def _coerce(action: object) -> tuple[int, int, int]:
        try:
            values = np.asarray(action).reshape(-1)
        except (TypeError, ValueError) as error:
            raise ValueError(f"action {action!r} is not an array of three integers") from error
        if values.shape != (3,) or values.dtype.kind not in "iuf":
            raise ValueError(
                f"action {action!r} must be three integers (exit, split, bits), "
                f"got shape {values.shape} and dtype {values.dtype}"
            )
        if values.dtype.kind == "f" and not (
            np.all(np.isfinite(values)) and np.all(values == np.round(values))
        ):
            raise ValueError(f"action {action!r} must hold integers (exit, split, bits)")
        e, s, b = (int(v) for v in values)
        return e, s, b

    def canonical(self, e: int, s: int, b: int) -> tuple[int, int, int]:
        """The canonical form of a valid action ``(e, s, b)``."""
        k_e = self.exit_stages[e]
        if s >= k_e:
            return e, k_e, 0
        return e, s, b

    def is_device_only(self, e: int, s: int) -> bool:
        """Whether the action runs entirely on the device."""
        return s >= self.exit_stages[e]

    @cached_property
    def strides(self) -> np.ndarray:
        """:func:`index_strides` of the table, for :func:`flat_indices` and :func:`action_components`."""
        strides = index_strides(self.nvec)
        strides.flags.writeable = False
        return strides

    def flat_index(self, e: int, s: int, b: int) -> int:
        """Flat index of ``(e, s, b)``."""
        return int(flat_indices(np.array((e, s, b), dtype=np.int64), self.strides))

    def mask(self) -> np.ndarray:
        """Boolean mask over flat actions, True for canonical actions, shape ``[n_actions]``."""
        return self.mask_3d().reshape(-1)

    def mask_3d(self) -> np.ndarray:
        """Boolean mask of canonical actions, shape ``[n_exits, n_splits, n_bits]``."""
        mask = np.zeros(self.nvec, dtype=bool)
        for e, k_e in enumerate(self.exit_stages):
            mask[e, :k_e, :] = True
            mask[e, k_e, 0] = True
        return mask

    def canonical_actions(self) -> list[tuple[int, int, int]]:
        """All canonical actions, in flat-index order."""
        return [tuple(int(v) for v in idx) for idx in np.argwhere(self.mask_3d())]  # type: ignore[misc]

    def label(self, e: int, s: int, b: int) -> str:
        """A short human-readable label, e.g. ``exit2/split1/4b`` or ``exit0/device``."""
        e, s, b = self.canonical(e, s, b)
        if self.is_device_only(e, s):
            return f"exit{e}/device"
        option = self.bit_options[b]
        bits = f"{option}b" if isinstance(option, int) else str(option)
        return f"exit{e}/split{s}/{bits}"
