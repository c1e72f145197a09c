"""Load YAML configs into the typed :class:`~visiontune.config.schema.Config`, apply ``a.b=c`` overrides.

Every key is checked against the schema: an unknown key or a value of the wrong type raises
:class:`ConfigError` naming the key (and the file and line when it came from YAML) and the nearest valid
key.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import types
import typing
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from visiontune.config.constraints import Pattern, Range, non_finite_problem
from visiontune.config.errors import ConfigError
from visiontune.config.overrides import Override, read_override
from visiontune.config.overrides import parse_override as parse_override  # imported from here too
from visiontune.config.schema import Config
from visiontune.config.yaml_io import DuplicateKeyError as DuplicateKeyError  # imported from here too
from visiontune.config.yaml_io import ScalarTexts, parse_yaml, read_config_text
from visiontune.config.yaml_io import UniqueKeyLoader as UniqueKeyLoader  # imported from here too
from visiontune.config.yaml_io import load_yaml as load_yaml  # imported from here too
from visiontune.registry import suggest

logger = logging.getLogger(__name__)


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


def _coerce(value: Any, annotation: Any, key: str, texts: ScalarTexts | None = None) -> Any:
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
                return _coerce(value, option, key, texts)
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
        return [_coerce(item, item_type, f"{key}[{i}]", texts) for i, item in enumerate(value)]
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
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a mapping ({describe_type(annotation)}), got {value!r}")
    key_type, value_type = typing.get_args(annotation) or (Any, Any)
    for item_key, item_value in value.items():
        if item_value is None and isinstance(item_key, str) and ":" in item_key:
            name, _, rest = item_key.partition(":")
            raise ConfigError(f"{key}: entry {item_key!r} has no value; YAML needs a space after the colon: "
                              f"{{{name}: {rest}}}")
    return {
        _coerce(k, key_type, f"{key} key"): _coerce(v, value_type, f"{key}.{k}", texts) for k, v in value.items()
    }


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


def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


Constraint = Range | Pattern


@functools.cache
def field_constraints(cls: type) -> dict[str, tuple[Constraint, ...]]:
    """``{field: constraints}`` of a schema dataclass: the :class:`Range` / :class:`Pattern` objects declared with
    ``Annotated[...]`` on its fields (fields without any are missing)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    found: dict[str, tuple[Constraint, ...]] = {}
    for item in dataclasses.fields(cls):
        metadata = getattr(hints[item.name], "__metadata__", ())
        constraints = tuple(entry for entry in metadata if isinstance(entry, (Range, Pattern)))
        if constraints:
            found[item.name] = constraints
    return found


def _counts_integers(annotation: Any) -> bool:
    """Whether the numbers of a field are integers (``int``, ``list[int]``, ``list[list[int]] | None``)."""
    if annotation is int:
        return True
    if annotation is float:
        return False
    return any(_counts_integers(arg) for arg in typing.get_args(annotation))


def describe_constraints(cls: type, name: str) -> str:
    """The allowed values of field ``name`` of ``cls`` (``> 0``, ``in [0, 1]``, ``2 numbers in (0, 1], ...``);
    empty when only the type limits it."""
    integer = _counts_integers(_fields(cls)[name])
    parts = []
    for constraint in field_constraints(cls).get(name, ()):
        if isinstance(constraint, Range) and constraint.length is None and not constraint.increasing:
            parts.append(constraint.bounds())
        else:
            parts.append(constraint.describe(integer=integer, listed=True))
    return "; ".join(part for part in parts if part)


def check_value(cls: type, name: str, value: Any, key: str) -> None:
    """Check ``value`` of field ``name`` of ``cls`` against its declared constraints and refuse non-finite floats
    (unless a :class:`Range` of the field allows them).

    Raises:
        ConfigError: ``<key>: expected <what is allowed>, got <value>``.
    """
    constraints = field_constraints(cls).get(name, ())
    integer = _counts_integers(_fields(cls)[name])
    for constraint in constraints:
        problem = constraint.problem(value, integer=integer)
        if problem is not None:
            raise ConfigError(f"{key}: {problem}")
    if all(not isinstance(c, Range) or c.finite for c in constraints):
        problem = non_finite_problem(value)
        if problem is not None:
            raise ConfigError(f"{key}: {problem}")


def valid_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, e.g. ``["task", ..., "optim.lr", ...]``."""
    keys = []
    for name, annotation in _fields(cls).items():
        full = f"{prefix}{name}"
        keys.append(full)
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
            keys.extend(valid_keys(annotation, prefix=f"{full}."))
    return keys


def _unknown_key_error(key: str, where: str) -> ConfigError:
    return ConfigError(f"unknown config key {key!r}{where}{suggest(key, valid_keys())}")


def _apply_mapping(target: Any, values: Mapping[str, Any], prefix: str, where: Mapping[str, str],
                   record: set[str] | None = None, texts: ScalarTexts | None = None) -> None:
    """Set ``values`` on the schema dataclass ``target`` (type- and range-checked); ``record`` collects the dotted
    keys set; a text key takes the written text of an unquoted YAML scalar from ``texts`` (``name: off``)."""
    fields = _fields(type(target))
    deprecated = getattr(type(target), "deprecated_flags", {})
    for name, value in sorted(values.items(), key=lambda item: item[0] in deprecated):  # the deprecated ones last
        full = f"{prefix}{name}"
        location = where.get(full, "")
        if name in deprecated and name not in fields:
            _apply_deprecated_flag(target, name, value, full, location, record)
            continue
        if name not in fields:
            raise _unknown_key_error(full, location)
        annotation = fields[name]
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{full}{location}: expected a mapping of {annotation.__name__} keys, got {value!r}")
            _apply_mapping(getattr(target, name), value, f"{full}.", where, record, texts)
            continue
        try:
            coerced = _coerce(value, annotation, full, texts)
            check_value(type(target), name, coerced, full)
        except ConfigError as error:
            raise ConfigError(f"{error}{location}") from None
        setattr(target, name, coerced)
        if record is not None:
            record.add(full)


def _apply_deprecated_flag(target: Any, name: str, value: Any, key: str, location: str,
                           record: set[str] | None) -> None:
    """The deprecated boolean key ``name`` of ``target`` (its class's ``deprecated_flags``): ``true`` adds its item to
    the list key that replaced it, with a one-line warning; ``false`` changes nothing."""
    list_name, item = type(target).deprecated_flags[name]
    new_key = f"{key.rpartition('.')[0]}.{list_name}".lstrip(".")
    try:
        enabled = _coerce(value, bool, key)
    except ConfigError as error:
        raise ConfigError(f"{error}{location}") from None
    if not enabled:
        return
    logger.warning("%s=true%s is deprecated: it adds %s to %s; write %s: [..., %s] instead", key, location, item,
                   new_key, new_key, item)
    items = getattr(target, list_name)
    if item not in items:
        setattr(target, list_name, [*items, item])
    if record is not None:
        record.add(new_key)


def _nest(key: str, value: Any) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    current = nested
    parts = key.split(".")
    for part in parts[:-1]:
        current[part] = {}
        current = current[part]
    current[parts[-1]] = value
    return nested


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, str], ScalarTexts]:
    """The top-level mapping of the config file ``path``, the `` (<path>:<line>)`` of every dotted key, and the
    written text of its unquoted non-string scalars (a text key takes it, with a warning)."""
    document = parse_yaml(read_config_text(path), str(path))
    data = {} if document.data is None else document.data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level, got {type(data).__name__}")
    texts = ScalarTexts(document.texts, str(path), document.lines)
    return dict(data), {key: f" ({path}:{line})" for key, line in document.lines.items()}, texts


def config_from_dict(values: Mapping[str, Any], *, validate: bool = True) -> Config:
    """Build a :class:`Config` from a nested mapping (e.g. the config stored in a checkpoint)."""
    config = Config()
    _apply_mapping(config, values, "", {})
    if validate:
        validate_config(config)
    return config


def copy_config(config: Config) -> Config:
    """A deep copy of ``config`` (with its :attr:`~Config.set_keys`)."""
    copy = config_from_dict(config_to_dict(config), validate=False)
    if config.set_keys is not None:
        _remember_set_keys(copy, config.set_keys)
    return copy


def _remember_set_keys(config: Config, keys: Iterable[str]) -> None:
    """Give ``config`` its own :attr:`Config.set_keys` (a class variable: no dataclass field, so it is neither
    saved nor compared)."""
    object.__setattr__(config, "set_keys", frozenset(keys))


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (), *, base: Config | None = None) -> Config:
    """Load a YAML config file (optional) and apply ``key=value`` overrides on top.

    The keys given in the file and the overrides are recorded as ``config.set_keys`` (a resume applies exactly
    those over the checkpoint's config).

    Args:
        path: YAML file; keys missing there keep their defaults (or the values of ``base``).
        overrides: Dotted ``section.key=value`` strings (:func:`~visiontune.config.overrides.read_override`): a text
            key takes the text as given (``name=off`` is ``'off'``; quotes are dropped; ``null`` is ``None`` only
            for a key that takes null), other values are parsed as YAML. ``key=`` (nothing after ``=``) is
            ``null`` for a key that takes null and the empty string for a text key (``data.image_ext=``);
            ``key=''`` is always the empty string.
        base: Start from this config instead of the defaults (e.g. the config stored in a checkpoint).

    Raises:
        ConfigError: unknown key, wrong type, value out of range, a YAML key given twice, an invalid
            combination, or a file or value beyond the limits of :mod:`~visiontune.config.yaml_io`; the message
            names the key (or the file and line).
    """
    config = copy_config(base) if base is not None else Config()
    given: set[str] = set()
    if path is not None:
        data, where, texts = _read_yaml(Path(path))
        _apply_mapping(config, data, "", where, given, texts)
    for text in overrides:
        override: Override = read_override(text)
        _apply_mapping(config, _nest(override.key, override.value), "", {override.key: f" ({override.label})"},
                       given, ScalarTexts(override.texts))
    validate_config(config)
    _remember_set_keys(config, given)
    if path is not None:
        object.__setattr__(config, "preset_file", str(Path(path).resolve()))  # per instance: see Config.preset_file
    return config


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of ``config`` (YAML- and checkpoint-friendly)."""
    return dataclasses.asdict(config)


def save_config(config: Config, path: str | Path) -> Path:
    """Write ``config`` as YAML (the resolved config of a run)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")
    return path


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and f"{prefix}{key}" in _SECTION_KEYS:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


_SECTION_KEYS = {f.name for f in dataclasses.fields(Config) if dataclasses.is_dataclass(getattr(Config(), f.name))}


def overlay_changed(base: Config, update: Config, *, always: Iterable[str] = ()) -> Config:
    """``base`` with the values of ``update`` that the user set, plus the ``always`` keys.

    Used by resume: the checkpoint's config is the base; what the user set on this invocation wins, also a value
    equal to the default (``train.epochs=10`` continues a 5-epoch run to 10). The keys set are
    ``update.set_keys`` (:func:`load_config` records the keys of the file and the overrides) and, for a config
    changed in code, every value that differs from the defaults.
    """
    defaults = _flatten(config_to_dict(Config()))
    changes = _flatten(config_to_dict(update))
    always = set(always) | set(update.set_keys or ())
    merged = config_to_dict(base)
    for key, value in changes.items():
        if key in always or value != defaults.get(key):
            section = merged
            *parents, leaf = key.split(".")
            for part in parents:
                section = section[part]
            section[leaf] = value
    return config_from_dict(merged, validate=False)


def _check_ranges(target: Any, prefix: str) -> None:
    for item in dataclasses.fields(target):
        value = getattr(target, item.name)
        if dataclasses.is_dataclass(value):
            _check_ranges(value, f"{prefix}{item.name}.")
        else:
            check_value(type(target), item.name, value, f"{prefix}{item.name}")


def validate_config(config: Config) -> None:
    """The declared value ranges of every field (a config built in code too) and the cross-field checks that a
    type check cannot express.

    Raises:
        ConfigError: naming the key and what it allows.
    """
    _check_ranges(config, "")
    parse_freeze(config.finetune.freeze)
    parse_image_size("export.input_size", config.export.input_size)


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
        import re

        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ConfigError(f"finetune.freeze: invalid regular expression {pattern!r}: {error}") from None
        return "regex", list(value)
    raise ConfigError(
        f"finetune.freeze: expected 'none', 'backbone', {{first_n: N}} or a list of regexes, got {value!r}"
    )
