"""Environment speed beside CartPole-v1, the all-actions helpers, and the oracle's spread per scenario.

Run with ``python -m benchmarks.bench_env`` (or ``make bench``); results go to
``results/bench_env.json``. Speeds are reported as ratios against CartPole-v1 measured in the same
process, so that the goal (at least 50% of CartPole's rate) does not depend on the machine.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from benchmarks.common import print_table, write_results
from splitrl.envs import ENV_ID, SCENARIOS, SplitComputingEnv
from splitrl.envs.diagnostics import oracle_statistics


def steps_per_second(env: gym.Env[Any, Any], actions: list[Any], seconds: float) -> float:
    """Steps per second of ``env`` cycling through pre-drawn ``actions`` for about ``seconds``."""
    env.reset(seed=0)
    steps, index = 0, 0
    n_actions = len(actions)
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(1000):
            _, _, terminated, truncated, _ = env.step(actions[index])
            index = (index + 1) % n_actions
            if terminated or truncated:
                env.reset()
        steps += 1000
        if time.perf_counter() >= deadline:
            break
    return steps / (time.perf_counter() - start)


def _cartpole_actions(n: int) -> list[int]:
    return [int(a) for a in np.random.default_rng(0).integers(0, 2, n)]


def _split_actions(env: SplitComputingEnv, n: int) -> list[np.ndarray]:
    canonical = np.array(env.actions.canonical_actions())
    picks = np.random.default_rng(0).integers(0, len(canonical), n)
    return [canonical[i] for i in picks]


def time_per_call(function: Callable[[], object], repeats: int) -> float:
    """Median seconds per call over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per env")
    parser.add_argument("--episodes", type=int, default=10, help="oracle episodes per scenario")
    args = parser.parse_args(argv)

    raw = SplitComputingEnv()
    speed_rows = []
    cartpole_raw = steps_per_second(
        gym.make("CartPole-v1").unwrapped, _cartpole_actions(4096), args.seconds
    )
    cartpole_made = steps_per_second(gym.make("CartPole-v1"), _cartpole_actions(4096), args.seconds)
    ours_raw = steps_per_second(raw, _split_actions(raw, 4096), args.seconds)
    ours_made = steps_per_second(gym.make(ENV_ID), _split_actions(raw, 4096), args.seconds)
    speed_rows.append(
        {
            "how": "raw",
            "cartpole": cartpole_raw,
            "splitrl": ours_raw,
            "ratio": ours_raw / cartpole_raw,
        }
    )
    speed_rows.append(
        {
            "how": "gym.make",
            "cartpole": cartpole_made,
            "splitrl": ours_made,
            "ratio": ours_made / cartpole_made,
        }
    )
    print("Steps per second (goal: splitrl >= 50% of CartPole-v1)")
    print_table(
        speed_rows,
        [
            ("how", "env", "s"),
            ("cartpole", "CartPole-v1", ",.0f"),
            ("splitrl", "SplitComputing-v1", ",.0f"),
            ("ratio", "ratio", ".2f"),
        ],
    )

    raw.reset(seed=0)
    n_actions = len(raw.actions.canonical_actions())
    helpers = {
        "evaluate_actions_us": 1e6 * time_per_call(raw.evaluate_actions, 300),
        "predict_actions_us": 1e6 * time_per_call(raw.predict_actions, 300),
        "step_us": 1e6 / ours_raw,
        "canonical_actions": n_actions,
    }
    print(
        f"\nAll-actions helpers over {n_actions} canonical actions: evaluate_actions "
        f"{helpers['evaluate_actions_us']:.0f} us, predict_actions {helpers['predict_actions_us']:.0f} us "
        f"(one step {helpers['step_us']:.1f} us)"
    )

    scenario_rows = []
    for name in SCENARIOS:
        stats = oracle_statistics(SplitComputingEnv(name), episodes=args.episodes, seed=1000)
        top_pairs = ", ".join(
            f"{e}/{s}: {share:.0%}" for (e, s), share in list(stats.pair_shares.items())[:5]
        )
        scenario_rows.append(
            {
                "scenario": name,
                "requests": stats.requests,
                "top_action_share": stats.top_action_share,
                "pairs_over_5pct": stats.pairs_above(0.05),
                "nontrivial": "yes" if stats.is_nontrivial() else "no",
                "oracle_mean_reward": stats.mean_reward,
                "top_pairs": top_pairs,
            }
        )
    print(
        "\nOracle spread per scenario (non-trivial: top action < 60% and >= 3 (exit, split) pairs >= 5%)"
    )
    print_table(
        scenario_rows,
        [
            ("scenario", "scenario", "s"),
            ("top_action_share", "top action", ".0%"),
            ("pairs_over_5pct", "pairs>=5%", "d"),
            ("nontrivial", "non-trivial", "s"),
            ("oracle_mean_reward", "oracle reward", ".3f"),
            ("top_pairs", "exit/split shares", "s"),
        ],
    )
    path = write_results(
        "env", {"speed": speed_rows, "helpers": helpers, "scenarios": scenario_rows}
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
