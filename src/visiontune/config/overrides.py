"""``key=value`` overrides of the command line: split, bound, and read by the type of the key.

A key whose type is text (``str``, ``str | None``, a choice of strings such as ``train.amp``) takes the text as
given (``name=off`` is ``'off'``, ``data.root`` in any encoding the command line brings); a quoted value drops its
quotes, and ``null`` / ``~`` / nothing is ``None`` where the key takes null (nothing is ``''`` otherwise). Any other
key reads its value as YAML (``0.1``, ``true``, ``[1, 2]``, ``{a: 1}``); a value that looks like a YAML flow
collection but does not parse is an error quoting YAML's problem (and the quoted form, when one fits).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from visiontune.config.errors import ConfigError
from visiontune.config.schema import Config
from visiontune.config.yaml_io import MAX_NESTING, DuplicateKeyError, InvalidYamlError, parse_yaml

__all__ = ["Override", "field_annotation", "parse_override", "read_override", "split_override", "takes_text"]

_NULLS = ("null", "Null", "NULL", "~")


def _clip(text: str, limit: int = 60) -> str:
    """``text``, cut to ``limit`` characters with ``...`` (a message stays one readable line)."""
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def split_override(text: str) -> tuple[str, str]:
    """``("a.b", "value")`` of ``a.b=value`` (the value as written).

    Raises:
        ConfigError: no ``=``, an empty key, or a key of more than :data:`MAX_NESTING` parts.
    """
    if "=" not in text:
        raise ConfigError(f"override {_clip(text)!r} is not of the form key=value (e.g. optim.lr=0.01)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {_clip(text)!r} has an empty key")
    parts = key.count(".") + 1
    if parts > MAX_NESTING:
        raise ConfigError(f"override key {_clip(key)!r} has {parts} parts; config keys have at most {MAX_NESTING}")
    return key, raw


def field_annotation(key: str) -> Any:
    """The schema type of the dotted ``key`` (``str | None`` for ``data.root``); ``None`` for a section, an unknown
    key or a key inside a mapping value."""
    cls: Any = Config
    *parents, leaf = key.split(".")
    for part in parents:
        annotation = typing.get_type_hints(cls).get(part) if dataclasses.is_dataclass(cls) else None
        if not (isinstance(annotation, type) and dataclasses.is_dataclass(annotation)):
            return None
        cls = annotation
    annotation = typing.get_type_hints(cls).get(leaf)
    return None if isinstance(annotation, type) and dataclasses.is_dataclass(annotation) else annotation


def _options(annotation: Any) -> tuple[Any, ...]:
    """The members of a union (``str | None`` -> ``(str, NoneType)``); any other type alone."""
    union = typing.get_origin(annotation) in (Union, types.UnionType)
    return typing.get_args(annotation) if union else (annotation,)


def takes_text(annotation: Any) -> bool:
    """Whether every value of ``annotation`` but ``None`` is text: ``str``, ``str | None``, ``Literal["a", "b"]``."""
    options = [option for option in _options(annotation) if option is not type(None)]
    choices = [option for option in options if typing.get_origin(option) is Literal]
    return bool(options) and all(option is str or option in choices for option in options) and all(
        isinstance(choice, str) for option in choices for choice in typing.get_args(option))


def _text_value(raw: str, optional: bool, label: str) -> str | None:
    """The value of a text key: the text as given; quotes removed; ``None`` for null or nothing when ``optional``."""
    stripped = raw.strip()
    if not stripped:
        return None if optional else ""
    if optional and stripped in _NULLS:
        return None
    if len(stripped) > 1 and stripped[0] in "'\"" and stripped[-1] == stripped[0]:
        try:
            value = parse_yaml(stripped, label).data
        except ConfigError:
            return raw
        if isinstance(value, str):
            return value
    return raw


def _quoted_flow(raw: str) -> str | None:
    """``raw`` (a flow mapping or sequence YAML cannot read) with its keys (mapping) or items (sequence) in single
    quotes, when that parses to as many entries; else ``None``."""
    text = raw.strip()
    closer = {"{": "}", "[": "]"}[text[0]]
    if not text.endswith(closer) or any(mark in text for mark in ('"', "$", "`", "\\\\")):
        return None
    items = [item.strip() for item in text[1:-1].split(", ")]
    if len(text) > 200 or any(item[:1] in ("[", "{") for item in items):
        return None  # a long or nested value: no quoted form that surely keeps its meaning

    def quote(part: str) -> str:
        return part if part[:1] in ("'", '"') else "'" + part.replace("'", "''") + "'"

    if closer == "}":
        pairs = [item.rpartition(": ") for item in items]
        if any(not separator for _, separator, _ in pairs):
            return None
        quoted = "{" + ", ".join(f"{quote(key)}: {value}" for key, _, value in pairs) + "}"
    else:
        quoted = "[" + ", ".join(quote(item) for item in items) + "]"
    try:
        value = parse_yaml(quoted).data
    except ConfigError:
        return None
    return quoted if isinstance(value, (dict, list)) and len(value) == len(items) else None


def _flow_error(key: str, raw: str, error: InvalidYamlError) -> ConfigError:
    """``<key>: {...} looks like a YAML flow mapping, but YAML cannot read it (line, column): <problem>``, with the
    quoted form when :func:`_quoted_flow` finds one."""
    kind = "mapping" if raw.strip().startswith("{") else "sequence"
    message = f"{key}: {_clip(raw.strip())} looks like a YAML flow {kind}, but YAML cannot read it{error.problem}"
    quoted = _quoted_flow(raw)
    if quoted is not None:
        what = "keys" if kind == "mapping" else "items"
        message += f"; quote the {what}: \"{key}={quoted}\""
    return ConfigError(message)


def _yaml_value(key: str, raw: str, label: str) -> tuple[Any, dict[str, str]]:
    """``raw`` read as YAML, and the written text of its unquoted non-string scalars (by dotted key); an unquoted
    string stays as given (``a #b`` keeps ``#b``), text YAML cannot read is the text."""
    stripped = raw.strip()
    if not stripped:
        return None, {}
    try:
        document = parse_yaml(raw, label, prefix=f"{key}.")
    except DuplicateKeyError:
        raise
    except InvalidYamlError as error:
        if stripped[0] in "{[":
            raise _flow_error(key, raw, error) from None
        return raw, {}
    if isinstance(document.data, str) and stripped[0] not in "'\"":
        return raw, {}
    return document.data, document.texts


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``a.b=value`` and parse the value as YAML (``0.1``, ``true``, ``[1, 2]``, ``null``), whatever the key.

    Raises:
        ConfigError: see :func:`split_override`; a key given twice in a mapping value; a value that looks like a
            YAML flow collection (``{...}``, ``[...]``) but does not parse.
    """
    key, raw = split_override(text)
    return key, _yaml_value(key, raw, f"override {_clip(text)!r}")[0]


@dataclass(frozen=True)
class Override:
    """One ``key=value`` read by the type of its key.

    Attributes:
        key: the dotted key.
        value: the value (text for a text key, else read as YAML).
        label: where it came from for messages: ``override 'name=x'``.
        texts: the written text of the unquoted non-string scalars in a YAML value, by dotted key (a text item
            of a list takes it: ``data.categories=[no, yes]``).
    """

    key: str
    value: Any
    label: str
    texts: dict[str, str] = field(default_factory=dict)


def read_override(text: str) -> Override:
    """Read ``key=value`` by the schema type of ``key`` (see the module's documentation).

    Raises:
        ConfigError: see :func:`parse_override`.
    """
    key, raw = split_override(text)
    label = f"override {_clip(text)!r}"
    annotation = field_annotation(key)
    if annotation is not None and takes_text(annotation):
        return Override(key, _text_value(raw, type(None) in _options(annotation), label), label)
    value, texts = _yaml_value(key, raw, label)
    return Override(key, value, label, texts)
