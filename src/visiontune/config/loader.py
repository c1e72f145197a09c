"""Load YAML configs into the typed :class:`~visiontune.config.schema.Config`, apply ``a.b=c`` overrides.

Every key is checked against the schema: an unknown key or a value of the wrong type raises
:class:`ConfigError` naming the key (and the file and line when it came from YAML) and the nearest valid
key.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from visiontune.config.constraints import Pattern, Range, non_finite_problem
from visiontune.config.schema import Config
from visiontune.registry import suggest


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message names the key."""


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


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against ``annotation`` and return it (ints are accepted for floats)."""
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    if origin is Literal:
        if isinstance(value, bool) and ("off" if value is False else "on") in typing.get_args(annotation):
            return "off" if value is False else "on"  # YAML 1.1 reads a bare off/on as a boolean
        if value in typing.get_args(annotation):
            return value
        options = [str(v) for v in typing.get_args(annotation)]
        raise ConfigError(
            f"{key}: expected one of {describe_type(annotation)}, got {value!r}{suggest(str(value), options)}"
        )
    if origin in (Union, types.UnionType):
        errors = []
        for option in typing.get_args(annotation):
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(error)
        raise ConfigError(f"{key}: expected {describe_type(annotation)}, got {value!r} ({type(value).__name__})")
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list ({describe_type(annotation)}), got {value!r}")
        (item_type,) = typing.get_args(annotation) or (Any,)
        return [_coerce(item, item_type, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping ({describe_type(annotation)}), got {value!r}")
        key_type, value_type = typing.get_args(annotation) or (Any, Any)
        for item_key, item_value in value.items():
            if item_value is None and isinstance(item_key, str) and ":" in item_key:
                name, _, rest = item_key.partition(":")
                raise ConfigError(f"{key}: entry {item_key!r} has no value; YAML needs a space after the colon: "
                                  f"{{{name}: {rest}}}")
        return {
            _coerce(k, key_type, f"{key} key"): _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()
        }
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
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected str, got {value!r} ({type(value).__name__})")
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
                   record: set[str] | None = None) -> None:
    """Set ``values`` on the schema dataclass ``target`` (type- and range-checked); ``record`` collects the dotted
    keys set."""
    fields = _fields(type(target))
    for name, value in values.items():
        full = f"{prefix}{name}"
        location = where.get(full, "")
        if name not in fields:
            raise _unknown_key_error(full, location)
        annotation = fields[name]
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{full}{location}: expected a mapping of {annotation.__name__} keys, got {value!r}")
            _apply_mapping(getattr(target, name), value, f"{full}.", where, record)
            continue
        try:
            coerced = _coerce(value, annotation, full)
            check_value(type(target), name, coerced, full)
        except ConfigError as error:
            raise ConfigError(f"{error}{location}") from None
        setattr(target, name, coerced)
        if record is not None:
            record.add(full)


_MERGE_TAG = "tag:yaml.org,2002:merge"


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` semantics, but a key given twice in one mapping (at any depth) is an error naming both
    lines, instead of the last one winning silently. Merge keys (``<<: *base``) may still be overridden.

    Use :func:`load_yaml`, which also tells it the dotted path of every mapping for the message.
    """

    source = "<string>"
    line_numbers = True
    paths: dict[int, str]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the constructor reports it
                continue
            if first is not None:
                name = getattr(self, "paths", {}).get(id(node), "") + str(key)
                lines = first.start_mark.line + 1, key_node.start_mark.line + 1
                where = (f"{self.source}:{lines[0]} and {self.source}:{lines[1]}" if self.line_numbers
                         else self.source)
                raise DuplicateKeyError(f"{where}: key {name!r} is given twice")
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


class DuplicateKeyError(ConfigError):
    """A YAML mapping gives one key twice (:class:`UniqueKeyLoader`)."""


def _describe_yaml_error(error: yaml.YAMLError) -> str:
    """One line: ``(line 3, column 5): mapping values are not allowed here``."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        what = "; ".join(part for part in (error.context, error.problem) if part)
        return f"{where}: {what}"
    return f": {' '.join(str(error).split())}"


def load_yaml(text: str, source: str = "<string>", *, prefix: str = "") -> tuple[Any, dict[str, int]]:
    """Parse a YAML document like ``yaml.safe_load``, refusing duplicate keys; also the 1-based line of every
    dotted key (``{"optim.lr": 3}``; list items as ``key[0]``). ``prefix`` is put before the keys of the
    document (the key of an override value); the lines are left out of the messages of a one-line text.

    Raises:
        ConfigError: invalid YAML (``<source>: invalid YAML (line L, column C): ...``) or a key given twice
            (:class:`DuplicateKeyError`, ``<source>:3 and <source>:7: key 'optim.lr' is given twice``); one line.
    """
    lines: dict[str, int] = {}
    loader = UniqueKeyLoader(text)
    loader.source = source
    loader.line_numbers = "\n" in text.strip()
    loader.paths = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            loader.paths[id(node)] = prefix
            merged = []
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    merged.append(value_node)  # after the mapping's own keys, which override the merged ones
                    continue
                key = f"{prefix}{key_node.value}"
                lines.setdefault(key, key_node.start_mark.line + 1)
                walk(value_node, f"{key}.")
            for value_node in merged:
                walk(value_node, prefix)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, f"{prefix.removesuffix('.')}[{index}].")

    try:
        root = loader.get_single_node()
        if root is None:
            return None, lines
        walk(root, prefix)
        return loader.construct_document(root), lines
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: invalid YAML{_describe_yaml_error(error)}") from None
    finally:
        loader.dispose()


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``a.b=value`` and parse the value as YAML (``0.1``, ``true``, ``[1, 2]``, ``null``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. optim.lr=0.01)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = load_yaml(raw, f"override {text!r}", prefix=f"{key}.")[0] if raw.strip() else None
    except DuplicateKeyError:
        raise
    except ConfigError:
        value = raw
    if isinstance(value, (dict, list)) or value is None or isinstance(value, (bool, int, float)):
        return key, value
    if isinstance(value, str) and raw.strip()[:1] in ("'", '"'):
        return key, value  # a quoted string: key='' is the empty string, key="a b" is a b
    return key, raw if isinstance(value, str) else value


def _nest(key: str, value: Any) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    current = nested
    parts = key.split(".")
    for part in parts[:-1]:
        current[part] = {}
        current = current[part]
    current[parts[-1]] = value
    return nested


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data, lines = load_yaml(path.read_text(encoding="utf-8"), str(path))
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level, got {type(data).__name__}")
    return dict(data), {key: f" ({path}:{line})" for key, line in lines.items()}


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


def _empty_override_value(key: str) -> Any:
    """What ``key=`` (nothing after ``=``) means: ``null`` for a key that takes null, else ``""`` for a text key
    (``data.image_ext=``); other keys get ``null`` and the type check names the key."""
    cls: type = Config
    *parents, leaf = key.split(".")
    for part in parents:
        annotation = _fields(cls).get(part)
        if not (isinstance(annotation, type) and dataclasses.is_dataclass(annotation)):
            return None
        cls = annotation
    annotation = _fields(cls).get(leaf)
    union = typing.get_origin(annotation) in (Union, types.UnionType)
    options = typing.get_args(annotation) if union else (annotation,)
    if type(None) not in options and str in options:
        return ""
    return None


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (), *, base: Config | None = None) -> Config:
    """Load a YAML config file (optional) and apply ``key=value`` overrides on top.

    The keys given in the file and the overrides are recorded as ``config.set_keys`` (a resume applies exactly
    those over the checkpoint's config).

    Args:
        path: YAML file; keys missing there keep their defaults (or the values of ``base``).
        overrides: Dotted ``section.key=value`` strings, values parsed as YAML. ``key=`` (nothing after ``=``) is
            ``null`` for a key that takes null and the empty string for a text key (``data.image_ext=``);
            ``key=''`` is always the empty string.
        base: Start from this config instead of the defaults (e.g. the config stored in a checkpoint).

    Raises:
        ConfigError: unknown key, wrong type, value out of range, a YAML key given twice, or an invalid
            combination; the message names the key.
    """
    config = copy_config(base) if base is not None else Config()
    given: set[str] = set()
    if path is not None:
        data, where = _read_yaml(Path(path))
        _apply_mapping(config, data, "", where, given)
    for text in overrides:
        key, value = parse_override(text)
        if value is None and not text.split("=", 1)[1].strip():
            value = _empty_override_value(key)
        _apply_mapping(config, _nest(key, value), "", {key: f" (override {text!r})"}, given)
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
