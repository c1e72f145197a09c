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


# ------------------------------------------------------------------ modules: no cycles


def _module_name(path: Path, root: Path = PACKAGE_ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports(path: Path, modules: set[str], own: str) -> set[str]:
    """The modules of ``modules`` that the module ``own`` (file ``path``) imports anywhere in the file (functions and
    ``TYPE_CHECKING`` blocks included): ``from a.b import c`` counts ``a.b.c`` when it is a module, else ``a.b``."""
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in candidates:
            while name and name not in modules:  # `import a.b.c` of a name inside a module: the module
                name = name.rpartition(".")[0]
            if name and name != own:
                found.add(name)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def module_graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    paths = {_module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    return {name: module_imports(path, set(paths), name) for name, path in paths.items()}


def test_no_two_modules_import_each_other():
    graph = module_graph()
    assert "visiontune.engine.train_loop" in graph["visiontune.engine.trainer"]
    cycles = import_cycles(graph)
    assert not cycles, "modules that import each other (directly or through others): " + "; ".join(
        " <-> ".join(cycle) for cycle in cycles)


def test_the_cycle_check_finds_a_cycle_through_a_function_and_type_checking_import(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n")
    (package / "b.py").write_text("def f():\n    from pkg import c\n")
    (package / "c.py").write_text("from .a import A\n")
    (package / "d.py").write_text("import pkg.a\n")
    graph = module_graph(package)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
