"""``splitrl audit-offloads``: where a trained policy's gain over a rule comes from.

Examples::

    splitrl audit-offloads runs/sacd_default_s0_* --trace walk.csv
    splitrl audit-offloads runs/sacd_default_s0_* --channel fading --fallback mpc --episodes 40

See :mod:`splitrl.evaluation.offload_audit` and ``docs/evaluation.md`` (Offload audit).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from splitrl.agents.baselines.backlog import DEFAULT_BACKLOG_HORIZON
from splitrl.arguments import HelpFormatter

#: the rule a run is compared with unless ``--fallback`` says otherwise (the references' name)
DEFAULT_FALLBACK = "channel-blind"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``splitrl audit-offloads``."""
    from splitrl.evaluation.cli import add_condition_arguments, add_model_choice

    parser.formatter_class = HelpFormatter
    parser.epilog = "What each part means: docs/evaluation.md, Offload audit"
    parser.add_argument("run", metavar="RUN", help="run directory written by splitrl train")
    add_model_choice(parser)
    parser.add_argument(
        "--fallback",
        default=DEFAULT_FALLBACK,
        help=f"the baseline the run is compared with (default: {DEFAULT_FALLBACK})",
    )
    add_condition_arguments(parser, several_traces=False)
    parser.add_argument(
        "--replay-horizon",
        type=int,
        default=DEFAULT_BACKLOG_HORIZON,
        metavar="N",
        help="the most following requests a replay of an offload counts, for the effect after "
        "the offloads as a learner's hindsight values price it (default: %(default)s)",
    )
    parser.add_argument(
        "--replay-rechoose",
        action="store_true",
        help="the replays re-choose the later actions where their backlog changes the lookahead "
        "rule's choice, as the -rechosen learners' hindsight values do (default: the actions "
        "taken, held fixed)",
    )
    parser.add_argument(
        "--branch-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="also measure this share of the offloads one at a time in the closed loop (the env "
        "and the policy copied at the offload, served with it and with the fallback's action, "
        "then the policy acting for the replay horizon) against their replay credits; each costs "
        "two runs of that many requests (default: %(default)s, none)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the audit to this JSON file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Audit the run's offloads, print the table and write the JSON; returns the exit status."""
    import json

    import torch

    from splitrl.agents.baselines import BASELINES
    from splitrl.evaluation.defaults import DEFAULT_FIT_SEED
    from splitrl.evaluation.metrics import json_safe
    from splitrl.evaluation.offload_audit import audit_offloads
    from splitrl.evaluation.references import make_baselines
    from splitrl.evaluation.suite import (
        check_run_matches,
        evaluation_conditions,
        evaluation_scenario,
        load_runs,
    )
    from splitrl.files import atomic_write
    from splitrl.training.config import profile_identity

    if args.replay_horizon < 1:
        raise ValueError(f"--replay-horizon must be at least 1, got {args.replay_horizon}")
    if not 0.0 <= args.branch_rate <= 1.0:
        raise ValueError(f"--branch-rate must be in [0, 1], got {args.branch_rate}")
    if args.fallback not in BASELINES:
        raise ValueError(f"unknown fallback {args.fallback!r}; known: {', '.join(BASELINES)}")
    json_path = Path(args.json) if args.json is not None else None
    if json_path is not None and not json_path.parent.is_dir():
        raise FileNotFoundError(f"folder {json_path.parent} for --json does not exist")
    torch.set_num_threads(1)
    (trained,) = load_runs([args.run], which=args.which)
    scenario = evaluation_scenario([trained], args.scenario)
    traces = [args.trace] if args.trace is not None else []
    (condition,) = evaluation_conditions(scenario, args.channel, traces)
    env = condition.make_env()
    check_run_matches(trained, env, profile_identity(scenario.profile)["arrays_sha256"])
    (fallback,) = make_baselines(
        [args.fallback], condition.make_env, args.fit_episodes, DEFAULT_FIT_SEED
    )
    seeds = range(args.seed, args.seed + args.episodes)
    audit = audit_offloads(
        trained.policy,
        fallback,
        env,
        seeds,
        replay_horizon=args.replay_horizon,
        replay_rechoose=args.replay_rechoose,
        branch_rate=args.branch_rate,
        progress=not args.no_progress,
    )
    env.close()
    print(audit.table())
    if json_path is not None:
        report = {"condition": condition.name, **audit.to_dict()}
        text = json.dumps(json_safe(report), indent=2) + "\n"
        atomic_write(json_path, lambda file: file.write(text.encode()))
        print(f"written: {json_path}")
    return 0
