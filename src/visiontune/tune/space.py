"""The search space of ``visiontune tune``: distribution specs (``loguniform(1e-4, 0.3)``) -> Optuna distributions.

``tune.space`` maps config keys to spec strings. A spec is parsed without ``eval``: a name, then an argument list
read by :func:`ast.literal_eval` (numbers, strings, true/false/null and lists only). Keys are checked against the
schema like overrides (an unknown key names its nearest), and the ends of each range (every choice) are applied to
the config before the search starts, so that a value the key does not accept fails at once, naming the key.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from visiontune.config import Config, ConfigError, load_config, valid_keys
from visiontune.registry import suggest

__all__ = ["SPEC_SYNTAX", "ParamSpec", "apply_params", "check_space", "grid_values", "parse_space", "parse_spec"]

SPEC_SYNTAX = ("loguniform(low, high) | uniform(low, high) | int(low, high) | choice([v1, v2, ...]) "
               "(choices: numbers, strings, true/false, null)")
"""The accepted specs, as errors name them."""

FORBIDDEN_KEYS = ("name", "project", "resume", "checkpoint", "device", "output", "source")
"""Keys a trial cannot vary: where runs go and what one invocation does (besides the ``tune`` section)."""

_SPEC = re.compile(r"^\s*(?P<kind>[a-z]+)\s*\((?P<arguments>.*)\)\s*$", re.DOTALL)
_CHOICE_TYPES = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class ParamSpec:
    """One searched key.

    Attributes:
        key: the dotted config key (``optim.lr``), also the Optuna parameter name.
        kind: ``loguniform``, ``uniform``, ``int`` or ``choice``.
        arguments: ``(low, high)``, or the list of choices.
        text: the spec as written.
    """

    key: str
    kind: str
    arguments: tuple[Any, ...]
    text: str

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution of this spec."""
        if self.kind == "choice":
            return CategoricalDistribution(list(self.arguments))
        low, high = self.arguments
        if self.kind == "int":
            return IntDistribution(int(low), int(high))
        return FloatDistribution(float(low), float(high), log=self.kind == "loguniform")

    def edge_values(self) -> list[Any]:
        """The values a config must accept for every sample to be valid: both ends (floats for the continuous
        ranges, as sampled), or every choice."""
        if self.kind in ("uniform", "loguniform"):
            return [float(value) for value in self.arguments]
        return list(self.arguments)


def _literal_arguments(key: str, spec: str, arguments: str) -> tuple[Any, ...]:
    """The argument list of a spec, read as Python literals, else as a YAML flow list (unquoted words,
    ``true``/``false``/``null``)."""
    try:
        value = ast.literal_eval(f"({arguments},)") if arguments.strip() else ()
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = _yaml_arguments(arguments)
        if value is None:
            raise _malformed(key, spec, "cannot read the arguments") from None
    return tuple(value)


def _yaml_arguments(arguments: str) -> list[Any] | None:
    """``choice([backbone, none])``: unquoted words, as a YAML flow list reads them (``None`` if it cannot)."""
    try:
        value = yaml.safe_load(f"[{arguments}]")
    except yaml.YAMLError:
        return None
    return value if isinstance(value, list) else None


def _malformed(key: str, spec: Any, why: str) -> ConfigError:
    return ConfigError(f"tune.space.{key}: {spec!r}: {why}; expected {SPEC_SYNTAX}")


def parse_spec(key: str, spec: Any) -> ParamSpec:
    """One ``tune.space`` entry as a :class:`ParamSpec`.

    Raises:
        ConfigError: one line naming ``tune.space.<key>``, what was given and :data:`SPEC_SYNTAX`.
    """
    match = _SPEC.match(spec) if isinstance(spec, str) else None
    if match is None or match["kind"] not in ("loguniform", "uniform", "int", "choice"):
        raise _malformed(key, spec, "not a distribution")
    kind, arguments = match["kind"], _literal_arguments(key, spec, match["arguments"])
    if kind == "choice":
        if len(arguments) != 1 or not isinstance(arguments[0], (list, tuple)) or not arguments[0]:
            raise _malformed(key, spec, "choice takes one non-empty list")
        choices = tuple(arguments[0])
        if not all(isinstance(choice, _CHOICE_TYPES) for choice in choices):
            raise _malformed(key, spec, "choices must be numbers, strings, true/false or null")
        return ParamSpec(key, kind, choices, spec)
    numbers = all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in arguments)
    if len(arguments) != 2 or not numbers:
        raise _malformed(key, spec, f"{kind} takes two numbers (low, high)")
    low, high = arguments
    if kind == "int" and not all(isinstance(value, int) for value in arguments):
        raise _malformed(key, spec, "int takes two whole numbers")
    if not low < high:
        raise _malformed(key, spec, "low must be below high")
    if kind == "loguniform" and low <= 0:
        raise _malformed(key, spec, "loguniform needs low > 0")
    return ParamSpec(key, kind, (low, high), spec)


def parse_space(space: Mapping[str, Any]) -> list[ParamSpec]:
    """Every entry of ``tune.space``, keys checked against the schema.

    Raises:
        ConfigError: an empty space, an unknown key (with the nearest ones, as for overrides), a section, a key
            of the ``tune`` section or of :data:`FORBIDDEN_KEYS`, or a malformed spec.
    """
    if not space:
        raise ConfigError("tune.space is empty: give the keys to search, e.g. "
                          "\"tune.space={optim.lr: 'loguniform(1e-4, 0.3)'}\"")
    keys = valid_keys()
    sections = {key.rsplit(".", 1)[0] for key in keys if "." in key}
    specs = []
    for key, spec in space.items():
        key = str(key)
        if key not in keys:
            raise ConfigError(f"tune.space: unknown config key {key!r}{suggest(key, keys)}")
        if key in sections:
            raise ConfigError(f"tune.space: {key!r} is a section; give its keys ({key}.<key>)")
        if key.startswith("tune.") or key in FORBIDDEN_KEYS:
            raise ConfigError(f"tune.space: {key!r} cannot be searched (it says where and how the search runs)")
        specs.append(parse_spec(key, spec))
    return specs


def _override(key: str, value: Any) -> str:
    """``key=value`` with the value written as YAML (what the config loader parses back to ``value``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return f"{key}={text.removesuffix('...').strip()}"


def apply_params(config: Config, params: Mapping[str, Any]) -> Config:
    """A copy of ``config`` with ``params`` (``{dotted key: value}``) applied as overrides (type- and range-checked).

    Raises:
        ConfigError: a value the key does not accept, naming the key.
    """
    return load_config(None, [_override(key, value) for key, value in params.items()], base=config)


def check_space(config: Config, specs: list[ParamSpec]) -> None:
    """Apply the ends of every range (every choice) to ``config``, so that a value the key refuses fails now.

    Raises:
        ConfigError: ``tune.space.<key>: <spec> gives <value>, which <key> refuses: <why>``.
    """
    for spec in specs:
        for value in spec.edge_values():
            try:
                apply_params(config, {spec.key: value})
            except ConfigError as error:
                why = re.sub(r" \(override '.*'\)$", "", str(error))  # the override is this check's, not the user's
                raise ConfigError(f"tune.space.{spec.key}: {spec.text!r} gives {value!r}, which the config refuses: "
                                  f"{why}") from None


def grid_values(specs: list[ParamSpec]) -> dict[str, list[Any]]:
    """The grid of ``tune.sampler=grid``: every choice, every whole number of an ``int`` range.

    Raises:
        ConfigError: a ``uniform`` / ``loguniform`` spec (a continuous range has no grid).
    """
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        if spec.kind == "choice":
            grid[spec.key] = list(spec.arguments)
        elif spec.kind == "int":
            grid[spec.key] = list(range(spec.arguments[0], spec.arguments[1] + 1))
        else:
            raise ConfigError(f"tune.sampler=grid: tune.space.{spec.key} is {spec.text!r}, a continuous range; "
                              "give choice([...]) or int(low, high), or use tune.sampler=tpe or random")
    return grid
