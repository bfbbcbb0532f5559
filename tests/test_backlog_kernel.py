"""The compiled value iteration of the backlog lookahead against its numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from splitrl.agents.baselines import backlog, make_baseline
from splitrl.agents.rollout import run_episodes
from splitrl.envs import SplitComputingEnv

compiled = backlog._compiled
needs_kernel = pytest.mark.skipif(
    compiled is None, reason="the compiled backlog kernel is not built (no C compiler at install)"
)


def _random_problem(
    rng: np.random.Generator, points: int, actions: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    now = rng.normal(0.5, 0.6, size=(points, actions))
    below = rng.integers(0, points - 1, size=(points, actions))
    weight = rng.uniform(0.0, 1.0, size=(points, actions))
    return now, below, weight


@needs_kernel
@pytest.mark.parametrize("seed", range(20))
def test_kernel_returns_the_numpy_values_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    points, actions = int(rng.integers(2, 90)), int(rng.integers(1, 30))
    now, below, weight = _random_problem(rng, points, actions)
    horizon = int(rng.integers(1, 80))
    expected = backlog.relative_values_numpy(now, below, weight, horizon)
    assert np.array_equal(backlog.relative_values(now, below, weight, horizon), expected)


@needs_kernel
def test_robust_mpc_acts_the_same_with_either_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    def episode() -> np.ndarray:
        env = SplitComputingEnv("default", channel="gilbert-elliott", horizon=300)
        rollout = run_episodes(make_baseline("robust-mpc"), env, [11])
        return np.stack([rollout.exit, rollout.split, rollout.bits, rollout.reward])

    with_kernel = episode()
    monkeypatch.setattr(backlog, "_compiled", None)
    np.testing.assert_array_equal(episode(), with_kernel)


@needs_kernel
def test_kernel_rejects_inconsistent_buffers() -> None:
    now, below, weight = _random_problem(np.random.default_rng(0), 5, 3)
    value = np.zeros(5)
    with pytest.raises(ValueError, match="weight holds 112 bytes, expected 120"):
        compiled.relative_values(now, below, weight.ravel()[:-1], 5, 3, 4, 1e-6, value)
    below[2, 1] = 4
    with pytest.raises(ValueError, match=r"below\[7\] = 4 is outside 0..3"):
        compiled.relative_values(now, below, weight, 5, 3, 4, 1e-6, value)
    with pytest.raises(ValueError, match="at least 2 points"):
        compiled.relative_values(now, below, weight, 1, 3, 4, 1e-6, value)
