"""Export options (the config's ``export`` section) and the parity tolerance each compared output gets.

The recipes (:mod:`visiontune.export.specs`) and the exporter (:mod:`visiontune.export.exporter`) both read the
options; they live here so that neither of those modules imports the other's callers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from visiontune.config import ExportConfig

__all__ = ["DEFAULT_OPSET", "FLOAT_TOLERANCE", "FORMATS", "HALF_TOLERANCE", "MIN_OPSET", "ExportOptions"]

FORMATS = ("onnx",)
DEFAULT_OPSET = 17
MIN_OPSET = 11
"""Oldest opset accepted: torchvision's detection models need 11 (dynamic ``Resize``, ``NonMaxSuppression``)."""
FLOAT_TOLERANCE = 1e-3
"""Default parity tolerance for float32 graphs, relative to each output's scale."""
HALF_TOLERANCE = 2e-2
"""Default parity tolerance for float16 graphs (compared with the float32 PyTorch model)."""


@dataclass
class ExportOptions:
    """How to export.

    Attributes:
        format: ``"onnx"`` (the only format so far).
        dynamic: dynamic batch size, and for the detectors dynamic image height and width; else every axis is
            fixed to the example input's.
        opset: ONNX opset of the default domain.
        half: float16 weights and input (outputs stay float32); checked against the float32 model.
        softmax: classification: output softmax probabilities instead of logits.
        decode: face detection: decode the priors in the graph (boxes, scores, landmarks in pixels) instead of
            returning the raw head outputs. NMS stays outside the graph.
        tolerance: parity tolerance of every compared output, relative to the output's scale (1 for
            probabilities, so there it is absolute); None: 1e-3 (float32) or 2e-2 (``half``).
        input_size: ``(height, width)`` of the example input for the detection tasks (default 480x640);
            classification always uses ``data.image_size``.
        sample: an image or folder of images for the parity check; None: synthetic images.
    """

    format: str = "onnx"
    dynamic: bool = True
    opset: int = DEFAULT_OPSET
    half: bool = False
    softmax: bool = False
    decode: bool = False
    tolerance: float | None = None
    input_size: tuple[int, int] | None = None
    sample: str | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format: {self.format!r} is not supported; use one of {', '.join(FORMATS)}")
        if not isinstance(self.opset, int) or self.opset < MIN_OPSET:
            raise ValueError(f"opset: expected an integer >= {MIN_OPSET}, got {self.opset!r}")
        if self.tolerance is not None and not self.tolerance >= 0:
            raise ValueError(f"tolerance: expected a number >= 0, got {self.tolerance!r}")
        if self.input_size is not None:
            if len(self.input_size) != 2 or any(int(size) < 32 for size in self.input_size):
                raise ValueError(f"input_size: expected (height, width), both >= 32, got {self.input_size!r}")
            self.input_size = (int(self.input_size[0]), int(self.input_size[1]))

    @classmethod
    def from_config(cls, config: ExportConfig) -> ExportOptions:
        """The options of the config's ``export`` section (``visiontune export``, ``export.*`` keys).

        Raises:
            ValueError: an option is invalid (the message names it).
        """
        from visiontune.config import parse_image_size

        return cls(format=config.format, dynamic=config.dynamic, opset=config.opset, half=config.half,
                   softmax=config.softmax, decode=config.decode, tolerance=config.tolerance,
                   input_size=parse_image_size("export.input_size", config.input_size), sample=config.sample)

    @property
    def resolved_tolerance(self) -> float:
        """``tolerance``, or the default for the precision."""
        if self.tolerance is not None:
            return float(self.tolerance)
        return HALF_TOLERANCE if self.half else FLOAT_TOLERANCE
