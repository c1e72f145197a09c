"""Comparing an exported graph (run by ONNX Runtime) with the PyTorch model it came from.

Each output is compared by its largest absolute difference, allowed up to ``tolerance`` times the output's scale
(its largest absolute reference value), so one relative tolerance serves logits, probabilities and pixel boxes.
Integer outputs (labels) must match exactly.

Detection sets (Mask R-CNN) are compared detection by detection: the two sets are matched one to one (same label,
IoU >= 0.5, optimal assignment), and every detection scoring at least ``min_score`` in either runtime must have a
match whose box and score agree within the tolerance and whose mask agrees the way the mask metric sees it.
Masks are binarised at ``DetectionOutputs.mask_threshold`` and compared instance by instance: the mask IoU must be at
least ``DetectionOutputs.min_mask_iou`` (0.99), or every differing pixel must lie within
``DetectionOutputs.mask_edge_pixels`` (1) of the PyTorch mask's edge. ONNX Runtime pastes a mask one pixel shorter
when a box corner falls exactly on a pixel edge (its rounding of the paste window), which makes the largest
per-pixel difference ~1 while the instance is the same; a wrong graph (a mask shifted by several pixels, another
instance's mask) moves pixels far from the edge and lowers the IoU. Both the IoU and the fraction of differing pixels
are reported per output.
Lower-scoring detections may differ: the RPN keeps ~1000 proposals by NMS among near-equal objectness scores, and
rounding-level differences (different convolution kernels) flip some of those decisions; what survives at the bottom
of the ranking then differs, while confident detections do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from visiontune.utils.boxes import box_iou

MIN_SCALE = 1e-6
"""Floor of an output's scale, so that an all-zero output still allows rounding-level differences."""


class ParityError(ValueError):
    """The exported graph's outputs differ from PyTorch's by more than the tolerance."""


@dataclass
class MaskAgreement:
    """How the binarised masks of the compared detections agree (one entry per matched detection).

    Attributes:
        threshold: binarisation threshold of the mask probabilities.
        min_iou: the IoU that passes an instance outright.
        edge_pixels: an instance also passes when every differing pixel lies within this many pixels of the
            PyTorch mask's edge (a paste rounded one pixel differently).
        ious: mask IoU per instance (1.0 when both masks are empty).
        differing: fraction of the image's pixels that differ, per instance.
        beyond_edge: differing pixels farther than ``edge_pixels`` from the PyTorch mask's edge, per instance.
        instances: a description of each instance (detection index, label, score), for messages.
    """

    threshold: float
    min_iou: float
    edge_pixels: int
    ious: list[float] = field(default_factory=list)
    differing: list[float] = field(default_factory=list)
    beyond_edge: list[int] = field(default_factory=list)
    instances: list[str] = field(default_factory=list)

    def instance_ok(self, index: int) -> bool:
        return self.ious[index] >= self.min_iou or self.beyond_edge[index] == 0

    @property
    def ok(self) -> bool:
        return all(self.instance_ok(index) for index in range(len(self.ious)))

    @property
    def min_observed_iou(self) -> float:
        return min(self.ious, default=1.0)

    @property
    def max_differing(self) -> float:
        return max(self.differing, default=0.0)

    def failures(self) -> list[str]:
        """One message per failing instance, naming it and its IoU."""
        return [f"mask of {self.instances[index]}: IoU {self.ious[index]:.4f} < {self.min_iou:g} and "
                f"{self.beyond_edge[index]} differing pixel(s) more than {self.edge_pixels} pixel(s) from the mask "
                f"edge ({100 * self.differing[index]:.3f}% of the pixels differ, masks binarised at "
                f"{self.threshold:g})" for index in range(len(self.ious)) if not self.instance_ok(index)]

    def summary(self) -> str:
        return (f"mask IoU min {self.min_observed_iou:.4f} (>= {self.min_iou:g} or differing only within "
                f"{self.edge_pixels} px of the edge), differing pixels max {100 * self.max_differing:.3f}%, "
                f"{len(self.ious)} instance(s)")

    def as_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "min_iou": self.min_iou, "edge_pixels": self.edge_pixels,
                "ious": self.ious, "differing_fraction": self.differing, "beyond_edge_pixels": self.beyond_edge}


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
        mask: for detection masks, the binarised comparison that decides ``ok`` (``max_abs_diff`` is then
            informative only); else None.
    """

    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    scale: float
    allowed: float
    problem: str = ""
    mask: MaskAgreement | None = None

    @property
    def ok(self) -> bool:
        if self.problem:
            return False
        return self.mask.ok if self.mask is not None else self.max_abs_diff <= self.allowed

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "max_abs_diff": self.max_abs_diff, "scale": self.scale,
                "allowed": self.allowed, **({"problem": self.problem} if self.problem else {}),
                **({"mask": self.mask.as_dict()} if self.mask is not None else {})}


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
        masks: output with ``[N, 1, H, W]`` mask probabilities, or None.
        mask_threshold: masks are binarised at this probability (``segmentation.mask_thresh``) before comparing.
        min_mask_iou: an instance whose binarised masks reach this IoU agrees.
        mask_edge_pixels: an instance whose differing pixels all lie within this many pixels of the PyTorch mask's
            edge agrees too. The traced graph pastes masks with torchvision's ONNX-specific paste (tensor arithmetic
            for the paste window), which rounds the window differently from the eager paste: a box corner exactly
            on a pixel edge gives a mask one pixel shorter (per-pixel difference 1, small instances IoU < 0.99).
    """

    boxes: str
    labels: str
    scores: str
    min_score: float
    min_iou: float = 0.5
    masks: str | None = None
    mask_threshold: float = 0.5
    min_mask_iou: float = 0.99
    mask_edge_pixels: int = 1


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


def _dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Binary dilation of ``bool [H, W]`` by a ``(2 * pixels + 1)`` square."""
    if pixels <= 0 or not mask.any():
        return mask.copy()
    height, width = mask.shape
    padded = np.pad(mask, pixels)
    grown = np.zeros_like(mask)
    for dy in range(2 * pixels + 1):
        for dx in range(2 * pixels + 1):
            grown |= padded[dy:dy + height, dx:dx + width]
    return grown


def compare_masks(name: str, reference: np.ndarray, actual: np.ndarray, *, threshold: float, min_iou: float,
                  edge_pixels: int, instances: Sequence[str] | None = None) -> OutputDifference:
    """Compare matched instance masks as the mask metric sees them (binarised, per instance).

    Args:
        name: output name.
        reference: PyTorch masks ``[K, 1, H, W]`` (or ``[K, H, W]``) probabilities, matched row by row to ``actual``.
        actual: ONNX Runtime masks, same shape.
        threshold: binarisation threshold (a pixel is in the mask when its probability > ``threshold``, as the
            mask metric and the COCO writer).
        min_iou: an instance with at least this mask IoU agrees.
        edge_pixels: an instance whose differing pixels all lie within this many pixels of the PyTorch mask's edge
            (inside or outside) agrees too.
        instances: description of each instance for messages (default ``detection <i>``).

    Returns:
        An :class:`OutputDifference` whose ``mask`` holds the per-instance IoU and differing-pixel fraction and
        decides ``ok``; ``max_abs_diff`` / ``scale`` are the raw probability numbers, for information.
    """
    difference = compare_output(name, reference, actual, tolerance=0.0)
    difference.allowed = float("inf")
    agreement = MaskAgreement(threshold=threshold, min_iou=min_iou, edge_pixels=edge_pixels)
    difference.mask = agreement
    if difference.problem:
        return difference
    count = len(reference)
    agreement.instances = list(instances) if instances is not None else [f"detection {index}" for index in
                                                                          range(count)]
    channels = int(np.prod(reference.shape[1:-2], dtype=np.int64)) if reference.ndim > 3 else 1
    for expected, got in zip(reference.reshape(count, channels, *reference.shape[-2:]),
                             actual.reshape(count, channels, *actual.shape[-2:])):
        expected_mask = np.asarray(expected, dtype=np.float64).max(axis=0) > threshold
        got_mask = np.asarray(got, dtype=np.float64).max(axis=0) > threshold
        union = int(np.count_nonzero(expected_mask | got_mask))
        intersection = int(np.count_nonzero(expected_mask & got_mask))
        differing = expected_mask ^ got_mask
        edge = _dilate(expected_mask, edge_pixels) & _dilate(~expected_mask, edge_pixels)
        agreement.ious.append(intersection / union if union else 1.0)
        agreement.differing.append(float(np.count_nonzero(differing)) / max(differing.size, 1))
        agreement.beyond_edge.append(int(np.count_nonzero(differing & ~edge)))
    return difference


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
                    tolerance: float, input_shape: Sequence[int], detections: DetectionOutputs | None = None
                    ) -> ParityCheck:
    """Compare every output of one run.

    Args:
        names: output names, in order.
        reference: PyTorch outputs.
        actual: ONNX Runtime outputs.
        tolerance: relative tolerance (see :func:`compare_output`).
        input_shape: shape of the input (for the report).
        detections: for outputs that form a set of detections: compare matched confident detections only (see
            the module docstring); every output with one row per detection is compared row by row.

    Returns:
        The :class:`ParityCheck`.
    """
    check = ParityCheck(tuple(int(size) for size in input_shape))
    if detections is None:
        for name, expected, got in zip(names, reference, actual):
            check.outputs.append(compare_output(name, expected, got, tolerance=tolerance))
        return check
    position = {name: index for index, name in enumerate(names)}
    boxes_index, labels_index, scores_index = (position[detections.boxes], position[detections.labels],
                                               position[detections.scores])
    reference_count, count = len(reference[boxes_index]), len(actual[boxes_index])
    reference_rows, rows = match_detections(reference[boxes_index], reference[labels_index], actual[boxes_index],
                                            actual[labels_index], min_iou=detections.min_iou)
    reference_confident = reference[scores_index] >= detections.min_score
    confident = actual[scores_index] >= detections.min_score
    unmatched_reference = np.setdiff1d(np.flatnonzero(reference_confident), reference_rows)
    unmatched = np.setdiff1d(np.flatnonzero(confident), rows)
    for side, indices, scores in (("PyTorch", unmatched_reference, reference[scores_index]),
                                  ("ONNX Runtime", unmatched, actual[scores_index])):
        if len(indices):
            check.problems.append(f"{len(indices)} detection(s) of {side} scoring >= {detections.min_score:g} have no "
                                  f"counterpart (scores {', '.join(f'{scores[index]:.3f}' for index in indices[:5])})")
    compared = reference_confident[reference_rows] | confident[rows]
    reference_rows, rows = reference_rows[compared], rows[compared]
    instances = [f"detection {index} (label {reference[labels_index][index]}, score "
                 f"{float(reference[scores_index][index]):.3f})" for index in reference_rows]
    for name, expected, got in zip(names, reference, actual):
        if expected.ndim and len(expected) == reference_count and got.ndim and len(got) == count:
            expected, got = expected[reference_rows], got[rows]
        if name == detections.masks:
            check.outputs.append(compare_masks(name, expected, got, threshold=detections.mask_threshold,
                                               min_iou=detections.min_mask_iou,
                                               edge_pixels=detections.mask_edge_pixels, instances=instances))
        else:
            check.outputs.append(compare_output(name, expected, got, tolerance=tolerance))
    check.compared_detections = len(rows)
    check.note = (f"PyTorch {reference_count}, ONNX Runtime {count} detections; {len(rows)} scoring >= "
                  f"{detections.min_score:g} compared pairwise (matched by label and IoU >= {detections.min_iou:g}), "
                  f"lower-scoring ones not compared")
    return check


def format_parity(checks: Sequence[ParityCheck]) -> str:
    """A text table: one line per (input, output) with the max abs difference, the scale and the limit."""
    lines = [f"{'input':<20} {'output':<12} {'max abs diff':>13} {'scale':>11} {'allowed':>11}  result"]
    for check in checks:
        shape = "x".join(str(size) for size in check.input_shape)
        for output in check.outputs:
            result = "ok" if output.ok else f"FAIL {output.problem}".rstrip()
            if output.mask is not None and not output.problem:
                result = f"{result} ({output.mask.summary()})"
            allowed = "binarised" if output.mask is not None else f"{output.allowed:>11.3e}"
            lines.append(f"{shape:<20} {output.name:<12} {output.max_abs_diff:>13.3e} {output.scale:>11.4g} "
                         f"{allowed:>11}  {result}")
        lines.extend(f"{'':<20} FAIL {problem}" for problem in check.problems)
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
            elif output.mask is not None:
                failures.extend(f"output {output.name!r} on input {shape}: {failure}"
                                for failure in output.mask.failures())
            else:
                failures.append(f"output {output.name!r} on input {shape}: max abs difference "
                                f"{output.max_abs_diff:.3e} > allowed {output.allowed:.3e} (tolerance {tolerance:g} x "
                                f"scale {output.scale:.4g})")
        failures.extend(f"input {shape}: {problem}" for problem in check.problems)
    return ("ONNX Runtime does not reproduce the PyTorch model: " + "; ".join(failures) +
            ". Nothing was written. Raise tolerance= if the difference is acceptable (e.g. for half=true).")
