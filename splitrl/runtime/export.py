"""The ``splitrl export`` subcommand: a training run to a deployable directory.

``splitrl export RUN --out DIR`` writes ``policy.onnx`` + ``policy.json`` (the SACD policy of
``RUN/model.zip``, deterministic, masks inside the graph) and ``stage_k.onnx`` / ``exit_e.onnx`` +
``segments.json`` (the DNN segments for the device and the server). The work is done by
:mod:`splitrl.runtime.onnx_export`, imported here only when the command runs (it needs torch).

``splitrl export RUN --format c --out DIR [--quantize int8]`` writes the policy as dependency-free
C for a microcontroller instead (``splitrl_policy.h`` / ``.c``, :mod:`splitrl.runtime.c_export`),
beside the ``policy.onnx`` and ``policy.json`` it was generated from and is checked against.
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: the opsets the TorchScript ONNX exporter writes (torch.onnx._constants)
OPSET_RANGE = (7, 20)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``splitrl export``."""
    parser.add_argument("run_dir", metavar="RUN", type=Path, help="training run directory")
    parser.add_argument("--out", required=True, type=Path, help="export directory to write")
    parser.add_argument(
        "--model",
        default=None,
        help="the network the run's profile was built from: its model card (.yaml), a checkpoint "
        "sidecar NAME.json, MODULE:FUNCTION or 'default' (the shipped network); default: the "
        "card or factory the profile names, else the shipped network",
    )
    parser.add_argument(
        "--format",
        choices=("onnx", "c"),
        default="onnx",
        help="onnx: policy and DNN segments for the device runtime; c: the policy as C99 for a "
        "microcontroller (default: %(default)s)",
    )
    parser.add_argument(
        "--quantize",
        choices=("float32", "int8"),
        default="float32",
        help="weights of the C policy: float32, or int8 with per-channel scales (--format c "
        "only; default: %(default)s)",
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=17,
        help=f"ONNX opset, {OPSET_RANGE[0]}..{OPSET_RANGE[1]} (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    """Export the run and print what was written."""
    if not OPSET_RANGE[0] <= args.opset <= OPSET_RANGE[1]:
        raise ValueError(
            f"--opset must be in {OPSET_RANGE[0]}..{OPSET_RANGE[1]} (what the ONNX exporter "
            f"writes), got {args.opset}"
        )
    if args.format == "c":
        from splitrl.runtime.c_export import POLICY_SOURCE, export_c_run

        metadata = export_c_run(args.run_dir, args.out, quantize=args.quantize, opset=args.opset)
        print(
            f"policy: {args.out / POLICY_SOURCE} ({args.quantize} weights, "
            f"{len(metadata.actions.canonical_actions())} actions)"
        )
        return 0
    if args.quantize != "float32":
        raise ValueError("--quantize applies to --format c only")
    from splitrl.profiles.profiled_model import load_staged_model
    from splitrl.runtime.onnx_export import export_run

    model = None if args.model is None else load_staged_model(args.model)
    metadata, manifest = export_run(args.run_dir, args.out, model=model, opset=args.opset)
    print(
        f"policy: {args.out / 'policy.onnx'} ({len(metadata.actions.canonical_actions())} actions)"
    )
    print(
        f"segments: {manifest.n_stages} stages, {len(manifest.exit_stages)} exits, "
        f"max |onnxruntime - torch| = {manifest.max_abs_error:.2e}"
    )
    return 0
