"""Load YAML configs into the typed :class:`~visiontune.config.schema.Config`, apply ``a.b=c`` overrides, copy,
save and overlay configs.

Every key is checked against the schema: an unknown key raises :class:`ConfigError` naming the key (and the file
and line when it came from YAML) and the nearest valid key; the value goes through
:func:`~visiontune.config.coerce.coerce_value` (its type) and :func:`~visiontune.config.validation.check_value`
(its declared range).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from visiontune.config.coerce import coerce_value
from visiontune.config.errors import ConfigError
from visiontune.config.overrides import Override, read_override
from visiontune.config.schema import Config
from visiontune.config.validation import check_value, schema_fields, validate_config
from visiontune.config.yaml_io import ScalarTexts, parse_yaml, read_config_text
from visiontune.registry import suggest

logger = logging.getLogger(__name__)


def valid_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, e.g. ``["task", ..., "optim.lr", ...]``."""
    keys = []
    for name, annotation in schema_fields(cls).items():
        full = f"{prefix}{name}"
        keys.append(full)
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
            keys.extend(valid_keys(annotation, prefix=f"{full}."))
    return keys


def _unknown_key_error(key: str, where: str) -> ConfigError:
    """``unknown config key '<key>'<where>`` with the nearest valid key."""
    return ConfigError(f"unknown config key {key!r}{where}{suggest(key, valid_keys())}")


def _apply_mapping(target: Any, values: Mapping[str, Any], prefix: str, where: Mapping[str, str],
                   record: set[str] | None = None, texts: ScalarTexts | None = None) -> None:
    """Set ``values`` on the schema dataclass ``target`` (type- and range-checked); ``record`` collects the dotted
    keys set; a text key takes the written text of an unquoted YAML scalar from ``texts`` (``name: off``)."""
    fields = schema_fields(type(target))
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
            coerced = coerce_value(value, annotation, full, texts)
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
        enabled = coerce_value(value, bool, key)
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
