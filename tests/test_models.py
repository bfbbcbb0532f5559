"""Tests of splitrl.models on tiny IDX files written here (no Fashion-MNIST install needed)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from splitrl.models import (
    TEST_CANVAS_SEED,
    VALIDATION_CANVAS_SEED,
    CanvasConfig,
    CanvasDataset,
    EarlyExitConfig,
    EarlyExitNet,
    ExitSpec,
    IdxFormatError,
    InputSpec,
    LiveInference,
    ResNetStaged,
    StagedModel,
    StagedModule,
    TrainingSettings,
    count_flops,
    describe_exits,
    describe_stages,
    load_fashion_mnist,
    pooled_linear_head,
    train_early_exit_net,
)
from splitrl.models.fashion_mnist import DATA_DIR_ENV, resolve_data_dir
from tests.conftest import write_idx, write_split

TINY_CONFIG = EarlyExitConfig(
    stem_channels=4,
    block_channels=(4, 6, 6),
    bottleneck_channels=(2, 3),
    tail_channels=(4, 8),
    head_channels=4,
)
FLAT_CANVAS = CanvasConfig(
    clutter_brightness=(1.0, 1.0),
    item_brightness=(1.0, 1.0),
    item_scale=(1.0, 1.0),
    background=(0.0, 0.0),
    noise_std=0.0,
)


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """Train items are uniform 200-valued squares, test items 100-valued: sources are visible."""
    rng = np.random.default_rng(0)
    write_split(tmp_path, "train", np.full((48, 28, 28), 200), rng.integers(0, 10, 48))
    write_split(tmp_path, "t10k", np.full((16, 28, 28), 100), rng.integers(0, 10, 16))
    return tmp_path


@pytest.fixture
def random_data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    write_split(tmp_path, "train", rng.integers(0, 256, (64, 28, 28)), rng.integers(0, 10, 64))
    write_split(tmp_path, "t10k", rng.integers(0, 256, (16, 28, 28)), rng.integers(0, 10, 16))
    return tmp_path


# --- IDX reader ---------------------------------------------------------------------------------


def test_load_fashion_mnist_roundtrip(random_data: Path) -> None:
    images, labels = load_fashion_mnist("test", random_data)
    assert images.shape == (16, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (16,) and int(labels.max()) < 10


def test_data_dir_from_environment(monkeypatch: pytest.MonkeyPatch, random_data: Path) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(random_data))
    assert resolve_data_dir() == random_data
    assert len(load_fashion_mnist("train")[0]) == 64


@pytest.mark.parametrize(
    ("corruption", "message"),
    [
        ("magic", "magic number"),
        ("truncated", "header announces"),
        ("missing", "file not found"),
        ("not_gzip", "not a readable gzip"),
        ("count", "labels"),
    ],
)
def test_idx_validation_errors(random_data: Path, corruption: str, message: str) -> None:
    images_path = random_data / "t10k-images-idx3-ubyte.gz"
    images = np.zeros((16, 28, 28), dtype=np.uint8)
    if corruption == "magic":
        write_idx(images_path, images, magic=0x0801)
    elif corruption == "truncated":
        with gzip.open(images_path, "wb") as stream:
            stream.write(struct.pack(">4I", 0x0803, 16, 28, 28) + bytes(100))
    elif corruption == "missing":
        images_path.unlink()
    elif corruption == "not_gzip":
        images_path.write_bytes(b"plain bytes")
    else:
        write_idx(images_path, images[:5])
    with pytest.raises(IdxFormatError, match=message):
        load_fashion_mnist("test", random_data)


def test_unknown_split_is_rejected(random_data: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("valid", random_data)  # type: ignore[arg-type]


# --- canvases -----------------------------------------------------------------------------------


def test_canvas_is_deterministic_per_sample(random_data: Path) -> None:
    first = CanvasDataset.from_fashion_mnist("train", seed=5, data_dir=random_data)
    second = CanvasDataset.from_fashion_mnist("train", seed=5, data_dir=random_data)
    batch, labels = first.materialize(np.array([7, 3, 11]))
    assert batch.shape == (3, 1, 64, 64) and batch.dtype == np.uint8
    for row, index in enumerate([7, 3, 11]):
        canvas, label = second[index]
        assert canvas.dtype == torch.uint8
        assert np.array_equal(canvas.numpy(), batch[row]) and label == labels[row]
    other_seed = CanvasDataset.from_fashion_mnist("train", seed=6, data_dir=random_data)
    assert not np.array_equal(other_seed.render(7)[0], batch[0])


def test_test_canvases_only_use_test_items(tiny_data: Path) -> None:
    dataset = CanvasDataset.from_fashion_mnist(
        "test", seed=3, data_dir=tiny_data, config=FLAT_CANVAS
    )
    for index in range(len(dataset)):
        canvas, sources = dataset.render(index)
        assert set(np.unique(canvas).tolist()) <= {0, 100}  # train items would show 200
        assert np.count_nonzero(canvas == 100) >= 28 * 28  # the whole item is visible
        assert sources.item == index and index not in sources.clutter
        assert all(0 <= other < len(dataset) for other in sources.clutter)


@pytest.mark.parametrize(("scale", "side"), [(0.5, 14), (1.0, 28), (1.25, 35)])
def test_item_scale_resizes_the_item(tiny_data: Path, scale: float, side: int) -> None:
    config = dataclasses.replace(FLAT_CANVAS, clutter_items=(0, 0), item_scale=(scale, scale))
    dataset = CanvasDataset.from_fashion_mnist("test", seed=3, data_dir=tiny_data, config=config)
    for index in range(4):
        canvas = dataset.render(index)[0][0]
        rows, cols = np.nonzero(canvas == 100)
        assert len(rows) == side * side  # a solid square item, resampled to side x side
        assert rows.max() - rows.min() + 1 == side and cols.max() - cols.min() + 1 == side


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 32},
        {"clutter_crop": (0, 5)},
        {"noise_std": -1.0},
        {"clutter_items": (3, 1)},
        {"item_scale": (0.1, 1.0)},
        {"item_scale": (1.0, 2.5)},
    ],
)
def test_bad_canvas_config_is_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CanvasConfig(**kwargs)  # type: ignore[arg-type]


# --- training ------------------------------------------------------------------------------------


def test_training_holds_out_the_last_items_for_validation(
    random_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: dict[int, np.ndarray] = {}
    original_init = CanvasDataset.__init__

    def recording_init(self: CanvasDataset, images: np.ndarray, *args: object) -> None:
        original_init(self, images, *args)  # type: ignore[arg-type]
        drawn[self.seed] = images

    monkeypatch.setattr(CanvasDataset, "__init__", recording_init)
    settings = TrainingSettings(batch_size=16, validation_samples=8)
    _, metrics = train_early_exit_net(
        TINY_CONFIG, random_data, seed=0, epochs=2, progress=False, settings=settings
    )
    items, _ = load_fashion_mnist("train", random_data)
    assert np.array_equal(drawn.pop(VALIDATION_CANVAS_SEED), items[-8:])
    assert np.array_equal(drawn.pop(TEST_CANVAS_SEED), load_fashion_mnist("test", random_data)[0])
    assert len(drawn) == 2  # one fresh set of training canvases per epoch, all without the 8
    assert all(np.array_equal(images, items[:-8]) for images in drawn.values())
    assert len(metrics["epoch_validation_accuracy"]) == 2
    assert metrics["validation_accuracy"] == metrics["epoch_validation_accuracy"][-1]
    assert all(0.0 <= a <= 1.0 for a in metrics["validation_accuracy"] + metrics["exit_accuracy"])


@pytest.mark.parametrize("validation_samples", [1, 63, 64])
def test_training_rejects_a_bad_validation_size(random_data: Path, validation_samples: int) -> None:
    settings = TrainingSettings(validation_samples=validation_samples)
    with pytest.raises(ValueError, match=r"validation_samples must be 2\.\.62"):
        train_early_exit_net(TINY_CONFIG, random_data, seed=0, progress=False, settings=settings)


# --- the network and the protocol ---------------------------------------------------------------


def test_early_exit_net_satisfies_protocol() -> None:
    model = EarlyExitNet().eval()
    assert isinstance(model, StagedModel)
    assert len(model.stages) >= 5 and len(model.exits) >= 3
    assert [spec.after_stage for spec in model.exits] == [2, 3, 5]
    assert model.input_spec.shape == (1, 64, 64) and model.input_spec.dtype == torch.uint8


@pytest.mark.parametrize("exit_index", [0, 1, 2])
def test_staged_forward_equals_plain_forward(exit_index: int) -> None:
    torch.manual_seed(0)
    model = EarlyExitNet().eval()
    x = torch.randint(0, 256, (3, 1, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        plain = model(x, exit_index)
        after = model.exits[exit_index].after_stage
        assert plain.shape == (3, 10)
        for split in range(after + 1):
            head_input = model.run_stages(model.run_stages(x, 0, split), split, after)
            assert torch.equal(model.run_exit(head_input, exit_index), plain)
        assert torch.equal(model.forward_all_exits(x)[exit_index], plain)
        assert torch.allclose(model(x.float(), exit_index), plain)  # float input, same values


@pytest.mark.parametrize(("start", "stop"), [(-1, 2), (3, 2), (0, 6)])
def test_run_stages_rejects_bad_ranges(start: int, stop: int) -> None:
    with pytest.raises(ValueError, match="start"):
        EarlyExitNet().run_stages(torch.zeros(1, 1, 64, 64), start, stop)


@pytest.mark.parametrize(
    ("exit_after", "message"),
    [([1], "last exit"), ([2, 2], "increasing"), ([0, 2], "1..2"), ([], "exit")],
)
def test_layout_validation(exit_after: list[int], message: str) -> None:
    spec = InputSpec((4,), torch.float32, (0.0, 1.0))
    exits = [ExitSpec(k, nn.Identity()) for k in exit_after]
    with pytest.raises(ValueError, match=message):
        StagedModule([nn.Identity(), nn.Identity()], exits, spec)


def test_count_flops_on_known_layers() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, torch.zeros(2, 3, 10, 10)) == 2 * 8 * 10 * 10 * 3 * 9
    assert count_flops(nn.Linear(20, 5), torch.zeros(4, 20)) == 2 * 20 * 5
    grouped = nn.Conv2d(4, 4, 1, groups=4)
    assert count_flops(grouped, torch.zeros(1, 4, 6, 6)) == 2 * 4 * 36


def test_describe_stages_and_exits() -> None:
    model = EarlyExitNet()
    stages = describe_stages(model)
    assert [s.output_shape for s in stages] == [
        (16, 32, 32), (8, 16, 16), (40, 8, 8), (16, 8, 8), (128, 4, 4),
    ]  # fmt: skip
    assert all(s.flops > 0 for s in stages)
    assert [s.n_layers for s in stages] == [1, 2, 1, 2, 6]  # convolutions per stage
    assert stages[0].flops == 2 * 16 * 32 * 32 * 9  # conv3x3, 1 -> 16 channels, stride 2
    exits = describe_exits(model)
    assert [e.num_classes for e in exits] == [10, 10, 10]
    total = sum(s.params for s in stages) + sum(e.params for e in exits)
    assert total == sum(p.numel() for p in model.parameters())
    assert sum(s.flops for s in stages) < 50e6
    assert model.training  # describing does not leave the model in eval mode


# --- ResNet adapter -----------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """The torchvision ResNet BasicBlock structure."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """The torchvision ResNet-18 module structure and forward."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._layer(64, 64, 1)
        self.layer2 = self._layer(64, 128, 2)
        self.layer3 = self._layer(128, 256, 2)
        self.layer4 = self._layer(256, 512, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    @staticmethod
    def _layer(inplanes: int, planes: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def randomize_batchnorm(model: nn.Module) -> None:
    """Running statistics that do not just pass values through (as a trained model has)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)


def make_resnet18() -> nn.Module:
    try:
        from torchvision.models import resnet18
    except ImportError:
        return ResNet18(num_classes=10)
    return resnet18(weights=None, num_classes=10)


def test_resnet_adapter_equals_wrapped_forward() -> None:
    torch.manual_seed(0)
    resnet = make_resnet18()
    randomize_batchnorm(resnet)
    resnet.eval()
    staged = ResNetStaged(resnet, early_exits=[ExitSpec(2, pooled_linear_head(64, 10))]).eval()
    assert isinstance(staged, StagedModel)
    frames = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    x = (frames.float() / 255.0 - mean) / std  # what the ResNet was trained on
    with torch.no_grad():
        assert torch.equal(staged(frames), resnet(x))
        assert torch.equal(staged.run_exit(staged.run_stages(frames, 0, 5), 1), resnet(x))
        assert staged(frames, exit_index=0).shape == (2, 10)
    shapes = [s.output_shape for s in describe_stages(staged)]
    assert shapes == [(64, 56, 56), (64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]


def test_resnet_adapter_rejects_other_modules() -> None:
    with pytest.raises(ValueError, match="layer1"):
        ResNetStaged(nn.Linear(3, 3))


# --- live inference -----------------------------------------------------------------------------


class MinMaxCodec:
    """Per-tensor min/max linear quantizer with a tiny header (a stand-in for splitrl.codecs)."""

    def encode(self, x: np.ndarray, bits: int | str = 8, **options: object) -> bytes:
        x = np.asarray(x)
        header: dict[str, object] = {"shape": list(x.shape), "dtype": str(x.dtype), "bits": bits}
        if bits == "lossless":
            return json.dumps(header).encode() + b"\n" + x.tobytes()
        low, high = float(x.min()), float(x.max())
        levels = 2 ** int(bits) - 1
        scale = (high - low) / levels if high > low else 1.0
        header.update(low=low, scale=scale)
        codes = np.rint((x.astype(np.float64) - low) / scale).astype(np.uint8)
        return json.dumps(header).encode() + b"\n" + codes.tobytes()

    def decode(self, frame: bytes) -> np.ndarray:
        raw_header, body = frame.split(b"\n", 1)
        header = json.loads(raw_header)
        if header["bits"] == "lossless":
            return np.frombuffer(body, dtype=header["dtype"]).reshape(header["shape"])
        codes = np.frombuffer(body, dtype=np.uint8).reshape(header["shape"])
        values = codes * header["scale"] + header["low"]
        return values.astype(header["dtype"])


@pytest.fixture
def live() -> LiveInference:
    torch.manual_seed(0)
    model = EarlyExitNet(TINY_CONFIG)
    randomize_batchnorm(model)
    return LiveInference(model, codec=MinMaxCodec())


def frames(n: int) -> torch.Tensor:
    return torch.from_numpy(
        np.random.default_rng(2).integers(0, 256, (n, 1, 64, 64), dtype=np.uint8)
    )


@pytest.mark.parametrize(("exit_index", "split"), [(0, 2), (0, 5), (1, 4), (2, 5)])
def test_device_only_sends_nothing_and_matches_forward(
    live: LiveInference, exit_index: int, split: int
) -> None:
    x = frames(1)
    model = live.model
    assert isinstance(model, EarlyExitNet)
    outcome = live.infer(x[0], exit_index, split, bits=2, label=3)
    assert outcome.device_only and outcome.payload_bytes == 0
    with torch.no_grad():
        probabilities = torch.softmax(model(x, exit_index)[0], 0)
    assert outcome.predicted == int(probabilities.argmax())
    assert outcome.confidence == pytest.approx(float(probabilities.max()))
    assert outcome.correct == (outcome.predicted == 3)


@pytest.mark.parametrize("split", [0, 1, 2, 3, 4])
def test_offloaded_lossless_equals_device_only(live: LiveInference, split: int) -> None:
    x = frames(1)[0]
    offloaded = live.infer(x, exit_index=2, split=split, bits="lossless")
    device = live.infer(x, exit_index=2, split=5, bits="lossless")
    assert not offloaded.device_only and offloaded.payload_bytes > 0
    assert offloaded.predicted == device.predicted
    assert offloaded.confidence == pytest.approx(device.confidence, rel=1e-5)


def test_quantization_changes_the_offloaded_tensor(live: LiveInference) -> None:
    x = frames(4)
    outputs = live.stage_outputs(x)
    coarse, coarse_sizes = live.transmit(outputs[1], 1, bits=1)
    fine, _ = live.transmit(outputs[1], 1, bits=8)
    assert coarse.shape == outputs[1].shape and coarse.dtype == outputs[1].dtype
    assert (outputs[1] - coarse).abs().max() > (outputs[1] - fine).abs().max()
    assert coarse_sizes.shape == (4,) and np.all(coarse_sizes > outputs[1][0].numel())


@pytest.mark.parametrize(("split", "bits"), [(0, 4), (2, 4), (3, 1), (4, 8)])
def test_batched_path_agrees_with_live(live: LiveInference, split: int, bits: int) -> None:
    x = frames(5)
    restored, sizes = live.transmit(live.stage_outputs(x)[split], split, bits)
    logits = live.exit_logits_from(split, restored, exit_index=2)
    for row in range(len(x)):
        outcome = live.infer(x[row], exit_index=2, split=split, bits=bits)
        assert outcome.payload_bytes == sizes[row]
        assert outcome.predicted == int(logits[row].argmax())
        assert outcome.confidence == pytest.approx(float(torch.softmax(logits[row], 0).max()))


def test_live_rejects_bad_requests(live: LiveInference) -> None:
    with pytest.raises(ValueError, match="split"):
        live.infer(frames(1)[0], exit_index=0, split=6, bits=4)
    with pytest.raises(ValueError, match="exit_index"):
        live.infer(frames(1)[0], exit_index=3, split=1, bits=4)
    with pytest.raises(ValueError, match="one sample"):
        live.infer(frames(2), exit_index=0, split=1, bits=4)
    with pytest.raises(ValueError, match="past exit"):
        live.exit_logits_from(3, torch.zeros(1, 6, 8, 8), exit_index=0)


def test_live_with_the_real_codec() -> None:
    codecs = pytest.importorskip("splitrl.codecs")
    if not hasattr(codecs, "encode"):
        pytest.skip("splitrl.codecs has no encode yet")
    live = LiveInference(EarlyExitNet(TINY_CONFIG))
    x = frames(2)
    for split in range(5):
        _, sizes = live.transmit(live.stage_outputs(x)[split], split, bits=4)
        assert np.all(sizes > 0)
        outcome = live.infer(x[0], exit_index=2, split=split, bits=4)
        assert outcome.payload_bytes == sizes[0]
