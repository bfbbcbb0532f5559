"""``splitrl profile``: build, show and validate profiles, and train a model card's exit heads.

Examples::

    splitrl profile build --train --out splitrl/profiles/data   # rebuild the shipped default
    splitrl profile build --quick --out /tmp/profiles            # a small profile in seconds
    splitrl profile build --card mobilenet.yaml --data imagefolder:val --out profiles   # your model
    splitrl profile build --model mypkg.nets:staged --data npz:test.npz --out profiles
    splitrl profile train-heads --card mobilenet.yaml --data imagefolder:train   # exit heads
    splitrl profile show default
    splitrl profile validate /tmp/profiles/default.json
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from splitrl.arguments import integer_at_least

if TYPE_CHECKING:
    import numpy as np

    from splitrl.models.protocol import SampleSource, StagedModel
    from splitrl.profiles.builder import BuildSettings

#: what ``--quick`` changes: few samples, short training, few timing repeats
QUICK = {
    "samples": 200,
    "train_samples": 2000,
    "validation_samples": 16,
    "epochs": 1,
    "latency_repeats": 5,
    "codec_timing": 8,
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``profile`` subcommands."""
    sub = parser.add_subparsers(dest="profile_command", metavar="ACTION", required=True)

    build = sub.add_parser(
        "build",
        help="measure a model (the shipped network, or yours with --card or --model) and write a profile",
    )
    build.add_argument(
        "--card",
        type=Path,
        default=None,
        help="YAML model card of your network (docs/models.md); needs --data",
    )
    build.add_argument(
        "--model",
        default=None,
        metavar="MODULE:FACTORY",
        help="a function returning your StagedModel (MODULE or path/to/file.py); needs --data",
    )
    build.add_argument(
        "--data",
        default=None,
        metavar="imagefolder:PATH|npz:PATH",
        help="test samples of your model: one sub-folder of images per class, or an NPZ file "
        "with arrays inputs (uint8) and labels",
    )
    build.add_argument(
        "--name", default="default", help="profile name (file stem), default: %(default)s"
    )
    build.add_argument(
        "--out", type=Path, default=Path("profiles"), help="output folder, default: %(default)s"
    )
    build.add_argument("--train", action="store_true", help="train the early-exit network first")
    build.add_argument("--epochs", type=int, default=None, help="training epochs with --train")
    build.add_argument("--seed", type=int, default=0, help="training seed, default: %(default)s")
    build.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="checkpoint sidecar (NAME.json) of the network to profile; default: the shipped network",
    )
    build.add_argument(
        "--weights-out",
        type=Path,
        default=None,
        help="where --train writes the network's checkpoint; default: the --out folder",
    )
    build.add_argument(
        "--model-name",
        default=None,
        help="file stem of the checkpoint --train writes; default: NAME-model",
    )
    build.add_argument("--data-dir", type=Path, default=None, help="Fashion-MNIST IDX folder")
    build.add_argument(
        "--samples",
        type=integer_at_least(1),
        default=None,
        help=f"profile the first N test samples (default: all; with --quick: {QUICK['samples']})",
    )
    build.add_argument(
        "--bits",
        default="1,2,3,4,6,8,lossless",
        help="comma-separated bit options of the action space, default: %(default)s",
    )
    build.add_argument("--per-channel", action="store_true", help="quantize per channel")
    build.add_argument("--clip", default=None, help="outlier clipping rule of the quantizer")
    build.add_argument("--entropy", action="store_true", help="add the entropy stage after RLE")
    build.add_argument("--quick", action="store_true", help=f"a small, fast profile ({QUICK})")
    build.add_argument(
        "--batch-size",
        type=int,
        default=250,
        help="samples per forward pass; the checkpoint is saved after each batch "
        "(default: %(default)s)",
    )
    build.add_argument(
        "--device",
        default="cpu",
        help="where the model runs while measuring: cpu or cuda[:N], default: %(default)s",
    )
    build.add_argument(
        "--restart",
        action="store_true",
        help="discard the checkpoint of an interrupted build (OUT/NAME.checkpoint.npz) "
        "instead of resuming it",
    )
    build.add_argument("--no-progress", action="store_true", help="hide progress bars")

    heads = sub.add_parser(
        "train-heads",
        help="train the early-exit heads of a model card on its frozen backbone",
    )
    heads.add_argument("--card", type=Path, required=True, help="the YAML model card")
    heads.add_argument(
        "--data",
        required=True,
        metavar="imagefolder:PATH|npz:PATH",
        help="training samples (never the samples the profile is built on)",
    )
    heads.add_argument(
        "--validation",
        default=None,
        metavar="imagefolder:PATH|npz:PATH",
        help="samples on which every exit's accuracy is printed after each epoch",
    )
    heads.add_argument("--epochs", type=int, default=5, help="default: %(default)s")
    heads.add_argument("--batch-size", type=int, default=64, help="default: %(default)s")
    heads.add_argument("--lr", type=float, default=3e-3, help="default: %(default)s")
    heads.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    heads.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the heads' file, default: NAME-heads.pt beside the card",
    )
    heads.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    show = sub.add_parser("show", help="print a profile's tables (markdown)")
    show.add_argument(
        "profile", nargs="?", default="default", help="name or path, default: %(default)s"
    )

    validate = sub.add_parser("validate", help="load a profile and check every invariant")
    validate.add_argument("profile", help="name or path")


def parse_bit_options(text: str) -> tuple[int | str, ...]:
    """``"1,2,4,lossless"`` -> ``(1, 2, 4, "lossless")``; raises ``ValueError`` naming a bad entry."""
    from splitrl.profiles.schema import VALID_BIT_OPTIONS

    options: list[int | str] = []
    for entry in text.split(","):
        entry = entry.strip()
        option: int | str = int(entry) if entry.isdigit() else entry
        if option not in VALID_BIT_OPTIONS:
            raise ValueError(
                f"--bits: {entry!r} is not one of {', '.join(map(str, VALID_BIT_OPTIONS))}"
            )
        options.append(option)
    return tuple(options)


def run(args: argparse.Namespace) -> int:
    """Run the chosen ``profile`` action."""
    if args.profile_command == "build":
        return _build(args)
    if args.profile_command == "train-heads":
        return _train_heads(args)
    from splitrl.profiles.io import load_profile

    profile = load_profile(args.profile)
    if args.profile_command == "validate":
        print(
            f"{profile.name}: valid ({profile.n_samples} samples, {profile.n_stages} stages, "
            f"{profile.n_exits} exits, bit options {list(profile.bit_options)})"
        )
        return 0
    from splitrl.profiles.report import profile_tables

    print(profile_tables(profile))
    return 0


def _train_heads(args: argparse.Namespace) -> int:
    """Train a card's early-exit heads and write them where the card can name them."""
    import dataclasses

    from splitrl.models.card import load_model_card, staged_model_from_card
    from splitrl.models.exit_heads import ExitHeadSettings, save_exit_heads, train_exit_heads
    from splitrl.profiles.samples import open_samples

    settings = ExitHeadSettings(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed
    )
    card = load_model_card(args.card)
    model = staged_model_from_card(dataclasses.replace(card, exit_heads=None), seed=args.seed)
    samples = open_samples(args.data, model.input_spec.shape)
    validation = (
        None if args.validation is None else open_samples(args.validation, model.input_spec.shape)
    )
    started = time.perf_counter()
    metrics = train_exit_heads(model, samples, settings, validation, progress=not args.no_progress)
    out = args.out if args.out is not None else card.folder / f"{card.name}-heads.pt"
    save_exit_heads(model, out)
    for epoch, loss in enumerate(metrics["epoch_loss"], start=1):
        accuracy = metrics.get("epoch_validation_accuracy", [[]] * epoch)[epoch - 1]
        shown = ", ".join(f"{a:.4f}" for a in accuracy)
        print(f"epoch {epoch}: loss {loss:.4f}" + (f", exit accuracies {shown}" if shown else ""))
    print(
        f"wrote {out} in {time.perf_counter() - started:.1f} s; "
        f"the card names it with  exit_heads: {os.path.relpath(out, card.folder)}"
    )
    return 0


def _build_settings(args: argparse.Namespace, metadata: dict[str, Any]) -> BuildSettings:
    """What the command line asks the builder to measure."""
    from splitrl.profiles.builder import BuildSettings

    return BuildSettings(
        name=args.name,
        bit_options=parse_bit_options(args.bits),
        per_channel=args.per_channel,
        clip=args.clip,
        entropy=args.entropy,
        batch_size=args.batch_size,
        latency_repeats=QUICK["latency_repeats"] if args.quick else BuildSettings.latency_repeats,
        codec_timing_samples=QUICK["codec_timing"]
        if args.quick
        else BuildSettings.codec_timing_samples,
        metadata=metadata,
    )


def _sample_limit(args: argparse.Namespace) -> int | None:
    """How many samples the build profiles (``None``: all of them)."""
    if args.samples is not None:
        return int(args.samples)
    return QUICK["samples"] if args.quick else None


def _build_and_save(
    args: argparse.Namespace,
    model: StagedModel,
    inputs: np.ndarray | SampleSource,
    labels: np.ndarray | None,
    settings: BuildSettings,
) -> int:
    """Measure the profile (seeded, resumable from its checkpoint), write it and say where."""
    import torch

    from splitrl.profiles.builder import build_profile
    from splitrl.profiles.io import save_profile

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    profile = build_profile(
        model,
        inputs,
        labels,
        settings,
        progress=not args.no_progress,
        checkpoint=_checkpoint_path(args),
        device=args.device,
    )
    path = save_profile(profile, args.out)
    accuracy = ", ".join(f"{a:.4f}" for a in profile.clean_accuracy())
    print(f"wrote {path} in {time.perf_counter() - started:.1f} s: exit accuracies {accuracy}")
    return 0


def _checkpoint_path(args: argparse.Namespace) -> Path:
    """Where a build keeps its measurements until the profile is written (removed by --restart)."""
    path = Path(args.out) / f"{args.name}.checkpoint.npz"
    if args.restart:
        path.unlink(missing_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        print(f"resuming the interrupted build saved in {path}")
    return path


def _build_user_model(args: argparse.Namespace) -> int:
    """Profile a network from a model card or a factory on the samples ``--data`` names."""
    from splitrl.models.card import load_model_card, resolve_factory, staged_model_from_card
    from splitrl.models.protocol import StagedModel
    from splitrl.profiles.samples import open_samples

    if args.card is not None and args.model is not None:
        raise ValueError("give --card or --model, not both")
    if args.data is None:
        raise ValueError("--card and --model need --data imagefolder:PATH or npz:PATH")
    if args.train or args.weights is not None:
        raise ValueError(
            "--train and --weights are for the shipped network; a card names its own weights"
        )
    model_info: dict[str, Any]
    if args.card is not None:
        card = load_model_card(args.card)
        model: StagedModel = staged_model_from_card(card, seed=args.seed)
        model_info = {"card": str(args.card.resolve()), "factory": card.model, **card.sha256()}
    else:
        model = resolve_factory(args.model)()
        if not isinstance(model, StagedModel):
            raise ValueError(f"--model {args.model}: the function must return a StagedModel")
        module, _, function = args.model.rpartition(":")
        resolved = str(Path(module).resolve()) if module.endswith(".py") else module
        model_info = {"factory": f"{resolved}:{function}"}
    samples = _sample_limit(args)
    source = open_samples(args.data, model.input_spec.shape, limit=samples)
    kind, _, location = args.data.partition(":")
    settings = _build_settings(
        args,
        {
            "model": model_info,
            "dataset": {
                "source": f"{kind}:{Path(location).resolve()}",
                "n_samples": len(source),
                "fingerprint": source.fingerprint(),
            },
        },
    )
    return _build_and_save(args, model, source, None, settings)


def _build(args: argparse.Namespace) -> int:
    if args.card is not None or args.model is not None:
        return _build_user_model(args)
    if args.data is not None:
        raise ValueError("--data needs --card or --model (the shipped network reads its canvases)")
    import numpy as np

    from splitrl.models import (
        TEST_CANVAS_SEED,
        CanvasDataset,
        TrainingSettings,
        load_checkpoint,
        load_default_model,
        save_checkpoint,
        train_early_exit_net,
    )
    from splitrl.models.checkpoint import read_sidecar

    parse_bit_options(args.bits)  # a bad --bits fails before the training
    samples = _sample_limit(args)
    progress = not args.no_progress
    model_info: dict[str, Any]
    if args.train:
        settings = (
            TrainingSettings(
                train_samples=QUICK["train_samples"],
                validation_samples=QUICK["validation_samples"],
            )
            if args.quick
            else TrainingSettings()
        )
        epochs = (
            args.epochs if args.epochs is not None else (QUICK["epochs"] if args.quick else None)
        )
        kwargs = {"epochs": epochs} if epochs is not None else {}
        model, metrics = train_early_exit_net(
            None, args.data_dir, seed=args.seed, progress=progress, settings=settings, **kwargs
        )
        sidecar = save_checkpoint(
            model, args.weights_out or args.out, args.model_name or f"{args.name}-model", metrics
        )
        model_info = read_sidecar(sidecar)
    elif args.weights is not None:
        model = load_checkpoint(args.weights)
        model_info = read_sidecar(args.weights)
    else:
        from splitrl.models.checkpoint import DEFAULT_MODEL_NAME, WEIGHTS_DIR

        model = load_default_model()
        model_info = read_sidecar(WEIGHTS_DIR / f"{DEFAULT_MODEL_NAME}.json")
    model.eval()

    dataset = CanvasDataset.from_fashion_mnist(
        "test", seed=TEST_CANVAS_SEED, data_dir=args.data_dir
    )
    indices = None if samples is None else np.arange(min(samples, len(dataset)))
    inputs, labels = dataset.materialize(indices, progress=progress)
    settings_ = _build_settings(
        args,
        {
            "model": {
                key: model_info.get(key) for key in ("model", "config", "weights_sha256", "seed")
            },
            "dataset": {
                "name": "fashion-mnist-canvas",
                "split": "test",
                "canvas_seed": TEST_CANVAS_SEED,
                "canvas": dataset.config.to_dict(),
                "n_samples": len(labels),
            },
        },
    )
    return _build_and_save(args, model, inputs, labels, settings_)
