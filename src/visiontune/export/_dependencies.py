"""Lazy imports of the optional export dependencies (``pip install visiontune[export]``).

The core install stays lean: ``onnx`` and ``onnxruntime`` are imported inside the functions that need them, and a
missing package raises :class:`MissingExportDependencyError` that says how to install it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

INSTALL_HINT = "pip install visiontune[export]"


class MissingExportDependencyError(ImportError):
    """``onnx`` or ``onnxruntime`` is not installed."""


def _import(module_name: str, purpose: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise MissingExportDependencyError(
            f"{purpose} needs the {module_name!r} package, which is not installed: {INSTALL_HINT}"
        ) from None


def import_onnx() -> ModuleType:
    """The ``onnx`` module (writing ONNX files and their metadata)."""
    return _import("onnx", "ONNX export")


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module (parity checks and ONNX inference)."""
    return _import("onnxruntime", "running an ONNX model")
