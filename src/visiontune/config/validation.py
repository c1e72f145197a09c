"""The declared value ranges of the schema fields (``Annotated[..., Range(...)]`` / ``Pattern``): what each field
allows, the check of one value, and the check of a whole :class:`~visiontune.config.schema.Config` with its
cross-field checks."""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any

from visiontune.config.constraints import Pattern, Range, non_finite_problem
from visiontune.config.errors import ConfigError
from visiontune.config.parsers import parse_freeze, parse_image_size
from visiontune.config.schema import Config


def schema_fields(cls: type) -> dict[str, Any]:
    """``{field name: type annotation}`` of the schema dataclass ``cls`` (string annotations resolved)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


Constraint = Range | Pattern
"""A declared limit of a schema field."""


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
    integer = _counts_integers(schema_fields(cls)[name])
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
    integer = _counts_integers(schema_fields(cls)[name])
    for constraint in constraints:
        problem = constraint.problem(value, integer=integer)
        if problem is not None:
            raise ConfigError(f"{key}: {problem}")
    if all(not isinstance(c, Range) or c.finite for c in constraints):
        problem = non_finite_problem(value)
        if problem is not None:
            raise ConfigError(f"{key}: {problem}")


def _check_ranges(target: Any, prefix: str) -> None:
    """:func:`check_value` on every field of the schema dataclass ``target``, its sections included."""
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
