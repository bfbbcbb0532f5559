"""Every baseline on the same seeded episodes: reward, paired gain over ``channel-blind``, decision time.

Run with ``python -m benchmarks.bench_baselines`` (``--episodes``, ``--scenario``, ``--channel``);
results go to ``results/bench_baselines.json``. Fitted baselines (``best-static``,
``channel-blind``) are fitted on the training seeds of the evaluation (``DEFAULT_FIT_SEED ..``),
then every baseline plays the evaluation seeds (``DEFAULT_EVAL_SEED ..``).

The decision time is the mean wall time of ``act`` per request, on this machine, while the whole
rollout runs; it is what hundreds of evaluation episodes per baseline will cost. Budgets: about
2 ms per request for the causal baselines, 5 ms for ``clairvoyant-lookahead``. robust-mpc's
decision time is also measured with the backlog lookahead's numpy loop in place of its compiled
kernel (``backlog_kernel`` in the JSON: both times, their ratio, and whether the actions agree).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from benchmarks.common import print_table, write_results
from splitrl.agents.baselines import BASELINES, fitted_baselines, make_baseline
from splitrl.agents.policy_interface import Policy
from splitrl.agents.rollout import Rollout, run_episodes
from splitrl.envs import SplitComputingEnv
from splitrl.evaluation.defaults import DEFAULT_EVAL_SEED, DEFAULT_FIT_EPISODES, DEFAULT_FIT_SEED
from splitrl.evaluation.metrics import paired_difference
from splitrl.statistics import t_interval

#: the rule every gain is measured against: what a device gets without looking at the link
REFERENCE = "channel-blind"
#: episodes by default: enough to rank the baselines in minutes (the evaluation's default is larger)
DEFAULT_EPISODES = 20
#: decision-time budgets, in milliseconds per request
CAUSAL_BUDGET_MS, LOOKAHEAD_BUDGET_MS = 2.0, 5.0


class TimedPolicy:
    """Accumulates the wall time ``policy.act`` takes."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.name = policy.name
        self.seconds = 0.0
        self.calls = 0

    def reset(self, env: SplitComputingEnv) -> None:
        self.policy.reset(env)

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        action = self.policy.act(env, observation)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return action


def backlog_kernel_speed(make_env: Any, seed: int) -> dict[str, Any] | None:
    """robust-mpc's decision time on one episode with the compiled backlog kernel and with its
    numpy reference loop, in this process; ``None`` when the kernel is not built."""
    from splitrl.agents.baselines import backlog

    compiled = backlog._compiled
    if compiled is None:
        print("the compiled backlog kernel is not built: no kernel speed-up measured")
        return None
    timings, actions = {}, {}
    try:
        for path, module in (("compiled", compiled), ("numpy", None)):
            backlog._compiled = module
            timed = TimedPolicy(make_baseline("robust-mpc"))
            rollout = run_episodes(timed, make_env(), [seed])
            timings[path] = 1e3 * timed.seconds / timed.calls
            actions[path] = np.stack([rollout.exit, rollout.split, rollout.bits])
    finally:
        backlog._compiled = compiled
    return {
        "compiled_ms": timings["compiled"],
        "numpy_ms": timings["numpy"],
        "speedup": timings["numpy"] / timings["compiled"],
        "same_actions": bool(np.array_equal(actions["compiled"], actions["numpy"])),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenario", default="default")
    parser.add_argument("--channel", default="markov")
    parser.add_argument("--episodes", type=int, default=DEFAULT_EPISODES)
    args = parser.parse_args(argv)
    if args.episodes < 2:
        parser.error(f"--episodes must be at least 2 (a paired interval), got {args.episodes}")

    def make_env() -> SplitComputingEnv:
        return SplitComputingEnv(args.scenario, channel=args.channel)

    env = make_env()
    seeds = list(range(DEFAULT_EVAL_SEED, DEFAULT_EVAL_SEED + args.episodes))
    rollouts: dict[str, Rollout] = {}
    rows: list[dict[str, Any]] = []
    for name in BASELINES:
        fit = (
            {"env_factory": make_env, "episodes": DEFAULT_FIT_EPISODES, "seed": DEFAULT_FIT_SEED}
            if name in fitted_baselines()
            else {}
        )
        policy = make_baseline(name, **fit)
        timed = TimedPolicy(policy)
        rollouts[name] = run_episodes(timed, env, seeds)
        reward, reward_ci = t_interval(rollouts[name].reward.mean(axis=1))
        rows.append(
            {
                "name": name,
                "causal": policy.causal,
                "reward": reward,
                "reward_ci95": reward_ci,
                "miss_rate": float(rollouts[name].deadline_missed.mean()),
                "decision_ms": 1e3 * timed.seconds / timed.calls,
                "knows": policy.knows,
            }
        )
        print(f"{name}: {reward:.4f} ± {reward_ci:.4f}", flush=True)
    for row in rows:
        gain = paired_difference(rollouts[row["name"]], rollouts[REFERENCE])
        row["gain"], row["gain_ci95"] = gain.mean, gain.ci95
    within_budget = {
        row["name"]: row["decision_ms"]
        <= (LOOKAHEAD_BUDGET_MS if row["name"] == "clairvoyant-lookahead" else CAUSAL_BUDGET_MS)
        for row in rows
        if row["causal"] or row["name"] == "clairvoyant-lookahead"
    }
    print(
        f"\n{args.scenario}, {args.channel} channel, {args.episodes} episodes of {env.horizon} "
        f"requests (seeds {seeds[0]}..{seeds[-1]}); gains are paired against {REFERENCE}"
    )
    print_table(
        rows,
        [
            ("name", "baseline", "s"),
            ("causal", "causal", ""),
            ("reward", "reward", ".4f"),
            ("reward_ci95", "±", ".4f"),
            ("gain", f"- {REFERENCE}", "+.4f"),
            ("gain_ci95", "±", ".4f"),
            ("miss_rate", "misses", ".4f"),
            ("decision_ms", "ms/decision", ".3f"),
        ],
    )
    kernel = backlog_kernel_speed(make_env, seeds[0])
    if kernel is not None:
        print(
            f"robust-mpc per decision: {kernel['compiled_ms']:.3f} ms with the compiled backlog "
            f"kernel, {kernel['numpy_ms']:.3f} ms with its numpy loop (x{kernel['speedup']:.1f}, "
            f"same actions: {kernel['same_actions']})"
        )
    path = write_results(
        "baselines",
        {
            "scenario": args.scenario,
            "channel": args.channel,
            "episodes": args.episodes,
            "requests_per_episode": env.horizon,
            "seeds": seeds,
            "reference": REFERENCE,
            "rows": rows,
            "decision_time_within_budget": within_budget,
            "backlog_kernel": kernel,
        },
    )
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
