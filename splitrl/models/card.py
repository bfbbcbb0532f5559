"""A model card: a plain pretrained network made a staged early-exit model, from a small YAML file.

```yaml
name: mobilenet_v2                      # profile and file names (default: the card's file stem)
model: torchvision.models:mobilenet_v2  # MODULE:FUNCTION (or path/to/file.py:FUNCTION) returning the network
arguments: {num_classes: 10}            # keyword arguments of that function (optional)
weights: mobilenet_v2.pt                # its state_dict, relative to this file (optional: seeded init)
input:
  channels: 3                           # 1 (grayscale) or 3 (RGB); the camera delivers uint8 frames
  size: [96, 96]                        # height, width
  mean: [0.485, 0.456, 0.406]           # normalization inside stage 1: (x / 255 - mean) / std
  std: [0.229, 0.224, 0.225]            # (leave both out: stage 1 gets x / 255)
cuts: auto                              # or module names, e.g. [layer1, layer2, layer3, layer4]
max_cuts: 4                             # with auto: at most this many stages
exits: [2, 3]                           # early exits after these stages (numbers) or cuts (names)
exit_heads: mobilenet_v2-heads.pt       # trained early-exit heads (optional)
```

Stage ``k`` is the network between cut ``k - 1`` and cut ``k`` (:mod:`splitrl.models.cutting`);
what follows the last cut is the final exit, the network's own classifier. Every early exit is a
pooled linear head (:func:`~splitrl.models.resnet.pooled_linear_head`) on its stage's output,
loaded from ``exit_heads`` when given (seeded random weights otherwise, to be trained).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import yaml
from torch import nn

from splitrl.models.checkpoint import file_sha256
from splitrl.models.cutting import auto_cuts, cut_network
from splitrl.models.normalization import CameraInput
from splitrl.models.protocol import ExitSpec, InputSpec, StagedModel, StagedModule
from splitrl.models.resnet import pooled_linear_head

_KEYS = {
    "name", "model", "arguments", "weights", "input", "cuts", "max_cuts", "exits", "exit_heads",
}  # fmt: skip
_INPUT_KEYS = {"channels", "size", "mean", "std"}


@dataclass(frozen=True)
class ModelCard:
    """What a model card says (see the module docstring for the file).

    :param name: the model's name
    :param model: ``MODULE:FUNCTION`` or ``path/to/file.py:FUNCTION`` returning the network
    :param arguments: keyword arguments of that function
    :param weights: the network's ``state_dict`` file, or ``None`` to keep its own weights
    :param channels: channels of a camera frame, 1 or 3
    :param size: ``(height, width)`` of a frame
    :param mean: per-channel mean of the normalization on ``x / 255`` (``None``: none)
    :param std: per-channel standard deviation of the normalization
    :param cuts: module names to cut after, or ``"auto"``
    :param max_cuts: the most cuts ``"auto"`` makes
    :param exits: early exits, each a stage number (``after_stage``) or a cut's module name
    :param exit_heads: the trained early-exit heads' ``state_dict`` file, or ``None``
    :param folder: the card's folder, against which relative paths resolve
    """

    name: str
    model: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    weights: Path | None = None
    channels: int = 3
    size: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    cuts: tuple[str, ...] | str = "auto"
    max_cuts: int = 4
    exits: tuple[int | str, ...] = ()
    exit_heads: Path | None = None
    folder: Path = Path(".")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of a frame."""
        return (self.channels, *self.size)

    def sha256(self) -> dict[str, str]:
        """SHA-256 of the weight files the card names (``weights``, ``exit_heads``)."""
        files = {"weights_sha256": self.weights, "exit_heads_sha256": self.exit_heads}
        return {key: file_sha256(path) for key, path in files.items() if path is not None}


def load_model_card(path: str | os.PathLike[str]) -> ModelCard:
    """Read and check a model card.

    :param path: the YAML file
    :raises ValueError: naming the file and the key that is wrong
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: model card not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not YAML ({error})") from error
    try:
        return _card_from_dict(data, path)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from error


def _card_from_dict(data: Any, path: Path) -> ModelCard:
    if not isinstance(data, dict):
        raise ValueError("a model card is a mapping of keys to values")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ValueError(f"unknown keys {unknown} (known: {sorted(_KEYS)})")
    if not isinstance(data.get("model"), str) or ":" not in data["model"]:
        raise ValueError("model: expected MODULE:FUNCTION")
    spec = data.get("input")
    if not isinstance(spec, dict) or set(spec) - _INPUT_KEYS or "size" not in spec:
        raise ValueError(f"input: expected a mapping with size and optionally {_INPUT_KEYS}")
    channels = int(spec.get("channels", 3))
    size = spec["size"]
    if isinstance(size, int):
        size = [size, size]
    if channels not in (1, 3):
        raise ValueError(f"input.channels: 1 or 3, got {channels}")
    if len(size) != 2 or min(int(v) for v in size) < 1:
        raise ValueError(f"input.size: expected [height, width], got {size}")
    mean, std = spec.get("mean"), spec.get("std")
    if (mean is None) != (std is None):
        raise ValueError("input: give both mean and std, or neither")
    if mean is not None and std is not None and not (len(mean) == len(std) == channels):
        raise ValueError(f"input.mean and input.std: one value per channel ({channels})")
    cuts = data.get("cuts", "auto")
    if cuts != "auto" and not (
        isinstance(cuts, list) and cuts and all(isinstance(c, str) for c in cuts)
    ):
        raise ValueError(f"cuts: 'auto' or a list of module names, got {cuts!r}")
    exits = data.get("exits", [])
    if not isinstance(exits, list) or not all(isinstance(e, int | str) for e in exits):
        raise ValueError(f"exits: a list of stage numbers or cut names, got {exits!r}")
    arguments = data.get("arguments", {})
    if not isinstance(arguments, dict):
        raise ValueError("arguments: expected a mapping")
    folder = path.parent

    def file(key: str) -> Path | None:
        if data.get(key) is None:
            return None
        resolved = folder / str(data[key])
        if not resolved.is_file():
            raise ValueError(f"{key}: {resolved} not found")
        return resolved

    return ModelCard(
        name=str(data.get("name", path.stem)),
        model=data["model"],
        arguments=arguments,
        weights=file("weights"),
        channels=channels,
        size=(int(size[0]), int(size[1])),
        mean=None if mean is None else tuple(float(v) for v in mean),
        std=None if std is None else tuple(float(v) for v in std),
        cuts="auto" if cuts == "auto" else tuple(cuts),
        max_cuts=int(data.get("max_cuts", 4)),
        exits=tuple(exits),
        exit_heads=file("exit_heads"),
        folder=folder,
    )


def resolve_factory(text: str, folder: Path = Path(".")) -> Callable[..., Any]:
    """The function ``MODULE:FUNCTION`` or ``path/to/file.py:FUNCTION`` names.

    :param text: the reference
    :param folder: where a relative ``.py`` path is looked up
    :raises ValueError: when the module or the function cannot be found
    """
    module_name, _, function_name = text.rpartition(":")
    if not module_name or not function_name:
        raise ValueError(f"expected MODULE:FUNCTION, got {text!r}")
    try:
        if module_name.endswith(".py"):
            file = folder / module_name
            spec = importlib.util.spec_from_file_location(file.stem, file)
            if spec is None or spec.loader is None or not file.is_file():
                raise ImportError(f"{file} not found")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"{text}: cannot import {module_name} ({error})") from error
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"{text}: {module_name} has no function {function_name}")
    return cast(Callable[..., Any], function)


def staged_model_from_card(card: ModelCard, seed: int = 0) -> StagedModule:
    """The staged early-exit model a card describes, in eval mode.

    :param card: the card
    :param seed: seed of the early-exit heads' initial weights (when ``exit_heads`` is not given);
        a network without ``weights`` is always initialized with seed 0
    :raises ValueError: when the network, the cuts or the exits do not fit the card
    """
    factory = resolve_factory(card.model, card.folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # a card without weights gives the same network every time
        network = factory(**card.arguments)
    if not isinstance(network, nn.Module):
        raise ValueError(f"{card.model} returned {type(network).__name__}, not a torch module")
    if card.weights is not None:
        state = torch.load(card.weights, map_location="cpu", weights_only=True)
        try:
            network.load_state_dict(state)
        except RuntimeError as error:
            raise ValueError(f"weights {card.weights} do not fit {card.model}: {error}") from error
    network.eval()
    normalization: nn.Module = (
        CameraInput(card.mean, card.std)
        if card.mean is not None and card.std is not None
        else CameraInput((0.0,) * card.channels, (1.0,) * card.channels)
    )
    example = normalization(torch.zeros((1, *card.input_shape), dtype=torch.uint8))
    cuts = (
        auto_cuts(network, example, card.max_cuts)
        if card.cuts == "auto"
        else list(cast(tuple[str, ...], card.cuts))
    )
    stages, final_head = cut_network(network, cuts)
    with torch.no_grad():
        outputs = [example]
        for stage in stages:
            outputs.append(stage(outputs[-1]))
        classes = int(final_head(outputs[-1]).shape[-1])
    early_after = [_exit_stage(item, cuts) for item in card.exits]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        early_heads = [
            pooled_linear_head(int(outputs[after].shape[1]), classes) for after in early_after
        ]
    if card.exit_heads is not None:
        state = torch.load(card.exit_heads, map_location="cpu", weights_only=True)
        try:
            nn.ModuleList(early_heads).load_state_dict(state)
        except RuntimeError as error:
            raise ValueError(
                f"exit_heads {card.exit_heads} do not fit the card's exits: {error}"
            ) from error
    exits = [
        *(ExitSpec(after, head) for after, head in zip(early_after, early_heads, strict=True)),
        ExitSpec(len(stages), final_head),
    ]
    stage_modules: list[nn.Module] = [nn.Sequential(normalization, stages[0]), *stages[1:]]
    spec = InputSpec(
        card.input_shape,
        torch.uint8,
        (0.0, 255.0),
        f"{'RGB' if card.channels == 3 else 'grayscale'} camera frame; stage 1 normalizes it",
    )
    return StagedModule(stage_modules, exits, spec).eval()


def state_sha256(model: StagedModel) -> str:
    """SHA-256 of every stage's and exit head's parameters and buffers: which weights a model has.

    :param model: the staged model
    """
    digest = hashlib.sha256()
    for module in (*model.stages, *(spec.head for spec in model.exits)):
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _exit_stage(item: int | str, cuts: list[str]) -> int:
    if isinstance(item, int):
        if not 1 <= item < len(cuts):
            raise ValueError(
                f"exits: stage {item} is not in 1..{len(cuts) - 1} (the last has the final exit)"
            )
        return item
    if item not in cuts[:-1]:
        raise ValueError(f"exits: {item!r} is not one of the cuts before the last, {cuts[:-1]}")
    return cuts.index(item) + 1
