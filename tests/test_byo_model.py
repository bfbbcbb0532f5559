"""Bring your own network: RGB and grayscale models, image folders, resumable builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from splitrl.models.protocol import ExitSpec, InputSpec, StagedModule
from splitrl.profiles.builder import BuildSettings, build_profile, png_size
from splitrl.profiles.io import load_profile, save_profile
from splitrl.profiles.samples import ArraySamples, ImageFolderSamples, open_samples

BITS: tuple[int | str, ...] = (2, 8, "lossless")
CLASSES = 3


class _Scale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / 255.0


def small_staged_model(channels: int, size: int = 16, seed: int = 0) -> StagedModule:
    """Three convolution stages on ``channels x size x size`` uint8 frames, exits after 2 and 3."""
    torch.manual_seed(seed)
    stages = [
        nn.Sequential(_Scale(), nn.Conv2d(channels, 8, 3, stride=2, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU()),
    ]

    def head(width: int) -> nn.Module:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, CLASSES))

    exits = [ExitSpec(2, head(4)), ExitSpec(3, head(8))]
    spec = InputSpec((channels, size, size), torch.uint8, (0.0, 255.0))
    return StagedModule(stages, exits, spec).eval()


def write_image_folder(root: Path, n_per_class: int = 8, mode: str = "RGB", seed: int = 0) -> Path:
    """``root/class_k/*.png`` with random 20x24 images (not the model's size: they get fitted)."""
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    for k in range(CLASSES):
        folder = root / f"class_{k}"
        folder.mkdir(parents=True)
        for i in range(n_per_class):
            pixels = rng.integers(0, 256, size=(20, 24, channels), dtype=np.uint8)
            Image.fromarray(pixels if channels == 3 else pixels[:, :, 0]).save(folder / f"{i}.png")
    return root


def settings(**changes: object) -> BuildSettings:
    base: dict[str, object] = {
        "name": "byo",
        "bit_options": BITS,
        "batch_size": 8,
        "latency_repeats": 2,
        "codec_timing_samples": 2,
    }
    return BuildSettings(**{**base, **changes})  # type: ignore[arg-type]


class CountingSamples:
    """A sample source that records which batches it read and can fail at a given batch start."""

    def __init__(self, source: ImageFolderSamples, fail_at: int | None = None) -> None:
        self.source = source
        self.fail_at = fail_at
        self.reads: list[tuple[int, int]] = []

    @property
    def labels(self) -> np.ndarray:
        return self.source.labels

    def __len__(self) -> int:
        return len(self.source)

    def read(self, start: int, stop: int) -> np.ndarray:
        if start == self.fail_at:
            raise KeyboardInterrupt
        self.reads.append((start, stop))
        return self.source.read(start, stop)

    def fingerprint(self) -> str:
        return self.source.fingerprint()


@pytest.mark.parametrize("channels", [3, 1])
def test_png_size_of_rgb_and_grayscale_frames(channels: int) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(channels, 12, 10), dtype=np.uint8)
    flat = np.zeros((channels, 12, 10), dtype=np.uint8)
    assert png_size(image) > png_size(flat) > 0


def test_png_size_rejects_other_layouts() -> None:
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        png_size(np.zeros((2, 8, 8), dtype=np.uint8))


def test_image_folder_reads_classes_in_a_seeded_order(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images", n_per_class=4)
    source = ImageFolderSamples(root, (3, 16, 16))
    again = ImageFolderSamples(root, (3, 16, 16))
    assert len(source) == 12
    assert sorted(np.bincount(source.labels)) == [4, 4, 4]
    assert np.array_equal(source.labels, again.labels)
    batch = source.read(2, 7)
    assert batch.dtype == np.uint8 and batch.shape == (5, 3, 16, 16)
    assert np.array_equal(batch, again.read(2, 7))
    assert source.fingerprint() == again.fingerprint()
    gray = ImageFolderSamples(root, (1, 8, 12), limit=5)
    assert gray.read(0, 5).shape == (5, 1, 8, 12)


def test_open_samples_names_the_bad_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="imagefolder:PATH or npz:PATH"):
        open_samples(f"folder:{tmp_path}", (3, 16, 16))
    with pytest.raises(ValueError, match="not found"):
        open_samples(f"npz:{tmp_path / 'missing.npz'}", (3, 16, 16))
    path = tmp_path / "samples.npz"
    np.savez(path, inputs=np.zeros((4, 3, 16, 16), np.uint8), labels=np.arange(4))
    assert len(open_samples(f"npz:{path}", (3, 16, 16), limit=3)) == 3


@pytest.mark.parametrize("mode, channels", [("RGB", 3), ("L", 1)])
def test_build_from_an_image_folder_rgb_and_grayscale(
    tmp_path: Path, mode: str, channels: int, one_torch_thread: None
) -> None:
    root = write_image_folder(tmp_path / "images", mode=mode)
    source = ImageFolderSamples(root, (channels, 16, 16))
    profile = build_profile(small_staged_model(channels), source, None, settings(), progress=False)
    loaded = load_profile(save_profile(profile, tmp_path / "profiles"))
    assert loaded.input_shape == (channels, 16, 16)
    assert loaded.n_samples == len(source)
    assert np.array_equal(loaded.labels, source.labels)
    assert (loaded.input_png_bytes > 0).all()
    assert (loaded.payload_bytes[:, :3] > 0).all()


def test_interrupted_build_resumes_where_it_stopped(tmp_path: Path, one_torch_thread: None) -> None:
    root = write_image_folder(tmp_path / "images")
    checkpoint = tmp_path / "byo.checkpoint.npz"
    model = small_staged_model(3)
    interrupted = CountingSamples(ImageFolderSamples(root, (3, 16, 16)), fail_at=16)
    with pytest.raises(KeyboardInterrupt):
        build_profile(model, interrupted, None, settings(), False, checkpoint=checkpoint)
    assert checkpoint.exists()

    resumed_source = CountingSamples(ImageFolderSamples(root, (3, 16, 16)))
    resumed = build_profile(model, resumed_source, None, settings(), False, checkpoint=checkpoint)
    # the check reads sample 0, then only the batch that was never measured
    assert resumed_source.reads == [(0, 1), (16, 24)]
    assert not checkpoint.exists()

    whole = build_profile(model, ImageFolderSamples(root, (3, 16, 16)), None, settings(), False)
    assert np.array_equal(resumed.payload_bytes, whole.payload_bytes)
    assert np.array_equal(resumed.correct, whole.correct)
    assert np.array_equal(resumed.confidence, whole.confidence)
    assert np.array_equal(resumed.input_png_bytes, whole.input_png_bytes)


def test_checkpoint_of_another_build_is_refused(tmp_path: Path, one_torch_thread: None) -> None:
    root = write_image_folder(tmp_path / "images")
    checkpoint = tmp_path / "byo.checkpoint.npz"
    source = CountingSamples(ImageFolderSamples(root, (3, 16, 16)), fail_at=8)
    with pytest.raises(KeyboardInterrupt):
        build_profile(small_staged_model(3), source, None, settings(), False, checkpoint=checkpoint)
    other_model = small_staged_model(3, seed=1)
    with pytest.raises(ValueError, match="checkpoint of another build"):
        build_profile(
            other_model, ImageFolderSamples(root, (3, 16, 16)), None, settings(), False,
            checkpoint=checkpoint,
        )  # fmt: skip


def test_cheap_checks_fail_before_the_long_loop(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images")
    wrong_size = CountingSamples(ImageFolderSamples(root, (3, 20, 20)))
    with pytest.raises(ValueError, match=r"shape \(3, 20, 20\), the model takes \(3, 16, 16\)"):
        build_profile(small_staged_model(3), wrong_size, None, settings(), False)
    assert wrong_size.reads == [(0, 1)]

    too_many_classes = ArraySamples(np.zeros((4, 3, 16, 16), np.uint8), np.array([0, 1, 2, 5]))
    with pytest.raises(ValueError, match="labels go up to 5"):
        build_profile(small_staged_model(3), too_many_classes, None, settings(), False)


def test_build_settings_and_device_are_checked() -> None:
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        settings(batch_size=0)
    inputs = np.zeros((2, 3, 16, 16), np.uint8)
    with pytest.raises(ValueError, match="expected cpu or cuda"):
        build_profile(small_staged_model(3), inputs, np.zeros(2, int), settings(), device="mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            build_profile(
                small_staged_model(3), inputs, np.zeros(2, int), settings(), device="cuda"
            )


# --- a plain network from a model card -----------------------------------------------------------

NETWORK_SOURCE = """
import torch
from torch import nn


class Residual(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return torch.relu(x + self.conv(x))


class SmallNet(nn.Module):
    def __init__(self, num_classes=3, channels=3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            Residual(8),
            nn.Conv2d(8, 12, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(12, 16, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def small_net(num_classes=3, channels=3):
    return SmallNet(num_classes, channels)
"""


def write_card(folder: Path, channels: int = 3, **changes: object) -> Path:
    """A network file, its weights and a model card in ``folder``."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "small_net.py").write_text(NETWORK_SOURCE)
    from splitrl.models.card import resolve_factory

    torch.manual_seed(0)
    network = resolve_factory("small_net.py:small_net", folder)(channels=channels)
    torch.save(network.state_dict(), folder / "small_net.pt")
    card: dict[str, object] = {
        "name": "small",
        "model": "small_net.py:small_net",
        "arguments": {"channels": channels},
        "weights": "small_net.pt",
        "input": {
            "channels": channels,
            "size": [16, 16],
            "mean": [0.5] * channels,
            "std": [0.25] * channels,
        },
        "cuts": "auto",
        "max_cuts": 3,
        "exits": [1],
    }
    card.update(changes)
    path = folder / "card.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


def test_auto_cuts_follow_shrinking_outputs_and_skip_residual_insides(tmp_path: Path) -> None:
    from splitrl.models.card import load_model_card, resolve_factory, staged_model_from_card
    from splitrl.models.cutting import auto_cuts

    card = load_model_card(write_card(tmp_path / "card"))
    network = resolve_factory(card.model, card.folder)(**card.arguments).eval()
    assert card.weights is not None
    network.load_state_dict(torch.load(card.weights, weights_only=True))
    # outputs 8x8x8 (conv, relu, residual), 12x4x4 (conv, relu), 16x2x2 (conv, relu)
    assert auto_cuts(network, torch.zeros(1, 3, 16, 16), 10) == [
        "features.2", "features.4", "features.6",
    ]  # fmt: skip
    assert auto_cuts(network, torch.zeros(1, 3, 16, 16), 2) == ["features.4", "features.6"]
    staged = staged_model_from_card(card)
    assert [spec.after_stage for spec in staged.exits] == [1, 3]
    frames = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    normalized = (frames.float() / 255.0 - 0.5) / 0.25
    with torch.no_grad():
        assert torch.allclose(staged(frames), network(normalized), atol=1e-6)
        assert staged(frames, exit_index=0).shape == (2, 3)


def test_named_cuts_and_their_errors(tmp_path: Path) -> None:
    from splitrl.models.card import load_model_card, staged_model_from_card

    card = load_model_card(write_card(tmp_path / "named", cuts=["features.1", "features.4"]))
    assert len(staged_model_from_card(card).stages) == 2
    inside = load_model_card(write_card(tmp_path / "inside", cuts=["features.2.conv"]))
    with pytest.raises(ValueError, match="skip connection"):
        staged_model_from_card(inside)
    with pytest.raises(ValueError, match="not modules of the network"):
        staged_model_from_card(load_model_card(write_card(tmp_path / "x", cuts=["nope"])))
    with pytest.raises(ValueError, match="unknown keys"):
        load_model_card(write_card(tmp_path / "y", stages=[1]))
    with pytest.raises(ValueError, match="exits: stage 3"):
        staged_model_from_card(load_model_card(write_card(tmp_path / "z", exits=[3])))


@pytest.mark.parametrize("mode, channels", [("RGB", 3), ("L", 1)])
def test_profile_build_command_from_a_card(
    tmp_path: Path, mode: str, channels: int, one_torch_thread: None
) -> None:
    from splitrl.cli import main
    from splitrl.models.card import load_model_card, staged_model_from_card, state_sha256

    card_path = write_card(tmp_path / "card", channels=channels)
    images = write_image_folder(tmp_path / "images", mode=mode)
    out = tmp_path / "profiles"
    command = [
        "profile", "build", "--card", str(card_path), "--data", f"imagefolder:{images}",
        "--name", "small", "--out", str(out), "--bits", "2,8,lossless", "--quick", "--no-progress",
    ]  # fmt: skip
    assert main(command) == 0
    profile = load_profile(out / "small.json")
    assert profile.input_shape == (channels, 16, 16)
    assert profile.n_samples == 24 and profile.n_exits == 2
    model_info = profile.metadata["model"]
    assert model_info["weights_sha256"] == load_model_card(card_path).sha256()["weights_sha256"]
    assert model_info["state_sha256"] == state_sha256(
        staged_model_from_card(load_model_card(card_path))
    )
    assert not (out / "small.checkpoint.npz").exists()


def test_profile_build_command_refuses_bad_combinations(tmp_path: Path) -> None:
    from splitrl.cli import main

    card_path = write_card(tmp_path / "card")
    assert main(["profile", "build", "--card", str(card_path), "--out", str(tmp_path)]) == 2
    assert (
        main(["profile", "build", "--data", f"npz:{tmp_path}/x.npz", "--out", str(tmp_path)]) == 2
    )
    assert main(["profile", "build", "--model", "nowhere:f", "--data", "npz:x.npz"]) == 2


def test_profile_build_command_from_a_factory(tmp_path: Path, one_torch_thread: None) -> None:
    from splitrl.cli import main

    (tmp_path / "staged.py").write_text(
        "from tests.test_byo_model import small_staged_model\n\n"
        "def make():\n    return small_staged_model(3)\n"
    )
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "samples.npz",
        inputs=rng.integers(0, 256, (10, 3, 16, 16), dtype=np.uint8),
        labels=rng.integers(0, CLASSES, 10),
    )
    command = [
        "profile", "build", "--model", f"{tmp_path / 'staged.py'}:make",
        "--data", f"npz:{tmp_path / 'samples.npz'}", "--name", "f", "--out", str(tmp_path),
        "--bits", "4,lossless", "--quick", "--no-progress",
    ]  # fmt: skip
    assert main(command) == 0
    assert load_profile(tmp_path / "f.json").n_samples == 10


def test_resnet18_adapter_profiles_uint8_frames(tmp_path: Path, one_torch_thread: None) -> None:
    from splitrl.models import ResNetStaged, pooled_linear_head
    from tests.test_models import ResNet18

    torch.manual_seed(0)
    spec = InputSpec((3, 32, 32), torch.uint8, (0.0, 255.0), "RGB camera frame")
    model = ResNetStaged(
        ResNet18(num_classes=CLASSES), [ExitSpec(2, pooled_linear_head(64, CLASSES))], spec
    ).eval()
    source = ImageFolderSamples(write_image_folder(tmp_path / "images", n_per_class=2), (3, 32, 32))
    profile = build_profile(model, source, None, settings(bit_options=(4,)), progress=False)
    assert profile.n_stages == 5 and profile.input_shape == (3, 32, 32)
    assert (profile.payload_bytes[:, :5] > 0).all()


def write_brightness_folder(root: Path, n_per_class: int, seed: int) -> Path:
    """Images whose class is their brightness (a task a frozen random backbone's features allow)."""
    rng = np.random.default_rng(seed)
    for k in range(CLASSES):
        folder = root / f"class_{k}"
        folder.mkdir(parents=True)
        for i in range(n_per_class):
            level = 40 + 80 * k + rng.normal(0, 12, size=(16, 16, 3))
            pixels = np.clip(level, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_exit_heads_learn_on_the_frozen_backbone(tmp_path: Path, one_torch_thread: None) -> None:
    from splitrl.models.card import load_model_card, staged_model_from_card
    from splitrl.models.exit_heads import ExitHeadSettings, exit_accuracies, train_exit_heads

    card = load_model_card(write_card(tmp_path / "card"))
    train = ImageFolderSamples(write_brightness_folder(tmp_path / "train", 20, seed=1), (3, 16, 16))
    test = ImageFolderSamples(write_brightness_folder(tmp_path / "test", 10, seed=2), (3, 16, 16))
    model = staged_model_from_card(card)
    frames = torch.from_numpy(test.read(0, len(test)))
    with torch.no_grad():
        final_before = model(frames)
    before = exit_accuracies(model, test)
    settings = ExitHeadSettings(epochs=10, batch_size=16, learning_rate=0.1, seed=3)
    metrics = train_exit_heads(model, train, settings, validation=test, progress=False)
    after = exit_accuracies(model, test)
    assert after[0] >= 0.8 > before[0]
    assert metrics["epoch_loss"][-1] < metrics["epoch_loss"][0]
    assert metrics["epoch_validation_accuracy"][-1] == after
    with torch.no_grad():
        assert torch.equal(model(frames), final_before)  # the final exit is untouched

    again = staged_model_from_card(card)
    train_exit_heads(again, train, settings, progress=False)
    pairs = zip(model.heads[0].parameters(), again.heads[0].parameters(), strict=True)
    for trained, repeated in pairs:
        assert torch.equal(trained, repeated)


def test_train_heads_command_writes_what_the_card_loads(
    tmp_path: Path, one_torch_thread: None
) -> None:
    import yaml

    from splitrl.cli import main
    from splitrl.models.card import load_model_card, staged_model_from_card

    card_path = write_card(tmp_path / "card")
    train = write_brightness_folder(tmp_path / "train", 6, seed=1)
    command = [
        "profile", "train-heads", "--card", str(card_path), "--data", f"imagefolder:{train}",
        "--epochs", "1", "--no-progress",
    ]  # fmt: skip
    assert main(command) == 0
    heads = tmp_path / "card" / "small-heads.pt"
    card = yaml.safe_load(card_path.read_text())
    card_path.write_text(yaml.safe_dump({**card, "exit_heads": heads.name}))
    loaded = staged_model_from_card(load_model_card(card_path))
    stored = torch.load(heads, weights_only=True)
    assert torch.equal(loaded.heads[0].state_dict()["2.weight"], stored["0.2.weight"])


def test_card_to_profile_training_evaluation_export_and_live_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_torch_thread: None
) -> None:
    """A user's model from its card to an exported controller, through the commands alone."""
    from splitrl.cli import main
    from splitrl.envs.split_computing import SplitComputingEnv
    from splitrl.profiles.schema import ProfileError
    from splitrl.runtime.segments import stage_file

    card_path = write_card(tmp_path / "card")
    images = write_image_folder(tmp_path / "images")
    out = tmp_path / "profiles"
    build = [
        "profile", "build", "--card", str(card_path), "--data", f"imagefolder:{images}",
        "--name", "small", "--out", str(out), "--bits", "2,4,8,lossless", "--quick",
        "--batch-size", "8", "--no-progress",
    ]  # fmt: skip
    read = ImageFolderSamples.read
    reads: list[int] = []
    interrupt_at = [16]

    def interrupted_read(self: ImageFolderSamples, start: int, stop: int) -> np.ndarray:
        if start in interrupt_at:
            interrupt_at.clear()
            raise KeyboardInterrupt
        reads.append(start)
        return read(self, start, stop)

    monkeypatch.setattr(ImageFolderSamples, "read", interrupted_read)
    assert main(build) == 130  # interrupted (Ctrl-C)
    assert (out / "small.checkpoint.npz").exists()
    reads.clear()
    assert main(build) == 0
    assert reads == [0, 16]  # sample 0 for the checks, then the batch never measured
    monkeypatch.undo()
    profile_path = out / "small.json"

    runs = tmp_path / "runs"
    train = [
        "train", "--profile", str(profile_path), "--horizon", "20", "--timesteps", "64",
        "--eval-freq", "0", "--checkpoint-freq", "0", "--out", str(runs), "--no-progress",
        "--hyperparams", "learning_starts=32", "batch_size=16", "buffer_size=1000",
    ]  # fmt: skip
    assert main(train) == 0
    (run,) = runs.iterdir()
    report = tmp_path / "report"
    evaluate = [
        "evaluate", str(run), "--episodes", "2", "--baselines", "device-only",
        "--out", str(report), "--no-plots", "--no-progress",
    ]  # fmt: skip
    assert main(evaluate) == 0
    assert any(report.iterdir())
    assert main(["export", str(run), "--out", str(tmp_path / "export")]) == 0
    exported = {path.name for path in (tmp_path / "export").iterdir()}
    assert {stage_file(k) for k in range(3)} | {"segments.json", "policy.onnx"} <= exported

    replay = SplitComputingEnv(profile=str(profile_path), horizon=20)
    live = SplitComputingEnv(profile=str(profile_path), horizon=20, mode="live")
    canonical = replay.actions.canonical_actions()
    for env in (replay, live):
        env.reset(seed=5)
    for step in range(12):
        action = np.array(canonical[step % len(canonical)])
        _, _, _, _, replayed = replay.step(action)
        _, _, _, _, lived = live.step(action)
        assert replayed["payload_bytes"] == lived["payload_bytes"], action
        assert replayed["correct"] == lived["correct"], action

    torch.save(
        {key: value + 1 for key, value in torch.load(tmp_path / "card" / "small_net.pt").items()},
        tmp_path / "card" / "small_net.pt",
    )
    with pytest.raises(ProfileError, match="was built from a model with weights"):
        SplitComputingEnv(profile=str(profile_path), horizon=20, mode="live").reset(seed=0)
    assert main(["export", str(run), "--out", str(tmp_path / "export2")]) == 2


def test_a_card_without_weights_gives_the_same_network_every_time(tmp_path: Path) -> None:
    import yaml

    from splitrl.models.card import load_model_card, staged_model_from_card, state_sha256

    card_path = write_card(tmp_path / "card")
    card = yaml.safe_load(card_path.read_text())
    del card["weights"]
    card_path.write_text(yaml.safe_dump(card))
    first = state_sha256(staged_model_from_card(load_model_card(card_path)))
    assert first == state_sha256(staged_model_from_card(load_model_card(card_path)))
    assert first != state_sha256(staged_model_from_card(load_model_card(card_path), seed=1))
