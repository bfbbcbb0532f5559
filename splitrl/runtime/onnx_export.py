"""Export a trained SACD policy and a staged model's segments to ONNX (needs torch).

* :func:`export_policy`: ``policy.onnx`` (observation -> action, mask and argmax inside the graph)
  and ``policy.json`` (:class:`~splitrl.runtime.exported_policy.PolicyMetadata`).
* :func:`export_segments`: ``stage_k.onnx``, ``exit_e.onnx`` and ``segments.json``.
* :func:`export_run`: both, from a training run directory (:func:`load_run`).

Graphs are written by the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``): on these
small graphs it gives the same operators as the ``torch.export`` based one at a sixth of the export
time. Every export is checked against torch with onnxruntime before it is accepted.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from splitrl.agents.link_memory import N_MEMORY_FEATURES, memory_space_bounds
from splitrl.envs.actions import ActionTable, action_components
from splitrl.envs.link_quality import LinkQualityModel
from splitrl.envs.observation import ObservationLayout
from splitrl.files import staged_directory
from splitrl.models.protocol import StagedModel

if TYPE_CHECKING:
    from splitrl.envs.scenarios import Scenario
    from splitrl.envs.split_computing import SplitComputingEnv
    from splitrl.profiles.schema import Profile

from splitrl.runtime.exported_policy import (
    FEATURE_SCALING,
    FORECAST_DIR,
    FORECAST_LINK_MODEL,
    FORECAST_SCENARIO,
    LINK_MEMORY_SCALING,
    POLICY_ONNX,
    PREDICTED_VALUES_SCALING,
    OnnxPolicy,
    PolicyMetadata,
)
from splitrl.runtime.segments import (
    OnnxSegments,
    SegmentManifest,
    exit_file,
    file_sha256,
    stage_file,
)

DEFAULT_OPSET = 17


def _onnx_export(
    module: nn.Module, example: torch.Tensor, path: Path, names: tuple[str, str], opset: int
) -> None:
    with warnings.catch_warnings():
        # The TorchScript exporter announces its deprecation on every call.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[names[0]],
            output_names=[names[1]],
            dynamic_axes={names[0]: {0: "batch"}, names[1]: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )


class PolicyGraph(nn.Module):
    """The deterministic SACD policy as one graph: masked logits, argmax, unravelled action.

    :param actor: the SACD actor (``model.policy.greedy_actor``), a categorical over the flat actions.
    :param actions: the action table; its canonical mask is fixed into the graph.
    """

    allowed: torch.Tensor
    strides: torch.Tensor
    nvec: torch.Tensor

    def __init__(self, actor: nn.Module, actions: ActionTable) -> None:
        super().__init__()
        self.actor = actor
        self.register_buffer("allowed", torch.as_tensor(actions.mask()))
        self.register_buffer("strides", torch.tensor(actions.strides))
        self.register_buffer("nvec", torch.tensor(actions.nvec, dtype=torch.int64))

    def flat_actions(self, observation: torch.Tensor) -> torch.Tensor:
        """Flat index of the most probable canonical action, ``int64 [batch]``."""
        logits = self.actor.masked_logits(observation, self.allowed)  # type: ignore[operator]
        return logits.argmax(dim=-1)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        """``(exit, split, bits)`` per observation, ``int64 [batch, 3]``."""
        return action_components(self.flat_actions(observation), self.strides, self.nvec)


def library_versions(opset: int) -> dict[str, str | int]:
    """Versions stored with an export."""
    import onnx
    import onnxruntime

    import splitrl

    return {
        "splitrl": splitrl.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": opset,
    }


def export_policy(
    model: Any,
    directory: str | os.PathLike[str],
    *,
    actions: ActionTable,
    layout: ObservationLayout,
    prior_bps: float,
    deadline_s: float,
    frame_interval_s: float,
    link_quality: LinkQualityModel | None = None,
    codec: Mapping[str, Any] | None = None,
    identity: Mapping[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
    forecast: tuple[Scenario, Profile] | None = None,
    predictor: str | None = None,
    context: Sequence[str] = (),
    memory: bool = False,
    transfer_timeout_s: float | None = None,
    exit_gate: float | None = None,
) -> PolicyMetadata:
    """Write ``policy.onnx`` and ``policy.json`` for a SACD model.

    :param model: a :class:`~splitrl.agents.sacd.SACD` (its ``policy.greedy_actor`` is exported).
    :param directory: the export directory (created if needed).
    :param actions: the env's action table (its canonical mask is baked into the graph).
    :param layout: the env's observation layout.
    :param prior_bps: the env's throughput prior (``env.knowledge.prior_bps``).
    :param deadline_s: the reward's deadline (latency unit of the observation).
    :param frame_interval_s: the env's request period (backlog unit of the observation).
    :param link_quality: the env's link-quality model (``env.link_quality_model``); required
        when the layout observes link quality.
    :param codec: codec settings of the profile (``profile.codec``).
    :param identity: scenario, profile and preset names to record.
    :param opset: ONNX opset.
    :param forecast: for a policy that observes a causal rule's predicted value of every action
        after the layout's features (``sacd-prior``, ``sacd-hindsight``): the scenario and profile
        it was trained on, written to ``forecast/`` so that the device runtime computes the same
        values (:func:`~splitrl.runtime.exported_policy.load_device_features`).
    :param predictor: with ``forecast`` (and only with it): the rule that predicts those values
        (:data:`~splitrl.agents.features.PREDICTORS`), recorded in ``policy.json``.
    :param context: with ``predictor``: the other rules whose values the policy observes before
        its values (``LearnerSpec.context_values``), recorded in ``policy.json``.
    :param memory: with ``predictor``: whether the policy observes the link memory before the
        predicted values (``LearnerSpec.link_memory``), recorded in ``policy.json``.
    :param transfer_timeout_s: the scenario's transfer timeout (``env.parts.transfer_timeout_s``),
        recorded for the device runtime.
    :param exit_gate: the scenario's confidence gate at the early exits (``env.exit_gate``),
        recorded for the device runtime.
    :return: the metadata written.
    :raises ValueError: when the model's spaces do not match ``actions`` and ``layout`` (and the
        predicted values), ``link_quality`` does not match the layout, or only one of
        ``forecast`` and ``predictor`` is given.
    """
    check_forecast_predictor(forecast is not None, predictor, context, memory)
    rules = () if predictor is None else (*context, predictor)
    policy = model.policy
    n_memory = N_MEMORY_FEATURES if memory else 0
    n_features = len(layout.names) + n_memory + actions.n_actions * len(rules)
    if layout.link_quality != (link_quality is not None):
        raise ValueError(
            "the layout observes link quality but no link_quality model was given"
            if layout.link_quality
            else "a link_quality model was given but the layout does not observe link quality"
        )
    if tuple(int(n) for n in policy.nvec) != actions.nvec:
        raise ValueError(
            f"the model acts on nvec {policy.nvec.tolist()}, the table on {actions.nvec}"
        )
    if tuple(policy.observation_space.shape) != (n_features,):
        raise ValueError(
            f"the model observes shape {policy.observation_space.shape}, the layout has "
            f"{n_features} features"
            + (" with the predicted values" if forecast is not None else "")
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    forecast_files = {} if forecast is None else write_forecast(directory, *forecast, rules)
    graph = PolicyGraph(policy.greedy_actor, actions).eval()
    path = directory / POLICY_ONNX
    example = torch.zeros((1, n_features), dtype=torch.float32)
    with torch.no_grad():
        _onnx_export(graph, example, path, ("observation", "action"), opset)
    metadata = PolicyMetadata(
        feature_names=tuple(layout.names),
        history_length=layout.history_length,
        prior_bps=float(prior_bps),
        deadline_s=float(deadline_s),
        frame_interval_s=float(frame_interval_s),
        exit_stages=actions.exit_stages,
        n_splits=actions.n_splits,
        bit_options=actions.bit_options,
        codec=dict(codec or {}),
        identity=dict(identity or {}),
        versions=library_versions(opset),
        files={POLICY_ONNX: file_sha256(path), **forecast_files},
        feature_scaling={
            **FEATURE_SCALING,
            **({"predicted_values": PREDICTED_VALUES_SCALING} if forecast is not None else {}),
            **({"link_memory": LINK_MEMORY_SCALING} if memory else {}),
        },
        link_quality=link_quality,
        predicted_values=predictor,
        context_values=tuple(context),
        link_memory=memory,
        transfer_timeout_s=transfer_timeout_s,
        exit_gate=exit_gate,
    )
    metadata.save(directory)
    observations = random_observations(layout, 256, seed=0)
    if rules:
        observations = np.concatenate(
            [observations]
            + ([random_memory(256, seed=len(rules) + 1)] if memory else [])
            + [random_predicted_values(actions, 256, seed=1 + i) for i in range(len(rules))],
            axis=1,
        )
    mismatches = np.flatnonzero(
        OnnxPolicy(directory).actions(observations) != torch_actions(graph, observations)
    )
    if len(mismatches):
        raise RuntimeError(
            f"exported policy disagrees with torch on {len(mismatches)} of 256 checks"
        )
    return metadata


def export_env_policy(
    model: Any,
    directory: str | os.PathLike[str],
    env: SplitComputingEnv,
    *,
    identity: Mapping[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
    scenario: Scenario | None = None,
    predictor: str | None = None,
    context: Sequence[str] = (),
    memory: bool = False,
) -> PolicyMetadata:
    """:func:`export_policy` with every constant taken from the env the policy acts in.

    The action table, observation layout, throughput prior, deadline, frame interval,
    link-quality model, transfer timeout, exit gate and codec settings all come from ``env``, so the export cannot disagree
    with what the policy was trained on.

    :param model: a :class:`~splitrl.agents.sacd.SACD`.
    :param directory: the export directory (created if needed).
    :param env: the env of the policy (the training run's scenario).
    :param identity: scenario, profile and preset names to record (default: the profile's name).
    :param opset: ONNX opset.
    :param scenario: for a policy that observes a causal rule's predicted values: the scenario
        ``env`` was built from, exported with ``env``'s profile for the device's forecast
    :param predictor: with ``scenario`` (and only with it): the rule that predicts those values
        (the run's ``LearnerSpec.predicted_values``)
    :param context: the other rules whose values the policy observes (the run's
        ``LearnerSpec.context_values``)
    :param memory: whether the policy observes the link memory (the run's
        ``LearnerSpec.link_memory``)
    """
    return export_policy(
        model,
        directory,
        actions=env.actions,
        layout=env.layout,
        prior_bps=env.knowledge.prior_bps,
        deadline_s=env.reward_spec.deadline_s,
        frame_interval_s=env.frame_interval_s,
        link_quality=env.link_quality_model,
        codec=env.profile.codec,
        identity={"profile": env.profile.name} if identity is None else identity,
        opset=opset,
        forecast=None if scenario is None else (scenario, env.profile),
        predictor=predictor,
        context=context,
        memory=memory,
        transfer_timeout_s=env.parts.transfer_timeout_s,
        exit_gate=env.exit_gate,
    )


def check_forecast_predictor(
    has_forecast: bool, predictor: str | None, context: Sequence[str] = (), memory: bool = False
) -> None:
    """Raise ``ValueError`` unless a forecast and the rule that predicts its values come together:
    a policy's predicted-value features are those of its rules, and a device that assumed others
    would compute other features. ``context`` rules and the link ``memory`` come only with a
    ``predictor``."""
    if has_forecast and predictor is None:
        raise ValueError("a policy that observes predicted values needs predictor= (its rule)")
    if not has_forecast and predictor is not None:
        raise ValueError(f"predictor={predictor!r} given for a policy without predicted values")
    if context and predictor is None:
        raise ValueError(f"context={list(context)!r} given without predictor=")
    if memory and predictor is None:
        raise ValueError("memory=True given without predictor=")
    if predictor is not None:
        from splitrl.agents.features import check_predictor

        for name in (*context, predictor):
            check_predictor(name)
        if len(set(context) | {predictor}) != len(context) + 1:
            raise ValueError(f"each rule may be observed once, got {[*context, predictor]}")


def write_forecast(
    directory: Path, scenario: Scenario, profile: Profile, rules: Sequence[str] = ()
) -> dict[str, str]:
    """Write the scenario and profile of the device's forecast into ``directory/forecast``, and
    the shipped link forecast when one of the ``rules`` the policy observes acts on one
    (``mpc-quantile``), so the export keeps the forecast it was trained with.

    :return: each file's name relative to ``directory`` and its SHA-256, for ``policy.json``
    """
    import dataclasses
    import json
    import shutil

    from splitrl.agents.baselines.link_forecast import SHIPPED_FORECAST
    from splitrl.agents.features import acts_on_link_forecast
    from splitrl.profiles.io import save_profile

    folder = directory / FORECAST_DIR
    json_path = save_profile(profile, folder)
    spec = dataclasses.replace(scenario, profile=json_path.name).to_dict()
    (folder / FORECAST_SCENARIO).write_text(json.dumps(spec, indent=2) + "\n")
    if any(map(acts_on_link_forecast, rules)):
        shutil.copyfile(SHIPPED_FORECAST, folder / FORECAST_LINK_MODEL)
    return {
        f"{FORECAST_DIR}/{path.name}": file_sha256(path)
        for path in sorted(folder.iterdir())
        if path.is_file()
    }


def random_predicted_values(actions: ActionTable, n: int, seed: int) -> np.ndarray:
    """``n`` rows of predicted values as the features give them: one best action at 0, the other
    canonical actions in ``[-0.3, 0)``, non-canonical actions 0; float32."""
    rng = np.random.default_rng(seed)
    mask = actions.mask()
    values = np.where(mask, rng.uniform(-0.3, 0.0, size=(n, actions.n_actions)), 0.0)
    canonical = np.flatnonzero(mask)
    values[np.arange(n), rng.choice(canonical, size=n)] = 0.0
    return values.astype(np.float32)


def random_memory(n: int, seed: int) -> np.ndarray:
    """``n`` rows of link-memory features drawn uniformly inside their bounds, float32."""
    low, high = memory_space_bounds()
    return np.random.default_rng(seed).uniform(low, high, size=(n, len(low))).astype(np.float32)


def random_observations(layout: ObservationLayout, n: int, seed: int) -> np.ndarray:
    """``n`` observations drawn uniformly inside the observation space, float32."""
    space = layout.space()
    rng = np.random.default_rng(seed)
    return rng.uniform(space.low, space.high, size=(n, len(layout.names))).astype(np.float32)


def torch_actions(graph: PolicyGraph, observations: np.ndarray) -> np.ndarray:
    """Actions of ``graph`` for a batch of observations, computed by torch."""
    with torch.no_grad():
        actions: np.ndarray = graph(torch.as_tensor(observations)).numpy()
    return actions


class _Segment(nn.Module):
    """One stage or exit head as a module with a single tensor input.

    Create it in eval mode: the exporter restores the wrapper's mode on its children afterwards,
    which would otherwise leave BatchNorm layers of the caller's model in training mode.
    """

    def __init__(self, part: nn.Module) -> None:
        super().__init__()
        self.part = part

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.part(x)
        return output


def export_segments(
    model: StagedModel,
    directory: str | os.PathLike[str],
    *,
    check_inputs: np.ndarray | None = None,
    opset: int = DEFAULT_OPSET,
    label: str = "",
) -> SegmentManifest:
    """Write every stage and exit head of ``model`` as ONNX, with ``segments.json``.

    :param model: the staged model (put in eval mode).
    :param directory: the export directory (created if needed).
    :param check_inputs: a batch ``[n, *input_shape]`` to compare onnxruntime with torch on; by
        default 8 random inputs inside ``input_spec.value_range``.
    :param opset: ONNX opset.
    :param label: a name of the model, stored in the manifest.
    :return: the manifest, with the largest onnxruntime/torch difference measured.
    """
    for module in (*model.stages, *(spec.head for spec in model.exits)):
        module.eval()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spec = model.input_spec
    if check_inputs is None:
        low, high = spec.value_range
        rng = np.random.default_rng(0)
        check_inputs = rng.uniform(low, high, size=(8, *spec.shape))
    x = torch.as_tensor(np.asarray(check_inputs, dtype=np.float32))
    outputs = [x]
    files: dict[str, str] = {}
    with torch.no_grad():
        for k in range(len(model.stages)):
            path = directory / stage_file(k)
            _onnx_export(_Segment(model.stages[k]).eval(), outputs[-1][:1], path, ("x", "y"), opset)
            files[path.name] = file_sha256(path)
            outputs.append(model.run_stages(outputs[-1], k, k + 1))
        logits = []
        for e, exit_spec in enumerate(model.exits):
            path = directory / exit_file(e)
            features = outputs[exit_spec.after_stage]
            _onnx_export(_Segment(exit_spec.head).eval(), features[:1], path, ("x", "y"), opset)
            files[path.name] = file_sha256(path)
            logits.append(model.run_exit(features, e))
    manifest = SegmentManifest(
        exit_stages=tuple(exit_spec.after_stage for exit_spec in model.exits),
        split_shapes=tuple(tuple(int(d) for d in out.shape[1:]) for out in outputs),
        files=files,
        opset=opset,
        max_abs_error=0.0,
        model=label,
    )
    manifest.save(directory)
    runner = OnnxSegments(directory)
    errors = [
        np.abs(runner.run_stages(outputs[k].numpy(), k, k + 1) - outputs[k + 1].numpy()).max()
        for k in range(len(model.stages))
    ]
    errors += [
        np.abs(runner.run_exit(outputs[spec.after_stage].numpy(), e) - logits[e].numpy()).max()
        for e, spec in enumerate(model.exits)
    ]
    manifest = SegmentManifest(**{**manifest.__dict__, "max_abs_error": float(max(errors))})
    manifest.save(directory)
    return manifest


def load_run(run_dir: str | os.PathLike[str]) -> tuple[Any, SplitComputingEnv, dict[str, str]]:
    """The trained SACD of a run directory written by ``splitrl train``, its env and its identity.

    The run is read by :class:`~splitrl.training.run_dir.RunDirectory`: the final model
    (``model.zip``) and the env of the scenario the run trained in (``scenario_spec``), which
    supplies the action table, the observation constants, the codec settings and the identity.

    :return: ``(agent, env, identity)``.
    :raises FileNotFoundError: when the run directory, its config or its model is missing.
    :raises ValueError: when the config is malformed, or the run trained another learner than
        SACD.
    """
    from splitrl.agents.sacd import SACD
    from splitrl.training.run_dir import RunDirectory

    run = RunDirectory(run_dir)
    spec = run.learner()
    if not issubclass(spec.algorithm_class(), SACD):
        raise ValueError(
            f"{run.path}: only SACD policies can be exported, the run trained {spec.name}"
        )
    model_path = run.trained_model_path("final")
    env = run.make_env()
    agent = spec.load_model(model_path, device="cpu")
    identity = {
        "run": str(run.path),
        "scenario": env.parts.name,
        "profile": env.profile.name,
        "device": env.parts.device.name,
        "server": env.parts.server.name,
        "network": env.parts.network.name,
    }
    return agent, env, identity


def export_run(
    run_dir: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    *,
    model: StagedModel | None = None,
    opset: int = DEFAULT_OPSET,
) -> tuple[PolicyMetadata, SegmentManifest]:
    """Export a training run (:func:`load_run`): its SACD policy and the DNN segments.

    :param run_dir: the training run directory.
    :param directory: the export directory.
    :param model: the staged model the profile was built from (default: the model card or
        factory the profile names, else the shipped network); refused when its weights are not
        the profiled ones.
    :param opset: ONNX opset.
    """
    from splitrl.profiles.profiled_model import check_profiled_model, load_profiled_model

    agent, env, identity = load_run(run_dir)
    staged = model if model is not None else load_profiled_model(env.profile)
    check_profiled_model(env.profile, staged)
    exit_stages = tuple(spec.after_stage for spec in staged.exits)
    if exit_stages != env.actions.exit_stages or len(staged.stages) + 1 != env.actions.n_splits:
        raise ValueError(
            f"the model's exits {exit_stages} and {len(staged.stages)} stages do not match the "
            f"profile's {env.actions.exit_stages} and {env.actions.n_splits - 1}"
        )
    from splitrl.training.run_dir import RunDirectory

    run = RunDirectory(run_dir)
    learner = run.learner()
    predictor = learner.predicted_values
    scenario = run.scenario() if predictor else None
    with staged_directory(directory) as staging:
        metadata = export_env_policy(
            agent,
            staging,
            env,
            identity=identity,
            opset=opset,
            scenario=scenario,
            predictor=predictor,
            context=learner.context_values,
            memory=learner.link_memory,
        )
        manifest = export_segments(staged, staging, opset=opset, label=env.profile.name)
    return metadata, manifest
