"""Environment speed beside CartPole-v1, the all-actions helpers, and what adapting is worth per
scenario.

Run with ``python -m benchmarks.bench_env`` (or ``make bench``); results go to
``results/bench_env.json``. Speeds are reported as ratios against CartPole-v1 measured in the same
process, so that the goal (at least 50% of CartPole's rate) does not depend on the machine.

Per scenario, the non-triviality measures (:mod:`splitrl.evaluation.references`):
``clairvoyant-lookahead`` minus ``channel-blind`` (goal: at least 0.05 reward per request) and the
best causal baseline other than ``channel-blind`` minus it (goal: paired 95% interval above zero).

``--episode-study N`` also measures, in the default scenario, how the paired 95% interval of the
best causal baseline against ``channel-blind`` shrinks over ``N`` episodes, and how many episodes
bring it to at most 0.005 reward per request (the evaluation's default episode count).
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
from splitrl.evaluation.defaults import DEFAULT_EVAL_SEED, DEFAULT_FIT_EPISODES, DEFAULT_FIT_SEED
from splitrl.evaluation.episodes import EpisodeStudy
from splitrl.evaluation.references import CHANNEL_BLIND, adaptation_value, reference_rollouts

#: the paired 95% half-width the evaluation's default episode count must reach (reward per request)
TARGET_HALF_WIDTH = 0.005


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


def hindsight_rows(seconds: float) -> list[dict[str, Any]]:
    """Microseconds per step of the default scenario with mpc choosing, without hindsight values
    and with them (the backlog priced by the lookahead or by replays), for about ``seconds`` each:
    what training ``sacd-hindsight-mpc`` and its ``-replayed`` variant pays per step beside the
    env itself."""
    from splitrl.agents.baselines import make_baseline
    from splitrl.agents.hindsight import HindsightValuesInfo

    rows: list[dict[str, Any]] = []
    for how, backlog in (("none", None), ("lookahead", "lookahead"), ("replayed", "replayed")):
        env = SplitComputingEnv()
        wrapped = env if backlog is None else HindsightValuesInfo(env, backlog=backlog)
        policy = make_baseline("mpc")
        observation, _ = wrapped.reset(seed=0)
        policy.reset(env)
        steps, acting_s = 0, 0.0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            decided = time.perf_counter()
            action = policy.act(env, observation)
            acting_s += time.perf_counter() - decided
            observation, _, terminated, truncated, _ = wrapped.step(action)
            steps += 1
            if terminated or truncated:
                observation, _ = wrapped.reset()
                policy.reset(env)
        step_us = 1e6 * (time.perf_counter() - start - acting_s) / steps
        rows.append({"how": how, "step_us": step_us, "steps": steps})
    for row in rows:
        row["ratio"] = row["step_us"] / rows[0]["step_us"]
    return rows


def adaptation_row(scenario: str, episodes: int) -> dict[str, Any]:
    """The non-triviality measures of ``scenario`` on ``episodes`` paired evaluation episodes."""
    started = time.perf_counter()
    rollouts, causal = reference_rollouts(
        lambda: SplitComputingEnv(scenario),
        range(DEFAULT_EVAL_SEED, DEFAULT_EVAL_SEED + episodes),
        fit_episodes=DEFAULT_FIT_EPISODES,
        fit_seed=DEFAULT_FIT_SEED,
    )
    value = adaptation_value(rollouts, causal)
    return {
        "scenario": scenario,
        "upper_gain": value.upper_gain.mean,
        "upper_gain_ci95": value.upper_gain.ci95,
        "best_causal": value.best_causal,
        "causal_gain": value.causal_gain.mean,
        "causal_gain_ci95": value.causal_gain.ci95,
        "upper_goal_met": value.upper_goal_met,
        "causal_goal_met": value.causal_goal_met,
        "nontrivial": "yes" if value.upper_goal_met and value.causal_goal_met else "no",
        "seconds": time.perf_counter() - started,
    }


def episode_study(episodes: int) -> dict[str, Any]:
    """How the paired interval of the best causal baseline against ``channel-blind`` shrinks with
    the episode count in the default scenario, and the count that meets the target half-width."""
    started = time.perf_counter()
    rollouts, causal = reference_rollouts(
        lambda: SplitComputingEnv("default"),
        range(DEFAULT_EVAL_SEED, DEFAULT_EVAL_SEED + episodes),
        fit_episodes=DEFAULT_FIT_EPISODES,
        fit_seed=DEFAULT_FIT_SEED,
    )
    seconds = time.perf_counter() - started
    value = adaptation_value(rollouts, causal)
    best = value.best_causal
    study = EpisodeStudy.from_rollouts(rollouts[best], rollouts[CHANNEL_BLIND])
    counts = sorted(
        {n for n in (5, 10, 20, 50, 100, 200, 400, 800, episodes) if 2 <= n <= episodes}
    )
    curve = study.curve(counts)
    needed = study.episodes_needed(TARGET_HALF_WIDTH)
    means = ", ".join(
        f"{name} {float(rollout.reward.mean()):.4f}"
        for name, rollout in sorted(rollouts.items(), key=lambda item: -item[1].reward.mean())
    )
    print(f"\nDefault scenario, {episodes} paired episodes: {value.summary()}\nmeans: {means}")
    print(
        f"\nPaired 95% half-width of {best} - {CHANNEL_BLIND} in the default scenario "
        f"(spread {study.spread:.4f} per episode, mean {study.differences.mean():+.4f}):"
    )
    print_table(
        [{"episodes": n, "half_width": h} for n, h in curve],
        [("episodes", "episodes", "d"), ("half_width", "half-width", ".4f")],
    )
    print(
        f"episodes for a half-width of at most {TARGET_HALF_WIDTH}: {needed} "
        f"(the {len(rollouts)} reference baselines took {seconds:.0f} s for {episodes} episodes: "
        f"about {seconds * needed / episodes:.0f} s for {needed})"
    )
    return {
        "adaptation": {
            "upper_gain": value.upper_gain.mean,
            "upper_gain_ci95": value.upper_gain.ci95,
            "best_causal": best,
            "causal_gain": value.causal_gain.mean,
            "causal_gain_ci95": value.causal_gain.ci95,
        },
        "mean_rewards": {name: float(r.reward.mean()) for name, r in rollouts.items()},
        "policy": best,
        "reference": CHANNEL_BLIND,
        "episodes": episodes,
        "spread": study.spread,
        "mean": float(study.differences.mean()),
        "curve": [{"episodes": n, "half_width": h} for n, h in curve],
        "target_half_width": TARGET_HALF_WIDTH,
        "episodes_needed": needed,
        "seconds": seconds,
        "seconds_at_needed": seconds * needed / episodes,
        "references": sorted(rollouts),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per env")
    parser.add_argument(
        "--episodes", type=int, default=20, help="paired episodes per scenario (default: 20)"
    )
    parser.add_argument(
        "--scenarios",
        default="all",
        help="scenarios of the adaptation table: all (default), none, or a comma list",
    )
    parser.add_argument(
        "--episode-study",
        type=int,
        default=0,
        metavar="N",
        help="measure the paired interval against the episode count on N episodes of the "
        "default scenario (0: skip)",
    )
    args = parser.parse_args(argv)
    if args.episodes < 2:
        parser.error(f"--episodes must be at least 2, got {args.episodes}")
    if args.episode_study and args.episode_study < 4:
        parser.error(f"--episode-study needs at least 4 episodes, got {args.episode_study}")
    if args.scenarios == "all":
        scenarios = list(SCENARIOS)
    elif args.scenarios == "none":
        scenarios = []
    else:
        scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
        unknown = [name for name in scenarios if name not in SCENARIOS]
        if unknown:
            parser.error(f"--scenarios: unknown {unknown}; known: {', '.join(SCENARIOS)}")

    raw = SplitComputingEnv()
    speed_rows = []
    cartpole_raw = steps_per_second(
        gym.make("CartPole-v1").unwrapped, _cartpole_actions(4096), args.seconds
    )
    cartpole_made = steps_per_second(gym.make("CartPole-v1"), _cartpole_actions(4096), args.seconds)
    ours_raw = steps_per_second(raw, _split_actions(raw, 4096), args.seconds)
    ours_made = steps_per_second(gym.make(ENV_ID), _split_actions(raw, 4096), args.seconds)
    # the throughput-only observation: what the link-rate report costs per step
    throughput_only = SplitComputingEnv(link_quality=False)
    ours_no_link = steps_per_second(
        throughput_only, _split_actions(throughput_only, 4096), args.seconds
    )
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
    speed_rows.append(
        {
            "how": "raw, link_quality=False",
            "cartpole": cartpole_raw,
            "splitrl": ours_no_link,
            "ratio": ours_no_link / cartpole_raw,
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

    hindsight = hindsight_rows(args.seconds)
    print(
        "\nHindsight values per step, mpc's actions on the default scenario (ratio: to the env's step)"
    )
    print_table(
        hindsight,
        [
            ("how", "values", "s"),
            ("step_us", "us per step", ",.0f"),
            ("ratio", "ratio", ".1f"),
        ],
    )

    scenario_rows = [adaptation_row(name, args.episodes) for name in scenarios]
    if scenario_rows:
        print(
            f"\nWhat adapting is worth per scenario ({args.episodes} paired episodes; goals: "
            "upper gain >= 0.05, causal gain's 95% interval above 0)"
        )
        print_table(
            scenario_rows,
            [
                ("scenario", "scenario", "s"),
                ("upper_gain", "lookahead - blind", "+.4f"),
                ("upper_gain_ci95", "± (95%)", ".4f"),
                ("best_causal", "best causal", "s"),
                ("causal_gain", "causal - blind", "+.4f"),
                ("causal_gain_ci95", "± (95%)", ".4f"),
                ("nontrivial", "non-trivial", "s"),
                ("seconds", "seconds", ".1f"),
            ],
        )
    results: dict[str, Any] = {
        "speed": speed_rows,
        "helpers": helpers,
        "hindsight": hindsight,
        "scenarios": scenario_rows,
    }
    if args.episode_study:
        results["episode_study"] = episode_study(args.episode_study)
    path = write_results("env", results)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
