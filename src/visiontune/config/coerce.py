"""Value coercion: a YAML or override value checked against a schema type annotation and converted where the
schema allows it (ints for floats, ``0``/``1`` for booleans, the written text of an unquoted YAML scalar for a text
key). A value that does not fit raises :class:`~visiontune.config.errors.ConfigError` naming the key."""

from __future__ import annotations

import re
import types
import typing
import unicodedata
from collections.abc import Mapping
from typing import Any, Literal, Union

from visiontune.config.errors import ConfigError
from visiontune.config.yaml_io import ScalarTexts
from visiontune.registry import suggest


def describe_type(annotation: Any) -> str:
    """A schema type as error messages and ``visiontune config keys`` write it (``float | null``)."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(v) for v in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(describe_type(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if origin is not None:
        args = ", ".join(describe_type(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation))


_FLOAT_PATTERN = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def coerce_value(value: Any, annotation: Any, key: str, texts: ScalarTexts | None = None) -> Any:
    """Check ``value`` against ``annotation`` and return it (ints are accepted for floats; a text key takes the
    written text of an unquoted YAML scalar from ``texts``: ``off``, not ``False``)."""
    texts = texts or _NO_TEXTS
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return _coerce_choice(value, annotation, key, texts)
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None  # before a text option, which would take the text "null"
        for option in options:
            try:
                return coerce_value(value, option, key, texts)
            except ConfigError as error:
                if option is str and isinstance(value, str):
                    text_error = error  # text of a text key: what is wrong with it (a control character)
        if isinstance(value, str) and str in options:
            raise text_error
        raise ConfigError(f"{key}: expected {describe_type(annotation)}, got {value!r} ({type(value).__name__})")
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list ({describe_type(annotation)}), got {value!r}")
        (item_type,) = typing.get_args(annotation) or (Any,)
        return [coerce_value(item, item_type, f"{key}[{i}]", texts) for i, item in enumerate(value)]
    if origin is dict:
        return _coerce_mapping(value, annotation, key, texts)
    if annotation is str:
        return _coerce_text(value, key, texts)
    return _coerce_number(value, annotation, key)


_NO_TEXTS = ScalarTexts()


def _coerce_choice(value: Any, annotation: Any, key: str, texts: ScalarTexts) -> Any:
    """A value of ``Literal[...]`` (the written text of an unquoted YAML scalar counts: ``amp: off``)."""
    options = typing.get_args(annotation)
    if value in options:
        return value
    text = texts.texts.get(key)
    if text in options:
        return text
    if isinstance(value, bool) and ("off" if value is False else "on") in options:
        return "off" if value is False else "on"  # YAML 1.1 reads a bare off/on as a boolean
    names = [str(option) for option in options]
    raise ConfigError(f"{key}: expected one of {describe_type(annotation)}, got {value!r}{suggest(str(value), names)}")


def _coerce_mapping(value: Any, annotation: Any, key: str, texts: ScalarTexts) -> dict[Any, Any]:
    """A ``dict[K, V]`` value: every key coerced to ``K``, every value to ``V``."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a mapping ({describe_type(annotation)}), got {value!r}")
    key_type, value_type = typing.get_args(annotation) or (Any, Any)
    for item_key, item_value in value.items():
        if item_value is None and isinstance(item_key, str) and ":" in item_key:
            name, _, rest = item_key.partition(":")
            raise ConfigError(f"{key}: entry {item_key!r} has no value; YAML needs a space after the colon: "
                              f"{{{name}: {rest}}}")
    return {coerce_value(k, key_type, f"{key} key"): coerce_value(v, value_type, f"{key}.{k}", texts)
            for k, v in value.items()}


def _coerce_text(value: Any, key: str, texts: ScalarTexts) -> str:
    """A ``str`` value: a string, the written text of an unquoted YAML scalar (``off``, ``1.50``), or a number;
    without control characters."""
    text = value if isinstance(value, str) else texts.text(key, value)
    if text is None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected str, got {value!r} ({type(value).__name__})")
        text = str(value)
    control = next((index for index, character in enumerate(text) if unicodedata.category(character) == "Cc"), None)
    if control is not None:
        raise ConfigError(f"{key}: expected text without control characters, got {text!r} (U+{ord(text[control]):04X}"
                          f" at character {control + 1})")
    return text


def _coerce_number(value: Any, annotation: Any, key: str) -> Any:
    """A ``bool``, ``int`` or ``float`` value (``key=0`` / ``key=1`` are booleans; ints are floats)."""
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)  # key=0 / key=1 on a command line
        raise ConfigError(f"{key}: expected bool (true/false), got {value!r} ({type(value).__name__})")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected int, got {value!r} ({type(value).__name__})")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_PATTERN.fullmatch(value.strip()):
            return float(value)  # PyYAML (YAML 1.1) reads 1e-4 without a dot as a string
        raise ConfigError(f"{key}: expected float, got {value!r} ({type(value).__name__})")
    raise ConfigError(f"{key}: unsupported schema type {annotation!r}")
