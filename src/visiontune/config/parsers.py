"""Parsers of the config keys whose values take more than one form: ``finetune.freeze`` (``none``, ``backbone``,
``first_n: N``, a list of regexes) and image sizes (``HxW``, ``[H, W]``, one number)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from visiontune.config.errors import ConfigError


def parse_image_size(key: str, value: Any) -> tuple[int, int] | None:
    """``(height, width)`` of ``HxW`` (``"480x640"``), ``[H, W]`` or one number for a square; None stays None.

    Raises:
        ConfigError: anything else, naming ``key``.
    """
    if value is None:
        return None
    problem = ConfigError(f"{key}={value!r}: expected HEIGHTxWIDTH (e.g. 480x640), [HEIGHT, WIDTH] or one number "
                          "(sizes >= 1)")
    if isinstance(value, str):
        try:
            sizes = [int(part) for part in value.lower().replace(",", "x").split("x")]
        except ValueError:
            raise problem from None
    elif isinstance(value, (list, tuple)):
        sizes = list(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        sizes = [value]
    else:
        raise problem
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or not all(isinstance(size, int) and not isinstance(size, bool) and size >= 1
                                  for size in sizes):
        raise problem
    return sizes[0], sizes[1]


def parse_freeze(value: Any) -> tuple[str, Any]:
    """Normalise ``finetune.freeze`` to ``("none"|"backbone", None)``, ``("first_n", N)`` or ``("regex", [...])``."""
    if value is None or value == "none" or value is False:
        return "none", None
    if value == "backbone":
        return "backbone", None
    if isinstance(value, str) and value.startswith("first_n"):
        _, _, number = value.partition(":")
        value = {"first_n": number.strip()}
    if isinstance(value, Mapping):
        if set(value) != {"first_n"}:
            raise ConfigError(f"finetune.freeze: expected {{first_n: N}}, got {dict(value)!r}")
        try:
            count = int(value["first_n"])
        except (TypeError, ValueError):
            raise ConfigError(f"finetune.freeze.first_n: expected an integer, got {value['first_n']!r}") from None
        if count < 0:
            raise ConfigError(f"finetune.freeze.first_n: expected >= 0, got {count}")
        return "first_n", count
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ConfigError(f"finetune.freeze: invalid regular expression {pattern!r}: {error}") from None
        return "regex", list(value)
    raise ConfigError(
        f"finetune.freeze: expected 'none', 'backbone', {{first_n: N}} or a list of regexes, got {value!r}"
    )
