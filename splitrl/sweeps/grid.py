"""A sweep file (YAML) and the grid of cells it spans.

A sweep is a grid over scenarios x learners (variants) x hyperparameter overrides x training
seeds, every trained run evaluated on every condition (channel models or trace files), beside the
baselines on the same episodes::

    out: results/policy                 # the results folder (relative: to the working directory)
    report: results/ablation            # optional: the report's folder (default: OUT/report;
                                        # relative: to the working directory), so that a subset
                                        # of one results folder gets its own report
    scenarios: [default]                # named scenarios, or name: {scenario: BASE, FIELD: VALUE}
    learners: [sacd, ppo, sacd-alpha]   # learners of splitrl train, or variants below
    variants:                           # learners with hyperparameters that replace the defaults
      sacd-alpha: {algo: sacd, hyperparameters: {ent_coef: auto_0.01}, description: ...}
    grid: {learning_rate: [1.0e-4, 3.0e-4]}   # optional: every learner x every combination
    seeds: 3                            # training seeds 0..2, or a list
    timesteps: 50000                    # training steps per run
    conditions: [markov, fading, trace:traces/a.up]   # evaluation channels
    trace_dir: ../traces                # optional: every trace in a folder is a condition too
    episodes: 70                        # evaluation episodes per condition
    baselines: [robust-mpc, clairvoyant-lookahead]    # default: every causal one, oracle-now and
                                                      # clairvoyant-lookahead

Relative paths (scenario profiles, traces, ``trace_dir``) are read from the sweep file's folder.
Everything is checked when the file is read, before any work.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitrl.files import read_yaml_mapping
from splitrl.sweeps.cells import (
    EvalCell,
    ScenarioSpec,
    TrainCell,
    Trial,
    Variant,
    read_cell,
    recorded_run_dir,
)

#: the synthetic channel models a sweep evaluates on by default
CHANNELS = ("markov", "fading", "gilbert-elliott")
#: scenario fields a sweep may replace (a sweep's channels are its conditions)
SCENARIO_FIELDS = ("profile", "device", "reward", "horizon", "link_quality")
_KEYS = {
    "out",
    "report",
    "scenarios",
    "learners",
    "variants",
    "grid",
    "seeds",
    "timesteps",
    "conditions",
    "trace_dir",
    "episodes",
    "baselines",
}


@dataclass(frozen=True)
class Sweep:
    """What a sweep runs.

    :param scenarios: the scenarios, in order
    :param variants: the learners to train, by name
    :param seeds: training seeds of every learner
    :param timesteps: training steps per run
    :param channels: the channel of every evaluation condition, by condition name
    :param episodes: evaluation episodes per condition
    :param baselines: the baselines evaluated beside the learners
    :param out: the results folder
    :param report: the report's folder; ``None``: ``out/report``
    """

    scenarios: tuple[ScenarioSpec, ...]
    variants: Mapping[str, Variant]
    seeds: tuple[int, ...]
    timesteps: int
    channels: Mapping[str, str]
    episodes: int
    baselines: tuple[str, ...]
    out: Path = field(default=Path("results/sweep"))
    report: Path | None = None

    @property
    def report_folder(self) -> Path:
        """Where the report is written: ``report``, or ``out/report``."""
        return self.out / "report" if self.report is None else self.report

    @property
    def conditions(self) -> tuple[str, ...]:
        """The evaluation conditions' names."""
        return tuple(self.channels)

    def train_cells(self) -> list[TrainCell]:
        """Every training cell."""
        return [
            TrainCell(learner, scenario.name, seed, self.timesteps)
            for scenario in self.scenarios
            for learner in self.variants
            for seed in self.seeds
        ]

    def baseline_cells(self) -> list[EvalCell]:
        """Every evaluation cell of a baseline."""
        return [
            EvalCell(name, scenario.name, condition, self.episodes)
            for scenario in self.scenarios
            for condition in self.channels
            for name in self.baselines
        ]

    def learner_cells(self, train: TrainCell) -> list[EvalCell]:
        """The evaluation cells of one trained run, one per condition."""
        return [
            EvalCell(
                train.learner, train.scenario, condition, self.episodes, train.seed, train.timesteps
            )
            for condition in self.channels
        ]

    def trials(self) -> list[Trial]:
        """The trials with cells still to run (a cell whose file exists under ``out`` is done).

        A learner with evaluations still to run whose finished training left no run directory
        here (run directories are not kept with the cells) is trained again first, from its seed.
        """
        out = self.out.resolve()
        scenarios = {scenario.name: scenario for scenario in self.scenarios}
        trials = []
        for train in self.train_cells():
            evaluations = tuple(
                cell for cell in self.learner_cells(train) if read_cell(out, cell.key) is None
            )
            finished = read_cell(out, train.key)
            if finished is not None and not evaluations:
                continue
            run_dir = None if finished is None else recorded_run_dir(out, str(finished["run_dir"]))
            if run_dir is not None and not run_dir.is_dir():
                # run directories are not kept with the cells (a fresh clone has none): the
                # training runs again, from its seed, for the evaluations still to run
                run_dir = None
            trials.append(
                Trial(
                    name=f"{train.scenario}/{train.learner}/s{train.seed}",
                    scenario=scenarios[train.scenario],
                    evaluations=evaluations,
                    channels=self.channels,
                    train=None if run_dir is not None else train,
                    variant=self.variants[train.learner],
                    # absolute: a trial may run in another folder
                    run_dir=None if run_dir is None else str(run_dir.resolve()),
                    runs_dir=str(out / "runs"),
                )
            )
        for cell in self.baseline_cells():
            if read_cell(out, cell.key) is None:
                trials.append(
                    Trial(
                        name=f"{cell.scenario}/{cell.policy}/{cell.condition}",
                        scenario=scenarios[cell.scenario],
                        evaluations=(cell,),
                        channels=self.channels,
                    )
                )
        return trials

    def cell_count(self) -> int:
        """How many cells the sweep has in all."""
        return len(self.train_cells()) * (1 + len(self.channels)) + len(self.baseline_cells())

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data, for result documents."""
        return {
            "scenarios": [dataclasses.asdict(scenario) for scenario in self.scenarios],
            "learners": list(self.variants),
            "seeds": list(self.seeds),
            "timesteps": self.timesteps,
            "conditions": list(self.channels),
            "episodes": self.episodes,
            "baselines": list(self.baselines),
        }


def load_sweep(path: str | Path, **changes: Any) -> Sweep:
    """Read and check a sweep file.

    :param path: the YAML file
    :param changes: top-level entries that replace the file's (same form as in the file; None
        removes an entry)
    :raises FileNotFoundError: when the file, a trace or a profile is missing
    :raises ValueError: naming the first entry that is wrong
    """
    path = Path(path)
    document = read_yaml_mapping(path, "sweep file", "a mapping of sweep entries")
    document.update(changes)
    document = {key: value for key, value in document.items() if value is not None}
    try:
        return sweep_from_dict(document, path.resolve().parent)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def sweep_from_dict(document: Mapping[str, Any], root: Path) -> Sweep:
    """A :class:`Sweep` from the entries of a sweep file; relative paths are read from ``root``."""
    unknown = sorted(set(document) - _KEYS)
    if unknown:
        raise ValueError(f"unknown entries {unknown}; known: {', '.join(sorted(_KEYS))}")
    from splitrl.agents.baselines import causal_baselines
    from splitrl.evaluation.references import LINK_REFERENCE, UPPER_REFERENCE

    variants = _variants(document, root)
    channels = _channels(
        document.get("conditions", list(CHANNELS)), document.get("trace_dir"), root
    )
    baselines = document.get("baselines", [*causal_baselines(), LINK_REFERENCE, UPPER_REFERENCE])
    _check_baselines(baselines)
    seeds = document.get("seeds", 1)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(_positive("seeds", seeds)))
    if not isinstance(seeds, list) or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ValueError(f"seeds must be a count or a list of integers >= 0, got {seeds!r}")
    return Sweep(
        scenarios=_scenarios(document.get("scenarios", ["default"]), root),
        variants=variants,
        seeds=tuple(dict.fromkeys(seeds)),
        timesteps=_positive("timesteps", document.get("timesteps", 30_000)),
        channels=channels,
        episodes=_positive("episodes", document.get("episodes", 10)),
        baselines=tuple(baselines),
        out=Path(document.get("out", "results/sweep")),
        report=_folder("report", document.get("report")),
    )


def _folder(name: str, value: Any) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a folder path, got {value!r}")
    return Path(value)


def _positive(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _resolve(root: Path, text: str) -> Path:
    candidate = Path(text).expanduser()
    return candidate if candidate.is_absolute() else (root / candidate).resolve()


def _scenarios(entries: Any, root: Path) -> tuple[ScenarioSpec, ...]:
    from splitrl.envs import get_scenario

    if isinstance(entries, list):
        entries = {name: {} for name in entries}
    if not isinstance(entries, dict) or not entries:
        raise ValueError(f"scenarios must be a list of names or a mapping, got {entries!r}")
    specs = []
    for name, fields in entries.items():
        fields = dict(fields or {})
        base = str(fields.pop("scenario", name))
        get_scenario(base)
        unknown = sorted(set(fields) - set(SCENARIO_FIELDS))
        if unknown:
            raise ValueError(
                f"scenario {name}: unknown fields {unknown}; a sweep may set {', '.join(SCENARIO_FIELDS)}"
            )
        if "profile" in fields and Path(str(fields["profile"])).suffix in (".json", ".npz"):
            fields["profile"] = str(_resolve(root, str(fields["profile"])))
        specs.append(ScenarioSpec(str(name), base, fields))
    for spec in specs:
        spec.scenario()  # a clear error for a field of the wrong kind, before any work
    return tuple(specs)


def _variants(document: Mapping[str, Any], root: Path) -> dict[str, Variant]:
    from splitrl.agents import LEARNERS, get_learner

    defined = {}
    for name, entry in (document.get("variants") or {}).items():
        if not isinstance(entry, dict) or "algo" not in entry:
            raise ValueError(f"variant {name}: expected a mapping with 'algo', got {entry!r}")
        known = {"algo", "hyperparameters", "description", "channel", "validation", "horizon"}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ValueError(f"variant {name}: unknown entries {unknown}")
        channel = entry.get("channel")
        validation = entry.get("validation", 0)
        if isinstance(validation, bool) or not isinstance(validation, int) or validation < 0:
            raise ValueError(
                f"variant {name}: validation must be a whole number of steps, at least 0, got "
                f"{validation!r}"
            )
        horizon = entry.get("horizon")
        if horizon is not None and (
            isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1
        ):
            raise ValueError(
                f"variant {name}: horizon must be a whole number of requests, at least 1, got "
                f"{horizon!r}"
            )
        defined[str(name)] = Variant(
            str(entry["algo"]),
            dict(entry.get("hyperparameters") or {}),
            str(entry.get("description", "")),
            channel,
            validation,
            horizon,
        )
    learners = document.get("learners", ["sacd"])
    if isinstance(learners, str) or not isinstance(learners, list) or not learners:
        raise ValueError(f"learners must be a non-empty list of names, got {learners!r}")
    chosen: dict[str, Variant] = {}
    for name in learners:
        if name in defined:
            # only a chosen variant's traces are read: a sweep file may define variants that
            # train on traces a machine does not have
            variant = defined[name]
            chosen[name] = dataclasses.replace(
                variant, channel=_training_channel(root, variant.channel)
            )
        elif name in LEARNERS:
            chosen[name] = Variant(name)
        else:
            raise ValueError(f"unknown learner {name!r}; known: {', '.join([*LEARNERS, *defined])}")
    chosen = _crossed(chosen, document.get("grid") or {})
    from splitrl.training.config import validate_hyperparameters

    for name, variant in chosen.items():
        spec = get_learner(variant.algo)
        try:
            validate_hyperparameters(spec.resolved_hyperparameters(variant.hyperparameters))
        except ValueError as error:
            raise ValueError(f"learner {name}: {error}") from None
    return chosen


def _crossed(variants: Mapping[str, Variant], grid: Mapping[str, Any]) -> dict[str, Variant]:
    """Every variant with every combination of the grid's hyperparameter values."""
    if not isinstance(grid, Mapping) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ValueError(f"grid must map hyperparameters to non-empty lists, got {grid!r}")
    if not grid:
        return dict(variants)
    crossed = {}
    for name, variant in variants.items():
        for values in itertools.product(*grid.values()):
            setting = dict(zip(grid, values, strict=True))
            suffix = ",".join(f"{key}={value}" for key, value in setting.items())
            crossed[f"{name}+{suffix}"] = dataclasses.replace(
                variant,
                hyperparameters={**variant.hyperparameters, **setting},
                description=f"{variant.description} + {suffix}",
            )
    return crossed


def _training_channel(root: Path, channel: Any) -> Any:
    """A variant's training channel with its trace files made absolute (checked to be there)."""
    from splitrl.envs.channels.randomized import resolve_trace_paths

    return resolve_trace_paths(channel, lambda path: _existing_file(root, path))


def _existing_file(root: Path, text: str) -> Path:
    path = _resolve(root, text)
    if not path.is_file():
        raise FileNotFoundError(f"trace {path} not found")
    return path


def _channels(conditions: Any, trace_dir: Any, root: Path) -> dict[str, str]:
    from splitrl.envs.channels import make_channel

    if isinstance(conditions, str) or not isinstance(conditions, list):
        raise ValueError(f"conditions must be a list, got {conditions!r}")
    channels: dict[str, str] = {}
    for condition in conditions:
        condition = str(condition)
        if condition.startswith("trace:"):
            path = _existing_file(root, condition[len("trace:") :])
            channels[f"trace:{path.name}"] = f"trace:{path}"
        else:
            channels[condition] = condition
    if trace_dir is not None:
        folder = _resolve(root, str(trace_dir))
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.is_file() and path.suffix != ".md":
                    channels[f"trace:{path.name}"] = f"trace:{path}"
        else:
            print(f"no trace folder at {folder}: its trace conditions are skipped")
    if not channels:
        raise ValueError("the sweep has no evaluation condition")
    for name, channel in channels.items():
        if not channel.startswith("trace:"):
            try:
                make_channel(channel)
            except (ValueError, KeyError) as error:
                raise ValueError(f"condition {name}: {error}") from None
    return channels


def _check_baselines(names: Sequence[str]) -> None:
    from splitrl.agents import BASELINES

    if isinstance(names, str) or not isinstance(names, list):
        raise ValueError(f"baselines must be a list of names, got {names!r}")
    unknown = [name for name in names if name not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; known: {', '.join(BASELINES)}")
