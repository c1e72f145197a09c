"""The official WIDER FACE easy / medium / hard average precision, vectorised in NumPy.

This reproduces the official MATLAB ``eval_tools`` (``wider_eval.m``) and its widely used Python port
(``image_eval`` / ``img_pr_info`` / ``dataset_pr_info`` / ``voc_ap``) step by step:

1. Scores are min-max normalised over all given predictions of all images:
   ``(score - min) / (max - min)``.
2. Per image, predictions are sorted by score, descending (stable, as MATLAB's ``sort``). Boxes ``x, y, w, h``
   become ``x1, y1, x2, y2 = x, y, x + w, y + h`` and IoU uses inclusive pixels (areas and intersections
   ``+ 1``). Each prediction takes the ground-truth face of highest IoU (the first one on ties), whether or
   not that face was already taken. If that IoU is ``>= iou_threshold``: a face outside the difficulty's
   ``gt_list`` makes the prediction *ignored* (not a proposal, and the face never counts); otherwise the face
   is recalled (once). Every prediction that is not ignored is a proposal, including a second hit on a face
   already recalled.
3. For each threshold ``1 - t / num_thresholds`` (``t = 1 .. num_thresholds``) and each image, the proposals
   and the recalled faces among predictions scoring at least the threshold are summed over images.
   Precision = recalled faces / proposals, recall = recalled faces / faces counted for the difficulty
   (faces of all images, with or without predictions).
4. AP is the VOC all-point area under the precision envelope.

Choices where the official tools are undefined or differ (documented, tested):

* Images whose ground truth has no box are skipped, as in the official loop: their predictions are
  neither true nor false positives. (The official ``.mat`` files give empty images one dummy ``0 0 0 0``
  box, so there their predictions are false positives.)
* The normaliser uses the true minimum and maximum (MATLAB). The Python port starts from ``min = 1`` and
  ``max = 0``; both agree whenever the minimum score is ``<= 1`` and the maximum ``>= 0``, e.g. probabilities.
* When every score is equal, the official tools divide by zero (NaN scores, AP 0). Here every normalised
  score becomes 1.0 (one operating point with all predictions) and a warning is logged.
* Precision is NaN where there is no proposal (0 / 0 as in the official code); those points have recall 0
  and do not change AP. The envelope ignores NaN (like MATLAB's ``max``).
* IoU is computed in float64 (as MATLAB; the Cython port uses float32).
* Predictions for an image missing from the ground truth raise ``ValueError`` (the official tool silently
  drops them, which hides wrong keys such as ``.jpg`` suffixes); a ground-truth image without predictions
  counts as no detections and is reported in a logged warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from visiontune.evaluation.widerface_ground_truth import DIFFICULTIES, WiderFaceGroundTruth
from visiontune.evaluation.widerface_predictions import as_prediction_array

__all__ = [
    "WiderFacePerImage",
    "WiderFaceResult",
    "box_iou_inclusive",
    "evaluate_widerface",
    "landmark_nme",
    "plot_widerface_pr_curves",
    "voc_ap",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WiderFaceResult:
    """Output of :func:`evaluate_widerface`.

    Attributes:
        ap: difficulty (``"easy"``, ``"medium"``, ``"hard"``) -> average precision in [0, 1].
        precision: difficulty -> ``float64 [T]`` precision per score threshold (NaN where nothing is proposed).
        recall: difficulty -> ``float64 [T]`` recall per score threshold.
        thresholds: ``float64 [T]`` normalised-score thresholds, descending (``1 - t / T``, ``t = 1 .. T``).
        num_faces: difficulty -> number of faces that count (the recall denominator).
        num_predictions: number of predicted boxes given (all images).
        num_images_without_predictions: ground-truth images absent from the predictions.
        per_image: the per-image counts behind the curves (``ap_easy``, ``ap_medium``, ``ap_hard``), for bootstrap
            intervals; ``None`` when not kept.
    """

    ap: dict[str, float]
    precision: dict[str, np.ndarray]
    recall: dict[str, np.ndarray]
    thresholds: np.ndarray
    num_faces: dict[str, int]
    num_predictions: int
    num_images_without_predictions: int
    per_image: WiderFacePerImage | None = None

    def as_dict(self) -> dict[str, float]:
        """``{"ap_easy": ..., "ap_medium": ..., "ap_hard": ...}`` as plain floats."""
        return {f"ap_{difficulty}": float(self.ap[difficulty]) for difficulty in DIFFICULTIES}


def box_iou_inclusive(boxes: np.ndarray, query_boxes: np.ndarray) -> np.ndarray:
    """IoU of boxes with inclusive pixel corners, as the official WIDER FACE / Fast R-CNN ``bbox_overlaps``.

    Args:
        boxes: ``float64 [N, 4]`` ``x1, y1, x2, y2``; width is ``x2 - x1 + 1``.
        query_boxes: ``float64 [K, 4]`` same format.

    Returns:
        ``float64 [N, K]``; 0 where the ``+ 1`` intersection width or height is not positive.
    """
    widths = (np.minimum(boxes[:, None, 2], query_boxes[None, :, 2])
              - np.maximum(boxes[:, None, 0], query_boxes[None, :, 0]) + 1)
    heights = (np.minimum(boxes[:, None, 3], query_boxes[None, :, 3])
               - np.maximum(boxes[:, None, 1], query_boxes[None, :, 1]) + 1)
    overlapping = (widths > 0) & (heights > 0)
    intersection = widths * heights
    box_areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    query_areas = (query_boxes[:, 2] - query_boxes[:, 0] + 1) * (query_boxes[:, 3] - query_boxes[:, 1] + 1)
    union = box_areas[:, None] + query_areas[None, :] - intersection
    iou = np.zeros(intersection.shape, dtype=np.float64)
    np.divide(intersection, union, out=iou, where=overlapping)
    return iou


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point average precision (area under the monotone precision envelope).

    Args:
        recall: ``float [T]`` non-decreasing.
        precision: ``float [T]``; NaN entries are ignored by the envelope.
    """
    padded_recall = np.concatenate(([0.0], recall, [1.0]))
    padded_precision = np.concatenate(([0.0], precision, [0.0]))
    envelope = np.fmax.accumulate(padded_precision[::-1])[::-1]
    changes = np.flatnonzero(padded_recall[1:] != padded_recall[:-1])
    return float(np.sum((padded_recall[changes + 1] - padded_recall[changes]) * envelope[changes + 1]))


@dataclass(frozen=True)
class _Matches:
    """Every evaluated prediction, concatenated image after image, each image sorted by score (descending).

    ``scores``: normalised ``float64 [P]``; ``face_index``: ``int64 [P]`` best-IoU face, index into the
    concatenation of all ground-truth faces; ``matched``: ``bool [P]`` best IoU ``>= iou_threshold``.
    """

    scores: np.ndarray
    face_index: np.ndarray
    matched: np.ndarray
    image_index: np.ndarray
    """``int64 [P]``: position of the prediction's image in the ground truth."""


def evaluate_widerface(
    predictions: Mapping[str, np.ndarray],
    ground_truth: WiderFaceGroundTruth,
    *,
    iou_threshold: float = 0.5,
    num_thresholds: int = 1000,
) -> WiderFaceResult:
    """Official WIDER FACE easy / medium / hard AP (see the module docstring for the exact semantics).

    Args:
        predictions: ``"<event>/<image name without extension>"`` -> ``[N, 5]`` array ``x, y, w, h, score``
            in pixels (any order; empty arrays allowed). Missing images count as no detections.
        ground_truth: from
            :func:`~visiontune.evaluation.widerface_ground_truth.load_widerface_ground_truth` or built directly.
        iou_threshold: minimum IoU (inclusive-pixel convention) for a match.
        num_thresholds: number of evenly spaced score thresholds of the PR curve.

    Returns:
        AP and precision / recall curves per difficulty.

    Raises:
        ValueError: a key is not a ground-truth image (the message lists some), an array is malformed, or an
            argument is out of range.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, (int, np.integer)) or num_thresholds < 1:
        raise ValueError(f"num_thresholds must be a positive integer, got {num_thresholds!r}")
    known = set(ground_truth.image_ids)
    unknown = [image_id for image_id in predictions if image_id not in known]
    if unknown:
        raise ValueError(f"predictions given for {len(unknown)} image(s) not in the ground truth, e.g. "
                         f"{unknown[:5]}; keys must be '<event>/<image name without extension>' as in the ground "
                         f"truth, e.g. {ground_truth.image_ids[:1]}")
    arrays = {image_id: as_prediction_array(boxes, image_id) for image_id, boxes in predictions.items()}
    missing = [image_id for image_id in ground_truth.image_ids if image_id not in arrays]
    if missing:
        logger.warning("no predictions for %d of %d ground-truth images (evaluated as no detections), e.g. %s",
                       len(missing), ground_truth.num_images, missing[:3])

    matches = _match_predictions(arrays, ground_truth, iou_threshold=iou_threshold)
    thresholds = 1.0 - np.arange(1, num_thresholds + 1) / num_thresholds
    per_image = WiderFacePerImage.empty(ground_truth.num_images, num_thresholds)
    # A prediction is in the curve from the first (highest) threshold its score reaches on.
    first_threshold = num_thresholds - np.searchsorted(thresholds[::-1], matches.scores, side="right")

    ap: dict[str, float] = {}
    precision: dict[str, np.ndarray] = {}
    recall: dict[str, np.ndarray] = {}
    num_faces: dict[str, int] = {}
    for difficulty in DIFFICULTIES:
        counted_faces = np.concatenate([np.zeros(0, dtype=bool), *ground_truth.counted[difficulty]])
        proposal, new_recall = _proposal_and_recall_flags(matches, counted_faces)
        proposals = _cumulative_per_threshold(first_threshold, proposal, num_thresholds)
        recalled = _cumulative_per_threshold(first_threshold, new_recall, num_thresholds)
        num_faces[difficulty] = int(counted_faces.sum())
        precision[difficulty], recall[difficulty] = _precision_recall(recalled, proposals, num_faces[difficulty])
        per_image = per_image.with_curve(f"ap_{difficulty}", matches, first_threshold, proposal, new_recall,
                                         [int(flags.sum()) for flags in ground_truth.counted[difficulty]])
        if num_faces[difficulty] == 0:
            logger.warning("no face counts for WIDER FACE %s: its recall and AP are undefined (NaN)", difficulty)
        ap[difficulty] = voc_ap(recall[difficulty], precision[difficulty])
    return WiderFaceResult(
        ap=ap,
        precision=precision,
        recall=recall,
        thresholds=thresholds,
        num_faces=num_faces,
        num_predictions=sum(len(array) for array in arrays.values()),
        num_images_without_predictions=len(missing),
        per_image=per_image,
    )


def _normaliser(arrays: Iterable[np.ndarray]) -> tuple[float, float]:
    """(offset, scale) with ``normalised = (score - offset) / scale``; scale 0 means constant scores."""
    scores = [array[:, 4] for array in arrays if len(array)]
    if not scores:
        return 0.0, 1.0
    lowest = min(float(part.min()) for part in scores)
    highest = max(float(part.max()) for part in scores)
    if highest == lowest:
        logger.warning("every prediction has the same score %g; all are kept at every threshold (the official "
                       "tools would divide by zero here)", highest)
    return lowest, highest - lowest


def _match_predictions(arrays: Mapping[str, np.ndarray], ground_truth: WiderFaceGroundTruth, *,
                       iou_threshold: float) -> _Matches:
    offset, scale = _normaliser(arrays.values())
    scores: list[np.ndarray] = [np.zeros(0)]
    face_index: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    matched: list[np.ndarray] = [np.zeros(0, dtype=bool)]
    image_index: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    first_face = 0
    for position, (image_id, faces) in enumerate(zip(ground_truth.image_ids, ground_truth.boxes)):
        boxes = arrays.get(image_id)
        if boxes is not None and len(boxes) and len(faces):
            boxes = boxes[np.argsort(-boxes[:, 4], kind="stable")]
            iou = box_iou_inclusive(_xywh_to_inclusive_xyxy(boxes[:, :4]), _xywh_to_inclusive_xyxy(faces))
            best = iou.argmax(axis=1)
            matched.append(iou[np.arange(len(best)), best] >= iou_threshold)
            face_index.append(best + first_face)
            image_index.append(np.full(len(best), position, dtype=np.int64))
            if scale > 0:
                scores.append((boxes[:, 4] - offset) / scale)
            else:
                scores.append(np.ones(len(boxes)))
        first_face += len(faces)
    return _Matches(scores=np.concatenate(scores), face_index=np.concatenate(face_index),
                    matched=np.concatenate(matched), image_index=np.concatenate(image_index))


def _proposal_and_recall_flags(matches: _Matches, counted_faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per prediction: is it a proposal, and is it the first (in score order) to recall its counted face.

    ``counted_faces``: ``bool [F]`` over all ground-truth faces. Returns two ``bool [P]`` arrays.
    """
    hits_counted = counted_faces[matches.face_index] if len(matches.face_index) else np.zeros(0, dtype=bool)
    proposal = ~(matches.matched & ~hits_counted)
    hit_positions = np.flatnonzero(matches.matched & hits_counted)
    _, first_hits = np.unique(matches.face_index[hit_positions], return_index=True)
    new_recall = np.zeros(len(proposal), dtype=bool)
    new_recall[hit_positions[first_hits]] = True
    return proposal, new_recall


def _cumulative_per_threshold(first_threshold: np.ndarray, flags: np.ndarray, num_thresholds: int) -> np.ndarray:
    """``float64 [T]``: how many flagged predictions score at least each threshold."""
    counts = np.bincount(first_threshold, weights=flags.astype(np.float64), minlength=num_thresholds + 1)
    return np.cumsum(counts[:num_thresholds])


def _precision_recall(recalled: np.ndarray, proposals: np.ndarray, num_faces: float) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall per threshold from the cumulative recalled faces and proposals (NaN where 0 / 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return recalled / proposals, recalled / num_faces


@dataclass(frozen=True)
class WiderFacePerImage:
    """Per image and score threshold, the proposals and newly recalled faces of every PR curve of one evaluation,
    and each image's count of faces that count: the AP of any resample of the images (weighted by multiplicity)
    with the evaluator's own arithmetic (:func:`_precision_recall`, :func:`voc_ap`; the scores keep the
    evaluation's min-max normalisation). :mod:`visiontune.evaluation.bootstrap` resamples it.

    Attributes:
        names: ``[M]`` metric name of each curve (``ap_easy``, ...).
        faces: ``int64 [M, N]`` faces counted per curve and image.
        entry_curve, entry_image, entry_bucket: ``int64 [E]`` curve, image and first threshold index (the highest
            threshold the predictions reach) of each non-empty cell.
        entry_proposals, entry_recalled: ``float64 [E]`` proposals and newly recalled faces in that cell.
        num_thresholds: ``T`` of the curves.
    """

    names: tuple[str, ...]
    faces: np.ndarray
    entry_curve: np.ndarray
    entry_image: np.ndarray
    entry_bucket: np.ndarray
    entry_proposals: np.ndarray
    entry_recalled: np.ndarray
    num_thresholds: int
    kind: ClassVar[str] = "widerface"

    @classmethod
    def empty(cls, num_images: int, num_thresholds: int) -> WiderFacePerImage:
        """No curve yet, over ``num_images`` images."""
        integers = np.zeros(0, dtype=np.int64)
        return cls(names=(), faces=np.zeros((0, num_images), dtype=np.int64), entry_curve=integers,
                   entry_image=integers, entry_bucket=integers, entry_proposals=np.zeros(0),
                   entry_recalled=np.zeros(0), num_thresholds=num_thresholds)

    @property
    def num_images(self) -> int:
        return int(self.faces.shape[1])

    @property
    def metric_names(self) -> tuple[str, ...]:
        return self.names

    def with_curve(self, name: str, matches: _Matches, first_threshold: np.ndarray, proposal: np.ndarray,
                   new_recall: np.ndarray, faces: Sequence[int]) -> WiderFacePerImage:
        """A copy with one more curve: the flags of every matched prediction summed per (image, threshold)."""
        kept = first_threshold < self.num_thresholds  # below the lowest threshold: in no point of the curve
        cells = matches.image_index[kept] * self.num_thresholds + first_threshold[kept]
        unique, inverse = np.unique(cells, return_inverse=True)
        sums = [np.bincount(inverse, weights=flags[kept].astype(np.float64), minlength=len(unique))
                for flags in (proposal, new_recall)]
        return WiderFacePerImage(
            names=(*self.names, name), faces=np.vstack([self.faces, np.asarray(faces, dtype=np.int64)[None]]),
            entry_curve=np.concatenate([self.entry_curve, np.full(len(unique), len(self.names), dtype=np.int64)]),
            entry_image=np.concatenate([self.entry_image, unique // self.num_thresholds]),
            entry_bucket=np.concatenate([self.entry_bucket, unique % self.num_thresholds]),
            entry_proposals=np.concatenate([self.entry_proposals, sums[0]]),
            entry_recalled=np.concatenate([self.entry_recalled, sums[1]]), num_thresholds=self.num_thresholds)

    def select(self, names: Mapping[str, str], *, image_order: np.ndarray | None = None,
               num_images: int | None = None) -> WiderFacePerImage:
        """The curves ``names`` (old -> new name), with image ``i`` moved to ``image_order[i]`` of ``num_images``."""
        order = np.arange(self.num_images) if image_order is None else np.asarray(image_order, dtype=np.int64)
        total = self.num_images if num_images is None else num_images
        result = WiderFacePerImage.empty(total, self.num_thresholds)
        for old, new in names.items():
            curve = self.names.index(old)
            entries = self.entry_curve == curve
            faces = np.zeros(total, dtype=np.int64)
            faces[order] = self.faces[curve]
            result = WiderFacePerImage(
                names=(*result.names, new), faces=np.vstack([result.faces, faces[None]]),
                entry_curve=np.concatenate([result.entry_curve, np.full(int(entries.sum()), len(result.names))]),
                entry_image=np.concatenate([result.entry_image, order[self.entry_image[entries]]]),
                entry_bucket=np.concatenate([result.entry_bucket, self.entry_bucket[entries]]),
                entry_proposals=np.concatenate([result.entry_proposals, self.entry_proposals[entries]]),
                entry_recalled=np.concatenate([result.entry_recalled, self.entry_recalled[entries]]),
                num_thresholds=self.num_thresholds)
        return result

    def merged(self, other: WiderFacePerImage) -> WiderFacePerImage:
        """The curves of both (same images and thresholds)."""
        if other.num_images != self.num_images or other.num_thresholds != self.num_thresholds:
            raise ValueError("merging per-image WIDER FACE counts of different images or thresholds")
        return WiderFacePerImage(
            names=(*self.names, *other.names), faces=np.vstack([self.faces, other.faces]),
            entry_curve=np.concatenate([self.entry_curve, other.entry_curve + len(self.names)]),
            entry_image=np.concatenate([self.entry_image, other.entry_image]),
            entry_bucket=np.concatenate([self.entry_bucket, other.entry_bucket]),
            entry_proposals=np.concatenate([self.entry_proposals, other.entry_proposals]),
            entry_recalled=np.concatenate([self.entry_recalled, other.entry_recalled]),
            num_thresholds=self.num_thresholds)

    def metrics_for_counts(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """Each curve's AP (``float64 [B]``) for ``B`` resamples given as image multiplicities ``[B, N]``."""
        from scipy.sparse import csr_matrix

        counts = np.asarray(counts, dtype=np.float64)
        shape = (self.num_images, self.num_thresholds)
        metrics: dict[str, np.ndarray] = {}
        for curve, name in enumerate(self.names):
            entries = self.entry_curve == curve
            where = (self.entry_image[entries], self.entry_bucket[entries])
            cumulative = [np.cumsum(np.asarray((csr_matrix((values[entries], where), shape=shape).T @ counts.T).T),
                                    axis=1) for values in (self.entry_proposals, self.entry_recalled)]
            faces = counts @ self.faces[curve].astype(np.float64)
            values = np.empty(len(counts))
            with np.errstate(divide="ignore", invalid="ignore"):
                for row in range(len(counts)):
                    precision, recall = _precision_recall(cumulative[1][row], cumulative[0][row], faces[row])
                    values[row] = voc_ap(recall, precision)
            metrics[name] = values
        return metrics

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"names": np.array(self.names, dtype=str), "faces": self.faces, "entry_curve": self.entry_curve,
                "entry_image": self.entry_image, "entry_bucket": self.entry_bucket,
                "entry_proposals": self.entry_proposals, "entry_recalled": self.entry_recalled,
                "num_thresholds": np.array(self.num_thresholds)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> WiderFacePerImage:
        entries = {key: np.asarray(arrays[key]) for key in ("entry_curve", "entry_image", "entry_bucket",
                                                            "entry_proposals", "entry_recalled")}
        return cls(names=tuple(str(name) for name in arrays["names"]), faces=np.asarray(arrays["faces"]),
                   num_thresholds=int(arrays["num_thresholds"]), **entries)


def _xywh_to_inclusive_xyxy(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:4]], axis=1)


def landmark_nme(
    pred_landmarks: np.ndarray,
    gt_landmarks: np.ndarray,
    gt_boxes: np.ndarray,
    valid: np.ndarray,
    *,
    box_format: str = "xywh",
) -> float:
    """Normalised mean landmark error over the faces that have landmarks.

    For each valid face, the mean Euclidean distance between predicted and ground-truth points divided by
    ``sqrt(w * h)`` of its ground-truth box; then the mean over valid faces. The box-size normaliser is used
    because WIDER FACE faces are often profile or tiny, where the inter-ocular distance (the usual
    alternative) collapses towards zero; ``w`` and ``h`` are plain differences (no ``+ 1``).

    Args:
        pred_landmarks: ``float [N, K, 2]`` or ``[N, 2K]`` (``x0, y0, x1, y1, ...``), pixels; NumPy or CPU tensors.
        gt_landmarks: same shape as ``pred_landmarks``.
        gt_boxes: ``float [N, 4]`` ground-truth boxes, pixels, ``x, y, w, h`` (``box_format="xywh"``) or
            ``x1, y1, x2, y2`` (``box_format="xyxy"``).
        valid: ``bool [N]``, True for faces with landmark annotations (WIDER FACE marks missing ones -1).

    Returns:
        The NME as a float (a fraction of the box size, not a percentage).

    Raises:
        ValueError: shapes disagree, no face is valid, a valid face has a non-positive box side or a
            non-finite value.
    """
    pred = np.asarray(pred_landmarks, dtype=np.float64)
    gt = np.asarray(gt_landmarks, dtype=np.float64)
    boxes = np.asarray(gt_boxes, dtype=np.float64)
    valid = np.asarray(valid)
    if pred.shape != gt.shape:
        raise ValueError(f"pred_landmarks {pred.shape} and gt_landmarks {gt.shape} must have the same shape")
    if pred.ndim == 2 and pred.shape[1] % 2 == 0:
        pred, gt = pred.reshape(len(pred), -1, 2), gt.reshape(len(gt), -1, 2)
    if pred.ndim != 3 or pred.shape[2] != 2 or pred.shape[1] == 0:
        raise ValueError(f"landmarks must have shape [N, K, 2] or [N, 2K], got {np.shape(pred_landmarks)}")
    num_faces = len(pred)
    if boxes.shape != (num_faces, 4):
        raise ValueError(f"gt_boxes must have shape ({num_faces}, 4), got {boxes.shape}")
    if valid.dtype != np.bool_ or valid.shape != (num_faces,):
        raise ValueError(f"valid must be a bool mask of shape ({num_faces},), got {valid.dtype} {valid.shape}")
    if box_format == "xywh":
        widths, heights = boxes[:, 2], boxes[:, 3]
    elif box_format == "xyxy":
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    else:
        raise ValueError(f"box_format must be 'xywh' or 'xyxy', got {box_format!r}")
    if not valid.any():
        raise ValueError(f"no face has landmarks (valid is all False for {num_faces} faces); the NME is undefined")
    faces = np.flatnonzero(valid)
    finite = np.isfinite(pred[faces]).all(axis=(1, 2)) & np.isfinite(gt[faces]).all(axis=(1, 2))
    finite &= np.isfinite(boxes[faces]).all(axis=1)
    if not finite.all():
        raise ValueError(f"face {int(faces[~finite][0])} is valid but has NaN or infinite landmarks or box")
    degenerate = (widths[faces] <= 0) | (heights[faces] <= 0)
    if degenerate.any():
        face = int(faces[degenerate][0])
        raise ValueError(f"face {face} is valid but its box {boxes[face].tolist()} ({box_format}) has a "
                         "non-positive width or height")
    errors = np.linalg.norm(pred[faces] - gt[faces], axis=2).mean(axis=1)
    return float(np.mean(errors / np.sqrt(widths[faces] * heights[faces])))


def plot_widerface_pr_curves(
    result: WiderFaceResult,
    path: str | Path,
    *,
    title: str = "WIDER FACE",
    difficulties: Sequence[str] = DIFFICULTIES,
) -> Path:
    """Draw the easy / medium / hard precision-recall curves with their AP in the legend, save to ``path``.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change). The format follows the
    suffix of ``path`` (``.png``, ``.pdf``, ``.svg``, ...). Returns ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    figure = Figure(figsize=(6.0, 5.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for difficulty in difficulties:
        axes.plot(result.recall[difficulty], result.precision[difficulty], linewidth=2.0,
                  label=f"{difficulty}: AP = {result.ap[difficulty]:.4f}")
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.02)
    axes.set_xlabel("Recall")
    axes.set_ylabel("Precision")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower left")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
