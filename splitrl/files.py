"""Writing files and folders so that a crash leaves the old version or the new one, never a part,
and reading the YAML files a user writes.

Every layer writes through :func:`atomic_write` and :func:`staged_directory` (run directories,
profiles, exit heads, sweep results, exports); the sweep and config files are read through
:func:`read_yaml_mapping`.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

#: between a file's name and the writer's process id in the name of a temporary file
TEMPORARY_MARK = ".tmp-"


def atomic_write(
    path: Path,
    write: Callable[[io.BufferedWriter], object],
    *,
    before_sync: Callable[[], object] | None = None,
) -> None:
    """Write ``path`` so that a crash leaves the old file or the new one, never a part of it.

    The data goes to a temporary file in the same folder (named ``.NAME`` + :data:`TEMPORARY_MARK`
    + the process id), which is flushed, synced to disk and renamed over ``path``; the folder entry
    is synced too.

    :param path: the final file
    :param write: writes the contents to the open binary file it is given
    :param before_sync: called once the data is flushed, before it is synced and renamed (the
        crash-safety tests kill the process there)
    """
    temporary = path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}")
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            if before_sync is not None:
                before_sync()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextmanager
def staged_directory(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh sibling folder to write into, moved to ``directory`` only when the block succeeds.

    A write that fails (or is killed) part way leaves ``directory`` as it was: no half-written
    folder that a reader could load. Files already in ``directory`` that the block does not write
    stay in place.
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target}: exists and is not a directory")
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    )
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        for item in staging.iterdir():
            os.replace(item, target / item.name)
        staging.rmdir()
    else:
        os.replace(staging, target)


def read_yaml_mapping(path: Path, kind: str, expected: str) -> dict[Any, Any]:
    """The mapping at the top of a YAML file.

    :param path: the file
    :param kind: what the file is, for the error when it is missing (``"sweep file"``)
    :param expected: what its top level holds, for the error when it is not a mapping
        (``"a mapping of sweep entries"``)
    :raises FileNotFoundError: when the file is missing
    :raises ValueError: naming the file, when it is not YAML or not a mapping
    """
    if not path.is_file():
        raise FileNotFoundError(f"{kind} {path} not found")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected {expected}, got {type(document).__name__}")
    return document
