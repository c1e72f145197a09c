"""The optional dependencies: a missing onnx / onnxruntime gives an install hint, also through the CLI.

No importorskip here: this must hold whether or not the packages are installed.
"""

from __future__ import annotations

import sys

import pytest

from visiontune.cli import main
from visiontune.export._dependencies import MissingExportDependencyError, import_onnx, import_onnxruntime


def test_importing_the_export_modules_needs_neither_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    for name in [name for name in sys.modules if name.startswith("visiontune.export")]:
        monkeypatch.delitem(sys.modules, name)  # import afresh (monkeypatch puts the originals back)
    import importlib

    for name in ("exporter", "metadata", "parity", "runtime", "samples", "specs", "wrappers"):
        importlib.import_module(f"visiontune.export.{name}")
    importlib.import_module("visiontune.cli.export")  # the command module (visiontune export)
    assert callable(importlib.import_module("visiontune.export").predict_onnx)


def test_missing_onnx_says_how_to_install(classification_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail as if it were not installed
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExportDependencyError,
                       match=r"needs the 'onnx' package.*pip install visiontune\[export\]"):
        import_onnx()
    with pytest.raises(MissingExportDependencyError, match=r"'onnxruntime'.*pip install visiontune\[export\]"):
        import_onnxruntime()
    assert main(["export", f"checkpoint={classification_checkpoint}", f"output={tmp_path / 'x.onnx'}"]) == 2
    assert "pip install visiontune[export]" in capsys.readouterr().err
