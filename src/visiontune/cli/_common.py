"""Pieces shared by the command modules: the command table entry, common arguments, override shortcuts.

Nothing here imports torch (or anything heavy): the parser of every command is built from these modules for
``visiontune --help``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """One ``visiontune`` command.

    Attributes:
        name: the command (``train``).
        help: one line for the command list of ``visiontune --help``.
        examples: example command lines, shown under ``visiontune <name> --help``.
        configure: adds the command's arguments to its subparser and sets ``handler`` with ``set_defaults``.
    """

    name: str
    help: str
    examples: str
    configure: Callable[[argparse.ArgumentParser], None]


def add_config_arguments(parser: argparse.ArgumentParser, handler: Handler, *, config_file: bool = True,
                         overrides_help: str = "dotted config overrides (visiontune config keys lists them)") -> None:
    """``[-c cfg.yaml] [key=value ...] [-v]`` and the handler."""
    if config_file:
        parser.add_argument("-c", "--config", metavar="CFG.yaml", help="YAML config file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)
    add_verbose(parser)
    parser.set_defaults(handler=handler)


def add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, full tracebacks")


def launched_as_main_rank() -> bool:
    """Whether the launcher's ``RANK`` environment variable says rank 0 (``torchrun``), or there is none: the process
    that prints results. Read before (or without) any process group, and without importing torch;
    :func:`visiontune.utils.comm.is_main_process` asks the initialised process group instead."""
    return int(os.environ.get("RANK", 0)) == 0


ONNX_SUFFIX = ".onnx"


def expand_shortcuts(overrides: Sequence[str]) -> list[str]:
    """``model=exported.onnx`` (the former spelling) -> ``checkpoint=exported.onnx``; everything else unchanged."""
    expanded = []
    for item in overrides:
        key, separator, value = item.partition("=")
        if separator and key.strip() == "model" and value.strip().lower().endswith(ONNX_SUFFIX):
            item = f"checkpoint={value}"
        expanded.append(item)
    return expanded


def override_keys(overrides: Sequence[str]) -> list[str]:
    """The keys of ``key=value`` items (items without ``=`` are left to the config loader to reject)."""
    return [item.partition("=")[0].strip() for item in overrides if "=" in item]


def section_overrides(items: Sequence[str], *, section: str, command: str, top_level: Sequence[str] = (),
                      reason: str = "reads no other settings", only: Sequence[str] | None = None) -> list[str]:
    """``key=value`` items of a command whose options are one config section, with the section prefix added.

    ``visiontune export half=true`` means ``export.half=true``: a bare key that names a field of ``section`` gets the
    prefix; ``top_level`` keys (``checkpoint``, ``output``) stay as they are; dotted keys of the section pass through
    to the config loader (which names an unknown one with its nearest match).

    Raises:
        ConfigError: an item without ``=``, a key given twice, a bare key that is no option of the command (with the
            nearest one), or a key of another section (which the command would ignore). ``only`` limits the section's
    keys to those the command reads.
    """
    import dataclasses

    from visiontune.config import Config, ConfigError
    from visiontune.registry import suggest

    fields = [item.name for item in dataclasses.fields(getattr(Config(), section))]
    options = list(only) if only is not None else fields
    valid = (*top_level, *options)
    expanded: list[str] = []
    seen: set[str] = set()
    for item in items:
        key, separator, value = item.partition("=")
        key = key.strip()
        if not separator or not key:
            raise ConfigError(f"{item!r}: expected key=value (keys: {', '.join(valid)})")
        if key.removeprefix(f"{section}.") in set(fields) - set(options):
            key = key.removeprefix(f"{section}.")  # another command's key of the section: an unknown option here
        if key in options:
            key = f"{section}.{key}"
        elif "." in key and not key.startswith(f"{section}."):
            where = f"{', '.join(top_level)} and {section}.*" if top_level else f"{section}.*"
            raise ConfigError(f"{key}: visiontune {command} {reason}; only {where} apply here")
        elif "." not in key and key not in top_level:
            raise ConfigError(f"unknown {command} option {key!r}{suggest(key, valid)}; valid: {', '.join(valid)}")
        if key in seen:
            raise ConfigError(f"{command} option {key.removeprefix(f'{section}.')!r} is given twice")
        seen.add(key)
        expanded.append(f"{key}={value}")
    return expanded
