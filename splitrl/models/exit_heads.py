"""Train a model's early-exit heads on its frozen backbone (as Shallow-Deep Networks do).

A pretrained network has one exit, its classifier. The early exits a model card adds are new heads
on intermediate stage outputs; they are trained here with the backbone and the final exit left
exactly as they are (no gradient reaches them, and BatchNorm statistics stay put), so the final
exit keeps its accuracy and only the early heads learn.

Budget: ``epochs`` passes over the training samples. Each pass runs the backbone once per sample
up to the last early exit, without a backward pass through it, and trains every early head on its
stage's output with cross-entropy (AdamW, cosine learning-rate decay). The batches are read in a
seeded random order, one batch at a time, so the training set need not fit in memory.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from splitrl.files import atomic_write
from splitrl.models.protocol import SampleSource, StagedModel


@dataclass(frozen=True)
class ExitHeadSettings:
    """How the early-exit heads are trained.

    :param epochs: passes over the training samples
    :param batch_size: samples per step
    :param learning_rate: AdamW's initial learning rate (cosine decay to 0 over the training)
    :param weight_decay: AdamW's weight decay
    :param seed: seed of the heads' batch order and of torch's generator during the training
    """

    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be at least 1, got {self}")
        if not self.learning_rate > 0 or self.weight_decay < 0:
            raise ValueError(f"need learning_rate > 0 and weight_decay >= 0, got {self}")


def early_heads(model: StagedModel) -> nn.ModuleList:
    """The early-exit heads (every exit but the last), as the file ``exit_heads`` names holds them."""
    return nn.ModuleList(spec.head for spec in model.exits[:-1])


def train_exit_heads(
    model: StagedModel,
    samples: SampleSource,
    settings: ExitHeadSettings | None = None,
    validation: SampleSource | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the early-exit heads of ``model`` in place, its stages and final exit frozen.

    :param model: the staged model (for instance from a model card)
    :param samples: the training samples
    :param settings: the budget and the seed
    :param validation: samples on which every exit's accuracy is measured after each epoch
    :param progress: show a progress bar
    :return: ``epoch_loss`` (mean loss of the heads per epoch) and, with ``validation``,
        ``epoch_validation_accuracy`` (per epoch, per exit)
    """
    settings = settings or ExitHeadSettings()
    heads = early_heads(model)
    if len(heads) == 0:
        raise ValueError("the model has no early exit to train")
    frozen = [*model.stages, model.exits[-1].head]
    for module in frozen:
        module.eval()
        module.requires_grad_(False)
    deepest = max(spec.after_stage for spec in model.exits[:-1])
    n_batches = -(-len(samples) // settings.batch_size)
    rng = np.random.default_rng(settings.seed)
    metrics: dict[str, Any] = {"epoch_loss": [], "settings": vars(settings).copy()}
    if validation is not None:
        metrics["epoch_validation_accuracy"] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        optimizer = torch.optim.AdamW(
            heads.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=settings.epochs * n_batches
        )
        bar = tqdm(
            total=settings.epochs * n_batches,
            desc="exit heads",
            unit="batch",
            disable=not progress,
        )
        for _ in range(settings.epochs):
            heads.train()
            losses = []
            for batch in rng.permutation(n_batches):
                start = int(batch) * settings.batch_size
                stop = min(start + settings.batch_size, len(samples))
                inputs = torch.from_numpy(samples.read(start, stop)).float()
                labels = torch.as_tensor(samples.labels[start:stop], dtype=torch.long)
                with torch.no_grad():
                    outputs = _stage_outputs(model, inputs, deepest)
                loss = sum(
                    nn.functional.cross_entropy(spec.head(outputs[spec.after_stage]), labels)
                    for spec in model.exits[:-1]
                )
                assert isinstance(loss, torch.Tensor)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(float(loss.detach()))
                bar.update()
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            metrics["epoch_loss"].append(float(np.mean(losses)))
            heads.eval()
            if validation is not None:
                metrics["epoch_validation_accuracy"].append(
                    exit_accuracies(model, validation, settings.batch_size)
                )
        bar.close()
    return metrics


def exit_accuracies(model: StagedModel, samples: SampleSource, batch_size: int = 64) -> list[float]:
    """Unquantized accuracy of every exit on ``samples``.

    :param model: the staged model, in eval mode
    :param samples: the samples
    :param batch_size: samples per forward pass
    """
    hits = np.zeros(len(model.exits))
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            stop = min(start + batch_size, len(samples))
            outputs = _stage_outputs(
                model, torch.from_numpy(samples.read(start, stop)).float(), len(model.stages)
            )
            labels = torch.as_tensor(samples.labels[start:stop], dtype=torch.long)
            for e, spec in enumerate(model.exits):
                predicted = model.run_exit(outputs[spec.after_stage], e).argmax(dim=1)
                hits[e] += int((predicted == labels).sum())
    return [float(h / len(samples)) for h in hits]


def save_exit_heads(model: StagedModel, path: str | os.PathLike[str]) -> Path:
    """Write the early-exit heads' ``state_dict`` atomically (the model card's ``exit_heads``).

    :param model: the model whose heads were trained
    :param path: the file (``.pt``)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(early_heads(model).state_dict(), buffer)
    atomic_write(path, lambda file: file.write(buffer.getvalue()))
    return path


def _stage_outputs(model: StagedModel, x: torch.Tensor, stop: int) -> list[torch.Tensor]:
    outputs = [x]
    for k in range(stop):
        outputs.append(model.run_stages(outputs[-1], k, k + 1))
    return outputs
