"""Profile builder, file format, validation and the profile CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from splitrl import codecs
from splitrl.cli import main
from splitrl.profiles.io import load_profile, save_profile
from splitrl.profiles.report import accuracy_drop, bits_per_element, profile_tables
from splitrl.profiles.schema import Profile, ProfileError
from tests.conftest import TINY_BITS, tiny_inputs, tiny_staged_model


def test_builder_shapes_and_device_only_convention(tiny_profile: Profile) -> None:
    n = tiny_profile.n_samples
    assert tiny_profile.payload_bytes.shape == (n, 4, len(TINY_BITS))
    assert tiny_profile.correct.shape == (n, 4, len(TINY_BITS), 2)
    assert np.all(tiny_profile.payload_bytes[:, 3, :] == 0)
    assert np.all(tiny_profile.payload_bytes[:, :3, :] > 0)
    # exit 0 sits after stage 1: from split 1 on it is device-only and equal for every bit option
    assert np.all(tiny_profile.correct[:, 1:, :, 0] == tiny_profile.correct[:, 3:, :1, 0])


@pytest.mark.parametrize(
    ("sample", "split", "bits_index"), [(0, 0, 0), (5, 1, 1), (17, 2, 3), (30, 0, 3)]
)
def test_builder_replays_the_real_codec_and_model(
    tiny_profile: Profile, sample: int, split: int, bits_index: int
) -> None:
    model = tiny_staged_model()
    inputs, labels = tiny_inputs()
    option = TINY_BITS[bits_index]
    with torch.inference_mode():
        x = torch.from_numpy(inputs[sample : sample + 1]).float()
        tensor = model.run_stages(x, 0, split)
        sent = tensor.to(torch.uint8).numpy()[0] if split == 0 else tensor.numpy()[0]
        frame = codecs.encode(sent, bits=option)
        restored = torch.from_numpy(codecs.decode(frame)[None]).float()
        logits = model.run_exit(model.run_stages(restored, split, 3), 1)
    assert tiny_profile.payload_bytes[sample, split, bits_index] == len(frame)
    predicted_right = bool(logits.argmax(dim=1).item() == labels[sample])
    assert bool(tiny_profile.correct[sample, split, bits_index, 1]) == predicted_right
    confidence = float(torch.softmax(logits, dim=1).max())
    assert float(tiny_profile.confidence[sample, split, bits_index, 1]) == pytest.approx(
        confidence, abs=1e-3
    )


def test_lossless_option_loses_nothing(tiny_profile: Profile) -> None:
    drops = accuracy_drop(tiny_profile)
    lossless = TINY_BITS.index("lossless")
    assert np.allclose(drops[:3, lossless, 1], 0.0)


def test_save_load_round_trip(tiny_profile: Profile, tmp_path: Path) -> None:
    path = save_profile(tiny_profile, tmp_path)
    again = load_profile(path)
    assert again.bit_options == TINY_BITS
    assert again.exit_stages == (1, 3)
    for key in ("labels", "payload_bytes", "correct", "confidence", "encode_ms"):
        assert np.array_equal(getattr(again, key), getattr(tiny_profile, key))
    assert load_profile(path.with_suffix(".npz")).n_samples == tiny_profile.n_samples


def _copy(tiny_profile_path: Path, tmp_path: Path) -> Path:
    for suffix in (".json", ".npz"):
        shutil.copy(tiny_profile_path.with_suffix(suffix), tmp_path / f"tiny{suffix}")
    return tmp_path / "tiny.json"


def _rewrite_json(path: Path, change: dict[str, object]) -> None:
    document = json.loads(path.read_text())
    document.update(change)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.write_text("{not json"), "not readable as JSON"),
        (lambda p: _rewrite_json(p, {"format": "something-else"}), "not a splitrl profile"),
        (lambda p: _rewrite_json(p, {"version": 99}), "version 99 is not supported"),
        (lambda p: p.with_suffix(".npz").unlink(), "is missing"),
        (lambda p: p.with_suffix(".npz").write_bytes(b"PK garbage"), "does not match"),
        (lambda p: _rewrite_json(p, {"bit_options": [2, 4, 8, "lossy"]}), "bit option 'lossy'"),
        (lambda p: _rewrite_json(p, {"stages": "three"}), "malformed metadata"),
    ],
)
def test_malformed_profiles_are_rejected(
    tiny_profile_path: Path, tmp_path: Path, mutate: object, message: str
) -> None:
    path = _copy(tiny_profile_path, tmp_path)
    mutate(path)  # type: ignore[operator]
    with pytest.raises(ProfileError, match=message):
        load_profile(path)


def test_unknown_profile_name_lists_shipped_ones() -> None:
    with pytest.raises(ProfileError, match="not found"):
        load_profile("no-such-profile")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "payload_bytes",
            lambda p: np.where(p.payload_bytes > 0, -1, 0).astype(np.int32),
            "non-negative",
        ),
        ("confidence", lambda p: (p.confidence * 0 + 2).astype(np.float16), r"\[0, 1\]"),
        ("labels", lambda p: p.labels[:-1], "shape"),
    ],
)
def test_inconsistent_arrays_are_rejected_when_saving(
    tiny_profile: Profile, tmp_path: Path, field: str, value: object, message: str
) -> None:
    import dataclasses

    broken = dataclasses.replace(tiny_profile, **{field: value(tiny_profile)})  # type: ignore[operator]
    with pytest.raises(ProfileError, match=message):
        save_profile(broken, tmp_path)


def test_device_only_outcomes_must_not_depend_on_bits(
    tiny_profile: Profile, tmp_path: Path
) -> None:
    import dataclasses

    correct = tiny_profile.correct.copy()
    correct[:, 2, 1, 0] = ~correct[:, 2, 1, 0]  # exit 0 is device-only at split 2
    with pytest.raises(ProfileError, match="device-only"):
        save_profile(dataclasses.replace(tiny_profile, correct=correct), tmp_path)


def test_report_tables(tiny_profile: Profile) -> None:
    text = profile_tables(tiny_profile)
    assert "Accuracy per exit" in text and "Lowest rate" in text
    rates = bits_per_element(tiny_profile)
    assert rates.shape == (3, len(TINY_BITS))
    assert np.all(np.diff(rates[1:, :3], axis=1) > 0)  # more bits, more bytes (activations)


def test_cli_validate_and_show(tiny_profile_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "validate", str(tiny_profile_path)]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["profile", "show", str(tiny_profile_path)]) == 0
    assert "Mean payload bytes" in capsys.readouterr().out


def test_cli_reports_bad_profile_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert main(["profile", "validate", str(bad)]) == 2
    assert "not a splitrl profile" in capsys.readouterr().err


def _build_quick(data_dir: Path, out: Path) -> Path:
    args = [
        "profile",
        "build",
        "--quick",
        "--train",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
    ]
    assert main([*args, "--samples", "12", "--bits", "2,4,lossless", "--no-progress"]) == 0
    return out / "default.json"


def test_profile_build_quick_end_to_end_is_reproducible(tmp_path: Path) -> None:
    """``splitrl profile build --quick --train`` on a tiny Fashion-MNIST-like set, twice."""
    from tests.conftest import write_split

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    write_split(data, "train", rng.integers(0, 256, (48, 28, 28)), rng.integers(0, 10, 48))
    write_split(data, "t10k", rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 10, 12))
    first = load_profile(_build_quick(data, tmp_path / "a"))
    second = load_profile(_build_quick(data, tmp_path / "b"))
    assert first.n_samples == 12 and first.bit_options == (2, 4, "lossless")
    assert first.n_stages == 5 and first.exit_stages == (2, 3, 5)
    sidecar = json.loads((tmp_path / "a" / "default-model.json").read_text())
    assert first.metadata["model"]["weights_sha256"] == sidecar["weights_sha256"]
    # same seed, same data: same weights, so identical payloads and outcomes
    assert first.metadata["model"]["weights_sha256"] == second.metadata["model"]["weights_sha256"]
    assert np.array_equal(first.payload_bytes, second.payload_bytes)
    assert np.array_equal(first.correct, second.correct)


def test_profile_build_without_data_names_the_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["profile", "build", "--quick", "--data-dir", str(tmp_path), "--out", str(tmp_path)]
    assert main(args) == 2
    assert "t10k-images-idx3-ubyte.gz" in capsys.readouterr().err
