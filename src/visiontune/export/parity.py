"""Comparing an exported graph (run by ONNX Runtime) with the PyTorch model it came from.

Each output is compared by its largest absolute difference, allowed up to ``tolerance`` times the output's scale
(its largest absolute reference value), so one relative tolerance serves logits, probabilities and pixel boxes.
Integer outputs (labels) must match exactly. Detection outputs whose order may legitimately differ (two boxes with
nearly equal scores) are aligned first by an optimal one-to-one matching of boxes with the same label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MIN_SCALE = 1e-6
"""Floor of an output's scale, so that an all-zero output still allows rounding-level differences."""
LABEL_MISMATCH_COST = 1e12


class ParityError(ValueError):
    """The exported graph's outputs differ from PyTorch's by more than the tolerance."""


@dataclass
class OutputDifference:
    """How far one output of the exported graph is from PyTorch's.

    Attributes:
        name: output name.
        shape: shape of the PyTorch output.
        max_abs_diff: largest absolute difference over the finite values (``inf`` when the shapes or the positions
            of NaN / infinite values differ).
        scale: largest absolute finite PyTorch value (the output's scale).
        allowed: the largest difference accepted (``tolerance * max(scale, MIN_SCALE)``; 0 for integer outputs).
        problem: why the comparison failed beyond the numbers (shape mismatch), else empty.
    """

    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    scale: float
    allowed: float
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem and self.max_abs_diff <= self.allowed

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "max_abs_diff": self.max_abs_diff, "scale": self.scale,
                "allowed": self.allowed, **({"problem": self.problem} if self.problem else {})}


@dataclass
class ParityCheck:
    """All outputs of the graph on one input.

    Attributes:
        input_shape: shape of the input fed to both models.
        outputs: one comparison per output, in graph order.
        note: extra information (e.g. how detections were aligned).
    """

    input_shape: tuple[int, ...]
    outputs: list[OutputDifference] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return all(output.ok for output in self.outputs)

    def as_dict(self) -> dict[str, Any]:
        return {"input_shape": list(self.input_shape), "outputs": [output.as_dict() for output in self.outputs],
                **({"note": self.note} if self.note else {})}


def compare_output(name: str, reference: np.ndarray, actual: np.ndarray, *, tolerance: float) -> OutputDifference:
    """Compare one output.

    Args:
        name: output name (for messages).
        reference: the PyTorch output.
        actual: the ONNX Runtime output.
        tolerance: relative tolerance for floating outputs; integer outputs must be equal.

    Returns:
        The comparison; ``ok`` says whether it passes.
    """
    shape = tuple(int(size) for size in reference.shape)
    exact = not np.issubdtype(reference.dtype, np.floating)
    if reference.shape != actual.shape:
        return OutputDifference(name, shape, float("inf"), 0.0, 0.0,
                                problem=f"shape {list(actual.shape)} differs from PyTorch's {list(shape)}")
    if reference.size == 0:
        return OutputDifference(name, shape, 0.0, 0.0, 0.0)
    reference64, actual64 = reference.astype(np.float64), actual.astype(np.float64)
    finite = np.isfinite(reference64) & np.isfinite(actual64)
    if not np.array_equal(reference64[~finite], actual64[~finite], equal_nan=True):
        return OutputDifference(name, shape, float("inf"), 0.0, 0.0,
                                problem="NaN or infinite values differ from PyTorch's")
    difference = float(np.max(np.abs(reference64[finite] - actual64[finite]), initial=0.0))
    scale = float(np.max(np.abs(reference64[finite]), initial=0.0))
    allowed = 0.0 if exact else tolerance * max(scale, MIN_SCALE)
    return OutputDifference(name, shape, difference, scale, allowed)


def align_detections(reference_boxes: np.ndarray, reference_labels: np.ndarray, boxes: np.ndarray,
                     labels: np.ndarray) -> np.ndarray:
    """Order of ``boxes`` that best matches ``reference_boxes`` one to one (same label, closest coordinates).

    Args:
        reference_boxes: ``float [N, 4]`` xyxy (PyTorch).
        reference_labels: ``int [N]``.
        boxes: ``float [N, 4]`` xyxy (ONNX Runtime), same count.
        labels: ``int [N]``.

    Returns:
        ``int64 [N]`` indices: ``boxes[order][i]`` is the match of ``reference_boxes[i]``.
    """
    from scipy.optimize import linear_sum_assignment

    if len(reference_boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    cost = np.abs(reference_boxes[:, None, :].astype(np.float64) - boxes[None, :, :].astype(np.float64)).max(axis=2)
    cost = np.where(reference_labels[:, None] == labels[None, :], cost, LABEL_MISMATCH_COST)
    rows, columns = linear_sum_assignment(cost)
    order = np.empty(len(reference_boxes), dtype=np.int64)
    order[rows] = columns
    return order


def compare_outputs(names: Sequence[str], reference: Sequence[np.ndarray], actual: Sequence[np.ndarray], *,
                    tolerance: float, input_shape: Sequence[int], detection_keys: Mapping[str, str] | None = None
                    ) -> ParityCheck:
    """Compare every output of one run.

    Args:
        names: output names, in order.
        reference: PyTorch outputs.
        actual: ONNX Runtime outputs.
        tolerance: relative tolerance (see :func:`compare_output`).
        input_shape: shape of the input (for the report).
        detection_keys: for detection outputs whose rows may come in another order, ``{"boxes": name,
            "labels": name}``: rows of every output with as many rows as the boxes are reordered by
            :func:`align_detections` before comparing.

    Returns:
        The :class:`ParityCheck`.
    """
    actual = list(actual)
    note = ""
    if detection_keys is not None:
        box_index, label_index = names.index(detection_keys["boxes"]), names.index(detection_keys["labels"])
        count, actual_count = len(reference[box_index]), len(actual[box_index])
        if count == actual_count:
            order = align_detections(reference[box_index], reference[label_index], actual[box_index],
                                     actual[label_index])
            reordered = int(np.count_nonzero(order != np.arange(count)))
            actual = [output[order] if output.ndim and len(output) == count else output for output in actual]
            note = f"{count} detections, {reordered} in another order than PyTorch's (aligned by matching)"
        else:
            note = f"PyTorch found {count} detections, ONNX Runtime {actual_count}"
    check = ParityCheck(tuple(int(size) for size in input_shape), note=note)
    for name, expected, got in zip(names, reference, actual):
        check.outputs.append(compare_output(name, expected, got, tolerance=tolerance))
    return check


def format_parity(checks: Sequence[ParityCheck]) -> str:
    """A text table: one line per (input, output) with the max abs difference, the scale and the limit."""
    lines = [f"{'input':<20} {'output':<12} {'max abs diff':>13} {'scale':>11} {'allowed':>11}  result"]
    for check in checks:
        shape = "x".join(str(size) for size in check.input_shape)
        for output in check.outputs:
            result = "ok" if output.ok else f"FAIL {output.problem}".rstrip()
            lines.append(f"{shape:<20} {output.name:<12} {output.max_abs_diff:>13.3e} {output.scale:>11.4g} "
                         f"{output.allowed:>11.3e}  {result}")
        if check.note:
            lines.append(f"{'':<20} ({check.note})")
    return "\n".join(lines)


def parity_failure_message(checks: Sequence[ParityCheck], *, tolerance: float) -> str:
    """The message of a :class:`ParityError`: every failing output with its numbers."""
    failures = []
    for check in checks:
        shape = "x".join(str(size) for size in check.input_shape)
        for output in check.outputs:
            if output.ok:
                continue
            if output.problem:
                failures.append(f"output {output.name!r} on input {shape}: {output.problem}")
            else:
                failures.append(f"output {output.name!r} on input {shape}: max abs difference "
                                f"{output.max_abs_diff:.3e} > allowed {output.allowed:.3e} (tolerance {tolerance:g} x "
                                f"scale {output.scale:.4g})")
        if check.note and not check.ok:
            failures.append(f"input {shape}: {check.note}")
    return ("ONNX Runtime does not reproduce the PyTorch model: " + "; ".join(failures) +
            ". Nothing was written. Raise tolerance= if the difference is acceptable (e.g. for half=true).")
