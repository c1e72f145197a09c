"""Module attributes imported on first use, so that importing a package stays cheap."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, attributes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``attributes[name]`` (a module path) on first access of ``name``.

    Args:
        package: The package's ``__name__``, for the error of an unknown attribute.
        attributes: Public name -> module that defines it.
    """

    def __getattr__(name: str) -> Any:
        if name in attributes:
            return getattr(importlib.import_module(attributes[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
