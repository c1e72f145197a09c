"""Comparing an exported graph (run by ONNX Runtime) with the PyTorch model it came from.

Each floating output is compared by its largest absolute difference, allowed up to ``tolerance`` times the output's
scale (its largest absolute reference value), so one relative tolerance serves logits, boxes in pixels and scores.
Outputs with a known range are given that scale instead: mask probabilities have scale 1, so their tolerance is
absolute. Integer outputs (labels) must match exactly. ``tolerance=`` applies to every compared floating output (a
mapping may give one per output), and a failed check names the tolerance that would accept the numeric differences
it found.

Detection sets (Mask R-CNN) are compared detection by detection: the two sets are matched one to one (same label,
IoU >= 0.5, optimal assignment), and every detection scoring at least ``min_score`` in either runtime must have a
match whose box, score and mask probabilities (the unpasted ``[M, M]`` mask of its label, which the host pastes with
the PyTorch model's own function) agree within the tolerance. The mask head samples its features in each box's
frame, so the mask probabilities are compared with PyTorch's computed at the graph's own boxes
(``at_graph_detections``): at PyTorch's boxes, the boxes' rounding-level differences (~7e-3 px for a ResNet-50 at
480x640, compared on their own) would move probabilities near mask edges by up to ~2e-2. Lower-scoring detections
may differ: the RPN keeps ~1000 proposals by NMS among near-equal objectness scores, and rounding-level differences
(different convolution kernels) flip some of those decisions; what survives at the bottom of the ranking then
differs, while confident detections do not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from visiontune.utils.boxes import box_iou

MIN_SCALE = 1e-6
"""Floor of an output's scale, so that an all-zero output still allows rounding-level differences."""


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
        scale: the output's scale: its largest absolute finite PyTorch value, or the fixed scale of an output with
            a known range (1 for probabilities).
        allowed: the largest difference accepted (``tolerance * max(scale, MIN_SCALE)``; 0 for integer outputs).
        tolerance: the relative tolerance applied; None for integer outputs, which must be equal.
        problem: why the comparison failed beyond the numbers (shape mismatch), else empty.
    """

    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    scale: float
    allowed: float
    tolerance: float | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem and self.max_abs_diff <= self.allowed

    @property
    def needed_tolerance(self) -> float | None:
        """The smallest tolerance that accepts this output's difference; None when no tolerance does (a shape or
        NaN problem, an integer output)."""
        if self.problem or self.tolerance is None:
            return None
        return self.max_abs_diff / max(self.scale, MIN_SCALE)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "max_abs_diff": self.max_abs_diff, "scale": self.scale,
                "allowed": self.allowed, "tolerance": self.tolerance,
                **({"problem": self.problem} if self.problem else {})}


@dataclass
class ParityCheck:
    """All outputs of the graph on one input.

    Attributes:
        input_shape: shape of the input fed to both models.
        outputs: one comparison per output, in graph order.
        note: extra information (e.g. how many detections were compared).
        problems: failures beyond the per-output numbers (e.g. a confident detection without a counterpart).
        compared_detections: for detection outputs, how many matched detections were compared (else None).
    """

    input_shape: tuple[int, ...]
    outputs: list[OutputDifference] = field(default_factory=list)
    note: str = ""
    problems: list[str] = field(default_factory=list)
    compared_detections: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and all(output.ok for output in self.outputs)

    def as_dict(self) -> dict[str, Any]:
        return {"input_shape": list(self.input_shape), "outputs": [output.as_dict() for output in self.outputs],
                **({"note": self.note} if self.note else {}), **({"problems": self.problems} if self.problems else {})}


@dataclass(frozen=True)
class DetectionOutputs:
    """Names the outputs that form a set of detections and says which detections must match.

    Attributes:
        boxes: output with ``[N, 4]`` xyxy boxes.
        labels: output with ``[N]`` integer labels.
        scores: output with ``[N]`` scores.
        min_score: detections scoring at least this in either runtime must be matched and agree.
        min_iou: a match needs the same label and at least this IoU.
        masks: output with ``[N, 1, M, M]`` mask probabilities (compared with scale 1: the tolerance is absolute),
            or None.
    """

    boxes: str
    labels: str
    scores: str
    min_score: float
    min_iou: float = 0.5
    masks: str | None = None


def compare_output(name: str, reference: np.ndarray, actual: np.ndarray, *, tolerance: float,
                   scale: float | None = None) -> OutputDifference:
    """Compare one output.

    Args:
        name: output name (for messages).
        reference: the PyTorch output.
        actual: the ONNX Runtime output.
        tolerance: relative tolerance for floating outputs; integer outputs must be equal.
        scale: the output's scale when its range is known (1 for probabilities: ``tolerance`` is then absolute);
            None: its largest absolute PyTorch value.

    Returns:
        The comparison; ``ok`` says whether it passes.
    """
    shape = tuple(int(size) for size in reference.shape)
    exact = not np.issubdtype(reference.dtype, np.floating)
    applied = None if exact else float(tolerance)
    if reference.shape != actual.shape:
        return OutputDifference(name, shape, float("inf"), 0.0, 0.0, applied,
                                problem=f"shape {list(actual.shape)} differs from PyTorch's {list(shape)}")
    if reference.size == 0:
        return OutputDifference(name, shape, 0.0, 0.0, 0.0, applied)
    reference64, actual64 = reference.astype(np.float64), actual.astype(np.float64)
    finite = np.isfinite(reference64) & np.isfinite(actual64)
    if not np.array_equal(reference64[~finite], actual64[~finite], equal_nan=True):
        return OutputDifference(name, shape, float("inf"), 0.0, 0.0, applied,
                                problem="NaN or infinite values differ from PyTorch's")
    difference = float(np.max(np.abs(reference64[finite] - actual64[finite]), initial=0.0))
    if scale is None:
        scale = float(np.max(np.abs(reference64[finite]), initial=0.0))
    allowed = 0.0 if exact else tolerance * max(scale, MIN_SCALE)
    return OutputDifference(name, shape, difference, scale, allowed, applied)


def match_detections(reference_boxes: np.ndarray, reference_labels: np.ndarray, boxes: np.ndarray,
                     labels: np.ndarray, *, min_iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of two detection sets maximising the total IoU (Hungarian assignment).

    Args:
        reference_boxes: ``float [N, 4]`` xyxy (PyTorch).
        reference_labels: ``int [N]``.
        boxes: ``float [M, 4]`` xyxy (ONNX Runtime).
        labels: ``int [M]``.
        min_iou: pairs need the same label and at least this IoU.

    Returns:
        ``(reference_indices, indices)``, ``int64 [K]`` each: ``reference_boxes[reference_indices[i]]`` matches
        ``boxes[indices[i]]``.
    """
    from scipy.optimize import linear_sum_assignment

    empty = np.zeros(0, dtype=np.int64)
    if len(reference_boxes) == 0 or len(boxes) == 0:
        return empty, empty
    iou = box_iou(reference_boxes, boxes)
    iou = np.where(reference_labels.reshape(-1, 1) == labels.reshape(1, -1), iou, 0.0)
    rows, columns = linear_sum_assignment(-iou)
    keep = iou[rows, columns] >= min_iou
    return rows[keep].astype(np.int64), columns[keep].astype(np.int64)


def compare_outputs(names: Sequence[str], reference: Sequence[np.ndarray], actual: Sequence[np.ndarray], *,
                    tolerance: float | Mapping[str, float], input_shape: Sequence[int],
                    detections: DetectionOutputs | None = None,
                    at_graph_detections: Mapping[str, np.ndarray] | None = None) -> ParityCheck:
    """Compare every output of one run.

    Args:
        names: output names, in order.
        reference: PyTorch outputs.
        actual: ONNX Runtime outputs.
        tolerance: relative tolerance of every output, or one per output name (see :func:`compare_output`).
        input_shape: shape of the input (for the report).
        detections: for outputs that form a set of detections: compare matched confident detections only (see
            the module docstring); every output with one row per detection is compared row by row.
        at_graph_detections: PyTorch's values of some outputs computed for ONNX Runtime's detections (its boxes and
            labels; rows aligned with ``actual``), compared with the graph's in place of ``reference``'s.

    Returns:
        The :class:`ParityCheck`.

    Raises:
        KeyError: ``tolerance`` is a mapping without an entry for one of ``names``.
    """
    tolerances = {name: float(tolerance) for name in names} if isinstance(tolerance, (int, float)) else tolerance
    check = ParityCheck(tuple(int(size) for size in input_shape))
    if detections is None:
        for name, expected, got in zip(names, reference, actual):
            check.outputs.append(compare_output(name, expected, got, tolerance=tolerances[name]))
        return check
    position = {name: index for index, name in enumerate(names)}
    boxes_index, labels_index, scores_index = (position[detections.boxes], position[detections.labels],
                                               position[detections.scores])
    reference_count, count = len(reference[boxes_index]), len(actual[boxes_index])
    reference_rows, rows = match_detections(reference[boxes_index], reference[labels_index], actual[boxes_index],
                                            actual[labels_index], min_iou=detections.min_iou)
    check.problems, compared = _confident_pairs(reference[scores_index], actual[scores_index], reference_rows, rows,
                                                min_score=detections.min_score)
    reference_rows, rows = reference_rows[compared], rows[compared]
    at_graph = at_graph_detections or {}
    for name, expected, got in zip(names, reference, actual):
        if name in at_graph:  # PyTorch's values for the graph's detections: rows as the graph's
            expected, got = at_graph[name][rows], got[rows]
        elif expected.ndim and len(expected) == reference_count and got.ndim and len(got) == count:
            expected, got = expected[reference_rows], got[rows]
        check.outputs.append(compare_output(name, expected, got, tolerance=tolerances[name],
                                            scale=1.0 if name == detections.masks else None))
    check.compared_detections = len(rows)
    check.note = (f"PyTorch {reference_count}, ONNX Runtime {count} detections; {len(rows)} scoring >= "
                  f"{detections.min_score:g} compared pairwise (matched by label and IoU >= {detections.min_iou:g}), "
                  f"lower-scoring ones not compared")
    return check


def _confident_pairs(reference_scores: np.ndarray, scores: np.ndarray, reference_rows: np.ndarray, rows: np.ndarray,
                     *, min_score: float) -> tuple[list[str], np.ndarray]:
    """Which matched pairs are compared (either side scores >= ``min_score``), and a problem for each side's
    confident detections without a counterpart."""
    reference_confident, confident = reference_scores >= min_score, scores >= min_score
    problems = []
    for side, indices, side_scores in (
            ("PyTorch", np.setdiff1d(np.flatnonzero(reference_confident), reference_rows), reference_scores),
            ("ONNX Runtime", np.setdiff1d(np.flatnonzero(confident), rows), scores)):
        if len(indices):
            problems.append(f"{len(indices)} detection(s) of {side} scoring >= {min_score:g} have no counterpart "
                            f"(scores {', '.join(f'{side_scores[index]:.3f}' for index in indices[:5])})")
    return problems, reference_confident[reference_rows] | confident[rows]


def format_parity(checks: Sequence[ParityCheck]) -> str:
    """A text table: one line per (input, output) with the max abs difference, the scale and the limit."""
    lines = [f"{'input':<20} {'output':<18} {'max abs diff':>13} {'scale':>11} {'allowed':>11}  result"]
    for check in checks:
        shape = "x".join(str(size) for size in check.input_shape)
        for output in check.outputs:
            result = "ok" if output.ok else f"FAIL {output.problem}".rstrip()
            lines.append(f"{shape:<20} {output.name:<18} {output.max_abs_diff:>13.3e} {output.scale:>11.4g} "
                         f"{output.allowed:>11.3e}  {result}")
        lines.extend(f"{'':<20} FAIL {problem}" for problem in check.problems)
        if check.note:
            lines.append(f"{'':<20} ({check.note})")
    return "\n".join(lines)


def tolerance_text(needed: float) -> str:
    """``needed`` rounded up to two significant digits, as text that parses to at least ``needed``."""
    if needed <= 0:
        return "0"
    step = 10.0 ** (math.floor(math.log10(needed)) - 1)
    count = math.ceil(needed / step)
    while float(f"{count * step:.2g}") < needed:
        count += 1
    return f"{count * step:.2g}"


def parity_failure_message(checks: Sequence[ParityCheck]) -> str:
    """The message of a :class:`ParityError`: every failing output with its numbers, and the remedy where there is
    one (the ``tolerance=`` that accepts the numeric differences; none for missing detections, shapes, NaN or
    integer outputs, which no tolerance changes)."""
    failures, needed, fixed = [], [], []
    for check in checks:
        shape = "x".join(str(size) for size in check.input_shape)
        for output in check.outputs:
            if output.ok:
                continue
            if output.needed_tolerance is not None:
                needed.append(output.needed_tolerance)
                failures.append(f"output {output.name!r} on input {shape}: max abs difference "
                                f"{output.max_abs_diff:.3e} > allowed {output.allowed:.3e} (tolerance "
                                f"{output.tolerance:g} x scale {output.scale:.4g})")
            else:
                failures.append(f"output {output.name!r} on input {shape}: "
                                f"{output.problem or f'integer values differ by up to {output.max_abs_diff:g}'}")
                fixed.append(output.name)
        failures.extend(f"input {shape}: {problem}" for problem in check.problems)
        fixed.extend("detections" for _ in check.problems)
    remedies = []
    if needed:
        remedies.append(f"tolerance={tolerance_text(max(needed) * (1 + 1e-9))} accepts these numeric differences (it "
                        "applies to every compared output); raise it only if they are acceptable")
    if fixed:
        remedies.append(f"no tolerance changes the failures of {', '.join(dict.fromkeys(fixed))}")
    return ("ONNX Runtime does not reproduce the PyTorch model: " + "; ".join(failures) + ". Nothing was written. "
            + "; ".join(remedies) + ".")
