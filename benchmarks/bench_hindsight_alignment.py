"""Whether the hindsight values rank a learned policy and a causal rule as their rewards do.

The ``sacd-hindsight*`` learners maximize the expected hindsight value of their action given what
the device observes: the request's true reward minus the clairvoyant price of the backlog the
action leaves (:func:`splitrl.agents.baselines.oracles.clairvoyant_parts`). That objective is a
proxy: what a policy earns is the rewards of its requests, the waits its backlogs cause included.

Each policy (the learned one and the rule) plays its own trajectory on the same seeded episodes of
its training scenario, with the training reward (correctness is the profile's accuracy, so no
label luck separates them). Per request it records the reward earned and the two parts of the
hindsight value of the action taken; on the learned policy's requests it also records the parts of
the action the rule would have taken there. Per policy: the mean reward per request (what it
earns) and the mean hindsight value (its objective). The objective is aligned when the policy it
ranks higher also earns more.

    python -m benchmarks.bench_hindsight_alignment           # the shipped policy against mpc
    python -m benchmarks.bench_hindsight_alignment --run RUN --rule mpc --channel fading

Writes ``results/bench_hindsight_alignment.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import print_table, write_results

#: first reset seed of the episodes, apart from training, validation and evaluation seeds
FIRST_SEED = 2_000_000


#: most following requests whose realized loss a shadow action's backlog is charged with
DEFAULT_HORIZON = 64


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """One policy's requests on its own trajectory.

    :param earned: the reward of each request
    :param wait: how long each request waited for the device (seconds)
    :param reward: the true reward of the action taken (the first part of its hindsight value)
    :param cost: the backlog cost of the action taken (the second part)
    :param shadow_reward: on the same requests, the true reward of the action the shadow policy
        would have taken (``None`` without a shadow)
    :param shadow_cost: its backlog cost
    :param shadow_continuation: what the shadow's action would have changed in the rewards of the
        following requests, served with the actions actually taken (0 where the two actions leave
        the device free at the same time)
    """

    earned: np.ndarray
    wait: np.ndarray
    reward: np.ndarray
    cost: np.ndarray
    shadow_reward: np.ndarray | None = None
    shadow_cost: np.ndarray | None = None
    shadow_continuation: np.ndarray | None = None

    def summary(self) -> dict[str, float]:
        """Means per request: earned, the wait, both parts and the hindsight value; with a shadow,
        its action's parts, its realized continuation, and the realized value of the action taken
        minus the shadow's (this request's reward plus what it does to the following ones)."""
        result = {
            "earned": float(self.earned.mean()),
            "wait_ms": 1e3 * float(self.wait.mean()),
            "reward": float(self.reward.mean()),
            "backlog_cost": float(self.cost.mean()),
            "hindsight_value": float((self.reward - self.cost).mean()),
        }
        if (
            self.shadow_reward is not None
            and self.shadow_cost is not None
            and self.shadow_continuation is not None
        ):
            result["shadow_reward"] = float(self.shadow_reward.mean())
            result["shadow_backlog_cost"] = float(self.shadow_cost.mean())
            result["shadow_continuation"] = float(self.shadow_continuation.mean())
            result["realized_value_over_shadow"] = float(
                (self.reward - self.shadow_reward - self.shadow_continuation).mean()
            )
        return result


def play(
    env: Any,
    policy: Any,
    seeds: Sequence[int],
    shadow: Any = None,
    horizon: int = DEFAULT_HORIZON,
) -> Trajectory:
    """``policy`` on its own trajectory over ``seeds``, with the hindsight parts of every action.

    With a ``shadow``, each request where the shadow's action would have left the device free at
    another time is replayed forward (:class:`~splitrl.agents.hindsight.BacklogReplays`, as
    ``sacd-hindsight-mpc-replayed`` prices the backlog): the following requests, with the actions
    ``policy`` took, are served from the device-free time that action would have left, until the
    device is free when it actually is or ``horizon`` requests have passed. What that changes in
    their rewards is the shadow action's realized continuation: the backlog's price as it was
    actually paid, where the hindsight value uses the clairvoyant lookahead's price.

    :param env: a ``SplitComputingEnv``
    :param policy: the policy that acts
    :param shadow: a policy asked for its action on the same requests, which is not taken
    :param horizon: most following requests a replay runs for
    """
    from splitrl.agents.baselines.oracles import clairvoyant_parts
    from splitrl.agents.baselines.spread import LatencySpread
    from splitrl.agents.hindsight import BacklogReplays

    spread = LatencySpread()
    spread.reset(env)
    replays = BacklogReplays(horizon)
    rows: list[list[float]] = []
    for seed in seeds:
        observation, _ = env.reset(seed=int(seed))
        policy.reset(env)
        replays.clear()
        if shadow is not None:
            shadow.reset(env)
        done = False
        while not done:
            actions, rewards, costs = clairvoyant_parts(env, spread)
            index = {tuple(int(x) for x in action): i for i, action in enumerate(actions)}
            action = policy.act(env, observation)
            taken = index[tuple(int(x) for x in action)]
            row = [0.0, 0.0, rewards[taken], costs[taken]]
            if shadow is not None:
                other_action = shadow.act(env, observation)
                other = index[tuple(int(x) for x in other_action)]
                _, free = env.evaluate_action_from(action, env.request_start_s)
                for back, change in replays.advance(env, action, rewards[taken], free):
                    rows[-back][6] += float(change[0])
                _, other_free = env.evaluate_action_from(other_action, env.request_start_s)
                replays.start(np.array([other_free]), free)
                row += [rewards[other], costs[other], 0.0]
            observation, earned, terminated, truncated, info = env.step(action)
            row[0], row[1] = float(earned), float(info["wait_s"])
            rows.append(row)
            done = terminated or truncated
    table = np.array(rows)
    return Trajectory(
        earned=table[:, 0],
        wait=table[:, 1],
        reward=table[:, 2],
        cost=table[:, 3],
        shadow_reward=table[:, 4] if shadow is not None else None,
        shadow_cost=table[:, 5] if shadow is not None else None,
        shadow_continuation=table[:, 6] if shadow is not None else None,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run",
        type=Path,
        default=None,
        help="a run directory (default: the shipped sacd-hindsight-mpc-default)",
    )
    parser.add_argument("--rule", default="mpc", help="the causal rule it is compared with")
    parser.add_argument(
        "--channel", default=None, help="a channel model (default: the run's training channel)"
    )
    parser.add_argument("--episodes", type=int, default=3)
    args = parser.parse_args(argv)
    from splitrl.agents.baselines import causal_baselines, make_baseline
    from splitrl.envs import SplitComputingEnv
    from splitrl.envs.scenarios import SCENARIO_CHANNELS
    from splitrl.evaluation.suite import load_runs
    from splitrl.pretrained import pretrained_run
    from splitrl.training.run_dir import RunDirectory
    from splitrl.training.trainer import training_scenario

    rules = causal_baselines(learned=True)
    if args.rule not in rules:
        parser.error(f"unknown causal rule {args.rule!r}; known: {', '.join(rules)}")
    if args.channel is not None and args.channel not in SCENARIO_CHANNELS:
        parser.error(f"unknown channel {args.channel!r}; known: {', '.join(SCENARIO_CHANNELS)}")
    if args.episodes < 1:
        parser.error(f"--episodes must be at least 1, got {args.episodes}")
    run_dir = args.run if args.run is not None else pretrained_run("sacd-hindsight-mpc-default")
    if not (run_dir / "config.yaml").is_file():
        parser.error(f"{run_dir} is not a run directory (no config.yaml)")
    (run,) = load_runs([run_dir])
    scenario = training_scenario(RunDirectory(run_dir).scenario(), "expected")
    if args.channel is not None:
        scenario = dataclasses.replace(scenario, channel=args.channel)
    env = SplitComputingEnv(scenario)
    seeds = range(FIRST_SEED, FIRST_SEED + args.episodes)
    learned = play(env, run.policy, seeds, shadow=make_baseline(args.rule)).summary()
    rule = play(env, make_baseline(args.rule), seeds).summary()
    rows = [{"policy": run.algo, **learned}, {"policy": args.rule, **rule}]
    print_table(
        rows,
        [
            ("policy", "policy", "s"),
            ("earned", "earned", ".4f"),
            ("wait_ms", "wait ms", ".2f"),
            ("reward", "true reward", ".4f"),
            ("backlog_cost", "backlog cost", ".4f"),
            ("hindsight_value", "hindsight value", ".4f"),
        ],
    )
    earned_gap = learned["earned"] - rule["earned"]
    objective_gap = learned["hindsight_value"] - rule["hindsight_value"]
    aligned = bool(np.sign(earned_gap) == np.sign(objective_gap))
    print(
        f"learned - {args.rule}: earned {earned_gap:+.4f}, hindsight value {objective_gap:+.4f} "
        f"({'aligned' if aligned else 'NOT aligned'})\n"
        f"on the learned policy's requests, {args.rule}'s action: true reward "
        f"{learned['shadow_reward']:.4f}, backlog cost {learned['shadow_backlog_cost']:.4f}, "
        f"realized continuation {learned['shadow_continuation']:+.4f}; the action taken minus "
        f"{args.rule}'s: by the hindsight value "
        f"{learned['hindsight_value'] - learned['shadow_reward'] + learned['shadow_backlog_cost']:+.4f}"
        f", realized {learned['realized_value_over_shadow']:+.4f}"
    )
    path = write_results(
        "hindsight_alignment",
        {
            "run": str(run_dir),
            "rule": args.rule,
            "channel": scenario.channel if isinstance(scenario.channel, str) else "custom",
            "episodes": args.episodes,
            "first_seed": FIRST_SEED,
            "policies": rows,
            "earned_gap": earned_gap,
            "hindsight_value_gap": objective_gap,
            "aligned": aligned,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
