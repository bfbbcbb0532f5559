"""The configuration of a training run: flags, config files, hyperparameter overrides, provenance.

A config file (``--conf-file``) is YAML with one section per algorithm, holding constructor keywords
of that algorithm (checked against its signature)::

    sacd:
      learning_rate: 3.0e-4
      batch_size: 256
      policy_kwargs: {net_arch: [128, 128], activation_fn: relu}
    ppo:
      n_steps: 2048

``--hyperparams k=v ...`` overrides single keys; each value is read as a YAML scalar or flow
collection (``gamma=0.95``, ``ent_coef=auto``, ``"policy_kwargs={net_arch: [32, 32]}"``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import yaml

from splitrl.agents.learners import LEARNERS
from splitrl.envs.channels.randomized import resolve_trace_paths
from splitrl.envs.scenarios import Scenario, get_scenario
from splitrl.files import read_yaml_mapping
from splitrl.profiles.io import resolve_profile_path, shipped_profiles_dir

#: timesteps of a default run: a few minutes of SACD on one CPU core
DEFAULT_TIMESTEPS = 30_000
#: env steps between evaluations of the current policy (0: no evaluation)
DEFAULT_EVAL_FREQ = 5_000
#: validation episodes per evaluation (the same ones every time; a later model replaces the best
#: one only when its paired gain over it is significant on them, see ``ValidationCallback``)
DEFAULT_EVAL_EPISODES = 10
#: env steps between checkpoints (0: only at the end and on interruption)
DEFAULT_CHECKPOINT_FREQ = 10_000
#: env steps between records of the split-computing metrics
DEFAULT_LOG_FREQ = 1_000
#: the evaluation env is seeded with ``seed + EVAL_SEED_OFFSET``, apart from the training envs
EVAL_SEED_OFFSET = 10_000
#: version of the run config format
CONFIG_FORMAT = 1

#: scenario fields a run may replace; run configs store them under these names (the env's keywords)
SCENARIO_OVERRIDES = ("profile", "device", "channel", "reward", "horizon", "link_quality")

VecEnvKind = Literal["dummy", "subproc"]

#: the key of a :class:`Flag` in a :class:`TrainConfig` field's metadata
FLAG = "flag"


@dataclass(frozen=True)
class Flag:
    """How a :class:`TrainConfig` field is set on the command line of ``splitrl train``.

    The command's options, their checks and the set of flags that ``--resume`` refuses are all
    generated from these (``splitrl.training.cli``); :class:`TrainConfig` applies the same checks.

    :param group: the help section: ``"what"`` to train, ``"how"`` to train, ``"output"``
    :param help: one line for ``--help`` (the field's default is appended when it is not ``None``)
    :param name: the option (default: ``--`` and the field's name with dashes)
    :param minimum: for integers, the smallest value allowed
    :param choices: the values allowed
    :param const: a flag without a value that sets the field to ``const``
    :param resumable: whether ``--resume`` accepts it (it changes how long or how often, not what
        the run is)
    """

    group: Literal["what", "how", "output"]
    help: str
    name: str | None = None
    minimum: int | None = None
    choices: tuple[str, ...] | None = None
    const: Any = None
    resumable: bool = False

    def option(self, field_name: str) -> str:
        """The option of the field called ``field_name``: :attr:`name`, or ``--field-name``."""
        return self.name or "--" + field_name.replace("_", "-")


def _flag(group: Literal["what", "how", "output"], help: str, **options: Any) -> dict[str, Flag]:
    """The metadata of a :class:`TrainConfig` field set by a flag."""
    return {FLAG: Flag(group, help, **options)}


@dataclass
class TrainConfig:
    """Everything a training run needs; the flags of ``splitrl train``.

    :param algo: a learner of :data:`splitrl.agents.learners.LEARNERS`
    :param scenario: a named scenario (``splitrl.envs.SCENARIOS``)
    :param profile: profile name or path that replaces the scenario's
    :param device_preset: device preset that replaces the scenario's
    :param channel: channel model (``markov``, ``gilbert-elliott``, ``fading``, ``constant``, ...),
        ``trace:PATH`` or ``traces:PATH,PATH,...`` (a trace mix) that replaces the scenario's
    :param reward: reward preset that replaces the scenario's
    :param horizon: requests per episode, replacing the scenario's
    :param link_quality: ``False`` drops the radio's link-rate report from the observation
        (throughput-only studies); ``None`` keeps the scenario's choice
    :param reward_correctness: correctness in the training reward: ``"expected"`` (the profile's
        accuracy of the chosen action) or ``"sample"`` (the drawn sample's own outcome). The device
        never sees which sample it classifies, so both have the same optimal policy; ``"expected"``
        removes the per-sample coin flip (a noise of about 0.4 per request, where good and bad
        actions differ by hundredths). Evaluation always uses the scenario's own rule.
    :param timesteps: total env steps to train
    :param seed: seed of the model and the training envs
    :param n_envs: parallel training envs
    :param vec_env: ``"dummy"`` (one process) or ``"subproc"`` (one process per env)
    :param hyperparameters: constructor keywords that replace the learner's defaults
    :param eval_freq: env steps between evaluations (0: none)
    :param n_eval_episodes: validation episodes per evaluation (at least 2)
    :param checkpoint_freq: env steps between checkpoints (0: only at the end or on interruption)
    :param log_freq: env steps between records of the split-computing metrics
    :param torch_device: torch device (``cpu``, ``cuda``, ``auto``)
    :param out: the folder that receives the run directory
    """

    algo: str = field(
        default="sacd",
        metadata=_flag("what", f"learner: {', '.join(LEARNERS)}"),
    )
    scenario: str = field(
        default="default", metadata=_flag("what", "named scenario, or a scenario file (.yaml)")
    )
    profile: str | None = field(
        default=None, metadata=_flag("what", "profile name or path, replacing the scenario's")
    )
    device_preset: str | None = field(
        default=None, metadata=_flag("what", "device preset, replacing the scenario's")
    )
    channel: str | None = field(
        default=None,
        metadata=_flag(
            "what",
            "channel model (markov, gilbert-elliott, fading, constant, randomized, cellular, "
            "randomized-cellular, randomized-all), trace:PATH, or traces:PATH,PATH,... (a "
            "recorded trace drawn every episode)",
        ),
    )
    reward: str | None = field(
        default=None, metadata=_flag("what", "reward preset, replacing the scenario's")
    )
    horizon: int | None = field(
        default=None,
        metadata=_flag("what", "requests per episode, replacing the scenario's", minimum=1),
    )
    link_quality: bool | None = field(
        default=None,
        metadata=_flag(
            "what",
            "observe throughput only, without the radio's link-rate report",
            name="--no-link-quality",
            const=False,
        ),
    )
    reward_correctness: str = field(
        default="expected",
        metadata=_flag(
            "what",
            "correctness in the training reward: the action's accuracy (less noise) or the drawn "
            "sample's outcome",
            choices=("expected", "sample"),
        ),
    )
    timesteps: int = field(
        default=DEFAULT_TIMESTEPS,
        metadata=_flag(
            "how",
            "total env steps (with --resume: the run's new target)",
            minimum=1,
            resumable=True,
        ),
    )
    seed: int = field(default=0, metadata=_flag("how", "seed of model and envs", minimum=0))
    n_envs: int = field(default=1, metadata=_flag("how", "parallel training envs", minimum=1))
    vec_env: VecEnvKind = field(
        default="dummy", metadata=_flag("how", "vectorization", choices=("dummy", "subproc"))
    )
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    eval_freq: int = field(
        default=DEFAULT_EVAL_FREQ,
        metadata=_flag(
            "output", "env steps between evaluations, 0 for none", minimum=0, resumable=True
        ),
    )
    n_eval_episodes: int = field(
        default=DEFAULT_EVAL_EPISODES,
        metadata=_flag(
            "output", "validation episodes per evaluation", name="--eval-episodes", minimum=2
        ),
    )
    checkpoint_freq: int = field(
        default=DEFAULT_CHECKPOINT_FREQ,
        metadata=_flag(
            "output", "env steps between checkpoints, 0 for end only", minimum=0, resumable=True
        ),
    )
    log_freq: int = field(
        default=DEFAULT_LOG_FREQ,
        metadata=_flag("output", "env steps between split-computing metrics", minimum=1),
    )
    torch_device: str = field(
        default="cpu", metadata=_flag("how", "torch device: cpu, cuda, auto", name="--device")
    )
    out: str | Path = field(
        default="runs", metadata=_flag("output", "folder that receives the run directory")
    )

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            flag, value = item.metadata.get(FLAG), getattr(self, item.name)
            if flag is None or (value is None and item.default is None):
                continue
            if flag.minimum is not None and not (
                isinstance(value, int) and not isinstance(value, bool) and value >= flag.minimum
            ):
                raise ValueError(f"{item.name} must be an integer >= {flag.minimum}, got {value!r}")
            if flag.choices is not None and value not in flag.choices:
                choices = " or ".join(repr(choice) for choice in flag.choices)
                raise ValueError(f"{item.name} must be {choices}, got {value!r}")
        check_torch_device(self.torch_device)

    def scenario_overrides(self) -> dict[str, Any]:
        """The scenario fields this config replaces, with paths made absolute."""
        overrides: dict[str, Any] = {
            "profile": self.profile,
            "device": self.device_preset,
            "channel": self.channel,
            "reward": self.reward,
            "horizon": self.horizon,
            "link_quality": self.link_quality,
        }
        if self.profile is not None:
            candidate = Path(self.profile)
            if candidate.suffix in (".json", ".npz") or candidate.with_suffix(".json").exists():
                overrides["profile"] = str(resolve_profile_path(candidate).resolve())
        overrides["channel"] = resolve_trace_paths(self.channel, lambda path: Path(path).resolve())
        return {key: value for key, value in overrides.items() if value is not None}

    def effective_scenario(self) -> Scenario:
        """The named scenario with this config's overrides applied."""
        return dataclasses.replace(get_scenario(self.scenario), **self.scenario_overrides())


def flags() -> dict[str, Flag]:
    """The :class:`Flag` of every :class:`TrainConfig` field set on the command line, in order."""
    return {
        item.name: item.metadata[FLAG]
        for item in dataclasses.fields(TrainConfig)
        if FLAG in item.metadata
    }


#: hyperparameter -> (rule, check): the ranges :func:`validate_hyperparameters` enforces
_HYPERPARAMETER_RULES: dict[str, tuple[str, Callable[[Any], bool]]] = {}


def _rule(names: Sequence[str], rule: str, check: Callable[[Any], bool]) -> None:
    for name in names:
        _HYPERPARAMETER_RULES[name] = (rule, check)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_entropy_coefficient(value: Any) -> bool:
    if isinstance(value, str):
        if value == "auto":
            return True
        prefix, _, initial = value.partition("_")
        try:
            return prefix == "auto" and float(initial) > 0
        except ValueError:
            return False
    return _is_real(value) and value >= 0


def _is_train_freq(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return (
            len(value) == 2
            and _is_int(value[0])
            and value[0] >= 1
            and value[1] in ("step", "episode")
        )
    return _is_int(value) and value >= 1


_rule(
    (
        "batch_size",
        "buffer_size",
        "n_steps",
        "n_epochs",
        "target_update_interval",
        "stats_window_size",
    ),
    "an integer > 0",
    lambda v: _is_int(v) and v > 0,
)
_rule(("learning_starts",), "an integer >= 0", lambda v: _is_int(v) and v >= 0)
_rule(("gradient_steps",), "an integer >= 1, or -1", lambda v: _is_int(v) and (v >= 1 or v == -1))
_rule(("train_freq",), "an integer >= 1 or [n, 'step' | 'episode']", _is_train_freq)
_rule(
    ("gamma", "tau", "target_entropy_ratio"),
    "a number in (0, 1]",
    lambda v: _is_real(v) and 0 < v <= 1,
)
_rule(
    ("gae_lambda", "exploration_fraction", "exploration_initial_eps", "exploration_final_eps"),
    "a number in [0, 1]",
    lambda v: _is_real(v) and 0 <= v <= 1,
)
_rule(("learning_rate", "clip_range"), "a number > 0", lambda v: _is_real(v) and v > 0)
_rule(("ent_coef",), "a number >= 0, 'auto' or 'auto_<initial value>'", _is_entropy_coefficient)
_rule(("vf_coef",), "a number >= 0", lambda v: _is_real(v) and v >= 0)
_rule(
    ("max_grad_norm",),
    "a number > 0 (or null for none)",
    lambda v: v is None or (_is_real(v) and v > 0),
)


def validate_hyperparameters(hyperparameters: Mapping[str, Any]) -> None:
    """Check the type and range of every hyperparameter that has a rule, before anything runs.

    The keys themselves are checked against the algorithm's constructor by
    :meth:`splitrl.agents.learners.LearnerSpec.check_hyperparameters`; Stable-Baselines3 checks few
    values at construction, so a ``batch_size`` of ``12.5`` or a ``gamma`` of ``5`` would otherwise
    fail (or train nonsense) only once learning starts.

    :raises ValueError: naming the first hyperparameter out of its range
    """
    for name, value in hyperparameters.items():
        if name in _HYPERPARAMETER_RULES:
            rule, check = _HYPERPARAMETER_RULES[name]
            if not check(value):
                raise ValueError(f"invalid hyperparameters: {name} must be {rule}, got {value!r}")


def check_torch_device(name: str) -> None:
    """Refuse a torch device name that torch does not know (``auto`` is Stable-Baselines3's).

    :raises ValueError: naming the device
    """
    if name == "auto":
        return
    import torch

    try:
        torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"unknown torch device {name!r}; use cpu, cuda, cuda:N, mps or auto"
        ) from None


def profile_identity(name_or_path: str | Path) -> dict[str, str]:
    """What identifies a profile: its name, its JSON file and the SHA-256 of its arrays.

    Two runs trained on profiles with the same ``arrays_sha256`` saw the same per-sample outcomes.
    ``source`` is ``shipped:NAME`` for a profile shipped with splitrl (so that a run record does
    not name the folder splitrl was installed in), else the JSON file's absolute path.
    """
    json_path = resolve_profile_path(name_or_path).resolve()
    document = json.loads(json_path.read_text())
    shipped = json_path.parent == shipped_profiles_dir().resolve()
    return {
        "name": str(document["name"]),
        "source": f"shipped:{json_path.stem}" if shipped else str(json_path),
        "arrays_sha256": str(document["arrays"]["sha256"]),
    }


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries a run depends on."""
    versions = {"python": platform.python_version()}
    for package in ("splitrl", "torch", "stable-baselines3", "sb3-contrib", "gymnasium", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def load_conf_file(path: str | Path, algo: str, known_algos: Sequence[str]) -> dict[str, Any]:
    """The hyperparameters of ``algo`` in a YAML config file.

    :param path: the config file
    :param algo: the algorithm whose section is returned
    :param known_algos: valid section names
    :raises FileNotFoundError: when the file is missing
    :raises ValueError: for a file that is not YAML, not a mapping of sections, names an unknown
        algorithm or has no section for ``algo``
    """
    path = Path(path)
    document = read_yaml_mapping(
        path, "config file", "a mapping of algorithm sections (e.g. 'sacd:')"
    )
    unknown = sorted(str(key) for key in document if key not in known_algos)
    if unknown:
        raise ValueError(
            f"{path}: unknown algorithm sections {unknown}; known: {', '.join(known_algos)}"
        )
    if algo not in document:
        raise ValueError(
            f"{path}: no section for algorithm {algo!r} (sections: {', '.join(map(str, document))})"
        )
    section = document[algo] or {}
    if not isinstance(section, dict):
        raise ValueError(f"{path}: section {algo!r} must be a mapping of hyperparameters")
    return {str(key): value for key, value in section.items()}


def parse_hyperparams(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` overrides; each value is read as YAML (``0.95``, ``auto``, ``[64, 64]``).

    :raises ValueError: for an item without ``=``, an empty key or a value that is not YAML
    """
    parsed: dict[str, Any] = {}
    for item in items:
        key, separator, text = item.partition("=")
        key = key.strip()
        if not separator or not key:
            raise ValueError(f"--hyperparams expects key=value, got {item!r}")
        try:
            parsed[key] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as error:
            raise ValueError(f"--hyperparams {key}: value {text!r} is not valid YAML") from error
    return parsed
