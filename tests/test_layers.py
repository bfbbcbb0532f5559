"""The layers of ``splitrl``: no module imports a layer above its own (docs/architecture.md, Layers).

Every module under ``splitrl/`` is parsed with :mod:`ast`, and every import is checked wherever it
is written: at the top, inside a function (a lazy import) or under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "splitrl"

#: bottom first; a module imports from its own layer and the layers below. The names are the
#: first component under ``splitrl`` (a package, or a top-level module). The ``splitrl`` package
#: itself (its ``__init__``: the version, and the envs' registration) is outside the layers: Python
#: runs it before any module under it whoever imports that module.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("files", "statistics", "arguments"),
    ("codecs",),
    ("models",),
    ("profiles",),
    ("envs",),
    ("agents",),
    ("training", "pretrained"),
    ("evaluation",),
    ("runtime",),
    ("sweeps",),
    ("cli", "demo", "__main__"),
)
PACKAGE_ITSELF = ""
LAYER_OF = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def component(module: str) -> str:
    """The first component under ``splitrl`` of a dotted module name (``""``: the package itself).

    :param module: ``splitrl`` or a name under it, or a name imported from the package
        (``splitrl.__version__`` belongs to the package itself)
    """
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__init__":
        return ""
    name = parts[1]
    is_submodule = (PACKAGE_ROOT / name).is_dir() or (PACKAGE_ROOT / f"{name}.py").is_file()
    return name if is_submodule else ""


def imported_modules(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """Every ``splitrl`` module ``tree`` imports, at any depth, with its line.

    :param tree: the parsed source of ``module``
    :param module: the dotted name of the parsed module (to resolve relative imports)
    """
    package = module if module.endswith(".__init__") else module.rpartition(".")[0]
    package = package.removesuffix(".__init__")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            if source == "splitrl":
                found += [(node.lineno, f"splitrl.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, source))
    return [(line, name) for line, name in found if name.split(".")[0] == "splitrl"]


def upward_imports(source: str, module: str) -> list[tuple[int, str]]:
    """The imports in ``source`` (the text of ``module``) that reach a layer above the module's."""
    if component(module) == PACKAGE_ITSELF:
        return []
    own = LAYER_OF[component(module)]
    found = imported_modules(ast.parse(source), module)
    return [
        (line, name)
        for line, name in found
        if component(name) != PACKAGE_ITSELF and LAYER_OF[component(name)] > own
    ]


def module_name(path: Path) -> str:
    """``splitrl/envs/rtt.py`` -> ``splitrl.envs.rtt`` (a package's ``__init__`` keeps the suffix)."""
    return ".".join(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)


MODULES = sorted(PACKAGE_ROOT.rglob("*.py"))


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {component(module_name(path)) for path in MODULES} - {PACKAGE_ITSELF}
    assert sorted(parts - set(LAYER_OF)) == []


def test_no_module_imports_a_higher_layer() -> None:
    violations = [
        f"{module_name(path)}:{line} imports {name}"
        for path in MODULES
        for line, name in upward_imports(path.read_text(), module_name(path))
    ]
    assert violations == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from splitrl.training.run_dir import RunDirectory", ["splitrl.training.run_dir"]),
        ("def f():\n    import splitrl.evaluation.metrics as m", ["splitrl.evaluation.metrics"]),
        (
            "if TYPE_CHECKING:\n    from splitrl import envs, __version__",
            ["splitrl.envs", "splitrl.__version__"],
        ),
        ("from ..envs import actions", ["splitrl.envs"]),
        ("from . import schema", ["splitrl.profiles"]),
        ("import numpy\nfrom typing import Any", []),
    ],
)
def test_imports_are_found_at_any_depth(source: str, expected: list[str]) -> None:
    found = imported_modules(ast.parse(source), "splitrl.profiles.builder")
    assert [name for _, name in found] == expected


def test_a_lazy_upward_import_is_caught_and_a_downward_one_is_not() -> None:
    lazy = "import torch\n\ndef save():\n    from splitrl.training.run_dir import atomic_write\n"
    assert upward_imports(lazy, "splitrl.models.exit_heads") == [(4, "splitrl.training.run_dir")]
    assert upward_imports(lazy, "splitrl.evaluation.suite") == []
    package_and_above = "import splitrl\nfrom splitrl import __version__, sweeps"
    assert upward_imports(package_and_above, "splitrl.envs.rtt") == [(2, "splitrl.sweeps")]
