"""The package layers: lower layers never import higher ones, and every package imports on its own.

The order (README "Layout"), lowest first; packages in one layer do not import each other:

    utils, registry  <  config  <  interop  <  data, models, evaluation  <  tasks  <  engine  <  export
    <  tune  <  api  <  demo  <  cli, commands  <  __main__   (report sits beside export)

Every import counts, also those inside functions and under ``TYPE_CHECKING``: a local import hides a cycle
from Python, not from a reader.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import visiontune

PACKAGE_ROOT = Path(visiontune.__file__).parent

LAYERS: list[set[str]] = [
    {"utils", "registry"},
    {"config"},
    {"interop"},
    {"data", "models", "evaluation"},
    {"tasks"},
    {"engine"},
    {"export", "report"},
    {"tune"},
    {"api"},
    {"demo"},
    {"cli", "commands"},
    {"__main__"},
]
"""Top-level modules and packages of ``visiontune``, lowest layer first."""

TOP_LEVEL_NAMES = {"__version__"}
"""Names of ``visiontune/__init__.py`` that any layer may import (plain values, no import of a layer)."""


def _layer_of(name: str) -> int:
    for index, layer in enumerate(LAYERS):
        if name in layer:
            return index
    raise AssertionError(f"visiontune.{name} is in no layer of tests/test_layering.py: add it to LAYERS and to the "
                         "README's Layout section")


def _imported_packages(path: Path) -> set[str]:
    """The top-level ``visiontune`` packages that the module at ``path`` imports (anywhere in the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "visiontune":
                names = [f"visiontune.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "visiontune" and len(parts) > 1 and parts[1] not in TOP_LEVEL_NAMES:
                found.add(parts[1])
    return found


def _modules() -> list[Path]:
    return sorted(PACKAGE_ROOT.rglob("*.py"))


def test_every_package_has_a_layer():
    names = {path.relative_to(PACKAGE_ROOT).parts[0].removesuffix(".py") for path in _modules()}
    names.discard("__init__")
    for name in names:
        _layer_of(name)


def test_lower_layers_never_import_higher_ones():
    violations = []
    for path in _modules():
        own = path.relative_to(PACKAGE_ROOT).parts[0].removesuffix(".py")
        if own == "__init__":
            continue  # visiontune/__init__.py maps public names lazily; it imports nothing at import time
        own_layer = _layer_of(own)
        for imported in _imported_packages(path):
            if imported == own:
                continue
            layer = _layer_of(imported)
            if layer > own_layer:
                violations.append(f"{path.relative_to(PACKAGE_ROOT)} imports visiontune.{imported} (a higher layer)")
            elif layer == own_layer:
                violations.append(f"{path.relative_to(PACKAGE_ROOT)} imports visiontune.{imported} (the same layer)")
    assert not violations, "\n".join(violations)


def test_the_layer_check_catches_an_upward_import(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from visiontune.engine.trainer import Trainer\n    from visiontune import api\n")
    assert _imported_packages(module) == {"engine", "api"}


def _packages() -> list[str]:
    names = []
    for path in sorted(PACKAGE_ROOT.iterdir()):
        if path.is_dir() and (path / "__init__.py").exists():
            names.append(path.name)
        elif path.suffix == ".py" and path.stem not in ("__init__", "__main__"):
            names.append(path.stem)
    return names


@pytest.mark.parametrize("package", _packages())
def test_each_package_imports_in_isolation(package):
    """A fresh interpreter imports ``visiontune.<package>`` and every module under it, nothing else first."""
    code = (
        "import importlib, pkgutil, sys\n"
        f"module = importlib.import_module('visiontune.{package}')\n"
        "if hasattr(module, '__path__'):\n"
        "    for info in pkgutil.walk_packages(module.__path__, module.__name__ + '.'):\n"
        "        importlib.import_module(info.name)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"import visiontune.{package} failed on its own:\n{result.stderr[-3000:]}"
