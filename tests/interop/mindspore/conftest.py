"""Fixtures for the MindSpore interop tests: the real MindSpore checkpoints in ``shared/fixtures/mindspore``."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def mindspore_dir(fixtures_dir: Path) -> Path:
    """``shared/fixtures/mindspore`` (skips when the shared data is absent)."""
    return fixtures_dir / "mindspore"


@pytest.fixture(scope="session")
def read_params_txt(mindspore_dir: Path) -> Callable[[str], dict[str, tuple[int, ...]]]:
    """Returns a reader of ``<name>.params.txt``: parameter name -> shape, in file order."""

    def read(name: str) -> dict[str, tuple[int, ...]]:
        shapes = {}
        path = mindspore_dir / f"{name}.params.txt"
        for line_number, line in enumerate(path.read_text().splitlines(), start=1):
            parameter, shape = line.split("\t")
            parsed = ast.literal_eval(shape)
            assert isinstance(parsed, tuple), f"{path}:{line_number}: bad shape {shape!r}"
            shapes[parameter] = parsed
        return shapes

    return read
