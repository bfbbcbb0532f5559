"""The exported policy: ``policy.onnx`` run with onnxruntime and its metadata ``policy.json``.

``policy.onnx`` maps a float32 observation batch ``[batch, n_features]`` (input ``observation``) to
int64 actions ``[batch, 3]`` (output ``action``: exit, split, bit option). The mask of canonical
actions, the argmax and the unravelling of the flat index are inside the graph, so the device only
builds the observation and reads three integers.

``policy.json`` holds what the device needs to build that observation exactly as the environment
does (the observation's version, feature names, the scaling constants, the prior throughput, the
deadline, the frame interval and the link-quality model), the action table, the codec settings of
the payloads, the identity of the scenario and profile the policy was trained on, and library
versions.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from splitrl.envs.actions import ActionTable
from splitrl.envs.exit_gate import exit_gate_of
from splitrl.envs.link_quality import LinkQualityModel
from splitrl.envs.observation import OBSERVATION_VERSION, DeviceKnowledge, ObservationLayout
from splitrl.runtime.segments import file_sha256, open_onnx_session

if TYPE_CHECKING:
    from splitrl.agents.features import DeviceActionValues

POLICY_ONNX = "policy.onnx"
POLICY_JSON = "policy.json"
POLICY_FORMAT = 1
#: the folder of an export that holds what the device forecasts with (a policy that observes
#: predicted values): the scenario (:data:`FORECAST_SCENARIO`) and the profile it was trained on,
#: and for a rule that acts on a learned link forecast (``mpc-quantile``), that forecast
#: (:data:`FORECAST_LINK_MODEL`)
FORECAST_DIR = "forecast"
FORECAST_SCENARIO = "scenario.json"
FORECAST_LINK_MODEL = "link_forecast.npz"

#: how each observation feature is computed (documentation stored in policy.json)
FEATURE_SCALING = {
    "throughput_k": "log10(bit/s / 1e6) / 3 clipped to [-1, 1]; newest first; prior_bps before any",
    "link_quality": "the radio's link-rate report in bit/s, scaled like throughput_k",
    "estimate_age": "age / (age + 1 s), age = seconds since the last transfer ended (1 if none)",
    "last_latency": "latency of the last completed request / deadline_s, clipped to [0, 10]",
    "server_load": "utilization reported in the last reply, [0, 1]",
    "backlog": "seconds the request waited for the device / frame_interval_s, clipped to [0, 10]",
}
#: how the predicted-value features are computed (stored when the policy observes them)
PREDICTED_VALUES_SCALING = (
    "one per flat action (C order over exit, split, bits) after the features above: the predicted "
    "reward minus backlog cost of the action by the rule named in predicted_values (robust-mpc, "
    "mpc, mpc-geometric, or mpc-quantile with the link forecast in forecast/link_forecast.npz), "
    "minus that of the best action (<= 0; 0 for actions that are not canonical), after one such "
    "block per rule named in context_values, computed from "
    "the device's knowledge with the scenario and profile in forecast/ "
    "(splitrl.agents.features.DeviceActionValues)"
)
#: how the link-memory features are computed (stored when the policy observes them)
LINK_MEMORY_SCALING = (
    "four features after those above and before the predicted values, running over the "
    "episode's transfers with weight 0.05 each: the level of the throughput (the mean of its log, "
    "scaled like throughput_k), the spread of log10 throughput (clipped to 1), the fraction of "
    "transfers below a quarter of the level, and t / (t + 10 s) with t the seconds since the last "
    "such transfer (1 if none) (splitrl.agents.link_memory.LinkMemory)"
)


def predictor_of(value: object) -> str | None:
    """The predictor named by ``policy.json``'s ``predicted_values``: a rule's name, ``None``
    (``null``, ``false`` or absent) or ``true``, which older files wrote for ``robust-mpc``."""
    if value is None or value is False:
        return None
    if value is True:
        return "robust-mpc"
    from splitrl.agents.features import check_predictor

    if not isinstance(value, str):
        raise ValueError(f"predicted_values must be a rule's name, got {value!r}")
    return check_predictor(value)


def context_of(value: object) -> tuple[str, ...]:
    """The rules named by ``policy.json``'s ``context_values``: a list of rules' names, empty when
    absent."""
    from splitrl.agents.features import check_predictor

    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ValueError(f"context_values must be a list of rules' names, got {value!r}")
    return tuple(check_predictor(name) for name in value)


def link_memory_of(value: object) -> bool:
    """Whether ``policy.json``'s ``link_memory`` says the policy observes the link memory (absent:
    it does not)."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValueError(f"link_memory must be true or false, got {value!r}")
    return value


@dataclass(frozen=True)
class PolicyMetadata:
    """Contents of ``policy.json``.

    :param feature_names: observation feature names, in order.
    :param history_length: throughput measurements in the observation.
    :param prior_bps: throughput assumed before the first transfer (the link's nominal rate).
    :param deadline_s: latency unit of the ``last_latency`` feature.
    :param frame_interval_s: backlog unit and the request period the policy was trained with.
    :param exit_stages: ``k_e`` of every exit.
    :param n_splits: number of split choices.
    :param bit_options: the bit options, indexed by the action's third component.
    :param codec: keyword settings of ``splitrl.codecs.encode`` for every payload.
    :param identity: scenario, profile and presets the policy was trained on.
    :param versions: library versions and the ONNX opset.
    :param files: file name -> SHA-256.
    :param feature_scaling: how each feature is computed.
    :param format: file format version.
    :param link_quality: the model of the ``link_quality`` feature, ``None`` when the policy does
        not observe it.
    :param observation_version: the version of the observation the policy was trained on
        (:data:`~splitrl.envs.observation.OBSERVATION_VERSION`); a device refuses others.
    :param predicted_values: the causal rule (:data:`~splitrl.agents.features.PREDICTORS`) whose predicted value
        of every flat action the policy observes after ``feature_names``, which the device computes
        with the scenario and profile in :data:`FORECAST_DIR` (:func:`load_device_features`);
        ``None`` when it observes none. (Files of format 1 wrote ``true`` for ``"robust-mpc"``.)
    :param context_values: other rules whose predicted values the policy observes before
        ``predicted_values``', one block of ``n_actions`` each, in this order.
    :param link_memory: whether the policy observes the link memory's features
        (:class:`~splitrl.agents.link_memory.LinkMemory`) between ``feature_names`` and the
        predicted values; only with ``predicted_values``.
    :param transfer_timeout_s: the scenario's transfer timeout: the device gives up a send still
        running after it and answers at the exit itself, as in training; ``None``: it waits.
    :param exit_gate: the scenario's confidence gate at the early exits: the device stops a
        request at an earlier exit its action computes when its confidence there is above it, as
        in training; ``None``: no gate.
    """

    feature_names: tuple[str, ...]
    history_length: int
    prior_bps: float
    deadline_s: float
    frame_interval_s: float
    exit_stages: tuple[int, ...]
    n_splits: int
    bit_options: tuple[int | str, ...]
    codec: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    feature_scaling: dict[str, str] = field(default_factory=lambda: dict(FEATURE_SCALING))
    format: int = POLICY_FORMAT
    link_quality: LinkQualityModel | None = None
    observation_version: int = OBSERVATION_VERSION
    predicted_values: str | None = None
    context_values: tuple[str, ...] = ()
    link_memory: bool = False
    transfer_timeout_s: float | None = None
    exit_gate: float | None = None

    @property
    def n_inputs(self) -> int:
        """Length of the policy's input: the features, the link memory's when it observes them,
        and one predicted value per flat action and rule when it observes them."""
        extra = self.actions.n_actions * len(self.rules)
        if self.link_memory:
            from splitrl.agents.link_memory import N_MEMORY_FEATURES

            extra += N_MEMORY_FEATURES
        return len(self.feature_names) + extra

    @property
    def rules(self) -> tuple[str, ...]:
        """Every rule whose predicted values the policy observes, in input order (the
        ``context_values``, then ``predicted_values``); empty for none."""
        if not self.predicted_values:
            return ()
        return (*self.context_values, self.predicted_values)

    @property
    def actions(self) -> ActionTable:
        """The action table."""
        return ActionTable(self.exit_stages, self.n_splits, self.bit_options)

    @property
    def layout(self) -> ObservationLayout:
        """The observation layout."""
        return ObservationLayout(self.history_length, self.link_quality is not None)

    def device_knowledge(self, frame_interval_s: float | None = None) -> DeviceKnowledge:
        """A fresh :class:`DeviceKnowledge` that builds this policy's observation.

        :param frame_interval_s: the request period actually used (default: the trained one).
        """
        interval = self.frame_interval_s if frame_interval_s is None else frame_interval_s
        return DeviceKnowledge(self.layout, self.prior_bps, self.deadline_s, interval)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, with the action table spelled out."""
        data = asdict(self)
        table = self.actions
        data["canonical_actions"] = [
            {"action": list(action), "label": table.label(*action)}
            for action in table.canonical_actions()
        ]
        return data

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``policy.json`` into ``directory``."""
        path = Path(directory) / POLICY_JSON
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> PolicyMetadata:
        """Read ``policy.json`` from an export directory.

        :raises ValueError: malformed file, or a policy trained on an observation of another
            version than this one's.
        """
        path = Path(directory) / POLICY_JSON
        if not path.is_file():
            raise FileNotFoundError(f"{path}: policy metadata not found (run `splitrl export`)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: malformed policy metadata ({error!r})") from None
        if not isinstance(data, dict) or data.get("format") != POLICY_FORMAT:
            raise ValueError(f"{path}: not a format-{POLICY_FORMAT} policy file")
        # exports from before versioned observations (SplitComputing-v0) carry no version
        version = data.get("observation_version", 0)
        if version != OBSERVATION_VERSION:
            raise ValueError(
                f"{path}: the policy observes observation version {version}, this runtime builds "
                f"version {OBSERVATION_VERSION} (splitrl/SplitComputing-v{OBSERVATION_VERSION}); "
                "retrain the policy in that env and export it again"
            )
        try:
            metadata = cls(
                feature_names=tuple(data["feature_names"]),
                history_length=int(data["history_length"]),
                prior_bps=float(data["prior_bps"]),
                deadline_s=float(data["deadline_s"]),
                frame_interval_s=float(data["frame_interval_s"]),
                exit_stages=tuple(int(k) for k in data["exit_stages"]),
                n_splits=int(data["n_splits"]),
                bit_options=tuple(data["bit_options"]),
                codec=dict(data["codec"]),
                identity=dict(data["identity"]),
                versions=dict(data["versions"]),
                files=dict(data["files"]),
                feature_scaling=dict(data["feature_scaling"]),
                link_quality=None
                if data["link_quality"] is None
                else LinkQualityModel.from_dict(data["link_quality"]),
                observation_version=OBSERVATION_VERSION,
                predicted_values=predictor_of(data.get("predicted_values")),
                context_values=context_of(data.get("context_values")),
                link_memory=link_memory_of(data.get("link_memory")),
                transfer_timeout_s=transfer_timeout_of(data.get("transfer_timeout_s")),
                exit_gate=exit_gate_of(data.get("exit_gate")),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError(f"{path}: malformed policy metadata ({error!r})") from None
        if list(metadata.feature_names) != metadata.layout.names:
            raise ValueError(
                f"{path}: feature names {metadata.feature_names} differ from this version's "
                f"observation layout {metadata.layout.names}"
            )
        if metadata.context_values and not metadata.predicted_values:
            raise ValueError(f"{path}: context_values without predicted_values")
        if metadata.link_memory and not metadata.predicted_values:
            raise ValueError(f"{path}: link_memory without predicted_values")
        return metadata


def transfer_timeout_of(value: Any) -> float | None:
    """The transfer timeout recorded in ``policy.json`` (absent before timeouts existed: none).

    :raises ValueError: a value that is not a positive number of seconds or null
    """
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"transfer_timeout_s must be a positive number or null, got {value!r}")
    return float(value)


class OnnxPolicy:
    """The exported policy as a callable ``observation -> (exit, split, bits)``.

    :param directory: an export directory with ``policy.onnx`` and ``policy.json``.
    :param threads: onnxruntime intra-op threads.
    """

    def __init__(self, directory: str | os.PathLike[str], threads: int = 1) -> None:
        import onnxruntime

        directory = Path(directory)
        self.metadata = PolicyMetadata.load(directory)
        path = directory / POLICY_ONNX
        if not path.is_file():
            raise FileNotFoundError(f"{path}: policy graph not found")
        if file_sha256(path) != self.metadata.files.get(POLICY_ONNX):
            raise ValueError(f"{path}: SHA-256 does not match {POLICY_JSON}")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = open_onnx_session(path, options)
        self._n_features = self.metadata.n_inputs

    def actions(self, observations: np.ndarray) -> np.ndarray:
        """Actions ``int64 [batch, 3]`` of a batch of observations ``[batch, n_inputs]``."""
        batch = np.ascontiguousarray(observations, dtype=np.float32).reshape(-1, self._n_features)
        actions: np.ndarray = self.session.run(["action"], {"observation": batch})[0]
        return actions

    def __call__(self, observation: np.ndarray) -> tuple[int, int, int]:
        """The action of one observation."""
        e, s, b = self.actions(observation)[0]
        return int(e), int(s), int(b)


def load_device_features(
    directory: str | os.PathLike[str],
    metadata: PolicyMetadata,
    knowledge: DeviceKnowledge,
    frame_interval_s: float | None = None,
) -> DeviceActionValues | None:
    """The predicted-value features of an exported policy that observes them, else ``None``.

    Reads the scenario and profile the policy was trained on (and the link forecast of a rule
    that acts on one) from the export's :data:`FORECAST_DIR` (checked against the hashes in
    ``policy.json``) and builds the device's forecast around ``knowledge``, the runtime's own.

    :param directory: the export directory
    :param metadata: its ``policy.json``
    :param knowledge: the device knowledge the runtime builds the observation with
    :param frame_interval_s: the request period actually used (default: the trained one)
    :raises FileNotFoundError: a forecast file is missing
    :raises ValueError: a file whose hash does not match, a scenario or profile that does not
        match the policy's action table, or a rule's link forecast that the export lacks
    """
    if not metadata.predicted_values:
        return None
    from splitrl.agents.baselines.link_forecast import LinkForecast
    from splitrl.agents.features import DeviceActionValues, acts_on_link_forecast
    from splitrl.envs.forecast import DeviceForecast
    from splitrl.envs.scenarios import scenario_from_dict
    from splitrl.envs.split_computing import SplitComputingEnv
    from splitrl.profiles.io import load_profile

    root = Path(directory)
    forecast_files = sorted(name for name in metadata.files if name.startswith(f"{FORECAST_DIR}/"))
    scenario_name = f"{FORECAST_DIR}/{FORECAST_SCENARIO}"
    profiles = [name for name in forecast_files if name.endswith(".json") and name != scenario_name]
    if scenario_name not in forecast_files or len(profiles) != 1:
        raise ValueError(
            f"{root / POLICY_JSON}: the policy observes predicted values but lists no "
            f"{FORECAST_DIR}/ scenario and profile (export it again)"
        )
    link_model_name = f"{FORECAST_DIR}/{FORECAST_LINK_MODEL}"
    on_link_model = [rule for rule in metadata.rules if acts_on_link_forecast(rule)]
    needs_link_model = bool(on_link_model)
    if needs_link_model and link_model_name not in forecast_files:
        raise ValueError(
            f"{root / POLICY_JSON}: {on_link_model[0]} acts on a link forecast but the "
            f"export lists no {link_model_name} (export it again)"
        )
    for name in forecast_files:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (the policy's forecast needs it)")
        if file_sha256(path) != metadata.files[name]:
            raise ValueError(f"{path}: SHA-256 does not match {POLICY_JSON}")
    scenario_path = root / scenario_name
    try:
        scenario = scenario_from_dict(json.loads(scenario_path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise ValueError(f"{scenario_path}: not a scenario ({error})") from None
    # The channel is never read by a forecast; a constant one needs no trace file on the device.
    env = SplitComputingEnv(scenario, profile=load_profile(root / profiles[0]), channel="constant")
    if env.actions.nvec != metadata.actions.nvec or env.actions.exit_stages != metadata.exit_stages:
        raise ValueError(
            f"{scenario_path}: its profile's actions {env.actions.nvec} do not match the policy's "
            f"{metadata.actions.nvec}"
        )
    link_forecast = LinkForecast.load(root / link_model_name) if needs_link_model else None
    return DeviceActionValues(
        DeviceForecast(env, knowledge, frame_interval_s),
        metadata.predicted_values,
        link_forecast,
        metadata.context_values,
        memory=metadata.link_memory,
    )
