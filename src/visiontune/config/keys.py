"""Every config key with its type, default and documentation (``visiontune config keys``).

The documentation of a key is the attribute docstring that follows it in :mod:`visiontune.config.schema`
(a string literal right after the annotated assignment), read with :mod:`ast` from the schema's source; the
section's own docstring documents a section. Without the source (a stripped install) the docs are empty.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import typing
from dataclasses import dataclass
from typing import Any

import yaml

from visiontune.config.coerce import describe_type
from visiontune.config.errors import ConfigError
from visiontune.config.schema import Config
from visiontune.config.validation import describe_constraints
from visiontune.registry import suggest

__all__ = ["KeyInfo", "attribute_docs", "format_keys", "schema_keys", "sections"]


@dataclass(frozen=True)
class KeyInfo:
    """One key of the schema.

    Attributes:
        key: the dotted key (``optim.lr``).
        type: the accepted type, as in error messages (``float``, ``str | null``).
        default: the default value as YAML (``0.01``, ``null``, ``[0.08, 1.0]``).
        doc: the key's documentation (empty when the schema has none).
        range: the values allowed beyond the type, as declared on the field (``> 0``, ``in [0, 1]``; empty: any
            value of the type).
    """

    key: str
    type: str
    default: str
    doc: str
    range: str = ""


@functools.cache
def _class_docs() -> dict[str, dict[str, str]]:
    """``{class name: {attribute: docstring}}`` of every class in the schema module's source."""
    from visiontune.config import schema

    try:
        source = inspect.getsource(schema)
    except (OSError, TypeError):
        return {}
    docs: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        attributes: dict[str, str] = {}
        for statement, following in zip(node.body, node.body[1:]):
            if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                    and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                attributes[statement.target.id] = inspect.cleandoc(following.value.value)
        docs[node.name] = attributes
    return docs


def attribute_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of the schema dataclass ``cls`` (``{"lr": "..."}``; undocumented keys missing)."""
    return dict(_class_docs().get(cls.__name__, {}))


def _section_classes() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config) if dataclasses.is_dataclass(hints[f.name])}


def sections() -> list[str]:
    """The section names of :class:`Config` (``model``, ``data``, ...)."""
    return list(_section_classes())


def _format_default(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def _keys_of(cls: type, instance: Any, prefix: str) -> list[KeyInfo]:
    hints = typing.get_type_hints(cls)
    docs = attribute_docs(cls)
    keys = []
    for item in dataclasses.fields(cls):
        annotation = hints[item.name]
        if dataclasses.is_dataclass(annotation):
            continue
        value = getattr(instance, item.name)
        keys.append(KeyInfo(key=f"{prefix}{item.name}", type=describe_type(annotation),
                            default=_format_default(value),
                            doc=docs.get(item.name, ""), range=describe_constraints(cls, item.name)))
    return keys


def schema_keys(section: str | None = None) -> list[KeyInfo]:
    """The keys of the whole schema, of one section (``optim``), of the top level (``""``) or one key (``optim.lr``).

    Raises:
        ConfigError: ``section`` is neither a section nor a key, with the nearest names.
    """
    default = Config()
    classes = _section_classes()
    everything = _keys_of(Config, default, "")
    for name, cls in classes.items():
        everything += _keys_of(cls, getattr(default, name), f"{name}.")
    if section is None:
        return everything
    if section == "":
        return [info for info in everything if "." not in info.key]
    if section in classes:
        return [info for info in everything if info.key.startswith(f"{section}.")]
    matches = [info for info in everything if info.key == section]
    if matches:
        return matches
    names = [*classes, *(info.key for info in everything)]
    raise ConfigError(f"unknown config section or key {section!r}{suggest(section, names)}; "
                      f"sections: {', '.join(classes)}")


def section_doc(section: str) -> str:
    """The docstring of a section's dataclass (empty for an unknown section)."""
    cls = _section_classes().get(section)
    return inspect.cleandoc(cls.__doc__ or "") if cls is not None else ""


def format_keys(keys: list[KeyInfo], *, indent: str = "    ") -> str:
    """``key: type = default`` lines (``key: type (range) = default`` for a key with a declared range), each followed
    by its indented documentation."""
    lines = []
    for info in keys:
        allowed = f" ({info.range})" if info.range else ""
        lines.append(f"{info.key}: {info.type}{allowed} = {info.default}")
        lines.extend(f"{indent}{line}" if line else "" for line in info.doc.splitlines())
    return "\n".join(lines)
