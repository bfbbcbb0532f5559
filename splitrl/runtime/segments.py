"""The DNN cut into ONNX segments, run with onnxruntime (numpy in, numpy out, no torch).

An export directory holds one file per stage (``stage_k.onnx``, ``k = 0 .. n_stages - 1``) and per
exit head (``exit_e.onnx``) and a manifest ``segments.json``: the per-sample shape of the tensor at
every split, the ``k_e`` of every exit, the SHA-256 of every file and the largest difference to the
torch model measured at export. Every segment takes and returns a float32 batch ``[batch, ...]``;
stage 0 takes the raw input values (e.g. 0..255 pixels) as float32.

Anything with ``n_stages``, ``exit_stages``, ``split_shapes``, ``run_stages`` and ``run_exit``
satisfies :class:`SegmentRunner`; the server also accepts a torch model through
:class:`splitrl.runtime.torch_segments.TorchSegments`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

MANIFEST_NAME = "segments.json"
MANIFEST_FORMAT = 2


class SegmentError(ValueError):
    """An export directory is missing a file, altered, or inconsistent with its manifest."""


class SegmentRunner(Protocol):
    """What the device and the server need to run parts of a staged model."""

    @property
    def n_stages(self) -> int:
        """Number of stages; splits are ``0 .. n_stages``."""
        ...

    @property
    def exit_stages(self) -> tuple[int, ...]:
        """``k_e`` of every exit."""
        ...

    @property
    def split_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Per-sample shape of the tensor at every split ``0 .. n_stages``."""
        ...

    def run_stages(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Run stages ``[start, stop)`` on a batch; returns ``x`` itself when ``start == stop``."""
        ...

    def run_exit(self, features: np.ndarray, exit_index: int) -> np.ndarray:
        """Logits ``[batch, classes]`` of an exit head from the output of its stage."""
        ...


@dataclass(frozen=True)
class SegmentManifest:
    """The contents of ``segments.json``.

    :param exit_stages: ``k_e`` of every exit.
    :param split_shapes: per-sample shape of the tensor at every split ``0 .. n_stages``.
    :param files: file name -> SHA-256 of every segment.
    :param opset: ONNX opset of the segments.
    :param max_abs_error: largest absolute difference between onnxruntime and torch outputs over
        every segment, measured at export on the check inputs.
    :param model: a label of the exported model.
    :param format: manifest format version.
    """

    exit_stages: tuple[int, ...]
    split_shapes: tuple[tuple[int, ...], ...]
    files: dict[str, str]
    opset: int
    max_abs_error: float
    model: str = ""
    format: int = MANIFEST_FORMAT

    @property
    def n_stages(self) -> int:
        """Number of stages."""
        return len(self.split_shapes) - 1

    def content_sha256(self) -> str:
        """SHA-256 of the manifest's canonical JSON (sorted keys, no whitespace)."""
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``segments.json`` into ``directory``, sealed with its own content hash.

        The segment files are hashed in ``files``; ``content_sha256`` covers the manifest
        itself, so an edited or damaged manifest (a changed shape, exit or file hash) is
        refused on load instead of misleading the server.
        """
        path = Path(directory) / MANIFEST_NAME
        sealed = {**asdict(self), "content_sha256": self.content_sha256()}
        path.write_text(json.dumps(sealed, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> SegmentManifest:
        """Read and check ``segments.json`` from ``directory``.

        :raises SegmentError: missing or malformed manifest.
        """
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise SegmentError(f"{path}: segment manifest not found (run `splitrl export` first)")
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            if data.get("format") != MANIFEST_FORMAT:
                raise SegmentError(
                    f"{path}: not a format-{MANIFEST_FORMAT} segment manifest "
                    "(run `splitrl export` again)"
                )
            manifest = cls(
                exit_stages=tuple(int(k) for k in data["exit_stages"]),
                split_shapes=tuple(tuple(int(d) for d in shape) for shape in data["split_shapes"]),
                files={str(k): str(v) for k, v in data["files"].items()},
                opset=int(data["opset"]),
                max_abs_error=float(data["max_abs_error"]),
                model=str(data.get("model", "")),
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise SegmentError(f"{path}: malformed segment manifest ({error!r})") from None
        if data.get("content_sha256") != manifest.content_sha256():
            raise SegmentError(
                f"{path}: the manifest's content hash does not match its contents "
                "(edited or damaged after export; run `splitrl export` again)"
            )
        if not manifest.exit_stages or manifest.exit_stages[-1] != manifest.n_stages:
            raise SegmentError(f"{path}: the last exit must follow the last stage")
        return manifest


def stage_file(index: int) -> str:
    """File name of stage ``index`` (0-based)."""
    return f"stage_{index}.onnx"


def exit_file(index: int) -> str:
    """File name of exit head ``index``."""
    return f"exit_{index}.onnx"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def open_onnx_session(path: Path, options: Any) -> Any:
    """An onnxruntime CPU session of ``path``.

    :param options: ``onnxruntime.SessionOptions``.
    :raises SegmentError: the file is not a graph onnxruntime can load (named, in one line).
    """
    import onnxruntime

    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own classes for a bad graph
        lines = str(error).strip().splitlines()
        raise SegmentError(
            f"{path}: not a loadable ONNX graph ({lines[0] if lines else repr(error)})"
        ) from None


def softmax_prediction(logits: np.ndarray) -> tuple[int, float]:
    """Predicted class and its softmax probability from one row of logits."""
    row = np.asarray(logits, dtype=np.float64).reshape(-1)
    shifted = np.exp(row - row.max())
    predicted = int(shifted.argmax())
    return predicted, float(shifted[predicted] / shifted.sum())


class OnnxSegments:
    """Stages and exit heads of an export directory, run with onnxruntime.

    :param directory: the export directory (``segments.json`` and the ``.onnx`` files).
    :param threads: intra-op threads per session (1 models a single device core; 0 lets
        onnxruntime use every core, as a server would).
    :param verify: check every file's SHA-256 against the manifest.
    :raises SegmentError: missing or altered files.
    """

    def __init__(
        self, directory: str | os.PathLike[str], threads: int = 1, verify: bool = True
    ) -> None:
        import onnxruntime

        self.directory = Path(directory)
        self.manifest = SegmentManifest.load(self.directory)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3

        shapes = self.manifest.split_shapes

        def session(name: str, input_shape: tuple[int, ...]) -> Any:
            path = self.directory / name
            if not path.is_file():
                raise SegmentError(f"{path}: segment file not found")
            if verify and file_sha256(path) != self.manifest.files.get(name):
                raise SegmentError(f"{path}: SHA-256 does not match {MANIFEST_NAME}")
            loaded = open_onnx_session(path, options)
            inputs = loaded.get_inputs()
            declared = tuple(inputs[0].shape[1:]) if len(inputs) == 1 else ()
            if len(inputs) != 1 or declared != input_shape:
                raise SegmentError(
                    f"{path}: the graph takes {[tuple(i.shape) for i in inputs]}, but "
                    f"{MANIFEST_NAME} feeds it a batch of {input_shape}"
                )
            return loaded

        self._stages = [session(stage_file(k), shapes[k]) for k in range(self.manifest.n_stages)]
        self._exits = [
            session(exit_file(e), shapes[k]) for e, k in enumerate(self.manifest.exit_stages)
        ]

    @property
    def n_stages(self) -> int:
        """Number of stages."""
        return self.manifest.n_stages

    @property
    def exit_stages(self) -> tuple[int, ...]:
        """``k_e`` of every exit."""
        return self.manifest.exit_stages

    @property
    def split_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Per-sample shape of the tensor at every split."""
        return self.manifest.split_shapes

    def run_stages(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Run stages ``[start, stop)`` on a batch (cast to float32)."""
        if not 0 <= start <= stop <= self.n_stages:
            raise ValueError(f"need 0 <= start <= stop <= {self.n_stages}, got {start}, {stop}")
        out = np.ascontiguousarray(x, dtype=np.float32)
        for session in self._stages[start:stop]:
            out = session.run(None, {"x": out})[0]
        return out

    def run_exit(self, features: np.ndarray, exit_index: int) -> np.ndarray:
        """Logits of exit ``exit_index`` from the output of its stage."""
        if not 0 <= exit_index < len(self._exits):
            raise ValueError(f"exit_index must be in 0..{len(self._exits) - 1}, got {exit_index}")
        features = np.ascontiguousarray(features, dtype=np.float32)
        logits: np.ndarray = self._exits[exit_index].run(None, {"x": features})[0]
        return logits
