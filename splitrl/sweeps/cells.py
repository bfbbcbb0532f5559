"""The cells of a sweep: one training run, or one policy on one condition's evaluation episodes.

A cell is a pure function of its inputs that returns a result dict, written to its own JSON file
``OUT/<key>.json`` by whoever runs it (:func:`write_cell`); a cell whose file exists is finished.

* a **training cell** (:class:`TrainCell`: variant, scenario, seed, steps) trains one run and
  returns its run directory (relative to the sweep's folder: :func:`recorded_run_dir`) and the
  seconds it took;
* an **evaluation cell** (:class:`EvalCell`: policy, scenario, condition, seed) runs one trained
  run, or one baseline, on the condition's seeded evaluation episodes (the same episodes for every
  policy: common random numbers) and returns the mean reward per request of every episode.

A :class:`Trial` groups the cells that run together on one worker: a learner's training and then
its evaluation on every condition (the evaluation reads the run directory the training wrote), or
one baseline on one condition.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: validation episodes of a variant with ``validation`` steps (seeds from the run's seed + 10 000)
VALIDATION_EPISODES = 5
#: first reset seed of the evaluation episodes (apart from training and validation seeds)
EVAL_SEED = 1_000_000


@dataclass(frozen=True)
class Variant:
    """A learner with hyperparameters that replace its defaults (a row of an ablation).

    :param algo: a learner of :data:`splitrl.agents.LEARNERS`
    :param hyperparameters: constructor keywords that replace the learner's defaults
    :param description: what the variant changes, for tables
    :param channel: the training channel, replacing the scenario's (``"randomized"``: domain
        randomization over the synthetic models; ``"trace:PATH"``: a trace file;
        ``"traces:PATH,PATH,..."``: a recorded trace drawn every episode)
    :param validation: steps between validations during training (``splitrl train
        --eval-freq``, on :data:`VALIDATION_EPISODES` episodes of the training channel); the
        evaluated model is then the run's ``best_model.zip``. 0: no validation, the final model
    :param horizon: requests per training episode, replacing the scenario's (with randomized
        channels, shorter episodes draw more channels in the same steps); the evaluation
        episodes keep the scenario's length. None: the scenario's
    """

    algo: str
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    description: str = "defaults"
    channel: str | None = None
    validation: int = 0
    horizon: int | None = None


@dataclass(frozen=True)
class ScenarioSpec:
    """A named scenario with fields replaced, as a sweep names it.

    :param name: the name in cell keys and tables
    :param base: the named scenario (``splitrl.envs.SCENARIOS``) it starts from
    :param overrides: :class:`~splitrl.envs.Scenario` fields that replace the base's (``profile``,
        ``device``, ``reward``, ``horizon``, ``link_quality``), paths absolute
    """

    name: str
    base: str
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def scenario(self, channel: str | None = None) -> Any:
        """The :class:`~splitrl.envs.Scenario`, with ``channel`` replacing its own if given."""
        from splitrl.envs import get_scenario

        changes = dict(self.overrides)
        if channel is not None:
            changes["channel"] = channel
        return dataclasses.replace(get_scenario(self.base), **changes)


@dataclass(frozen=True)
class TrainCell:
    """One training run.

    :param learner: the variant's name
    :param scenario: the scenario's name
    :param seed: the training seed
    :param timesteps: training steps
    """

    learner: str
    scenario: str
    seed: int
    timesteps: int

    @property
    def key(self) -> str:
        """The cell's file name under the results folder, without ``.json``."""
        return f"train/{self.scenario}/{self.learner}_t{self.timesteps}_s{self.seed}"


@dataclass(frozen=True)
class EvalCell:
    """One policy on one condition's evaluation episodes.

    :param policy: a variant's name (with ``seed`` and ``timesteps``) or a baseline's name
    :param scenario: the scenario's name
    :param condition: ``markov``, ``fading``, ``gilbert-elliott``, ... or ``trace:NAME``
    :param episodes: evaluation episodes (reset seeds ``EVAL_SEED ..``)
    :param seed: the training seed of a learner; -1 for a baseline
    :param timesteps: the training steps of a learner; 0 for a baseline
    """

    policy: str
    scenario: str
    condition: str
    episodes: int
    seed: int = -1
    timesteps: int = 0

    @property
    def key(self) -> str:
        """The cell's file name under the results folder, without ``.json``."""
        name = self.policy if self.seed < 0 else f"{self.policy}_t{self.timesteps}_s{self.seed}"
        condition = self.condition.replace(":", "-")
        return f"eval/{self.scenario}/{condition}/e{self.episodes}/{name}"


def train_cell(
    cell: TrainCell, variant: Variant, scenario: ScenarioSpec, runs_dir: str
) -> dict[str, Any]:
    """Train one run with the variant's hyperparameters; its directory and seconds.

    :param runs_dir: the folder that receives ``<learner>/<run directory>``
    """
    import torch

    from splitrl.training.config import TrainConfig
    from splitrl.training.trainer import train

    torch.set_num_threads(1)
    started = time.perf_counter()
    overrides = scenario.overrides
    config = TrainConfig(
        algo=variant.algo,
        scenario=scenario.base,
        profile=overrides.get("profile"),
        device_preset=overrides.get("device"),
        reward=overrides.get("reward"),
        horizon=overrides.get("horizon") if variant.horizon is None else variant.horizon,
        link_quality=overrides.get("link_quality"),
        seed=cell.seed,
        timesteps=cell.timesteps,
        channel=variant.channel,
        hyperparameters=dict(variant.hyperparameters),
        eval_freq=variant.validation,
        n_eval_episodes=VALIDATION_EPISODES,
        checkpoint_freq=0,
        out=str(Path(runs_dir) / cell.learner),
    )
    result = train(config)
    seconds = time.perf_counter() - started
    return {
        # relative to the sweep's folder, so that the cell stays right wherever the folder moves
        "run_dir": Path(result.run_dir.path).relative_to(Path(runs_dir).parent).as_posix(),
        "seconds": seconds,
        "seconds_per_10k_steps": seconds / cell.timesteps * 10_000,
    }


def eval_cell(
    cell: EvalCell, scenario: ScenarioSpec, channel: str, run_dir: str | None = None
) -> dict[str, Any]:
    """The mean reward per request of every evaluation episode of one policy in one condition.

    :param channel: the condition's channel (a model name or ``trace:PATH``)
    :param run_dir: the trained run of a learner cell; None for a baseline
    """
    import torch

    from splitrl.agents import Policy, make_baseline
    from splitrl.agents.baselines import fitted_baselines
    from splitrl.agents.rollout import run_episodes
    from splitrl.envs import SplitComputingEnv
    from splitrl.evaluation.defaults import DEFAULT_FIT_EPISODES, DEFAULT_FIT_SEED
    from splitrl.training.run_dir import RunDirectory

    torch.set_num_threads(1)
    evaluated = scenario.scenario(channel)
    started = time.perf_counter()
    policy: Policy
    if run_dir is not None:
        run = RunDirectory(Path(run_dir))
        # a run validated during training is evaluated with the model its validation kept
        policy = run.load_policy("best" if run.best_model_path.exists() else "final")
    elif cell.policy in fitted_baselines():
        policy = make_baseline(
            cell.policy,
            env_factory=lambda: SplitComputingEnv(evaluated),
            episodes=DEFAULT_FIT_EPISODES,
            seed=DEFAULT_FIT_SEED,
        )
    else:
        policy = make_baseline(cell.policy)
    env = SplitComputingEnv(evaluated)
    rollout = run_episodes(policy, env, range(EVAL_SEED, EVAL_SEED + cell.episodes))
    return {
        "episode_rewards": rollout.reward.mean(axis=1).tolist(),
        "requests_per_episode": env.horizon,
        "offload_fraction": float((rollout.payload_bytes > 0).mean()),
        "deadline_miss_fraction": float(rollout.deadline_missed.mean()),
        "seconds": time.perf_counter() - started,
    }


@dataclass(frozen=True)
class Trial:
    """The cells that run together on one worker, and what they need.

    :param name: the trial's name in progress tables
    :param scenario: the scenario of every cell
    :param evaluations: the evaluation cells still to run
    :param channels: the channel of every condition evaluated (a model name or ``trace:PATH``)
    :param train: the training cell still to run, or None (a baseline, or a finished training)
    :param variant: the learner's variant (None for a baseline)
    :param run_dir: the run directory of a finished training, when ``train`` is None
    :param runs_dir: the folder that receives new run directories
    """

    name: str
    scenario: ScenarioSpec
    evaluations: tuple[EvalCell, ...]
    channels: Mapping[str, str]
    train: TrainCell | None = None
    variant: Variant | None = None
    run_dir: str | None = None
    runs_dir: str = ""

    @property
    def keys(self) -> list[str]:
        """The keys of the cells this trial writes."""
        return [*([self.train.key] if self.train else []), *(c.key for c in self.evaluations)]


#: receives each finished cell of a trial: its key and its result document
CellSink = Callable[[str, dict[str, Any]], None]


def run_trial(trial: Trial, sink: CellSink, *, node: Mapping[str, str] | None = None) -> None:
    """Run a trial's cells in order, handing each result to ``sink`` as soon as it is done.

    Every result holds the cell itself (``"cell"``) and the host it ran on (``"hostname"``, and
    ``node``'s entries when given). An exception stops the trial: the cells before it were handed
    over already.
    """
    where = {"hostname": socket.gethostname(), **(node or {})}
    run_dir = trial.run_dir
    if trial.train is not None:
        if trial.variant is None:
            raise ValueError(f"trial {trial.name}: a training needs a variant")
        result = train_cell(trial.train, trial.variant, trial.scenario, trial.runs_dir)
        sink(trial.train.key, {"cell": dataclasses.asdict(trial.train), **result, **where})
        run_dir = str(recorded_run_dir(Path(trial.runs_dir).parent, str(result["run_dir"])))
    for cell in trial.evaluations:
        result = eval_cell(
            cell,
            trial.scenario,
            trial.channels[cell.condition],
            run_dir if cell.seed >= 0 else None,
        )
        sink(cell.key, {"cell": dataclasses.asdict(cell), **result, **where})


@contextmanager
def errors_as_text() -> Iterator[None]:
    """Re-raise an exception as a ``RuntimeError`` that holds its traceback as text.

    A runner sends a failed trial's exception to the driver pickled, and not every exception
    unpickles (one whose constructor takes more than its message does not, which breaks a process
    pool and hides the error on Ray); its text always does.
    """
    try:
        yield
    except Exception as error:
        raise RuntimeError("".join(traceback.format_exception(error)).strip()) from None


def error_line(error: BaseException) -> str:
    """The last line of a failed trial's error: the exception the trial raised (a Ray error
    wraps it as its ``cause``)."""
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip().splitlines()
    return text[-1] if text else type(cause).__name__


def cell_path(out: Path, key: str) -> Path:
    """The file of the cell ``key`` under the results folder ``out``."""
    return out / f"{key}.json"


def recorded_run_dir(out: Path, recorded: str) -> Path:
    """The run directory a finished training cell of the sweep folder ``out`` names.

    Cells name it relative to ``out`` (``runs/<learner>/<run>``). Older cells hold the path where
    the sweep ran (absolute, or relative to the folder it ran from); one that is not there is
    looked for under ``out/runs``, where every sweep writes its runs, so that a moved or cloned
    folder still finds them. The path returned may not exist: run directories are not kept with
    the cells.
    """
    path = Path(recorded)
    as_recorded = path if path.is_absolute() else out / path
    if as_recorded.is_dir() or len(path.parts) < 3:
        return as_recorded
    under_out = out / "runs" / path.parts[-2] / path.parts[-1]
    return under_out if under_out.is_dir() else as_recorded


def read_cell(out: Path, key: str) -> dict[str, Any] | None:
    """The result of a finished cell, or None when it has not run."""
    path = cell_path(out, key)
    if not path.is_file():
        return None
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def write_cell(out: Path, key: str, result: Mapping[str, Any]) -> Path:
    """Write a cell's result atomically (a crash leaves no partial file, so resume stays right)."""
    from splitrl.files import atomic_write

    path = cell_path(out, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1).encode()
    atomic_write(path, lambda file: file.write(text))
    return path


@dataclass
class RunSummary:
    """What became of the trials of one run.

    :param finished: the names of the trials that finished
    :param failed: the error of every trial that raised, by trial name
    """

    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
