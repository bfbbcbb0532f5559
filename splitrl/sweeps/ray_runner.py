"""Sweeps and hyperparameter searches on Ray Tune: the one module of splitrl that imports Ray.

Why Tune trials rather than plain Ray tasks: a trial is a task plus what a sweep needs around it,
namely a live table of the trials (running, done, failed), one CPU per trial scheduled on any node,
a trial that raises recorded while the others run on, and the experiment's files on a
``storage_path`` that may be shared storage of a cluster. ``splitrl tune`` needs Tune anyway (the
search algorithm and the early stopping), so both commands run on one engine.

Every cell a trial finishes is reported to the driver (``tune.report``), which writes the cell's
file under the results folder at once (:class:`_CellWriter`): the results land on the machine that
runs ``splitrl sweep``, whichever node ran the cell, and a sweep stopped half way resumes from them.
Each result records the Ray node that ran it (``node_id``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import ray
from ray import tune

from splitrl.sweeps.cells import (
    RunSummary,
    Trial,
    error_line,
    errors_as_text,
    run_trial,
    write_cell,
)

# Tune's own per-trial CSV, JSON and TensorBoard files would duplicate the cell files (and the
# results read back only the trials' configs and errors, so their absence is no warning).
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Connect to Ray for the duration of the block.

    :param address: ``None`` starts Ray on this machine (and stops it afterwards); ``"auto"`` or
        ``HOST:PORT`` joins a running cluster. When this process is already connected, that
        connection is used as it is.
    :param num_cpus: CPUs of a local Ray (default: every CPU); ignored when joining a cluster
    """
    if ray.is_initialized():
        yield
        return
    if address is None:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    else:
        try:
            ray.init(address=address, log_to_driver=False)
        except ConnectionError as error:
            raise ConnectionError(f"no Ray cluster at {address}: {error}") from None
    try:
        yield
    finally:
        ray.shutdown()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", name)[:80]


def _run_one(config: Mapping[str, Any], trials: Sequence[Trial]) -> None:
    """The Tune trainable of a sweep: run one trial, reporting every finished cell."""
    node = {"node_id": ray.get_runtime_context().get_node_id()}
    done = 0

    def report(key: str, result: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        tune.report({"cell": key, "cells_done": done, "result_json": json.dumps(result)})

    with errors_as_text():
        run_trial(trials[int(config["index"])], report, node=node)


class _CellWriter(tune.Callback):
    """Writes each cell result a trial reports to its file under ``out`` (in the driver)."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_trial_result(
        self, iteration: int, trials: Any, trial: Any, result: dict, **info: Any
    ) -> None:
        if "result_json" in result:
            write_cell(self.out, str(result["cell"]), json.loads(result["result_json"]))


def run_on_ray(
    trials: Sequence[Trial], out: Path, *, storage_path: Path | str | None = None
) -> RunSummary:
    """Run ``trials`` as Ray Tune trials with one CPU each, on the Ray this process is connected to
    (:func:`ray_session`); a trial that raises is reported and the others run on.

    :param out: the results folder (cell files)
    :param storage_path: Tune's experiment folder (default: ``OUT/ray``); on a cluster, shared
        storage that every node reaches (a path mounted everywhere, or ``s3://...``)
    """
    summary = RunSummary()
    if not trials:
        return summary
    storage = str(storage_path) if storage_path is not None else str((out / "ray").resolve())
    names = [_slug(f"{index:04d}_{trial.name}") for index, trial in enumerate(trials)]
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_run_one, trials=list(trials)), {"cpu": 1}),
        param_space={"index": tune.grid_search(list(range(len(trials))))},
        tune_config=tune.TuneConfig(
            trial_name_creator=lambda t: names[int(t.config["index"])],
            trial_dirname_creator=lambda t: names[int(t.config["index"])],
            # a trial's process keeps its imports (torch, Stable-Baselines3) for the next trial
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"sweep_{datetime.now():%Y%m%d-%H%M%S}",
            storage_path=storage,
            callbacks=[_CellWriter(out)],
            failure_config=tune.FailureConfig(max_failures=0),
            verbose=1,
        ),
    )
    results = tuner.fit()
    for index in range(len(results)):
        result = results[index]
        trial = trials[int((result.config or {})["index"])]
        if result.error is None:
            summary.finished.append(trial.name)
        else:
            summary.failed[trial.name] = error_line(result.error)
    return summary


def _search_one(config: dict[str, Any], function: TrialFunction) -> None:
    """The Tune trainable of a search: run one trial, reporting to Tune."""
    with errors_as_text():
        function(dict(config), tune.report, Path(tune.get_context().get_trial_dir()))


#: runs one search trial: ``(sampled values, report, trial folder)``; reports ``timesteps`` and
#: the metric to maximize
TrialFunction = Callable[[dict[str, Any], Callable[[dict[str, Any]], None], Path], None]


def search_on_ray(
    function: TrialFunction,
    space: Callable[[Any], dict[str, Any] | None],
    *,
    metric: str,
    trials: int,
    max_t: int,
    grace_period: int,
    seed: int,
    storage_path: str,
    name: str,
) -> tuple[dict[str, Any], float, RunSummary]:
    """Search hyperparameters with Optuna's TPE sampler (``OptunaSearch``) and ASHA early
    stopping on ``metric``, one CPU per trial, on the Ray this process is connected to.

    :param function: runs one trial (a picklable callable, see :data:`TrialFunction`)
    :param space: the define-by-run search space (samples from an ``optuna.Trial``)
    :param metric: the reported value to maximize
    :param trials: how many trials
    :param max_t: the most ``timesteps`` a trial runs
    :param grace_period: ``timesteps`` before ASHA may stop a trial
    :param seed: the sampler's seed
    :param storage_path: Tune's experiment folder
    :param name: the experiment's name
    :return: the best trial's sampled values, its best ``metric``, and what became of the trials
    """
    import optuna
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    search = OptunaSearch(
        space=space, metric=metric, mode="max", sampler=optuna.samplers.TPESampler(seed=seed)
    )
    scheduler = ASHAScheduler(
        time_attr="timesteps", max_t=max_t, grace_period=grace_period, reduction_factor=3
    )
    best = _BestTracker(metric)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_search_one, function=function), {"cpu": 1}),
        tune_config=tune.TuneConfig(
            metric=metric, mode="max", search_alg=search, scheduler=scheduler, num_samples=trials
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path,
            callbacks=[best],
            failure_config=tune.FailureConfig(max_failures=0),
            verbose=1,
        ),
    )
    results = tuner.fit()
    summary = RunSummary()
    for index in range(len(results)):
        result = results[index]
        label = f"trial {index}"
        if result.error is None:
            summary.finished.append(label)
        else:
            summary.failed[label] = error_line(result.error)
    if not best.scores:
        raise RuntimeError(f"no trial reported {metric}: {summary.failed}")
    trial_id = max(best.scores, key=best.scores.__getitem__)
    return best.configs[trial_id], best.scores[trial_id], summary


class _BestTracker(tune.Callback):
    """The highest ``metric`` every trial reported, and its config (in the driver)."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.scores: dict[str, float] = {}
        self.configs: dict[str, dict[str, Any]] = {}

    def on_trial_result(
        self, iteration: int, trials: Any, trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        if self.metric in result and result[self.metric] > self.scores.get(
            trial.trial_id, -math.inf
        ):
            self.scores[trial.trial_id] = float(result[self.metric])
            self.configs[trial.trial_id] = dict(trial.config)
