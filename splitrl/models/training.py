"""Joint training of all exits of an :class:`~splitrl.models.early_exit.EarlyExitNet`.

The loss is a weighted sum of the cross-entropy of every exit. Every epoch draws fresh training
canvases (a new dataset seed per epoch, derived from the run seed), so the network sees each
Fashion-MNIST training item in a new position with new clutter each time. The last
``validation_samples`` training items are held out: rendered once with
:data:`~splitrl.models.canvas.VALIDATION_CANVAS_SEED`, they measure every exit after every epoch
and are what design choices are made on; the test canvases are only measured at the end. The run is
deterministic for a given seed and thread count: ``torch.manual_seed``, deterministic algorithms,
a fixed number of intra-op threads and a seeded shuffling generator.

Retrain the shipped weights with ``python -m splitrl.models`` (see :func:`main`).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from splitrl.models.canvas import (
    TEST_CANVAS_SEED,
    VALIDATION_CANVAS_SEED,
    CanvasConfig,
    CanvasDataset,
)
from splitrl.models.checkpoint import DEFAULT_MODEL_NAME, WEIGHTS_DIR, save_checkpoint
from splitrl.models.early_exit import EarlyExitConfig, EarlyExitNet
from splitrl.models.fashion_mnist import load_fashion_mnist

DEFAULT_EPOCHS = 6
"""Epochs of the shipped weights."""


@dataclass(frozen=True)
class TrainingSettings:
    """Optimisation settings of :func:`train_early_exit_net`.

    :param batch_size: training batch size.
    :param learning_rate: peak learning rate of the one-cycle schedule (AdamW).
    :param weight_decay: AdamW weight decay.
    :param exit_weights: weight of each exit's cross-entropy in the joint loss (one per exit).
    :param num_threads: intra-op threads (part of what makes a run reproducible; one thread
        degrades gracefully when the cores are shared, where several threads stall each other).
    :param train_samples: train on only the first ``n`` training items (``None``: all that are
        not held out for validation, 55,000 of Fashion-MNIST's 60,000).
    :param validation_samples: the last ``n`` training items, never trained on, rendered with
        :data:`~splitrl.models.canvas.VALIDATION_CANVAS_SEED` and evaluated after every epoch.
    :param test_samples: evaluate on the first ``n`` test canvases (``None``: all 10,000).
    :param canvas: how canvases are drawn.
    """

    batch_size: int = 128
    learning_rate: float = 4e-3
    weight_decay: float = 5e-4
    exit_weights: tuple[float, ...] = (0.3, 0.5, 1.0)
    num_threads: int = 1
    train_samples: int | None = None
    validation_samples: int = 5000
    test_samples: int | None = None
    canvas: CanvasConfig = field(default_factory=CanvasConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        data = asdict(self)
        data["exit_weights"] = list(self.exit_weights)
        data["canvas"] = self.canvas.to_dict()
        return data


@contextmanager
def deterministic_torch(seed: int, num_threads: int) -> Iterator[None]:
    """Seed torch, force deterministic algorithms and fix the thread count, restoring them after."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous_deterministic)
        torch.set_num_threads(previous_threads)


@torch.no_grad()
def evaluate_exits(
    model: EarlyExitNet, canvases: np.ndarray, labels: np.ndarray, batch_size: int = 500
) -> list[float]:
    """Accuracy of every exit.

    :param model: the network (switched to eval mode).
    :param canvases: ``uint8 [N, 1, H, W]`` frames.
    :param labels: ``[N]`` labels.
    :param batch_size: evaluation batch size.
    :return: accuracy per exit, in ``[0, 1]``.
    """
    model.eval()
    correct = np.zeros(model.n_exits, dtype=np.int64)
    for start in range(0, len(canvases), batch_size):
        x = torch.from_numpy(canvases[start : start + batch_size])
        y = torch.from_numpy(np.asarray(labels[start : start + batch_size], dtype=np.int64))
        for e, logits in enumerate(model.forward_all_exits(x)):
            correct[e] += int((logits.argmax(dim=1) == y).sum())
    return (correct / max(len(canvases), 1)).tolist()


def train_early_exit_net(
    config: EarlyExitConfig | None,
    data_dir: str | os.PathLike[str] | None,
    seed: int,
    epochs: int = DEFAULT_EPOCHS,
    progress: bool = True,
    settings: TrainingSettings | None = None,
) -> tuple[EarlyExitNet, dict[str, Any]]:
    """Train an :class:`EarlyExitNet` on canvases with all exits jointly.

    :param config: architecture (``None``: the default).
    :param data_dir: Fashion-MNIST directory (``None``: ``$SPLITRL_FASHION_MNIST`` or the Debian
        path).
    :param seed: seeds the weights, the per-epoch canvases and the shuffling.
    :param epochs: number of passes over the training items (each with fresh canvases); the
        shipped weights used :data:`DEFAULT_EPOCHS`.
    :param progress: show tqdm progress bars.
    :param settings: optimisation settings (``None``: :class:`TrainingSettings` defaults).
    :return: the trained model in eval mode and a metrics dict: ``exit_accuracy`` (test accuracy
        per exit), ``validation_accuracy`` (per exit, final), ``epoch_loss``,
        ``epoch_validation_accuracy`` (per epoch and exit), ``train_seconds`` (wall time),
        ``train_cpu_seconds`` (CPU time of this process, what the run costs on a core of its own
        with one thread), ``seed``, ``epochs``, ``settings``, ``validation_canvas_seed``,
        ``test_canvas_seed``, ``test_samples``.
    """
    cfg = config or EarlyExitConfig()
    opts = settings or TrainingSettings()
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if len(opts.exit_weights) != len(cfg.exit_after):
        raise ValueError(
            f"{len(cfg.exit_after)} exits but {len(opts.exit_weights)} exit_weights given"
        )
    if opts.canvas.size != cfg.canvas_size:
        raise ValueError(f"canvas size {opts.canvas.size} != model input {cfg.canvas_size}")
    images, labels = load_fashion_mnist("train", data_dir)
    test_images, test_labels = load_fashion_mnist("test", data_dir)
    held_out = opts.validation_samples
    if not 2 <= held_out <= len(images) - 2:
        raise ValueError(
            f"validation_samples must be 2..{len(images) - 2} for {len(images)} training items, "
            f"got {held_out}"
        )
    train_images = images[:-held_out][: opts.train_samples]
    train_labels = labels[:-held_out][: opts.train_samples]
    validation_set = CanvasDataset(
        images[-held_out:], labels[-held_out:], VALIDATION_CANVAS_SEED, opts.canvas
    )
    validation_canvases, validation_labels = validation_set.materialize()
    test_set = CanvasDataset(test_images, test_labels, TEST_CANVAS_SEED, opts.canvas)
    n_test = len(test_set) if opts.test_samples is None else min(opts.test_samples, len(test_set))
    epoch_seeds = np.random.SeedSequence(seed).generate_state(epochs)
    weights = torch.tensor(opts.exit_weights, dtype=torch.float32)

    started, cpu_started = time.perf_counter(), time.process_time()
    with deterministic_torch(seed, opts.num_threads):
        model = EarlyExitNet(cfg)
        steps_per_epoch = -(-len(train_images) // opts.batch_size)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=opts.learning_rate, weight_decay=opts.weight_decay
        )
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=opts.learning_rate, total_steps=epochs * steps_per_epoch
        )
        shuffler = torch.Generator().manual_seed(seed)
        epoch_loss = []
        epoch_accuracy = []
        for epoch in range(epochs):
            train_set = CanvasDataset(
                train_images, train_labels, int(epoch_seeds[epoch]), opts.canvas
            )
            canvases, labels = train_set.materialize()
            x_all, y_all = torch.from_numpy(canvases), torch.from_numpy(labels)
            order = torch.randperm(len(x_all), generator=shuffler)
            model.train()
            total = 0.0
            batches = tqdm(
                order.split(opts.batch_size),
                desc=f"epoch {epoch + 1}/{epochs}",
                disable=not progress,
            )
            for batch in batches:
                logits = model.forward_all_exits(x_all[batch])
                losses = torch.stack(
                    [nn.functional.cross_entropy(out, y_all[batch]) for out in logits]
                )
                loss = (weights * losses).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                batch_loss = loss.item()
                total += batch_loss * len(batch)
                batches.set_postfix(loss=f"{batch_loss:.3f}")
            epoch_loss.append(total / len(x_all))
            epoch_accuracy.append(evaluate_exits(model, validation_canvases, validation_labels))
            if progress:
                tqdm.write(
                    f"epoch {epoch + 1}: loss {epoch_loss[-1]:.4f}, exit accuracy on "
                    f"{len(validation_labels)} validation canvases {epoch_accuracy[-1]}"
                )
        test_canvases, test_y = test_set.materialize(np.arange(n_test))
        accuracy = evaluate_exits(model, test_canvases, test_y)
    metrics: dict[str, Any] = {
        "exit_accuracy": accuracy,
        "validation_accuracy": epoch_accuracy[-1],
        "epoch_loss": epoch_loss,
        "epoch_validation_accuracy": epoch_accuracy,
        "train_seconds": time.perf_counter() - started,
        "train_cpu_seconds": time.process_time() - cpu_started,
        "seed": seed,
        "epochs": epochs,
        "settings": opts.to_dict(),
        "validation_canvas_seed": VALIDATION_CANVAS_SEED,
        "test_canvas_seed": TEST_CANVAS_SEED,
        "test_samples": n_test,
    }
    return model, metrics


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: train the network and save it as a checkpoint (weights + JSON sidecar)."""
    parser = argparse.ArgumentParser(
        prog="python -m splitrl.models",
        description="Train the early-exit network on Fashion-MNIST canvases and save it.",
    )
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--name", default=DEFAULT_MODEL_NAME)
    args = parser.parse_args(argv)
    model, metrics = train_early_exit_net(None, args.data_dir, args.seed, args.epochs)
    path = save_checkpoint(model, args.out_dir, args.name, metrics)
    accuracy = ", ".join(f"{a:.4f}" for a in metrics["exit_accuracy"])
    print(f"saved {path}; exit accuracy [{accuracy}]; {metrics['train_seconds']:.0f} s")
