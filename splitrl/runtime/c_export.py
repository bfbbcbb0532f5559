"""Export a trained SACD policy as dependency-free C for microcontrollers (needs torch).

:func:`write_c_policy` writes ``splitrl_policy.h`` and ``splitrl_policy.c`` from the actor's MLP
and the export's :class:`~splitrl.runtime.exported_policy.PolicyMetadata` (``policy.json``): the observation
features computed from the device's raw measurements with the constants of ``policy.json``, the
forward pass with ``const`` weights (float32, or int8 with one scale per output channel), the mask
of canonical actions and the argmax. :func:`export_c_run` does it for a training run, next to the
run's ``policy.onnx`` and ``policy.json`` (the reference the C code is checked against). A
scenario's confidence gate at the early exits (``policy.json``'s ``exit_gate``) travels as two
constants and two calls, ``splitrl_policy_gate_exits`` and ``splitrl_policy_gate_stops``, which
the firmware runs as the device runtime does.

Only what the C code computes exactly is exported: an actor whose logits are an MLP (``Linear``
layers with ReLU or Tanh between them) of the observation vector alone. Anything else (an action
prior or other inputs, another head, another feature extractor) is refused with a message naming
it, and the extracted layers must reproduce the actor's own logits before anything is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import torch
from torch import nn

from splitrl.envs import observation as observation_module
from splitrl.runtime.exported_policy import PolicyMetadata

#: the generated files
POLICY_HEADER = "splitrl_policy.h"
POLICY_SOURCE = "splitrl_policy.c"
#: weight formats of ``--quantize``
QUANTIZE_OPTIONS = ("float32", "int8")
#: activations the C forward pass computes, by their code in the generated ``dense()``
ACTIVATIONS: dict[type[nn.Module], int] = {nn.Identity: 0, nn.ReLU: 1, nn.Tanh: 2}
#: largest |C logits - actor logits| (float32) accepted when the layers are extracted
EXTRACTION_TOLERANCE = 1e-4
#: stack of the generated functions beyond their buffers (call frames, saved registers)
FRAME_ALLOWANCE_BYTES = 256
#: with int8 weights, the layers from this index on are int8; the input layer stays float32:
#: observation features reach 10, so its rounding error would dominate the logits' (measured on
#: the demo's policy: 99.1% agreement with ONNX with it in int8, 99.8% without), for a few
#: hundred weights
FIRST_INT8_LAYER = 1

_DENSE = {
    "float32": """/* out = activation(weight . in + bias), weight float32 [n_out][n_in] */
static void dense_f32(const float *in, int n_in, const float *weight, const float *bias,
                      int n_out, int activation, float *out) {
    for (int row = 0; row < n_out; row++) {
        const float *row_weights = weight + row * n_in;
        /* four partial sums in registers: the adds need not wait on each other */
        float sum0 = 0.0f, sum1 = 0.0f, sum2 = 0.0f, sum3 = 0.0f;
        int column = 0;
        for (; column + 4 <= n_in; column += 4) {
            sum0 += in[column] * row_weights[column];
            sum1 += in[column + 1] * row_weights[column + 1];
            sum2 += in[column + 2] * row_weights[column + 2];
            sum3 += in[column + 3] * row_weights[column + 3];
        }
        for (; column < n_in; column++) {
            sum0 += in[column] * row_weights[column];
        }
        const float sum = (sum0 + sum1) + (sum2 + sum3);
        out[row] = activate(sum + bias[row], activation);
    }
}
""",
    "int8": """/* out = activation(scale * (weight . in) + bias), weight int8 [n_out][n_in] */
static void dense_i8(const float *in, int n_in, const int8_t *weight, const float *scale,
                     const float *bias, int n_out, int activation, float *out) {
    for (int row = 0; row < n_out; row++) {
        const int8_t *row_weights = weight + row * n_in;
        /* four partial sums in registers: the adds need not wait on each other */
        float sum0 = 0.0f, sum1 = 0.0f, sum2 = 0.0f, sum3 = 0.0f;
        int column = 0;
        for (; column + 4 <= n_in; column += 4) {
            sum0 += in[column] * (float)row_weights[column];
            sum1 += in[column + 1] * (float)row_weights[column + 1];
            sum2 += in[column + 2] * (float)row_weights[column + 2];
            sum3 += in[column + 3] * (float)row_weights[column + 3];
        }
        for (; column < n_in; column++) {
            sum0 += in[column] * (float)row_weights[column];
        }
        const float sum = (sum0 + sum1) + (sum2 + sum3);
        out[row] = activate(sum * scale[row] + bias[row], activation);
    }
}
""",
}

_TEMPLATES = Path(__file__).parent / "csrc"


class CExportError(ValueError):
    """The policy has a part the C export cannot compute."""


@dataclass(frozen=True)
class DenseLayer:
    """One ``Linear`` layer and the activation after it.

    :param weight: ``[n_out, n_in]`` float32.
    :param bias: ``[n_out]`` float32.
    :param activation: the activation's module type (a key of :data:`ACTIVATIONS`).
    """

    weight: np.ndarray
    bias: np.ndarray
    activation: type[nn.Module]


def mlp_layers(actor: nn.Module, n_features: int) -> list[DenseLayer]:
    """The dense layers of a SACD actor whose logits are an MLP of the observation.

    The structure is read from the modules, then checked by value: the layers must reproduce
    ``actor.masked_logits`` on random observations within :data:`EXTRACTION_TOLERANCE`.

    :param actor: the SACD actor (``model.policy.greedy_actor``).
    :param n_features: the observation features of ``policy.json``.
    :raises CExportError: naming the part of the actor that cannot be exported.
    """
    extractor = getattr(actor, "features_extractor", None)
    if extractor is None or any(True for _ in extractor.parameters()):
        raise CExportError(
            f"cannot export the features extractor {type(extractor).__name__} to C: only a "
            "parameter-free flattening of the observation is supported"
        )
    if getattr(actor, "clip_inputs", False):
        raise CExportError(
            "cannot export an actor that clips its inputs to its training range (clip_inputs): "
            "the C policy does not compute the clipping; export it as ONNX"
        )
    if getattr(actor, "prior_scale", 0.0):
        raise CExportError(
            "cannot export an actor with an action prior (prior_scale="
            f"{actor.prior_scale}): its prior inputs are not device measurements"
        )
    space = getattr(actor, "observation_space", None)
    shape = tuple(getattr(space, "shape", None) or ())
    if shape != (n_features,):
        raise CExportError(
            f"cannot export an actor that observes shape {shape}: policy.json describes "
            f"{n_features} observation features, and the C code computes only those (inputs "
            "such as predicted outcomes per action are not exported)"
        )
    extra = [
        name
        for name, child in actor.named_children()
        if name not in ("features_extractor", "logits_net")
        and any(True for _ in child.parameters())
    ]
    if extra:
        raise CExportError(f"cannot export the actor's other parts to C: {', '.join(extra)}")
    network = getattr(actor, "logits_net", None)
    if not isinstance(network, nn.Sequential):
        raise CExportError(
            f"cannot export a logits network of type {type(network).__name__} to C: only an "
            "nn.Sequential of Linear layers and ReLU/Tanh activations"
        )
    layers: list[DenseLayer] = []
    for index, module in enumerate(network):
        if isinstance(module, nn.Linear):
            layers.append(
                DenseLayer(
                    weight=module.weight.detach().cpu().numpy().astype(np.float32),
                    bias=(
                        module.bias.detach().cpu().numpy().astype(np.float32)
                        if module.bias is not None
                        else np.zeros(module.out_features, np.float32)
                    ),
                    activation=nn.Identity,
                )
            )
        elif type(module) in ACTIVATIONS and layers and layers[-1].activation is nn.Identity:
            layers[-1] = DenseLayer(layers[-1].weight, layers[-1].bias, type(module))
        else:
            raise CExportError(
                f"cannot export logits_net[{index}] ({type(module).__name__}) to C: only Linear "
                "layers, each followed by at most one ReLU or Tanh"
            )
    if not layers or layers[0].weight.shape[1] != n_features:
        raise CExportError(
            "cannot export the logits network: it does not start with a Linear layer of the observation"
        )
    check_layers(actor, layers, n_features)
    return layers


def forward(layers: list[DenseLayer], observations: np.ndarray) -> np.ndarray:
    """Logits of the layers for a batch ``[n, n_features]``, in numpy float32 (the C code sums
    in another order: equal to float32 rounding)."""
    values = np.asarray(observations, np.float32)
    for layer in layers:
        values = values @ layer.weight.T + layer.bias
        if layer.activation is nn.ReLU:
            values = np.maximum(values, 0.0)
        elif layer.activation is nn.Tanh:
            values = np.tanh(values)
    return values


def check_layers(actor: nn.Module, layers: list[DenseLayer], n_features: int) -> None:
    """Raise :class:`CExportError` unless ``layers`` compute the actor's logits."""
    rng = np.random.default_rng(0)
    observations = rng.uniform(-1.0, 1.0, size=(256, n_features)).astype(np.float32)
    with torch.no_grad():
        expected = actor.masked_logits(torch.as_tensor(observations)).numpy()  # type: ignore[operator]
    error = float(np.abs(forward(layers, observations) - expected).max())
    if not error <= EXTRACTION_TOLERANCE:
        raise CExportError(
            f"cannot export the actor to C: its logits differ from those of its Linear layers by "
            f"{error:.2e} (it computes something besides its MLP)"
        )


def quantize_int8(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights with one float32 scale per output channel (row).

    :return: ``(codes int8 [n_out, n_in], scales float32 [n_out])``, ``weight ~ codes * scale``.
    """
    largest = np.abs(weight).max(axis=1)
    scales = np.where(largest > 0, largest / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(weight / scales[:, None]), -127, 127).astype(np.int8)
    return codes, scales


def dequantized(layers: list[DenseLayer]) -> list[DenseLayer]:
    """The layers with the weights the int8 C code uses, as float32 (for reference logits)."""
    result = layers[:FIRST_INT8_LAYER]
    for layer in layers[FIRST_INT8_LAYER:]:
        codes, scales = quantize_int8(layer.weight)
        weight = codes.astype(np.float32) * scales[:, None]
        result.append(DenseLayer(weight, layer.bias, layer.activation))
    return result


def _c_float(value: float) -> str:
    return np.format_float_scientific(np.float32(value), unique=True) + "f"


def _c_double(value: float) -> str:
    return repr(float(value))


def _array(kind: str, name: str, values: np.ndarray, per_line: int = 8) -> str:
    flat = values.reshape(-1)
    items = [_c_float(v) if kind == "float" else str(int(v)) for v in flat]
    rows = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    body = ",\n    ".join(rows)
    return f"static const {kind} {name}[{len(flat)}] = {{\n    {body},\n}};\n"


def _feature_code(name: str, index: int, metadata: PolicyMetadata) -> str:
    """The C statement of one observation feature, as DeviceKnowledge.observe computes it."""
    target = f"    observation[{index}] = (float)"
    if name.startswith("throughput_") and name[len("throughput_") :].isdigit():
        k = int(name[len("throughput_") :])
        if k < metadata.history_length:
            return f"{target}scale_throughput(measurements->throughput_bps[{k}]);\n"
    if name not in _FEATURES:
        raise CExportError(f"cannot export the observation feature {name!r} to C")
    local, expression = _FEATURES[name]
    return f"{local}{target}{expression};\n"


#: feature name -> (a local it needs, its C expression)
_FEATURES = {
    "link_quality": ("", "scale_throughput(measurements->link_quality_bps)"),
    "estimate_age": (
        "    const double age = measurements->seconds_since_transfer;\n",
        "(age >= 0.0 ? age / (age + 1.0) : 1.0)",
    ),
    "last_latency": (
        "    const double latency = measurements->last_latency_s / DEADLINE_S;\n",
        "(latency < MAX_LATENCY_RATIO ? latency : MAX_LATENCY_RATIO)",
    ),
    "server_load": ("", "measurements->server_load"),
    "backlog": (
        "    const double backlog = measurements->backlog_s / FRAME_INTERVAL_S;\n",
        "(backlog < MAX_BACKLOG_FRAMES ? backlog : MAX_BACKLOG_FRAMES)",
    ),
}


def generate_c_policy(
    layers: list[DenseLayer], metadata: PolicyMetadata, quantize: str = "float32"
) -> tuple[str, str]:
    """The text of ``splitrl_policy.h`` and ``splitrl_policy.c``.

    :param layers: the actor's dense layers (:func:`mlp_layers`).
    :param metadata: the export's ``policy.json``.
    :param quantize: ``"float32"`` or ``"int8"`` (per-channel scales) weights.
    :raises CExportError: for a feature, bit option or layer shape the C code cannot compute.
    """
    if quantize not in QUANTIZE_OPTIONS:
        raise ValueError(f"quantize must be one of {QUANTIZE_OPTIONS}, got {quantize!r}")
    actions = metadata.actions
    n_features = len(metadata.feature_names)
    if layers[-1].weight.shape[0] != actions.n_actions:
        raise CExportError(
            f"the actor has {layers[-1].weight.shape[0]} outputs, policy.json "
            f"{actions.n_actions} actions"
        )
    int8 = quantize == "int8"
    weights = []
    calls = []
    formats = set()
    for index, layer in enumerate(layers):
        n_out, n_in = layer.weight.shape
        if int8 and index >= FIRST_INT8_LAYER:
            codes, scales = quantize_int8(layer.weight)
            weights.append(_array("int8_t", f"LAYER{index}_WEIGHT", codes, per_line=16))
            weights.append(_array("float", f"LAYER{index}_SCALE", scales))
            function, weight_arguments = "dense_i8", f"LAYER{index}_WEIGHT, LAYER{index}_SCALE"
            formats.add("int8")
        else:
            weights.append(_array("float", f"LAYER{index}_WEIGHT", layer.weight))
            function, weight_arguments = "dense_f32", f"LAYER{index}_WEIGHT"
            formats.add("float32")
        weights.append(_array("float", f"LAYER{index}_BIAS", layer.bias))
        source = "observation" if index == 0 else f"buffers[{(index - 1) % 2}]"
        calls.append(
            f"    {function}({source}, {n_in}, {weight_arguments}, LAYER{index}_BIAS, {n_out}, "
            f"{ACTIVATIONS[layer.activation]}, buffers[{index % 2}]);\n"
        )
    max_width = max(layer.weight.shape[0] for layer in layers)
    allowed = np.flatnonzero(actions.mask())
    link_quality = metadata.link_quality is not None
    widths = [b if isinstance(b, int) else 0 for b in metadata.bit_options]
    others = sorted({str(b) for b in metadata.bit_options if not isinstance(b, int)})
    # buffers, logits and observation of the deepest call chain, decide -> act -> logits
    stack_bytes = 4 * (2 * max_width + actions.n_actions + 2 * n_features) + FRAME_ALLOWANCE_BYTES
    identity = ", ".join(f"{k}={v}" for k, v in sorted(metadata.identity.items()))
    values: dict[str, Any] = {
        "identity": identity.replace("*/", "* /"),
        "precision": (
            "int8 with one float scale per output channel (the input layer float32)"
            if int8
            else "float32"
        ),
        "link_quality_step": ", the radio's link-rate report" if link_quality else "",
        "observation_version": metadata.observation_version,
        "n_features": n_features,
        "history_length": metadata.history_length,
        "history_array": max(1, metadata.history_length),
        "n_exits": actions.nvec[0],
        "n_splits": actions.nvec[1],
        "n_bit_options": actions.nvec[2],
        "n_actions": actions.n_actions,
        "stack_bytes": stack_bytes,
        "link_quality_field": (
            "    /* the radio's link-rate report at this decision, bit/s */\n"
            "    double link_quality_bps;\n"
            if link_quality
            else ""
        ),
        "link_quality_reset": (
            "    measurements->link_quality_bps = PRIOR_BPS;\n" if link_quality else ""
        ),
        "other_bit_options": " and ".join(others) if others else "none",
        "prior_bps": _c_double(metadata.prior_bps),
        "deadline_s": _c_double(metadata.deadline_s),
        "frame_interval_s": _c_double(metadata.frame_interval_s),
        "log_mbps_range": _c_double(observation_module._LOG_MBPS_RANGE),
        "max_latency_ratio": _c_double(observation_module._MAX_LATENCY_RATIO),
        "max_backlog_frames": _c_double(observation_module._MAX_BACKLOG_FRAMES),
        "max_width": max_width,
        "bit_widths": ", ".join(str(w) for w in widths),
        "exit_stages": ", ".join(str(int(k)) for k in metadata.exit_stages),
        "has_exit_gate": int(metadata.exit_gate is not None),
        # without a gate no confidence is above 1: the constant is never read as a threshold
        "exit_gate": _c_double(1.0 if metadata.exit_gate is None else metadata.exit_gate),
        "n_allowed": len(allowed),
        "allowed": ", ".join(str(int(i)) for i in allowed),
        "weights": "\n".join(weights),
        "features": "".join(
            _feature_code(name, index, metadata)
            for index, name in enumerate(metadata.feature_names)
        ),
        "dense_functions": "\n".join(_DENSE[name] for name in QUANTIZE_OPTIONS if name in formats),
        "layers": "".join(calls),
        "last_buffer": (len(layers) - 1) % 2,
    }
    header = Template((_TEMPLATES / f"{POLICY_HEADER}.in").read_text()).substitute(values)
    source = Template((_TEMPLATES / f"{POLICY_SOURCE}.in").read_text()).substitute(values)
    return header, source


def write_c_policy(
    actor: nn.Module,
    directory: str | os.PathLike[str],
    metadata: PolicyMetadata,
    quantize: str = "float32",
) -> list[Path]:
    """Write ``splitrl_policy.h`` and ``splitrl_policy.c`` for a SACD actor.

    :param actor: the SACD actor (``model.policy.greedy_actor``).
    :param directory: where the files go (created if needed).
    :param metadata: the export's ``policy.json`` (written beside by the ONNX export).
    :param quantize: ``"float32"`` or ``"int8"``.
    :return: the paths written.
    :raises CExportError: before anything is written, when the actor cannot be exported.
    """
    layers = mlp_layers(actor, len(metadata.feature_names))
    header, source = generate_c_policy(layers, metadata, quantize)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / POLICY_HEADER, directory / POLICY_SOURCE]
    for path, text in zip(paths, (header, source), strict=True):
        path.write_text(text)
    return paths


def export_c_run(
    run_dir: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    *,
    quantize: str = "float32",
    opset: int | None = None,
) -> PolicyMetadata:
    """Export a training run's policy as C, beside its ``policy.onnx`` and ``policy.json``.

    :param run_dir: the training run directory (as for :func:`~splitrl.runtime.onnx_export.export_run`).
    :param directory: the export directory.
    :param quantize: ``"float32"`` or ``"int8"`` weights.
    :param opset: ONNX opset of the reference ``policy.onnx``.
    :return: the metadata written to ``policy.json``.
    """
    from splitrl.files import staged_directory
    from splitrl.runtime.onnx_export import DEFAULT_OPSET, export_env_policy, load_run

    if quantize not in QUANTIZE_OPTIONS:
        raise ValueError(f"--quantize must be one of {QUANTIZE_OPTIONS}, got {quantize!r}")
    from splitrl.training.run_dir import RunDirectory

    learner = RunDirectory(run_dir).learner()
    if learner.predicted_values:
        raise CExportError(
            f"{learner.name} observes {learner.predicted_values}'s predicted value of every "
            "action, which the C policy does not compute; export it as ONNX (without --format c) for the device "
            "runtime, which does"
        )
    agent, env, identity = load_run(run_dir)
    # refuse before any file is written
    mlp_layers(agent.policy.greedy_actor, len(env.layout.names))
    with staged_directory(directory) as staging:
        export_env_policy(
            agent,
            staging,
            env,
            identity=identity,
            opset=DEFAULT_OPSET if opset is None else opset,
        )
        metadata = PolicyMetadata.load(staging)
        write_c_policy(agent.policy.greedy_actor, staging, metadata, quantize)
    return metadata
