"""The error of the config layer (every module of :mod:`visiontune.config` raises it)."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message names the key (and the file and line, or the override)."""
