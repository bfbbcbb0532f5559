r"""Whether a gate over causal rules, learned on synthetic channels, picks well on other links.

A gated learner (``sacd-hindsight-mpc-quantile-gated``) learns which rule to trust in each state:
its gate is fit to the hindsight value of every rule's own choice, on the channels it trains on.
This benchmark asks the question apart from the rest of the learner. One causal rule (the
behavior, ``robust-mpc`` by default) plays its own trajectory; at every request each rule says what
it would do (``--rules``) and the hindsight value of that choice is recorded (the true reward minus
the clairvoyant price of the backlog it leaves:
:func:`~splitrl.agents.baselines.oracles.clairvoyant_parts`), with what the device observes: the
env's observation and the link memory (:class:`~splitrl.agents.link_memory.LinkMemory`).

Fresh gates (an MLP of two layers of 64 over the standardized inputs, the learner's loss
:func:`~splitrl.agents.sacd.policies.gate_ranking_loss`) are fit on the training channel's requests
and scored on held-out episodes of that channel and on every evaluation channel and trace: the mean
hindsight value per request of the rule the gate ranks first. References: the rule that is best on
the training requests, always (what a gate that learned nothing but the average would pick), and
the best rule of each request (a perfect gate). A gate transfers where it beats the first.

    python -m benchmarks.bench_gate_transfer   # a quick look, about 3 minutes
    # the measurement of docs/sacd-experiments.md, What a gate can read:
    python -m benchmarks.bench_gate_transfer --train-episodes 60 --heldout-episodes 20 \
        --episodes 10 --steps 8000

With the quick look's 20 training episodes the gates overfit them (their held-out row says so);
the documented measurement fits on 60. Writes ``results/bench_gate_transfer.json``. The traces are
read from ``../shared/traces`` and skipped with a message when that folder is absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_traces import TRACES_DIR, documented_traces
from benchmarks.common import print_table, write_results

#: first reset seed of the training requests; held-out and evaluation episodes follow on
FIRST_SEED = 3_000_000
#: the rules a gated learner chooses among (``sacd-hindsight-mpc-quantile-gated``)
DEFAULT_RULES = ("robust-mpc", "mpc-geometric", "mpc-quantile")
#: the inputs each fresh gate reads: the env's observation, the link memory, or both
INPUTS = {"memory": ("memory",), "observation": ("observation",), "both": ("observation", "memory")}
#: the gate's temperature, as the learner's default
GATE_TEMPERATURE = 0.01


@dataclasses.dataclass(frozen=True)
class Requests:
    """What the device observed at each request and what each rule's choice was worth there.

    :param observation: the env's observations ``(n, obs_dim)``
    :param memory: the link memory's features ``(n, N_MEMORY_FEATURES)``
    :param payoffs: the hindsight value of each rule's choice ``(n, n_rules)``
    """

    observation: np.ndarray
    memory: np.ndarray
    payoffs: np.ndarray

    def inputs(self, names: Sequence[str]) -> np.ndarray:
        """The named input blocks side by side, ``(n, width)``."""
        return np.concatenate([getattr(self, name) for name in names], axis=1)


def collect(env: Any, behavior: Any, rules: Sequence[Any], seeds: Sequence[int]) -> Requests:
    """``behavior`` on its own trajectory over ``seeds``, with every rule's choice valued.

    :param env: a ``SplitComputingEnv``
    :param behavior: the causal rule that acts
    :param rules: the rules asked for their choice at every request (not taken)
    """
    from splitrl.agents.baselines.oracles import clairvoyant_parts
    from splitrl.agents.baselines.spread import LatencySpread
    from splitrl.agents.link_memory import LinkMemory

    spread = LatencySpread()
    spread.reset(env)
    memory = LinkMemory()
    observations, memories, payoffs = [], [], []
    for seed in seeds:
        observation, _ = env.reset(seed=int(seed))
        for policy in (behavior, *rules):
            policy.reset(env)
        memory.reset(env)
        done = False
        while not done:
            actions, rewards, costs = clairvoyant_parts(env, spread)
            index = {tuple(int(x) for x in action): i for i, action in enumerate(actions)}
            choices = [index[tuple(int(x) for x in rule.act(env, observation))] for rule in rules]
            observations.append(observation)
            memories.append(memory(env))
            payoffs.append((rewards - costs)[choices])
            observation, _, terminated, truncated, _ = env.step(behavior.act(env, observation))
            done = terminated or truncated
    return Requests(
        observation=np.asarray(observations, dtype=np.float32),
        memory=np.asarray(memories, dtype=np.float32),
        payoffs=np.asarray(payoffs, dtype=np.float64),
    )


class FittedGate:
    """A gate fit on ``inputs`` to rank the rules by ``payoffs`` (the learner's loss and optimizer
    settings: Adam at 3e-4, minibatches of 128).

    :param inputs: the training requests' inputs ``(n, width)``; standardized by their own mean
        and spread
    :param payoffs: the hindsight value of each rule's choice there ``(n, n_rules)``
    :param steps: gradient steps
    :param seed: seeds the network's initialization and the minibatches
    """

    def __init__(self, inputs: np.ndarray, payoffs: np.ndarray, steps: int, seed: int) -> None:
        import torch as th

        from splitrl.agents.sacd.policies import gate_ranking_loss

        self._mean = inputs.mean(axis=0)
        self._scale = inputs.std(axis=0) + 1e-6
        generator = th.Generator().manual_seed(seed)
        th.manual_seed(seed)
        self.network = th.nn.Sequential(
            th.nn.Linear(inputs.shape[1], 64),
            th.nn.ReLU(),
            th.nn.Linear(64, 64),
            th.nn.ReLU(),
            th.nn.Linear(64, payoffs.shape[1]),
        )
        optimizer = th.optim.Adam(self.network.parameters(), lr=3e-4)
        x, y = self._standardized(inputs), th.as_tensor(payoffs, dtype=th.float32)
        for _ in range(steps):
            batch = th.randint(len(x), (128,), generator=generator)
            loss = gate_ranking_loss(self.network(x[batch]), y[batch], GATE_TEMPERATURE)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def _standardized(self, inputs: np.ndarray) -> Any:
        import torch as th

        # inputs far outside the training spread (a link slower than any seen) are clipped
        return th.as_tensor(np.clip((inputs - self._mean) / self._scale, -10, 10)).float()

    def choose(self, inputs: np.ndarray) -> np.ndarray:
        """The rule the gate ranks first at each request ``(n,)``."""
        import torch as th

        with th.no_grad():
            return self.network(self._standardized(inputs)).argmax(dim=1).numpy()


def score(requests: Requests, choices: np.ndarray) -> float:
    """The mean hindsight value per request of the rules ``choices`` names."""
    return float(np.take_along_axis(requests.payoffs, choices[:, None], axis=1).mean())


def evaluation_channels(channels: Sequence[str], traces: Path) -> list[tuple[str, str]]:
    """``(name, channel spec)`` of each evaluation channel, then of each documented trace in
    ``traces`` (none, with a message, when the folder holds none)."""
    named = [(channel, channel) for channel in channels]
    paths = documented_traces(traces)
    if not paths:
        print(f"traces skipped: no documented trace in {traces}")
    return named + [(path.name, f"trace:{path}") for path in paths]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="default-timeout")
    parser.add_argument("--behavior", default="robust-mpc", help="the causal rule that acts")
    parser.add_argument(
        "--rules", default=",".join(DEFAULT_RULES), help="comma-separated rules the gate ranks"
    )
    parser.add_argument("--train-channel", default="randomized-all")
    parser.add_argument("--train-episodes", type=int, default=20)
    parser.add_argument("--heldout-episodes", type=int, default=5)
    parser.add_argument(
        "--channels", default="markov,fading,gilbert-elliott", help="comma-separated channels"
    )
    parser.add_argument("--episodes", type=int, default=3, help="episodes per evaluation link")
    parser.add_argument("--requests", type=int, default=400, help="requests per episode")
    parser.add_argument("--steps", type=int, default=3000, help="gradient steps per gate")
    parser.add_argument("--traces", type=Path, default=TRACES_DIR, help="folder of trace files")
    parser.add_argument("--seed", type=int, default=0, help="seeds the gates' fits")
    args = parser.parse_args(argv)
    from splitrl.agents.baselines import causal_baselines, make_baseline
    from splitrl.envs import SplitComputingEnv
    from splitrl.envs.scenarios import SCENARIO_CHANNELS, SCENARIOS, get_scenario

    known_rules = causal_baselines(learned=True)
    rule_names = [name.strip() for name in args.rules.split(",") if name.strip()]
    channels = [name.strip() for name in args.channels.split(",") if name.strip()]
    if args.scenario not in SCENARIOS:
        parser.error(f"unknown scenario {args.scenario!r}; known: {', '.join(SCENARIOS)}")
    for name in [args.behavior, *rule_names]:
        if name not in known_rules:
            parser.error(f"unknown causal rule {name!r}; known: {', '.join(known_rules)}")
    if len(rule_names) < 2:
        parser.error(f"--rules needs at least two rules to rank, got {rule_names}")
    for channel in [args.train_channel, *channels]:
        if channel not in SCENARIO_CHANNELS:
            parser.error(f"unknown channel {channel!r}; known: {', '.join(SCENARIO_CHANNELS)}")
    for flag in ("train_episodes", "heldout_episodes", "episodes", "requests", "steps"):
        if getattr(args, flag) < 1:
            parser.error(
                f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}"
            )

    scenario = dataclasses.replace(get_scenario(args.scenario), horizon=args.requests)
    behavior = make_baseline(args.behavior)
    rules = [make_baseline(name) for name in rule_names]
    sets: list[tuple[str, str, int]] = [
        ("train", args.train_channel, args.train_episodes),
        ("held-out", args.train_channel, args.heldout_episodes),
    ] + [(name, spec, args.episodes) for name, spec in evaluation_channels(channels, args.traces)]
    collected: dict[str, Requests] = {}
    seed = FIRST_SEED
    for name, channel, episodes in sets:
        started = time.perf_counter()
        env = SplitComputingEnv(dataclasses.replace(scenario, channel=channel))
        collected[name] = collect(env, behavior, rules, range(seed, seed + episodes))
        seed += episodes
        print(
            f"{name}: {len(collected[name].payoffs)} requests in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )

    train = collected["train"]
    best_on_train = int(train.payoffs.mean(axis=0).argmax())
    gates = {
        label: FittedGate(train.inputs(names), train.payoffs, args.steps, args.seed)
        for label, names in INPUTS.items()
    }
    rows: list[dict[str, Any]] = []
    for name, requests in collected.items():
        always = np.full(len(requests.payoffs), best_on_train)
        row: dict[str, Any] = {
            "link": name,
            "requests": len(requests.payoffs),
            "rules": dict(zip(rule_names, requests.payoffs.mean(axis=0).tolist(), strict=True)),
            "best_on_train": score(requests, always),
            "best_per_request": float(requests.payoffs.max(axis=1).mean()),
        }
        for label, names in INPUTS.items():
            row[f"gate_{label}"] = score(requests, gates[label].choose(requests.inputs(names)))
        rows.append(row)
    print(f"the rule best on the training requests: {rule_names[best_on_train]}")
    print_table(
        rows,
        [
            ("link", "link", "s"),
            ("requests", "requests", "d"),
            ("best_on_train", f"always {rule_names[best_on_train]}", ".4f"),
            ("gate_memory", "gate (memory)", ".4f"),
            ("gate_observation", "gate (observation)", ".4f"),
            ("gate_both", "gate (both)", ".4f"),
            ("best_per_request", "best per request", ".4f"),
        ],
    )
    path = write_results(
        "gate_transfer",
        {
            "scenario": args.scenario,
            "behavior": args.behavior,
            "rules": rule_names,
            "train_channel": args.train_channel,
            "best_on_train": rule_names[best_on_train],
            "steps": args.steps,
            "seed": args.seed,
            "links": rows,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
