"""Export options (the config's ``export`` section) and the parity tolerance each compared output gets.

The fields, their defaults and their allowed values are those of :class:`~visiontune.config.ExportConfig` (the
schema declares them once); :class:`ExportOptions` is that section checked by the schema's loader, with
``input_size`` read into ``[height, width]``. The recipes (:mod:`visiontune.export.specs`) and the exporter
(:mod:`visiontune.export.exporter`) both read the options; they live here so that neither of those modules imports
the other's callers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from visiontune.config import ExportConfig, config_from_dict, parse_image_size

__all__ = ["FLOAT_TOLERANCE", "HALF_TOLERANCE", "ExportOptions"]

FLOAT_TOLERANCE = 1e-3
"""Default parity tolerance for float32 graphs, relative to each output's scale."""
HALF_TOLERANCE = 2e-2
"""Default parity tolerance for float16 graphs (compared with the float32 PyTorch model)."""


@dataclass
class ExportOptions(ExportConfig):
    """How to export: the fields of :class:`~visiontune.config.ExportConfig` (``format``, ``dynamic``, ``opset``,
    ``half``, ``softmax``, ``decode``, ``tolerance``, ``input_size``, ``sample``; see ``visiontune config keys
    export``), checked as the config loader checks them.

    ``input_size`` may be given as ``HxW``, ``(height, width)``, ``[height, width]`` or one number; it is stored as
    ``[height, width]`` (:attr:`image_size` gives the tuple).

    Raises:
        ConfigError: a value of the wrong type or out of its range, one line naming the key
            (``export.opset: expected an integer >= 11, got 9``).
    """

    def __post_init__(self) -> None:
        size = parse_image_size("export.input_size", self.input_size)
        self.input_size = None if size is None else list(size)
        config_from_dict({"export": self.as_section()})  # the schema's types and ranges, one definition

    def as_section(self) -> dict[str, Any]:
        """The options as the ``export`` section of a config (``{field: value}``)."""
        return {item.name: getattr(self, item.name) for item in dataclasses.fields(ExportConfig)}

    @classmethod
    def from_config(cls, config: ExportConfig) -> ExportOptions:
        """The options of the config's ``export`` section (``visiontune export``, ``export.*`` keys).

        Raises:
            ConfigError: an option is invalid (the message names it).
        """
        return cls(**{item.name: getattr(config, item.name) for item in dataclasses.fields(ExportConfig)})

    @property
    def image_size(self) -> tuple[int, int] | None:
        """``(height, width)`` of the example input of the detection tasks, or None for the default."""
        return parse_image_size("export.input_size", self.input_size)

    @property
    def resolved_tolerance(self) -> float:
        """``tolerance``, or the default for the precision."""
        if self.tolerance is not None:
            return float(self.tolerance)
        return HALF_TOLERANCE if self.half else FLOAT_TOLERANCE
