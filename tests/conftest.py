"""Shared fixtures: a tiny staged model and a tiny profile built from it with the real builder."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from splitrl.models.protocol import ExitSpec, InputSpec, StagedModule
from splitrl.profiles.builder import BuildSettings, build_profile
from splitrl.profiles.io import save_profile
from splitrl.profiles.schema import Profile

TINY_BITS: tuple[int | str, ...] = (2, 4, 8, "lossless")


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> None:
    """Write ``array`` (uint8) as a gzip-compressed IDX file, the format of Fashion-MNIST."""
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as stream:
        stream.write(header + array.astype(np.uint8).tobytes())


def write_split(root: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write one split (``train`` or ``t10k``) of a Fashion-MNIST-like data set."""
    write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
    write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)


class _Scale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / 255.0


def tiny_staged_model(seed: int = 0) -> StagedModule:
    """Three stages on 1x16x16 inputs, exits after stages 1 and 3, random weights."""
    torch.manual_seed(seed)
    stages = [
        nn.Sequential(_Scale(), nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(4, 2, 1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(2, 8, 3, stride=2, padding=1), nn.ReLU()),
    ]
    exits = [
        ExitSpec(1, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))),
        ExitSpec(3, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))),
    ]
    model = StagedModule(stages, exits, InputSpec((1, 16, 16), torch.uint8, (0.0, 255.0)))
    return model.eval()


def tiny_inputs(n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 frames with labels that the tiny model gets partly right."""
    rng = np.random.default_rng(seed)
    inputs = rng.integers(0, 256, size=(n, 1, 16, 16), dtype=np.uint8)
    labels = rng.integers(0, 3, size=n)
    return inputs, labels


@pytest.fixture(scope="session")
def tiny_profile_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A profile of the tiny model, built with the real builder and codec and saved to disk."""
    inputs, labels = tiny_inputs()
    settings = BuildSettings(
        name="tiny", bit_options=TINY_BITS, batch_size=16, latency_repeats=3, codec_timing_samples=4
    )
    profile = build_profile(tiny_staged_model(), inputs, labels, settings, progress=False)
    return save_profile(profile, tmp_path_factory.mktemp("profiles"))


@pytest.fixture(scope="session")
def tiny_profile(tiny_profile_path: Path) -> Profile:
    """The tiny profile, loaded and validated."""
    from splitrl.profiles.io import load_profile

    return load_profile(tiny_profile_path)


@pytest.fixture(scope="session")
def tiny_run(tiny_profile_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory as ``splitrl train`` writes it: a short SACD training on the tiny profile."""
    from splitrl.training.config import TrainConfig
    from splitrl.training.trainer import train

    config = TrainConfig(
        profile=str(tiny_profile_path),
        horizon=20,
        timesteps=64,
        eval_freq=0,
        checkpoint_freq=0,
        out=tmp_path_factory.mktemp("runs"),
        hyperparameters={
            "learning_starts": 32,
            "batch_size": 16,
            "buffer_size": 1_000,
            "policy_kwargs": {"net_arch": [32, 32]},
        },
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(config).run_dir.path
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Small networks train fastest on one thread, and the test machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_flags_refused(
    main: Callable[[list[str]], int],
    flags: list[str],
    message: str,
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A benchmark's ``main`` exits with the usage code 2 on ``flags``, says ``message`` on stderr
    and writes no ``results`` folder in ``folder`` (its working directory)."""
    monkeypatch.chdir(folder)
    with pytest.raises(SystemExit) as raised:
        main(flags)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err
    assert not (folder / "results").exists()
