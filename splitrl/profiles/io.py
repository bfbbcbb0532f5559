"""Reading, validating and writing profile files (``NAME.json`` + ``NAME.npz``).

JSON holds what a person reads and diffs (stages, exits, accuracies, provenance); NPZ holds the
per-sample arrays compactly and loads without pickle, so a foreign or hostile file cannot run code.
The JSON records the SHA-256 of the NPZ file: a profile whose arrays were swapped or damaged is
rejected instead of silently replaying other outcomes.

A profile is read as untrusted input: its arrays file must lie in the JSON's own folder; every
array's size, shape and dtype is read from the zip and ``.npy`` headers and checked against the
metadata before anything is decompressed; latencies, codec times and codec settings are checked
for type and range (finite, non-negative, at most :data:`MAX_LATENCY_MS`).
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from splitrl.codecs import CodecError
from splitrl.codecs.clipping import parse_clip
from splitrl.files import atomic_write
from splitrl.profiles.schema import (
    PROFILE_FORMAT,
    PROFILE_VERSION,
    VALID_BIT_OPTIONS,
    BlockInfo,
    ExitInfo,
    HostLatency,
    Profile,
    ProfileError,
)

#: name of the profile shipped with splitrl
DEFAULT_PROFILE = "default"

_ARRAYS: dict[str, str] = {
    "labels": "int16",
    "payload_bytes": "int32",
    "correct": "bool",
    "confidence": "float16",
    "input_png_bytes": "int32",
    "encode_ms": "float32",
    "decode_ms": "float32",
}
#: bytes an ``.npy`` member may hold beyond its array data (its header)
_NPY_HEADER_BYTES = 64 * 1024
#: the longest latency or codec time a profile may record, in milliseconds (one hour)
MAX_LATENCY_MS = 3_600_000.0
#: codec settings a profile may record, and their types
_CODEC_SETTINGS = {"per_channel": bool, "clip": object, "entropy": bool, "run_length": bool}


def _expected_shapes(
    n_samples: int, n_splits: int, n_bits: int, n_exits: int
) -> dict[str, tuple[int, ...]]:
    """The shape of every array of a profile of these dimensions."""
    return {
        "labels": (n_samples,),
        "payload_bytes": (n_samples, n_splits, n_bits),
        "correct": (n_samples, n_splits, n_bits, n_exits),
        "confidence": (n_samples, n_splits, n_bits, n_exits),
        "input_png_bytes": (n_samples,),
        "encode_ms": (n_splits, n_bits),
        "decode_ms": (n_splits, n_bits),
    }


def shipped_profiles_dir() -> Path:
    """The folder of the profiles that ship with splitrl."""
    return Path(str(resources.files("splitrl.profiles") / "data"))


def list_shipped_profiles() -> list[str]:
    """Names of the shipped profiles."""
    return sorted(p.stem for p in shipped_profiles_dir().glob("*.json") if _is_profile_json(p))


def _is_profile_json(path: Path) -> bool:
    try:
        return bool(json.loads(path.read_text()).get("format") == PROFILE_FORMAT)
    except (OSError, ValueError, AttributeError):
        return False


def resolve_profile_path(name_or_path: str | Path) -> Path:
    """The JSON file of a profile given its shipped name, a path to its JSON or NPZ, or a path stem.

    :raises ProfileError: when nothing matches
    """
    candidate = Path(name_or_path)
    if candidate.suffix in (".json", ".npz"):
        candidate = candidate.with_suffix(".json")
    elif not candidate.with_suffix(".json").exists():
        shipped = shipped_profiles_dir() / f"{name_or_path}.json"
        if shipped.exists():
            return shipped
    json_path = candidate if candidate.suffix == ".json" else candidate.with_suffix(".json")
    if not json_path.exists():
        known = ", ".join(list_shipped_profiles()) or "none"
        raise ProfileError(
            f"profile {str(name_or_path)!r} not found: expected {json_path} (shipped profiles: {known})"
        )
    return json_path


def sha256_of_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_profile(profile: Profile, directory: str | Path) -> Path:
    """Write ``profile`` as ``directory/NAME.json`` and ``directory/NAME.npz``; returns the JSON path.

    The arrays are written first and the JSON (which names their hash) last, each atomically
    (:func:`~splitrl.files.atomic_write`), so an interrupted write never leaves a pair that loads
    as valid.
    """
    validate_profile(profile)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    npz_path = directory / f"{profile.name}.npz"
    json_path = directory / f"{profile.name}.json"
    atomic_write(
        npz_path,
        lambda file: np.savez_compressed(file, **{key: getattr(profile, key) for key in _ARRAYS}),
    )
    document = _to_json(profile, arrays_sha256=sha256_of_file(npz_path))
    text = (json.dumps(document, indent=2) + "\n").encode()
    atomic_write(json_path, lambda file: file.write(text))
    return json_path


def _to_json(profile: Profile, arrays_sha256: str) -> dict[str, Any]:
    def block(info: BlockInfo) -> dict[str, Any]:
        return {
            "name": info.name,
            "output_shape": list(info.output_shape),
            "flops": info.flops,
            "params": info.params,
            "n_layers": info.n_layers,
            "host_latency": vars(info.host),
        }

    accuracy = profile.clean_accuracy()
    return {
        "format": PROFILE_FORMAT,
        "version": PROFILE_VERSION,
        "name": profile.name,
        "n_samples": profile.n_samples,
        "input": {"shape": list(profile.input_shape), "dtype": profile.input_dtype},
        "stages": [block(stage) for stage in profile.stages],
        "exits": [
            {**block(exit_), "after_stage": exit_.after_stage, "accuracy": round(float(acc), 6)}
            for exit_, acc in zip(profile.exits, accuracy, strict=True)
        ],
        "bit_options": list(profile.bit_options),
        "codec": profile.codec,
        "arrays": {"file": f"{profile.name}.npz", "sha256": arrays_sha256},
        "metadata": profile.metadata,
    }


def load_profile(name_or_path: str | Path = DEFAULT_PROFILE) -> Profile:
    """Load and validate a profile.

    :param name_or_path: a shipped profile's name (``"default"``), or the path of a profile's JSON
        or NPZ file (the other one must lie beside it)
    :return: the validated profile
    :raises ProfileError: for a missing file, malformed JSON, a foreign format, an unsupported version,
        arrays whose hash, dtype, shape or values do not match the metadata
    """
    json_path = resolve_profile_path(name_or_path)
    try:
        document = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProfileError(f"{json_path}: not readable as JSON: {error}") from error
    if not isinstance(document, dict) or document.get("format") != PROFILE_FORMAT:
        raise ProfileError(
            f"{json_path}: not a splitrl profile (missing 'format': '{PROFILE_FORMAT}')"
        )
    if document.get("version") != PROFILE_VERSION:
        raise ProfileError(
            f"{json_path}: profile version {document.get('version')!r} is not supported "
            f"(this splitrl reads version {PROFILE_VERSION})"
        )
    try:
        arrays_name = _require(document["arrays"], "file", str)
        expected_sha = _require(document["arrays"], "sha256", str)
    except (KeyError, TypeError) as error:
        raise ProfileError(f"{json_path}: missing or malformed 'arrays' entry: {error}") from error
    try:
        shapes = _expected_shapes(
            _require(document, "n_samples", int),
            len(_require(document, "stages", list)) + 1,
            len(_require(document, "bit_options", list)),
            len(_require(document, "exits", list)),
        )
    except (KeyError, TypeError) as error:
        raise ProfileError(f"{json_path}: malformed metadata: {error!r}") from error
    if Path(arrays_name).name != arrays_name or arrays_name in ("", ".", ".."):
        raise ProfileError(
            f"{json_path}: 'arrays.file' must name a file in the profile's own folder, "
            f"got {arrays_name!r}"
        )
    arrays_file = json_path.parent / arrays_name
    if not arrays_file.exists():
        raise ProfileError(f"{json_path}: its arrays file {arrays_file} is missing")
    actual_sha = sha256_of_file(arrays_file)
    if actual_sha != expected_sha:
        raise ProfileError(
            f"{arrays_file}: SHA-256 {actual_sha[:12]}... does not match {expected_sha[:12]}... "
            f"recorded in {json_path.name}: the arrays were changed or damaged"
        )
    arrays = _read_arrays(arrays_file, shapes)
    try:
        profile = _from_json(document, arrays)
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, ProfileError):
            raise ProfileError(f"{json_path}: {error}") from error
        raise ProfileError(f"{json_path}: malformed metadata: {error!r}") from error
    try:
        validate_profile(profile)
    except ProfileError as error:
        raise ProfileError(f"{json_path}: {error}") from error
    return profile


def _check_array_headers(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """Check every member's size, shape and dtype from the zip and ``.npy`` headers alone."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: info for info in archive.infolist()}
        missing = [key for key in _ARRAYS if f"{key}.npy" not in members]
        if missing:
            raise ProfileError(f"{path}: missing arrays {missing}")
        for key, dtype in _ARRAYS.items():
            shape = shapes[key]
            limit = math.prod(shape) * np.dtype(dtype).itemsize + _NPY_HEADER_BYTES
            size = members[f"{key}.npy"].file_size
            if size > limit:
                raise ProfileError(
                    f"{path}: array {key!r} would decompress to {size} bytes; "
                    f"a {dtype} array of shape {shape} takes at most {limit}"
                )
            with archive.open(f"{key}.npy") as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    header = np.lib.format.read_array_header_1_0(member)
                else:
                    header = np.lib.format.read_array_header_2_0(member)
            if tuple(header[0]) != shape:
                raise ProfileError(
                    f"{path}: array {key!r} has shape {tuple(header[0])}, expected {shape}"
                )
            if header[2] != np.dtype(dtype):
                raise ProfileError(f"{path}: array {key!r} has dtype {header[2]}, expected {dtype}")


def _read_arrays(path: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    try:
        _check_array_headers(path, shapes)
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in _ARRAYS if key not in npz.files]
            if missing:
                raise ProfileError(f"{path}: missing arrays {missing}")
            arrays = {key: npz[key] for key in _ARRAYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        if isinstance(error, ProfileError):
            raise
        raise ProfileError(f"{path}: not a readable NPZ file: {error}") from error
    for key, dtype in _ARRAYS.items():
        if arrays[key].dtype != np.dtype(dtype):
            raise ProfileError(
                f"{path}: array {key!r} has dtype {arrays[key].dtype}, expected {dtype}"
            )
    return arrays


def _require(mapping: Any, key: str, kind: type) -> Any:
    if not isinstance(mapping, dict):
        raise TypeError(f"expected an object holding {key!r}")
    value = mapping[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{key!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _host_latency(mapping: Any) -> HostLatency:
    return HostLatency(
        median_ms_1_thread=_require(mapping, "median_ms_1_thread", float),
        p90_ms_1_thread=_require(mapping, "p90_ms_1_thread", float),
        median_ms_all_threads=_require(mapping, "median_ms_all_threads", float),
        p90_ms_all_threads=_require(mapping, "p90_ms_all_threads", float),
        n_threads=_require(mapping, "n_threads", int),
    )


def _block_fields(mapping: Any) -> dict[str, Any]:
    return {
        "name": _require(mapping, "name", str),
        "output_shape": tuple(int(d) for d in _require(mapping, "output_shape", list)),
        "flops": _require(mapping, "flops", int),
        "params": _require(mapping, "params", int),
        "n_layers": _require(mapping, "n_layers", int),
        "host": _host_latency(_require(mapping, "host_latency", dict)),
    }


def _from_json(document: dict[str, Any], arrays: dict[str, np.ndarray]) -> Profile:
    input_spec = _require(document, "input", dict)
    bit_options = tuple(_require(document, "bit_options", list))
    return Profile(
        name=_require(document, "name", str),
        stages=tuple(BlockInfo(**_block_fields(s)) for s in _require(document, "stages", list)),
        exits=tuple(
            ExitInfo(**_block_fields(e), after_stage=_require(e, "after_stage", int))
            for e in _require(document, "exits", list)
        ),
        bit_options=bit_options,
        input_shape=tuple(int(d) for d in _require(input_spec, "shape", list)),
        input_dtype=_require(input_spec, "dtype", str),
        codec=_require(document, "codec", dict),
        metadata=_require(document, "metadata", dict),
        **arrays,
    )


def validate_profile(profile: Profile) -> None:
    """Check every invariant a profile must hold; raises ``ProfileError`` naming the first violation."""
    n, n_splits, n_bits, n_exits = (
        profile.n_samples,
        profile.n_splits,
        profile.n_bit_options,
        profile.n_exits,
    )
    if profile.n_stages < 1 or n_exits < 1:
        raise ProfileError("a profile needs at least one stage and one exit")
    if n < 1:
        raise ProfileError("a profile needs at least one sample")
    for option in profile.bit_options:
        if option not in VALID_BIT_OPTIONS or isinstance(option, bool):
            raise ProfileError(f"bit option {option!r} is not one of {VALID_BIT_OPTIONS}")
    if len(set(profile.bit_options)) != n_bits or n_bits == 0:
        raise ProfileError(f"bit options {profile.bit_options} must be non-empty and distinct")
    exit_stages = profile.exit_stages
    if list(exit_stages) != sorted(set(exit_stages)) or exit_stages[0] < 1:
        raise ProfileError(
            f"exits must sit after distinct stages in increasing order, got {exit_stages}"
        )
    if exit_stages[-1] != profile.n_stages:
        raise ProfileError(
            f"the last exit must sit after the last stage ({profile.n_stages}), got {exit_stages[-1]}"
        )
    for block in (*profile.stages, *profile.exits):
        if block.flops < 0 or block.params < 0 or block.n_layers < 0:
            raise ProfileError(f"{block.name}: flops, params and n_layers must be non-negative")
        for name, value in vars(block.host).items():
            if name == "n_threads":
                if value < 1:
                    raise ProfileError(f"{block.name}: host n_threads must be at least 1")
            elif not (math.isfinite(value) and 0.0 <= value <= MAX_LATENCY_MS):
                raise ProfileError(
                    f"{block.name}: host latency {name} = {value!r} ms is not in "
                    f"[0, {MAX_LATENCY_MS:g}]"
                )
        if any(d < 1 for d in block.output_shape):
            raise ProfileError(f"{block.name}: output shape {block.output_shape} is not positive")
    for key, shape in _expected_shapes(n, n_splits, n_bits, n_exits).items():
        actual = getattr(profile, key).shape
        if actual != shape:
            raise ProfileError(f"array {key!r} has shape {actual}, expected {shape}")
    if profile.labels.min() < 0:
        raise ProfileError("labels must be non-negative class indices")
    payload = profile.payload_bytes
    if payload.min() < 0:
        raise ProfileError("payload_bytes must be non-negative")
    if np.any(payload[:, -1, :] != 0):
        raise ProfileError("payload_bytes at split n_stages (nothing sent) must be 0")
    if np.any(payload[:, :-1, :] <= 0):
        raise ProfileError("payload_bytes of every sent tensor must be positive")
    confidence = profile.confidence.astype(np.float32)
    if not np.all(np.isfinite(confidence)) or confidence.min() < 0 or confidence.max() > 1.0 + 1e-3:
        raise ProfileError("confidence must lie in [0, 1]")
    for key in ("encode_ms", "decode_ms"):
        times = getattr(profile, key)
        if not (np.all(np.isfinite(times)) and times.min() >= 0 and times.max() <= MAX_LATENCY_MS):
            raise ProfileError(
                f"codec times {key} must be finite and in [0, {MAX_LATENCY_MS:g}] ms"
            )
    _validate_codec_settings(profile.codec)
    for e, k_e in enumerate(exit_stages):
        device_only = profile.correct[:, k_e:, :, e]
        reference = profile.correct[:, -1:, :1, e]
        if np.any(device_only != reference):
            raise ProfileError(
                f"exit {e}: device-only outcomes (splits >= {k_e}) must equal the unquantized outcome "
                "for every bit option"
            )
    if profile.input_dtype not in ("uint8", "float16", "float32"):
        raise ProfileError(
            f"input dtype {profile.input_dtype!r} is not one of uint8, float16, float32"
        )


def _validate_codec_settings(codec: dict[str, Any]) -> None:
    """The codec settings must be those :func:`splitrl.codecs.encode` accepts."""
    unknown = sorted(set(codec) - set(_CODEC_SETTINGS))
    if unknown:
        raise ProfileError(f"unknown codec settings {unknown}; known: {sorted(_CODEC_SETTINGS)}")
    for name, kind in _CODEC_SETTINGS.items():
        if kind is bool and name in codec and not isinstance(codec[name], bool):
            raise ProfileError(f"codec setting {name} must be true or false, got {codec[name]!r}")
    try:
        parse_clip(codec.get("clip"))
    except CodecError as error:
        raise ProfileError(f"codec setting clip: {error}") from None
