"""Load YAML configs into the typed :class:`~visiontune.config.schema.Config`, apply ``a.b=c`` overrides.

Every key is checked against the schema: an unknown key or a value of the wrong type raises
:class:`ConfigError` naming the key (and the file and line when it came from YAML) and the nearest valid
key.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

import yaml

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


def _apply_mapping(target: Any, values: Mapping[str, Any], prefix: str, where: Mapping[str, str]) -> None:
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
            _apply_mapping(getattr(target, name), value, f"{full}.", where)
            continue
        try:
            setattr(target, name, _coerce(value, annotation, full))
        except ConfigError as error:
            raise ConfigError(f"{error}{location}") from None


def _yaml_key_lines(text: str, source: str) -> dict[str, str]:
    """Map dotted keys of a YAML document to `` (file:line)`` strings for error messages."""
    locations: dict[str, str] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = f"{prefix}{key_node.value}"
                locations[key] = f" ({source}:{key_node.start_mark.line + 1})"
                walk(value_node, f"{key}.")

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return locations
    if root is not None:
        walk(root, "")
    return locations


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``a.b=value`` and parse the value as YAML (``0.1``, ``true``, ``[1, 2]``, ``null``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. optim.lr=0.01)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, (dict, list)) or value is None or isinstance(value, (bool, int, float)):
        return key, value
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
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level, got {type(data).__name__}")
    return dict(data), _yaml_key_lines(text, str(path))


def config_from_dict(values: Mapping[str, Any], *, validate: bool = True) -> Config:
    """Build a :class:`Config` from a nested mapping (e.g. the config stored in a checkpoint)."""
    config = Config()
    _apply_mapping(config, values, "", {})
    if validate:
        validate_config(config)
    return config


def copy_config(config: Config) -> Config:
    """A deep copy of ``config``."""
    return config_from_dict(config_to_dict(config), validate=False)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (), *, base: Config | None = None) -> Config:
    """Load a YAML config file (optional) and apply ``key=value`` overrides on top.

    Args:
        path: YAML file; keys missing there keep their defaults (or the values of ``base``).
        overrides: Dotted ``section.key=value`` strings, values parsed as YAML.
        base: Start from this config instead of the defaults (e.g. the config stored in a checkpoint).

    Raises:
        ConfigError: unknown key, wrong type or invalid combination; the message names the key.
    """
    config = copy_config(base) if base is not None else Config()
    if path is not None:
        data, where = _read_yaml(Path(path))
        _apply_mapping(config, data, "", where)
    for text in overrides:
        key, value = parse_override(text)
        _apply_mapping(config, _nest(key, value), "", {key: f" (override {text!r})"})
    validate_config(config)
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
    """``base`` with every value of ``update`` that differs from the defaults (plus the ``always`` keys).

    Used by resume: the checkpoint's config is the base; what the user set on this invocation wins.
    """
    defaults = _flatten(config_to_dict(Config()))
    changes = _flatten(config_to_dict(update))
    always = set(always)
    merged = config_to_dict(base)
    for key, value in changes.items():
        if key in always or value != defaults.get(key):
            section = merged
            *parents, leaf = key.split(".")
            for part in parents:
                section = section[part]
            section[leaf] = value
    return config_from_dict(merged, validate=False)


def validate_config(config: Config) -> None:
    """Cross-field checks that a type check cannot express."""
    positive = {
        "data.batch_size": config.data.batch_size,
        "data.image_size": config.data.image_size,
        "train.accumulate": config.train.accumulate,
        "train.eval_every": config.train.eval_every,
        "train.keep_last": config.train.keep_last,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}: expected a positive integer, got {value}")
    if config.train.epochs < 0:
        raise ConfigError(f"train.epochs: expected >= 0, got {config.train.epochs}")
    if config.optim.lr <= 0:
        raise ConfigError(f"optim.lr: expected > 0, got {config.optim.lr}")
    if not 0.0 <= config.model.min_loaded_fraction <= 1.0:
        raise ConfigError(f"model.min_loaded_fraction: expected 0..1, got {config.model.min_loaded_fraction}")
    if config.data.num_workers < 0:
        raise ConfigError(f"data.num_workers: expected >= 0, got {config.data.num_workers}")
    if config.model.num_classes is not None and config.model.num_classes < 1:
        raise ConfigError(f"model.num_classes: expected >= 1, got {config.model.num_classes}")
    parse_freeze(config.finetune.freeze)
    parse_image_size("export.input_size", config.export.input_size)


def parse_image_size(key: str, value: Any) -> tuple[int, int] | None:
    """``(height, width)`` of ``HxW`` (``"480x640"``), ``[H, W]`` or one number for a square; None stays None.

    Raises:
        ConfigError: anything else, naming ``key``.
    """
    if value is None:
        return None
    problem = ConfigError(f"{key}={value!r}: expected HEIGHTxWIDTH (e.g. 480x640), [HEIGHT, WIDTH] or one number")
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
    if len(sizes) != 2 or not all(isinstance(size, int) and not isinstance(size, bool) for size in sizes):
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
