"""How often each evaluation condition leaves the observation range of a training channel.

A policy trained on one channel has seen its observations only within that channel's range; on a
condition whose observations fall outside it, the policy extrapolates. robust-mpc plays the
training channel's episodes (seeds ``0 ..``) to give the range (per feature minimum and maximum),
then each condition's evaluation episodes (seeds from 1 000 000); the result is the share of
requests with at least one feature outside the range, and per feature.

    python -m benchmarks.bench_observation_range                       # Markov and randomized
    python -m benchmarks.bench_observation_range --train markov --train-episodes 5

The traces come from ``../shared/traces`` (skipped with a message when absent). Writes
``results/bench_observation_range.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_traces import TRACES_DIR
from benchmarks.common import write_results

SYNTHETIC = ("markov", "gilbert-elliott", "fading")


def observations(channel: str, seeds: range, scenario: str = "default") -> np.ndarray:
    """robust-mpc's observations over the episodes of ``seeds``, ``(requests, features)``."""
    from splitrl.agents.baselines import make_baseline
    from splitrl.envs import SplitComputingEnv

    env = SplitComputingEnv(scenario, channel=channel)
    policy = make_baseline("robust-mpc")
    seen = []
    for seed in seeds:
        observation, _ = env.reset(seed=seed)
        policy.reset(env)
        done = False
        while not done:
            seen.append(observation)
            observation, _, terminated, truncated, _ = env.step(policy.act(env, observation))
            done = terminated or truncated
    return np.asarray(seen)


def outside_share(seen: np.ndarray, low: np.ndarray, high: np.ndarray) -> dict[str, Any]:
    """Share of requests with any feature outside ``[low, high]``, and per feature."""
    outside = (seen < low) | (seen > high)
    return {"any": float(outside.any(axis=1).mean()), "per_feature": outside.mean(axis=0).tolist()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="append", help="training channel (repeatable)")
    parser.add_argument("--train-episodes", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=2, help="episodes per condition")
    args = parser.parse_args(argv)
    conditions = list(SYNTHETIC)
    if TRACES_DIR.is_dir():
        conditions += [
            f"trace:{path}"
            for path in sorted(TRACES_DIR.iterdir())
            if path.is_file() and path.suffix != ".md"
        ]
    else:
        print(f"no traces in {TRACES_DIR}: synthetic channels only", file=sys.stderr)
    evaluation = range(1_000_000, 1_000_000 + args.episodes)
    seen = {condition: observations(condition, evaluation) for condition in conditions}
    results: dict[str, Any] = {}
    for train in args.train or ["markov", "randomized"]:
        reference = observations(train, range(args.train_episodes))
        low, high = reference.min(axis=0), reference.max(axis=0)
        results[train] = {
            "low": low.tolist(),
            "high": high.tolist(),
            "conditions": {Path(c).name: outside_share(seen[c], low, high) for c in conditions},
        }
        print(f"training channel {train} ({args.train_episodes} episodes):")
        for condition, share in results[train]["conditions"].items():
            print(f"  {condition:32s} outside on {share['any']:6.1%} of requests")
    path = write_results("observation_range", {"episodes": args.episodes, "ranges": results})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
