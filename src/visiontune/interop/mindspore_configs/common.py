"""Shared machinery of the MindFace / MindCV config importers.

A source YAML is read into a :class:`SourceConfig` (values plus the line of every key). A family translator walks
its keys with a :class:`ConfigTranslator`: every key ends up either *translated* (it set one or more visiontune
keys) or *untranslated* (with the reason), so nothing is dropped without a word. The result is an
:class:`ImportedConfig`, validated against the visiontune schema and rendered as commented YAML.
"""

from __future__ import annotations

import dataclasses
import os
import textwrap
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from visiontune.config.errors import ConfigError
from visiontune.config.loader import config_from_dict
from visiontune.config.schema import Config
from visiontune.config.yaml_io import load_yaml
from visiontune.utils.files import atomic_write_text

_COMMENT_WIDTH = 118


class ImportConfigError(ValueError):
    """A MindFace / MindCV config cannot be imported; the message names the file, line and key."""


# --------------------------------------------------------------------------------------------------
# Reading the source file
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceConfig:
    """A MindSpore-side YAML config: top-level key -> value, and the 1-based line of each key.

    Attributes:
        path: the file.
        values: the parsed top-level mapping (``yaml.safe_load``), in file order.
        lines: key -> line number where the key is written.
    """

    path: Path
    values: dict[str, Any]
    lines: dict[str, int]

    def where(self, key: str) -> str:
        """``"path:line"`` of ``key`` (just the path when the key is not in the file)."""
        line = self.lines.get(key)
        return f"{self.path}:{line}" if line is not None else str(self.path)


def read_source_config(path: str | os.PathLike[str]) -> SourceConfig:
    """Read a YAML file whose top level is a mapping of option names to values.

    Raises:
        ImportConfigError: the file is missing, is not valid YAML, or its top level is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ImportConfigError(f"config file not found: {path}")
    try:  # the loader of visiontune's own configs: a key given twice is an error naming both lines
        values, key_lines = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except ConfigError as error:
        raise ImportConfigError(str(error)) from None
    if not isinstance(values, Mapping):
        found = "an empty file" if values is None else f"a {type(values).__name__}"
        raise ImportConfigError(f"{path}: expected a mapping of option names to values at the top level, found {found}")
    values = {str(key): value for key, value in values.items()}
    lines = {key: line for key, line in key_lines.items() if key in values}
    return SourceConfig(path=path, values=values, lines=lines)


# --------------------------------------------------------------------------------------------------
# Value checks
# --------------------------------------------------------------------------------------------------


class ValueMismatch(Exception):
    """Raised by a value check; ``expected`` says what the value should have been."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


Check = Callable[[Any], Any]
"""Returns the (normalised) value, or raises :class:`ValueMismatch`."""


def integer(value: Any) -> int:
    """An ``int`` (``true``/``false`` are not integers)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueMismatch("an integer")


def number(value: Any) -> float:
    """An ``int`` or ``float``, returned as ``float``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueMismatch("a number")


def boolean(value: Any) -> bool:
    """``true`` or ``false``."""
    if isinstance(value, bool):
        return value
    raise ValueMismatch("true or false")


def text(value: Any) -> str:
    """A string."""
    if isinstance(value, str):
        return value
    raise ValueMismatch("a string")


UNSET_WORDS = frozenset({"", "none", "null", "~"})
"""Strings that MindSpore configs use for "no value" (``resume_net: None`` is the string ``'None'`` in YAML, as
Python's ``None`` was written by the configs' authors)."""


def is_unset(value: Any) -> bool:
    """``null``, or a string meaning "no value" (``None``, ``null``, empty; any case)."""
    return value is None or (isinstance(value, str) and value.strip().lower() in UNSET_WORDS)


def optional(check: Check) -> Check:
    """``null`` (also ``None``, ``null`` or an empty string) or a value accepted by ``check``."""

    def check_optional(value: Any) -> Any:
        if is_unset(value):
            return None
        try:
            return check(value)
        except ValueMismatch as error:
            raise ValueMismatch(f"{error.expected} or null") from None

    return check_optional


def list_of(check: Check, *, length: int | None = None) -> Check:
    """A list whose items pass ``check`` (exactly ``length`` of them when given)."""
    size = f"{length} " if length is not None else ""

    def check_list(value: Any) -> list[Any]:
        if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length):
            raise ValueMismatch(f"a list of {size}items")
        items = []
        for item in value:
            try:
                items.append(check(item))
            except ValueMismatch as error:
                raise ValueMismatch(f"a list of {size}items, each {error.expected}") from None
        return items

    return check_list


def one_of(*choices: str) -> Check:
    """One of the given strings, in any case (``Resnet50`` is ``ResNet50``); returns the spelling of ``choices``."""
    by_folded = {choice.casefold(): choice for choice in choices}

    def check_choice(value: Any) -> str:
        if isinstance(value, str) and value.strip().casefold() in by_folded:
            return by_folded[value.strip().casefold()]
        raise ValueMismatch("one of " + ", ".join(repr(choice) for choice in choices))

    return check_choice


# --------------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------------


@dataclass
class ImportedConfig:
    """A MindFace / MindCV config translated to visiontune.

    Attributes:
        family: ``"mindface"`` or ``"mindcv"``.
        family_label: human-readable family, e.g. ``"MindFace RetinaFace"``.
        source: the imported file.
        values: nested visiontune config (section -> key -> value), in schema order.
        config: ``values`` loaded into the typed :class:`~visiontune.config.schema.Config`.
        translated: source key -> the visiontune key(s) it set (or what it was folded into).
        untranslated: source key -> why it has no visiontune counterpart.
        defaults: source key -> the family's default used because the file does not set it.
        notes: differences worth knowing about translated keys (approximations, behaviour changes).
    """

    family: str
    family_label: str
    source: Path
    values: dict[str, Any]
    config: Config
    translated: dict[str, str] = field(default_factory=dict)
    untranslated: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def header_lines(self) -> list[str]:
        """The report as YAML comment lines (``# ...``), as written at the top of the output."""
        total = len(self.translated) + len(self.untranslated)
        lines = [
            f"Imported by `visiontune import-config` from the {self.family_label} config {self.source}",
            f"{len(self.translated)} of {total} keys translated; {len(self.untranslated)} not translated.",
        ]
        if self.untranslated:
            lines.append("Not translated:")
            lines.extend(f"  {key}: {reason}" for key, reason in self.untranslated.items())
        if self.defaults:
            lines.append(f"{self.family_label} defaults used for keys the file does not set:")
            lines.append("  " + ", ".join(f"{key}={_inline(value)}" for key, value in self.defaults.items()))
        if self.notes:
            lines.append("Notes:")
            lines.extend(f"  {note}" for note in self.notes)
        if self.translated:
            lines.append("Translated:")
            lines.extend(f"  {key} -> {target}" for key, target in self.translated.items())
        wrapped: list[str] = []
        for line in lines:
            indent = " " * (len(line) - len(line.lstrip()) + 4)
            wrapped.extend(textwrap.wrap(line, width=_COMMENT_WIDTH, subsequent_indent=indent,
                                         break_on_hyphens=False) or [""])
        return [f"# {line}".rstrip() for line in wrapped]

    def to_yaml(self) -> str:
        """The visiontune YAML: the report as comments, then the translated config."""
        body = yaml.dump(self.values, Dumper=_BlockSectionsFlowListsDumper, sort_keys=False, width=_COMMENT_WIDTH)
        return "\n".join(self.header_lines()) + "\n" + body

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_yaml` to ``path`` atomically (:func:`visiontune.utils.files.atomic_write_text`).

        Raises:
            ImportConfigError: ``path`` is the imported file itself.
            FileWriteError: the file cannot be written (one line naming it); a previous file is kept.
        """
        path = Path(path)
        if path.resolve() == self.source.resolve():
            raise ImportConfigError(f"refusing to overwrite the imported file {self.source}; choose another output")
        return atomic_write_text(self.to_yaml(), path)


class _BlockSectionsFlowListsDumper(yaml.SafeDumper):
    """Safe YAML dumper writing mappings as blocks and lists inline (``scale: [0.08, 1.0]``)."""

    def represent_list(self, data: Iterable[Any]) -> yaml.SequenceNode:
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


_BlockSectionsFlowListsDumper.add_representer(list, _BlockSectionsFlowListsDumper.represent_list)


def _inline(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


# --------------------------------------------------------------------------------------------------
# The translator
# --------------------------------------------------------------------------------------------------


class ConfigTranslator:
    """Collects the visiontune values a family translator sets, and what happened to every source key.

    Args:
        source: the file being imported.
        family: ``"mindface"`` or ``"mindcv"``.
        family_label: human-readable family name for messages.
        defaults: the family's defaults, used by :meth:`get` for keys the file does not set.
    """

    def __init__(self, source: SourceConfig, *, family: str, family_label: str,
                 defaults: Mapping[str, Any] | None = None) -> None:
        self.source = source
        self.family = family
        self.family_label = family_label
        self._family_defaults = dict(defaults or {})
        self._values: dict[str, Any] = {}
        self._translated: dict[str, str] = {}
        self._untranslated: dict[str, str] = {}
        self._defaults_used: dict[str, Any] = {}
        self._notes: list[str] = []

    # ---------------------------------------------------------------- reading
    def has(self, key: str) -> bool:
        """Whether the file sets ``key``."""
        return key in self.source.values

    def get(self, key: str, check: Check, *, use_default: bool = True) -> Any:
        """The value of ``key`` checked by ``check``; the family default (or ``None``) when the file lacks it.

        Raises:
            ImportConfigError: the value does not pass ``check`` (the message names the file, line and key).
        """
        if key in self.source.values:
            raw = self.source.values[key]
        elif use_default and key in self._family_defaults:
            raw = self._family_defaults[key]
            self._defaults_used[key] = raw
        else:
            return None
        try:
            return check(raw)
        except ValueMismatch as error:
            raise self.error(key, f"expected {error.expected}, got {raw!r} ({type(raw).__name__})") from None

    def require(self, key: str, check: Check) -> Any:
        """Like :meth:`get` for a key the family always needs.

        Raises:
            ImportConfigError: the key is missing or its value does not pass ``check``.
        """
        if key not in self.source.values:
            raise ImportConfigError(f"{self.source.path}: the {self.family_label} config has no {key!r} key")
        return self.get(key, check, use_default=False)

    def error(self, key: str, message: str) -> ImportConfigError:
        """An :class:`ImportConfigError` located at ``key``: ``"file:line: key: message"``."""
        return ImportConfigError(f"{self.source.where(key)}: {key}: {message}")

    # ---------------------------------------------------------------- recording
    def put(self, target: str, value: Any, *, sources: Sequence[str]) -> None:
        """Set the dotted visiontune key ``target``; each present key of ``sources`` is marked translated."""
        self._values[target] = value
        for key in sources:
            if key in self.source.values:
                previous = self._translated.get(key)
                self._translated[key] = target if previous is None else f"{previous}, {target}"

    def fold(self, key: str, description: str) -> None:
        """Mark ``key`` as translated into something other than one key (e.g. ``"optim.name (momentum SGD)"``)."""
        if key in self.source.values:
            self._translated[key] = description

    def skip(self, key: str, reason: str) -> None:
        """Mark ``key`` (when present) as untranslated, with the reason."""
        if key in self.source.values:
            self._untranslated[key] = reason

    def copy(self, key: str, target: str, check: Check, *, use_default: bool = True) -> Any:
        """Copy ``key`` to ``target`` unchanged (after ``check``); returns the value (``None`` when absent)."""
        if key not in self.source.values and not (use_default and key in self._family_defaults):
            return None
        value = self.get(key, check, use_default=use_default)
        self.put(target, value, sources=(key,))
        return value

    def note(self, message: str) -> None:
        """Add a note about a translated key."""
        self._notes.append(message)

    # ---------------------------------------------------------------- result
    def finish(self, *, unknown_reason: str) -> ImportedConfig:
        """Validate the collected values against the visiontune schema and build the result.

        Source keys neither translated nor skipped are listed as untranslated with ``unknown_reason``.

        Raises:
            ImportConfigError: the translated values do not form a valid visiontune config.
        """
        for key in self.source.values:
            if key not in self._translated and key not in self._untranslated:
                self._untranslated[key] = unknown_reason
        values = nest_in_schema_order(self._values)
        try:
            config = config_from_dict(values)
        except ConfigError as error:
            raise ImportConfigError(self._locate_config_error(error)) from None
        order = list(self.source.values)
        return ImportedConfig(
            family=self.family,
            family_label=self.family_label,
            source=self.source.path,
            values=values,
            config=config,
            translated=_in_order(self._translated, order),
            untranslated=_in_order(self._untranslated, order),
            defaults=dict(self._defaults_used),
            notes=list(self._notes),
        )

    def _locate_config_error(self, error: ConfigError) -> str:
        """Prefix a schema error with the source key that produced the offending visiontune key."""
        message = str(error)
        target = message.split(":", 1)[0]
        for key, targets in self._translated.items():
            if target in (part.strip() for part in targets.split(",")):
                return f"{self.source.where(key)}: {key}: translated to an invalid value: {message}"
        return f"{self.source.path}: the translated config is invalid: {message}"


def _in_order(mapping: Mapping[str, str], order: Iterable[str]) -> dict[str, str]:
    return {key: mapping[key] for key in order if key in mapping}


def nest_in_schema_order(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"optim.lr": 0.1, "task": ...}`` -> nested dict ordered like the :class:`Config` dataclasses.

    Raises:
        ValueError: a key that is not part of the schema (a bug in a translator).
    """
    nested: dict[str, Any] = {}
    placed: set[str] = set()
    for name, annotation in typing.get_type_hints(Config).items():
        if dataclasses.is_dataclass(annotation):
            section = {}
            for inner in dataclasses.fields(annotation):
                key = f"{name}.{inner.name}"
                if key in flat:
                    section[inner.name] = flat[key]
                    placed.add(key)
            if section:
                nested[name] = section
        elif name in flat:
            nested[name] = flat[name]
            placed.add(name)
    unknown = sorted(set(flat) - placed)
    if unknown:
        raise ValueError(f"not visiontune config keys: {unknown}")
    return nested


def run_name(path: Path) -> str:
    """A run name from a file name: ``RetinaFace_mobilenet025.yaml`` -> ``RetinaFace_mobilenet025``."""
    return "".join(character if character.isalnum() or character in "-_." else "_" for character in path.stem)
