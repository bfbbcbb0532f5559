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
@pytest.mark.parametrize("seed", range(20))
def test_dominance_kernel_keeps_the_numpy_mask(seed: int) -> None:
    """Ties (few distinct values), duplicated actions and NaN included."""
    rng = np.random.default_rng(seed)
    count, actions = int(rng.integers(1, 6)), int(rng.integers(0, 90))
    criteria = rng.integers(0, 4, size=(count, actions)).astype(float)
    if actions > 3:
        criteria[:, 1] = criteria[:, 0]
        criteria[rng.integers(count), 2] = np.nan
    expected = backlog.undominated_numpy(criteria)
    keep = np.zeros(actions, dtype=bool)
    compiled.undominated(criteria, count, actions, keep)
    np.testing.assert_array_equal(keep, expected)
    if actions > 3:
        assert not expected[1]  # the later of two equal actions goes
    assert actions == 0 or expected.any()


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
    keep = np.zeros(3, dtype=bool)
    with pytest.raises(ValueError, match="criteria holds 40 bytes, expected 48"):
        compiled.undominated(np.zeros(5), 2, 3, keep)
    with pytest.raises(ValueError, match="keep holds 3 bytes, expected 4"):
        compiled.undominated(np.zeros(8), 2, 4, keep)
    with pytest.raises(ValueError, match="at least 1 criterion"):
        compiled.undominated(np.zeros(0), 0, 3, keep)
