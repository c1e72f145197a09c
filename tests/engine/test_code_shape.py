"""The engine stays readable: no function of ``visiontune.engine`` is longer than 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import visiontune.engine

MAX_FUNCTION_LINES = 60
ENGINE_ROOT = Path(visiontune.engine.__file__).parent


def long_functions(source: str, filename: str) -> list[str]:
    """``module:qualified.name (N lines)`` for every function or method of ``source`` over the limit."""
    found: list[str] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    length = child.end_lineno - child.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        found.append(f"{filename}:{name} ({length} lines)")
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source, filename=filename), "")
    return found


def test_the_check_finds_a_long_function():
    body = "\n".join(f"    x{index} = {index}" for index in range(MAX_FUNCTION_LINES))
    source = f"class C:\n    def fine(self):\n        pass\n\n    def long(self):\n{body.replace('    ', '        ')}\n"
    assert long_functions(source, "m.py") == [f"m.py:C.long ({MAX_FUNCTION_LINES + 1} lines)"]
    assert long_functions(f"def f():\n{body}\n", "m.py") == [f"m.py:f ({MAX_FUNCTION_LINES + 1} lines)"]


def test_no_engine_function_is_longer_than_60_lines():
    modules = sorted(ENGINE_ROOT.rglob("*.py"))
    assert any(path.name == "trainer.py" for path in modules)
    offenders = [entry for path in modules
                 for entry in long_functions(path.read_text(encoding="utf-8"), str(path.relative_to(ENGINE_ROOT)))]
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines in visiontune.engine: split them: {offenders}"
