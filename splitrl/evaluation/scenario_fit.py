"""``splitrl scenario fit``: a frame rate and a deadline under which a profile's decision is not trivial.

A scenario made for one network rarely fits another: a network that takes 77 ms on the device at
60 frames/s piles up a backlog whatever the policy does, and one whose final exit runs on the
device within the deadline never needs the link. :func:`fit_scenario` times every action of the
profile on the device preset with the time model of the env (mean payloads, unloaded server,
mean round trip; :func:`~splitrl.envs.mean_times.action_times`) at the bottom and at the top of the network's uplink range, and proposes:

* **frame interval**: 1.2 times the device's busy time at its cheapest action (on the fastest
  link), rounded down to whole frames per second: the device keeps up, but only just, so slow
  choices leave a backlog for the next frames (the shipped default scenario has the same margin);
* **deadline**: the geometric middle between the fastest offloaded final exit (top of the uplink
  range) and the final exit run on the device. The most accurate answer then needs the server,
  and reaches it only when the link, the server and the backlog allow.

When no such deadline exists (offloading never beats running the whole network on the device),
the fit says so. These are mean times: whether adapting is worth something under the proposal is
measured, not assumed. ``--episodes N`` then measures what adapting is worth
in the proposed scenario (:class:`~splitrl.evaluation.references.AdaptationValue`, the measure of
whether a scenario is worth learning in) on ``N`` paired episodes.

Examples::

    splitrl scenario fit --profile profiles/mobilenet.json --device pi_zero_2w
    splitrl scenario fit --profile profiles/mobilenet.json --device stm32h7 --episodes 10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from splitrl.envs.actions import ActionTable
from splitrl.envs.mean_times import action_times, keep_up_warning

if TYPE_CHECKING:
    from splitrl.envs.scenarios import Scenario, ScenarioParts

#: frame interval over the device's busy time at its cheapest action
FRAME_MARGIN = 1.2


@dataclass(frozen=True)
class ScenarioFit:
    """A proposed frame interval and deadline, and the times they were chosen from (seconds).

    :param frame_interval_s: proposed time between requests
    :param deadline_s: proposed latency deadline
    :param cheapest_busy_s: the device's busy time at its cheapest action, fastest link
    :param local_final_s: latency of the final exit run on the device
    :param offload_final_fast_s: fastest offloaded final exit at the top of the uplink range
    :param offload_final_slow_s: fastest offloaded final exit at the bottom of the uplink range
    :param trivial_reason: why no deadline makes the decision worth learning (``None``: one does)
    """

    frame_interval_s: float
    deadline_s: float
    cheapest_busy_s: float
    local_final_s: float
    offload_final_fast_s: float
    offload_final_slow_s: float
    trivial_reason: str | None

    def summary(self) -> str:
        """Lines for people."""
        lines = [
            f"frame interval: {1e3 * self.frame_interval_s:.2f} ms "
            f"({1 / self.frame_interval_s:.0f} frames/s)",
            f"deadline: {1e3 * self.deadline_s:.1f} ms",
            f"device busy at its cheapest action: {1e3 * self.cheapest_busy_s:.2f} ms",
            f"final exit on the device: {1e3 * self.local_final_s:.1f} ms",
            f"final exit offloaded: {1e3 * self.offload_final_fast_s:.1f} ms (fastest link), "
            f"{1e3 * self.offload_final_slow_s:.1f} ms (slowest link)",
        ]
        if self.trivial_reason is not None:
            lines.append(f"warning: the decision is trivial here: {self.trivial_reason}")
        return "\n".join(lines)


def fit_scenario(parts: ScenarioParts) -> ScenarioFit:
    """Propose a frame interval and a deadline for a resolved scenario (see the module docstring).

    :param parts: the scenario resolved with the profile and the device of interest
    """
    low_bps, high_bps = (rate * 1e6 for rate in parts.uplink_mbps)
    busy_fast, done_fast = action_times(parts, high_bps)
    _, done_slow = action_times(parts, low_bps)
    profile = parts.profile
    canonical = np.array(ActionTable.from_profile(profile).canonical_actions(), dtype=np.int64)
    final = profile.n_exits - 1
    is_final = canonical[:, 0] == final
    local = is_final & (canonical[:, 1] >= profile.exit_stages[final])
    offloaded = is_final & ~local
    cheapest = float(busy_fast.min())
    fps = max(1, math.floor(1.0 / (FRAME_MARGIN * cheapest)))
    local_final = float(done_fast[local].min())
    fast = float(done_fast[offloaded].min())
    slow = float(done_slow[offloaded].min())
    reason = None
    if fast >= local_final:
        reason = "the device runs the whole network faster than any offloading of it"
    deadline = math.sqrt(fast * local_final) if reason is None else 1.1 * local_final
    return ScenarioFit(
        frame_interval_s=1.0 / fps,
        deadline_s=deadline,
        cheapest_busy_s=cheapest,
        local_final_s=local_final,
        offload_final_fast_s=fast,
        offload_final_slow_s=slow,
        trivial_reason=reason,
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``scenario`` subcommands."""
    sub = parser.add_subparsers(dest="scenario_command", metavar="ACTION", required=True)
    fit = sub.add_parser(
        "fit", help="propose a frame rate and a deadline under which the decision is not trivial"
    )
    fit.add_argument("--profile", required=True, help="profile name or path")
    fit.add_argument("--device", required=True, help="device preset (splitrl/profiles/data)")
    fit.add_argument("--network", default=None, help="network preset, default: the scenario's")
    fit.add_argument(
        "--scenario", default="default", help="scenario to start from, default: %(default)s"
    )
    fit.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the proposed scenario to this scenario file (.yaml), which --scenario of "
        "splitrl train and splitrl evaluate accepts",
    )
    fit.add_argument(
        "--episodes",
        type=int,
        default=0,
        help="measure what adapting is worth in the proposed scenario on this many paired "
        "episodes (0: do not measure; default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    """Print the proposal (and, with ``--episodes``, what adapting is worth under it)."""
    from splitrl.envs.scenarios import SCENARIO_FILE_SUFFIXES, resolve_scenario

    if args.episodes < 0:
        raise ValueError(f"--episodes must be at least 0, got {args.episodes}")
    if args.out is not None and not str(args.out).endswith(SCENARIO_FILE_SUFFIXES):
        raise ValueError(f"--out must name a .yaml or .yml file, got {args.out}")
    parts = resolve_scenario(
        args.scenario, profile=args.profile, device=args.device, network=args.network
    )
    warning = keep_up_warning(parts)
    if warning is not None:
        print(f"scenario {args.scenario} as it is: {warning}")
    fit = fit_scenario(parts)
    print(fit.summary())
    print(
        f"use: SplitComputingEnv({args.scenario!r}, profile={args.profile!r}, "
        f"device={args.device!r}, frame_interval_s={fit.frame_interval_s:.6g}, "
        f"deadline_s={fit.deadline_s:.6g})"
    )
    if args.out is not None:
        write_scenario_file(args.out, proposed_scenario(args, parts.uplink_mbps, fit))
        print(f"scenario file: {args.out} (splitrl train --scenario {args.out})")
    if args.episodes:
        from splitrl.envs.split_computing import SplitComputingEnv
        from splitrl.evaluation.references import adaptation_value, reference_rollouts

        def env_factory() -> SplitComputingEnv:
            return SplitComputingEnv(
                args.scenario,
                profile=parts.profile,
                device=parts.device,
                network=args.network,
                frame_interval_s=fit.frame_interval_s,
                deadline_s=fit.deadline_s,
            )

        rollouts, causal = reference_rollouts(
            env_factory, range(10_000, 10_000 + args.episodes), fit_episodes=2, fit_seed=0
        )
        print(adaptation_value(rollouts, causal).summary())
    return 0


def proposed_scenario(
    args: argparse.Namespace, uplink_mbps: tuple[float, float], fit: ScenarioFit
) -> Scenario:
    """The starting scenario with the profile, the presets and the proposal of ``fit``."""
    from splitrl.envs.scenarios import get_scenario

    base = get_scenario(args.scenario)
    profile = Path(args.profile)
    return dataclasses.replace(
        base,
        name=Path(args.out).stem if args.out is not None else base.name,
        description=(
            f"{base.name} fitted to profile {args.profile} on {args.device}: "
            f"{1 / fit.frame_interval_s:.0f} frames/s, {1e3 * fit.deadline_s:.1f} ms deadline"
        ),
        profile=str(profile.resolve()) if profile.exists() else args.profile,
        device=args.device,
        network=args.network or base.network,
        uplink_mbps=uplink_mbps,
        frame_interval_s=fit.frame_interval_s,
        deadline_s=fit.deadline_s,
    )


def write_scenario_file(path: Path, scenario: Scenario) -> None:
    """Write ``scenario`` as a scenario file (YAML), atomically."""
    import yaml

    from splitrl.files import atomic_write

    # JSON first: tuples and nested dataclasses become the plain lists and mappings YAML dumps
    document = json.loads(json.dumps(scenario.to_dict()))
    text = yaml.safe_dump(document, sort_keys=False)
    atomic_write(Path(path), lambda file: file.write(text.encode()))
