"""Profiles are untrusted input: confined arrays, sizes checked before decompression, sane values."""

from __future__ import annotations

import io
import json
import shutil
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from splitrl.cli import main
from splitrl.profiles.io import load_profile, sha256_of_file
from splitrl.profiles.schema import ProfileError


def copy_profile(tiny_profile_path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".json", ".npz"):
        shutil.copy(tiny_profile_path.with_suffix(suffix), folder / f"tiny{suffix}")
    return folder / "tiny.json"


def edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def replace_arrays(
    path: Path, write: Callable[[zipfile.ZipFile, dict[str, np.ndarray]], None]
) -> None:
    """Rewrite the profile's NPZ with ``write`` and record its hash, as a forger would."""
    npz_path = path.with_suffix(".npz")
    with np.load(npz_path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    with zipfile.ZipFile(npz_path, "w", zipfile.ZIP_DEFLATED) as archive:
        write(archive, arrays)
    edit_json(path, lambda d: d["arrays"].update(sha256=sha256_of_file(npz_path)))


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write_all(archive: zipfile.ZipFile, arrays: dict[str, np.ndarray]) -> None:
    for key, array in arrays.items():
        archive.writestr(f"{key}.npy", npy_bytes(array))


def set_array(key: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def mutate(path: Path) -> None:
        replace_arrays(
            path, lambda archive, arrays: write_all(archive, {**arrays, key: change(arrays[key])})
        )

    return mutate


def set_host_latency(value: float) -> Callable[[Path], None]:
    return lambda path: edit_json(
        path, lambda d: d["stages"][0]["host_latency"].update(median_ms_1_thread=value)
    )


def zip_bomb(path: Path) -> None:
    """``labels.npy`` declared and stored as 64 MiB of zeros, a few hundred KiB compressed."""

    def write(archive: zipfile.ZipFile, arrays: dict[str, np.ndarray]) -> None:
        write_all(archive, {k: v for k, v in arrays.items() if k != "labels"})
        with archive.open("labels.npy", "w", force_zip64=True) as member:
            member.write(npy_bytes(arrays["labels"]))
            zeros = bytes(1 << 20)
            for _ in range(64):
                member.write(zeros)

    replace_arrays(path, write)


def forged_npy_shape(path: Path) -> None:
    """A small ``confidence.npy`` whose header declares 10**12 elements."""

    def write(archive: zipfile.ZipFile, arrays: dict[str, np.ndarray]) -> None:
        write_all(archive, {k: v for k, v in arrays.items() if k != "confidence"})
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f2", "fortran_order": False, "shape": (10**12,)}
        )
        archive.writestr("confidence.npy", np.lib.format.magic(1, 0) + header.getvalue()[8:])

    replace_arrays(path, write)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: edit_json(p, lambda d: d["arrays"].update(file="/etc/hostname")), "own folder, got '/etc/hostname'"),
        (lambda p: edit_json(p, lambda d: d["arrays"].update(file="../tiny.npz")), "own folder, got '../tiny.npz'"),
        (zip_bomb, r"array 'labels' would decompress to 67\d+ bytes"),
        (forged_npy_shape, r"array 'confidence' has shape \(1000000000000,\)"),
        (set_array("encode_ms", lambda a: np.full_like(a, np.nan)), "codec times encode_ms must be finite"),
        (set_array("decode_ms", lambda a: np.full_like(a, -1.0)), "codec times decode_ms must be finite"),
        (set_host_latency(float("nan")), r"stage\w*: host latency median_ms_1_thread = nan ms"),
        (set_host_latency(-1.0), "host latency median_ms_1_thread = -1.0 ms is not in"),
        (set_host_latency(1e308), "host latency median_ms_1_thread = 1e.308 ms is not in"),
        (lambda p: edit_json(p, lambda d: d.update(codec={"clip": "bogus"})), "codec setting clip: clip must be"),
        (lambda p: edit_json(p, lambda d: d.update(codec={"per_channel": "yes"})), "per_channel must be true or false, got 'yes'"),
        (lambda p: edit_json(p, lambda d: d.update(codec={"bits": 3})), r"unknown codec settings \['bits'\]"),
    ],
)  # fmt: skip
def test_hostile_profiles_are_refused_in_one_line(
    mutate: Callable[[Path], None], message: str, tiny_profile_path: Path, tmp_path: Path
) -> None:
    path = copy_profile(tiny_profile_path, tmp_path / "profile")
    mutate(path)
    start = time.process_time()
    with pytest.raises(ProfileError, match=message) as error:
        load_profile(path)
    assert "\n" not in str(error.value)
    assert time.process_time() - start < 1.0


def test_profile_validate_command_names_the_problem(
    tiny_profile_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = copy_profile(tiny_profile_path, tmp_path / "profile")
    set_host_latency(float("nan"))(path)
    assert main(["profile", "validate", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "host latency" in error
    assert load_profile(copy_profile(tiny_profile_path, tmp_path / "intact")).n_samples > 0
