"""How a learner sees the env's ``MultiDiscrete([exits, splits, bits])`` action, and back.

Learners that cannot act on the env's action directly see one of these views:

* ``"multi-discrete"``: the env's own action (SACD, PPO);
* ``"flat"``: ``Discrete(n_actions)`` over the flat indices of :mod:`splitrl.envs.actions`
  (MaskablePPO, DQN), with the env's mask over the same indices;
* ``"box"``: ``Box([-1, 1]^3)``, binned per component (SAC).

A view has an env wrapper, used in training, and an adapter, which maps a trained model's raw action
to ``(exit, split, bits)`` when the policy acts in the env itself (:func:`action_wrapper`,
:func:`action_adapter`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from splitrl.envs.actions import action_components, index_strides

ActionView = Literal["multi-discrete", "flat", "box"]


class FlatAction:
    """Maps a flat action index to ``(exit, split, bits)`` (:func:`~splitrl.envs.actions.action_components`).

    :param nvec: the sizes of the action components
    """

    def __init__(self, nvec: Sequence[int]) -> None:
        self.nvec = np.array(nvec, dtype=np.int64)
        self.strides = index_strides(self.nvec)

    def __call__(self, action: Any) -> np.ndarray:
        """The ``(e, s, b)`` triple of a flat index (a scalar or a one-element array)."""
        index = np.asarray(action, dtype=np.int64).reshape(())
        return action_components(index, self.strides, self.nvec)


class BinnedAction:
    """Maps a point of ``[-1, 1]^3`` to ``(exit, split, bits)`` by equal-width bins per component.

    Component ``i`` with ``n_i`` choices takes choice ``floor((a_i + 1) / 2 * n_i)``, clipped to
    ``[0, n_i - 1]``: ``[-1, 1]`` is cut into ``n_i`` bins of equal width, in index order.

    :param nvec: the sizes of the action components
    """

    def __init__(self, nvec: Sequence[int]) -> None:
        self.nvec = np.array(nvec, dtype=np.int64)

    def __call__(self, action: Any) -> np.ndarray:
        """The ``(e, s, b)`` triple of a continuous action."""
        point = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        bins = np.floor((point + 1.0) / 2.0 * self.nvec).astype(np.int64)
        return np.minimum(bins, self.nvec - 1)


class FlatActionWrapper(gym.ActionWrapper[np.ndarray, np.int64, np.ndarray]):
    """Presents the env's ``MultiDiscrete`` action as ``Discrete(n_actions)`` (flat index).

    ``action_masks()`` is the env's mask over the same flat indices.
    """

    def __init__(self, env: gym.Env[np.ndarray, np.ndarray]) -> None:
        super().__init__(env)
        nvec = _multi_discrete_nvec(env.action_space)
        self.to_triple = FlatAction(nvec)
        self.action_space = spaces.Discrete(int(np.prod(nvec)))

    def action(self, action: np.int64) -> np.ndarray:
        """The ``(e, s, b)`` triple of a flat index."""
        return self.to_triple(action)

    def action_masks(self) -> np.ndarray:
        """Canonical actions over the flat indices."""
        masks: np.ndarray = self.env.get_wrapper_attr("action_masks")()
        return masks


class BoxActionWrapper(gym.ActionWrapper[np.ndarray, np.ndarray, np.ndarray]):
    """Presents the env's ``MultiDiscrete`` action as ``Box([-1, 1]^3)``, binned per component.

    A continuous relaxation for continuous-action learners; see :class:`BinnedAction`.
    """

    def __init__(self, env: gym.Env[np.ndarray, np.ndarray]) -> None:
        super().__init__(env)
        nvec = _multi_discrete_nvec(env.action_space)
        self.to_triple = BinnedAction(nvec)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(len(nvec),), dtype=np.float32)

    def action(self, action: np.ndarray) -> np.ndarray:
        """The ``(e, s, b)`` triple of a continuous action."""
        return self.to_triple(action)


def _multi_discrete_nvec(space: gym.Space[Any]) -> tuple[int, ...]:
    if not isinstance(space, spaces.MultiDiscrete):
        raise ValueError(f"expected a MultiDiscrete action space, got {space}")
    return tuple(int(n) for n in space.nvec)


_WRAPPERS: dict[ActionView, type[gym.ActionWrapper[Any, Any, Any]] | None] = {
    "multi-discrete": None,
    "flat": FlatActionWrapper,
    "box": BoxActionWrapper,
}
_ADAPTERS: dict[ActionView, Callable[[Sequence[int]], Callable[[Any], np.ndarray]] | None] = {
    "multi-discrete": None,
    "flat": FlatAction,
    "box": BinnedAction,
}


def action_wrapper(view: ActionView) -> type[gym.ActionWrapper[Any, Any, Any]] | None:
    """The env wrapper that presents the action as ``view``; ``None`` for the env's own action."""
    return _WRAPPERS[view]


def action_adapter(view: ActionView, nvec: Sequence[int]) -> Callable[[Any], np.ndarray] | None:
    """Maps a raw action of ``view`` to ``(exit, split, bits)``; ``None`` for the env's own action.

    :param nvec: the env's action component sizes ``(n_exits, n_splits, n_bits)``
    """
    adapter = _ADAPTERS[view]
    return None if adapter is None else adapter(nvec)
