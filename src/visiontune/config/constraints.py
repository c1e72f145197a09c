"""Value constraints declared next to the schema fields: ``lr: Annotated[float, Positive] = 0.01``.

The loader checks every value it sets against its field's constraints (the error names the key, the allowed range
and, for a YAML file, the file and line); :func:`~visiontune.config.validation.validate_config` checks a whole config
(one built in code too); ``visiontune config keys`` shows them. Non-finite floats (``.inf``, ``.nan``) are refused in
every field unless its :class:`Range` says ``finite=False``.

A constraint only reads values: it imports nothing but the standard library (the schema must stay light).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["AtLeastOne", "Fraction", "NonNegative", "Pattern", "Positive", "Range", "non_finite_problem"]


def _number(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Range:
    """Allowed numbers of a field: bounds (closed unless ``*_open``), and for list fields the number of items
    (``length``) and their order (``increasing``: each item >= the one before). The bounds apply to every number in
    the value (the items of a list, of nested lists, the values of a mapping); ``None`` values are not checked."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    length: int | None = None
    increasing: bool = False
    finite: bool = True
    """Refuse ``inf`` / ``nan`` (the default of every field)."""

    def bounds(self) -> str:
        """``> 0``, ``>= 1``, ``in [0, 1)``; empty without bounds."""
        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_number(self.high)}"
        return ""

    def describe(self, *, integer: bool = False, listed: bool = False) -> str:
        """``a number > 0``, ``an integer >= 1``, ``2 numbers in (0, 1], the first <= the second``."""
        bounds = self.bounds()
        if not listed and self.length is None:
            noun = "an integer" if integer else "a number"
            return f"{noun} {bounds}".strip()
        nouns = "integers" if integer else "numbers"
        text = f"{self.length} {nouns}" if self.length is not None else f"a list of {nouns}"
        text = f"{text} {bounds}".rstrip()
        if self.increasing:
            text += ", the first <= the second" if self.length == 2 else ", in non-decreasing order"
        return text

    def problem(self, value: Any, *, integer: bool = False) -> str | None:
        """What is wrong with ``value`` (``expected ..., got ...``), or ``None`` when it is allowed."""
        listed = isinstance(value, (list, tuple))
        expected = f"expected {self.describe(integer=integer, listed=listed)}, got {value!r}"
        if value is None:
            return None
        if listed:
            if self.length is not None and len(value) != self.length:
                return expected
            if any(self._number_problem(item) for item in _numbers(value)):
                return expected
            if self.increasing and any(b < a for a, b in itertools.pairwise(value)
                                       if _is_number(a) and _is_number(b)):
                return expected
            return None
        if isinstance(value, Mapping):
            for key, item in value.items():
                if self._number_problem(item) is not None or (isinstance(item, (list, tuple, Mapping))
                                                               and self.problem(item, integer=integer)):
                    nouns = "integers" if integer else "numbers"
                    return f"expected {nouns} {self.bounds()} as values, got {key!r}: {item!r}"
            return None
        problem = self._number_problem(value)
        if problem == "non-finite":
            return f"expected a finite {self.describe(integer=integer).removeprefix('a ')}, got {value!r}"
        return expected if problem else None

    def _number_problem(self, value: Any) -> str | None:
        if not _is_number(value):
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return "non-finite" if self.finite else None
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return "low"
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return "high"
        return None


def _numbers(value: Any) -> list[Any]:
    """Every number in ``value`` (nested lists and mapping values included)."""
    if isinstance(value, (list, tuple)):
        return [number for item in value for number in _numbers(item)]
    if isinstance(value, Mapping):
        return [number for item in value.values() for number in _numbers(item)]
    return [value] if _is_number(value) else []


def non_finite_problem(value: Any) -> str | None:
    """``expected finite numbers, got inf`` when ``value`` holds a non-finite float, else ``None``."""
    bad = [number for number in _numbers(value) if isinstance(number, float) and not math.isfinite(number)]
    if not bad:
        return None
    if _is_number(value):
        return f"expected a finite number, got {value!r}"
    return f"expected finite numbers, got {value!r}"


@dataclass(frozen=True)
class Pattern:
    """A string field whose value must match ``regex`` (whole string); ``description`` names what is allowed."""

    regex: str
    description: str

    def describe(self, **_: Any) -> str:
        return self.description

    def problem(self, value: Any, **_: Any) -> str | None:
        if value is None or not isinstance(value, str) or re.fullmatch(self.regex, value):
            return None
        return f"expected {self.description}, got {value!r}"


Positive = Range(low=0, low_open=True)
"""A number > 0."""
NonNegative = Range(low=0)
"""A number >= 0."""
AtLeastOne = Range(low=1)
"""An integer >= 1 (sizes, counts)."""
Fraction = Range(low=0, high=1)
"""A number in [0, 1] (probabilities, thresholds)."""
