"""The code stays readable: size limits on every module, class and function of ``src/visiontune``.

A module holds one concern (at most 600 lines), a class at most 25 methods, a function at most 60 lines without its
docstring; the module of the training loop at most 300 lines, its ``train`` about 30.
"""

from __future__ import annotations

import ast
from pathlib import Path

import visiontune
import visiontune.engine.train_loop

PACKAGE_ROOT = Path(visiontune.__file__).parent
MAX_MODULE_LINES = 600
MAX_METHODS = 25
MAX_FUNCTION_LINES = 60
MAX_LOOP_MODULE_LINES = 300
MAX_TRAIN_LINES = 30


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function without its docstring."""
    length = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        length -= first.end_lineno - first.lineno + 1
    return length


def shape_problems(source: str, filename: str) -> list[str]:
    """Every limit ``source`` breaks, one entry each (``file: what (N)``)."""
    problems = []
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES:
        problems.append(f"{filename}: module of {lines} lines")

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                methods = [item for item in child.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))]
                if len(methods) > MAX_METHODS:
                    problems.append(f"{filename}: class {prefix}{child.name} with {len(methods)} methods")
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if _body_lines(child) > MAX_FUNCTION_LINES:
                    problems.append(f"{filename}: function {prefix}{child.name} of {_body_lines(child)} lines")
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source, filename=filename), "")
    return problems


def test_the_check_finds_each_kind_of_problem():
    body = "\n".join(f"    x{index} = {index}" for index in range(MAX_FUNCTION_LINES))
    docstring = '    """' + "\n".join(["doc"] * 20) + '"""\n'
    fine = f"def f():\n{docstring}{body[: body.rindex(chr(10))]}\n"  # 59 lines of code after a long docstring
    assert shape_problems(fine, "m.py") == []
    assert shape_problems(f"def f():\n{body}\n", "m.py") == [f"m.py: function f of {MAX_FUNCTION_LINES + 1} lines"]
    nested = f"class C:\n    def long(self):\n{body.replace('    ', '        ')}\n"
    assert shape_problems(nested, "m.py") == [f"m.py: function C.long of {MAX_FUNCTION_LINES + 1} lines"]
    wide = "class C:\n" + "".join(f"    def m{index}(self):\n        pass\n" for index in range(MAX_METHODS + 1))
    assert shape_problems(wide, "m.py") == [f"m.py: class C with {MAX_METHODS + 1} methods"]
    too_long = "x = 1\n" * (MAX_MODULE_LINES + 1)
    assert shape_problems(too_long, "m.py") == [f"m.py: module of {MAX_MODULE_LINES + 1} lines"]


def test_every_module_class_and_function_of_the_package_is_within_the_limits():
    modules = sorted(PACKAGE_ROOT.rglob("*.py"))
    assert len(modules) > 100
    problems = [problem for path in modules
                for problem in shape_problems(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE_ROOT)))]
    assert not problems, "split these along their seams:\n" + "\n".join(problems)


def test_the_training_loop_reads_in_one_sitting():
    path = Path(visiontune.engine.train_loop.__file__)
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= MAX_LOOP_MODULE_LINES
    loop = next(node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ClassDef)
                and node.name == "TrainerBase")
    train = next(node for node in loop.body if isinstance(node, ast.FunctionDef) and node.name == "train")
    assert _body_lines(train) <= MAX_TRAIN_LINES
