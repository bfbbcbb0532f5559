"""What longer episodes cost in training: SACD's learning speed and one evaluation episode's time.

Run with ``python -m benchmarks.bench_episode_length``; results go to
``results/bench_episode_length.json``. In the default scenario, for the former 200-request episodes
and the scenario's own length (20 s = 2400 requests at 120 frames/s), alternating so that both see the same load:
SACD's steps per second over ``--steps`` learning steps, the episodes those steps complete, and the
seconds of one deterministic evaluation episode.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from stable_baselines3.common.monitor import Monitor

from benchmarks.common import print_table, write_results
from splitrl.agents.sacd import SACD
from splitrl.envs import SplitComputingEnv


def measure(horizon: int, steps: int) -> dict[str, Any]:
    """Learn ``steps`` SACD steps on ``horizon``-request episodes, then time one evaluation episode."""
    env = Monitor(SplitComputingEnv(horizon=horizon))
    model = SACD("MlpPolicy", env, seed=0, device="cpu", learning_starts=min(500, steps // 2))
    start = time.perf_counter()
    model.learn(steps)
    learn_s = time.perf_counter() - start
    eval_env = SplitComputingEnv(horizon=horizon)
    observation, _ = eval_env.reset(seed=123)
    start = time.perf_counter()
    truncated = False
    while not truncated:
        action, _ = model.predict(
            observation, deterministic=True, action_masks=eval_env.action_masks()
        )
        observation, _, _, truncated, _ = eval_env.step(action)
    return {
        "horizon": horizon,
        "learn_steps_per_s": steps / learn_s,
        "episodes_per_10k_steps": 10_000 / horizon,
        "episodes_completed": len(env.get_episode_rewards()),
        "eval_episode_s": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3000, help="SACD learning steps per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per episode length")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    scenario_horizon = SplitComputingEnv().horizon
    rows = [
        {"repeat": repeat, **measure(horizon, args.steps)}
        for repeat in range(args.repeats)
        for horizon in (200, scenario_horizon)
    ]
    print_table(
        rows,
        [
            ("repeat", "run", "d"),
            ("horizon", "requests/episode", "d"),
            ("learn_steps_per_s", "SACD steps/s", ".1f"),
            ("episodes_per_10k_steps", "episodes/10k steps", ".1f"),
            ("eval_episode_s", "eval episode s", ".2f"),
        ],
    )
    write_results("episode_length", {"steps": args.steps, "rows": rows})


if __name__ == "__main__":
    main()
