"""read_yaml_mapping: the one reader of the YAML files a user writes (sweep and config files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitrl.files import read_yaml_mapping


def test_reads_the_top_level_mapping(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text("seeds: 3\nlearners: [sacd, dqn]\n")
    assert read_yaml_mapping(path, "sweep file", "entries") == {
        "seeds": 3,
        "learners": ["sacd", "dqn"],
    }


def test_a_missing_file_is_named_with_its_kind(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"sweep file .*missing\.yaml not found"):
        read_yaml_mapping(tmp_path / "missing.yaml", "sweep file", "entries")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seeds: [1, 2\n", "not valid YAML"),
        ("- sacd\n- dqn\n", "expected a mapping of entries, got list"),
        ("", "expected a mapping of entries, got NoneType"),
    ],
)
def test_bad_contents_are_one_error_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "conf.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"conf\.yaml: {message}"):
        read_yaml_mapping(path, "config file", "a mapping of entries")
