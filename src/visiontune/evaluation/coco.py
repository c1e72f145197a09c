"""COCO box and mask AP with pycocotools, for Mask R-CNN style outputs.

Model outputs follow torchvision's detection contract, one dict per image, in pixels of the original
image: ``boxes`` float ``[N, 4]`` xyxy, ``labels`` int64 ``[N]``, ``scores`` float ``[N]`` and optionally
``masks`` (float probabilities ``[N, 1, H, W]`` or ``[N, H, W]``, or bool/uint8 masks).

Metric values are fractions in ``[0, 1]``. Where COCO cannot define a value (no ground truth of that
size range or category) pycocotools writes -1; :meth:`CocoEvaluator.compute` returns ``nan`` instead.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from visiontune.evaluation.widerface_predictions import NonFinitePredictionError

__all__ = ["CocoEvaluator", "CocoPerImage", "masks_to_rle", "results_to_coco_json"]

logger = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm")
_SUMMARY_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """Swallow pycocotools' prints unless ``verbose``."""
    if verbose:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def masks_to_rle(masks: torch.Tensor, *, threshold: float = 0.5) -> list[dict[str, Any]]:
    """Binarise masks and encode each as a compressed COCO RLE.

    Args:
        masks: ``[N, 1, H, W]`` or ``[N, H, W]``; float probabilities (kept where ``> threshold``) or
            bool/uint8 binary masks (kept where non-zero).
        threshold: Probability threshold for float masks.

    Returns:
        ``N`` dicts ``{"size": [H, W], "counts": str}`` (counts decoded as UTF-8, JSON-ready).
    """
    if masks.dim() == 4:
        if masks.shape[1] != 1:
            raise ValueError(f"masks must be [N, 1, H, W] or [N, H, W], got {tuple(masks.shape)}")
        masks = masks[:, 0]
    if masks.dim() != 3:
        raise ValueError(f"masks must be [N, 1, H, W] or [N, H, W], got {tuple(masks.shape)}")
    binary = masks > threshold if masks.is_floating_point() else masks != 0
    array = np.asfortranarray(binary.detach().cpu().numpy().transpose(1, 2, 0).astype(np.uint8))
    rles = mask_utils.encode(array)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("utf-8")
    return rles


def results_to_coco_json(
    outputs: Sequence[Mapping[str, torch.Tensor]],
    image_ids: Sequence[int],
    *,
    label_to_category_id: Mapping[int, int] | None = None,
    mask_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """Convert per-image detections to the COCO results format.

    Args:
        outputs: One dict per image with ``boxes`` (``[N, 4]`` xyxy, pixels), ``labels`` (``[N]``),
            ``scores`` (``[N]``) and optionally ``masks`` (see :func:`masks_to_rle`).
        image_ids: COCO image id of every output.
        label_to_category_id: Maps model labels to the category ids written out (e.g. back to the
            original COCO ids); None writes the labels as they are.
        mask_threshold: Probability threshold of float masks.

    Returns:
        One dict per detection: ``image_id``, ``category_id``, ``bbox`` (``[x, y, width, height]``,
        pixels), ``score`` and, when masks are given, ``segmentation`` (RLE with str counts). Note that
        pycocotools' ``loadRes`` replaces ``bbox`` by the mask's box when ``segmentation`` is present, so
        drop ``segmentation`` for box evaluation.
    """
    if len(outputs) != len(image_ids):
        raise ValueError(f"got {len(outputs)} outputs but {len(image_ids)} image ids")
    results: list[dict[str, Any]] = []
    for output, image_id in zip(outputs, image_ids):
        boxes = output["boxes"].detach().cpu().to(torch.float64)
        labels = output["labels"].detach().cpu().tolist()
        scores = output["scores"].detach().cpu().tolist()
        if not len(boxes) == len(labels) == len(scores):
            raise ValueError(
                f"image id {image_id}: boxes, labels and scores differ in length ({len(boxes)}, {len(labels)}, "
                f"{len(scores)})"
            )
        rles = masks_to_rle(output["masks"], threshold=mask_threshold) if "masks" in output else None
        if rles is not None and len(rles) != len(labels):
            raise ValueError(f"image id {image_id}: {len(rles)} masks for {len(labels)} boxes")
        widths_heights = boxes[:, 2:] - boxes[:, :2]
        for index, label in enumerate(labels):
            if label_to_category_id is not None and label not in label_to_category_id:
                raise ValueError(f"image id {image_id}: label {label} has no category id in label_to_category_id")
            result = {
                "image_id": int(image_id),
                "category_id": int(label_to_category_id[label] if label_to_category_id is not None else label),
                "bbox": [float(boxes[index, 0]), float(boxes[index, 1]), float(widths_heights[index, 0]),
                         float(widths_heights[index, 1])],
                "score": float(scores[index]),
            }
            if rles is not None:
                result["segmentation"] = rles[index]
            results.append(result)
    return results


def _new_cocoeval(coco_gt: COCO, coco_dt: COCO, iou_type: str) -> COCOeval:
    """The COCO evaluation of ``coco_dt`` against ``coco_gt``: faster-coco-eval's ``COCOeval_faster`` (the same API
    and numbers, evaluation and accumulation in C++; ``pip install visiontune[coco-fast]``) when it is installed,
    pycocotools' ``COCOeval`` otherwise. Both print their summary to stdout (``_quiet`` swallows it)."""
    try:
        from faster_coco_eval import COCOeval_faster
    except ImportError:
        return COCOeval(coco_gt, coco_dt, iouType=iou_type)
    return COCOeval_faster(coco_gt, coco_dt, iouType=iou_type, print_function=print)


def _coco_from_dict(dataset: Mapping[str, Any], *, verbose: bool) -> COCO:
    coco = COCO()
    coco.dataset = copy.deepcopy(dict(dataset))
    coco.dataset.setdefault("info", {})
    with _quiet(verbose):
        coco.createIndex()
    return coco


def _unique_category_names(categories: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    """``{category_id: name}`` for metric keys; a name used by several ids gets ``_<id>`` appended."""
    counts: dict[str, int] = {}
    for category in categories:
        counts[category["name"]] = counts.get(category["name"], 0) + 1
    names = {}
    for category in categories:
        name = category["name"]
        names[category["id"]] = name if counts[name] == 1 else f"{name}_{category['id']}"
    return names


def _mean_precision(precision: np.ndarray) -> float:
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else math.nan


@dataclass(frozen=True)
class CocoPerImage:
    """COCOeval's per-image matches (``evaluateImg`` for area ``all``, 100 detections per image, IoU .50:.95) of one
    evaluation: the AP (IoU .50:.95, 101 recall points) of any resample of the images, its detections weighted by
    their image's multiplicity, with the steps of COCOeval's ``accumulate`` (detections of a category sorted by
    score, stable; cumulative true and false positives; the precision envelope read at the recall thresholds; the
    mean over the defined values). :mod:`visiontune.evaluation.bootstrap` resamples it.

    Attributes:
        names: ``[M]`` metric names (``bbox_AP``, ``segm_AP``).
        npig: ``int64 [M, N, K]`` ground-truth objects that are not ignored, per metric, image and category.
        defined: ``bool [M, N, K]`` COCOeval evaluated the pair (it has ground truth or detections).
        det_metric, det_image, det_category: ``int64 [D]`` of every detection, in COCOeval's order (category, then
            image, then score within the image).
        det_score: ``float64 [D]``.
        det_tp, det_fp: ``bool [T, D]`` true / false positive at each IoU threshold (not ignored).
        recall_thresholds: ``float64 [R]`` (COCO's 0:.01:1).
    """

    names: tuple[str, ...]
    npig: np.ndarray
    defined: np.ndarray
    det_metric: np.ndarray
    det_image: np.ndarray
    det_category: np.ndarray
    det_score: np.ndarray
    det_tp: np.ndarray
    det_fp: np.ndarray
    recall_thresholds: np.ndarray
    kind: ClassVar[str] = "coco"

    @property
    def num_images(self) -> int:
        return int(self.npig.shape[1])

    @property
    def metric_names(self) -> tuple[str, ...]:
        return self.names

    def metrics_for_counts(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """Each metric's AP (``float64 [B]``, NaN when no category is defined) for image multiplicities ``[B, N]``."""
        counts = np.asarray(counts, dtype=np.float64)
        metrics = {}
        for metric, name in enumerate(self.names):
            sums, defined = np.zeros(len(counts)), np.zeros(len(counts))
            for category in range(self.npig.shape[2]):
                precision, valid = self._category_precision(counts, metric, category)
                sums += np.where(valid, precision.sum(axis=(1, 2)), 0.0)
                defined += np.where(valid, precision.shape[1] * precision.shape[2], 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                metrics[name] = sums / defined
        return metrics

    def _category_precision(self, counts: np.ndarray, metric: int, category: int) -> tuple[np.ndarray, np.ndarray]:
        """``[B, T, R]`` interpolated precision of one category and ``bool [B]``: defined (some ground truth)."""
        npig = counts @ self.npig[metric, :, category].astype(np.float64)
        valid = (npig > 0) & (counts @ self.defined[metric, :, category].astype(np.float64) > 0)
        selected = np.flatnonzero((self.det_metric == metric) & (self.det_category == category))
        selected = selected[np.argsort(-self.det_score[selected], kind="mergesort")]
        resamples, thresholds, points = len(counts), self.det_tp.shape[0], len(self.recall_thresholds)
        detections = len(selected)
        if detections == 0:
            return np.zeros((resamples, thresholds, points)), valid
        weights = counts[:, self.det_image[selected]][:, None, :]  # [B, 1, D]
        tp = np.cumsum(weights * self.det_tp[:, selected][None], axis=2)
        fp = np.cumsum(weights * self.det_fp[:, selected][None], axis=2)
        recall = tp / np.where(valid, npig, 1.0)[:, None, None]
        precision = tp / (fp + tp + np.spacing(1))
        envelope = np.maximum.accumulate(precision[..., ::-1], axis=2)[..., ::-1].reshape(-1, detections)
        rows = np.arange(len(envelope))
        offsets = rows * 4.0  # recall <= 1: every row searched in its own band of one sorted array
        found = np.searchsorted((recall.reshape(-1, detections) + offsets[:, None]).ravel(),
                                (self.recall_thresholds[None, :] + offsets[:, None]).ravel(), side="left")
        found = found.reshape(len(rows), points) - rows[:, None] * detections
        inside = found < detections
        values = np.where(inside, envelope[rows[:, None], np.minimum(found, detections - 1)], 0.0)
        return values.reshape(resamples, thresholds, points), valid

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"names": np.array(self.names, dtype=str), "npig": self.npig, "defined": self.defined,
                "det_metric": self.det_metric, "det_image": self.det_image, "det_category": self.det_category,
                "det_score": self.det_score, "det_tp": self.det_tp, "det_fp": self.det_fp,
                "recall_thresholds": self.recall_thresholds}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> CocoPerImage:
        fields = {key: np.asarray(value) for key, value in arrays.items() if key != "names"}
        return cls(names=tuple(str(name) for name in arrays["names"]), **fields)


def _per_image_matches(coco_gt: COCO, coco_dt: COCO, iou_type: str, image_ids: Sequence[int]) -> dict[str, Any]:
    """pycocotools' ``evaluateImg`` results of area ``all`` and 100 detections as arrays (see :class:`CocoPerImage`;
    faster-coco-eval keeps its per-image results in C++, out of reach)."""
    evaluation = COCOeval(coco_gt, coco_dt, iouType=iou_type)
    params = evaluation.params
    params.imgIds, params.areaRng, params.areaRngLbl = list(image_ids), [params.areaRng[0]], ["all"]
    params.maxDets = [100]
    with _quiet(False):
        evaluation.evaluate()
    position = {image_id: index for index, image_id in enumerate(params.imgIds)}
    num_images, num_categories = len(params.imgIds), len(params.catIds)
    npig = np.zeros((num_images, num_categories), dtype=np.int64)
    defined = np.zeros((num_images, num_categories), dtype=bool)
    parts: dict[str, list[np.ndarray]] = {"image": [], "category": [], "score": [], "tp": [], "fp": []}
    for index, entry in enumerate(evaluation.evalImgs):  # ordered by category, then image (one area range)
        if entry is None:
            continue
        image, category = position[entry["image_id"]], index // num_images
        defined[image, category] = True
        npig[image, category] = int(np.count_nonzero(np.asarray(entry["gtIgnore"]) == 0))
        matched = np.asarray(entry["dtMatches"]).reshape(len(params.iouThrs), -1) > 0
        ignored = np.asarray(entry["dtIgnore"], dtype=bool).reshape(matched.shape)
        parts["image"].append(np.full(matched.shape[1], image, dtype=np.int64))
        parts["category"].append(np.full(matched.shape[1], category, dtype=np.int64))
        parts["score"].append(np.asarray(entry["dtScores"], dtype=np.float64))
        parts["tp"].append(matched & ~ignored)
        parts["fp"].append(~matched & ~ignored)
    thresholds = len(params.iouThrs)
    return {"npig": npig, "defined": defined, "recall_thresholds": np.asarray(params.recThrs, dtype=np.float64),
            "image": np.concatenate([np.zeros(0, dtype=np.int64), *parts["image"]]),
            "category": np.concatenate([np.zeros(0, dtype=np.int64), *parts["category"]]),
            "score": np.concatenate([np.zeros(0), *parts["score"]]),
            "tp": np.concatenate([np.zeros((thresholds, 0), dtype=bool), *parts["tp"]], axis=1),
            "fp": np.concatenate([np.zeros((thresholds, 0), dtype=bool), *parts["fp"]], axis=1)}


class CocoEvaluator:
    """Accumulate detections over a dataset and compute COCO box and mask AP.

    Typical use::

        evaluator = CocoEvaluator(dataset.coco_ground_truth())
        for images, targets in loader:
            evaluator.update(model(images), targets)
        evaluator.synchronize()
        metrics = evaluator.compute()

    Only images passed to :meth:`update` are evaluated. Outputs must be in pixels of the original
    images, with labels equal to the ground truth's ``category_id`` values.

    Args:
        ground_truth: COCO dict with ``images``, ``annotations`` and ``categories`` (e.g.
            ``CocoInstanceDataset.coco_ground_truth()``, whose category ids are the model labels).
        iou_types: Any of ``"bbox"`` and ``"segm"``.
        mask_threshold: Probability threshold of float masks.
        verbose: Let pycocotools print its progress and summary tables.
    """

    def __init__(
        self,
        ground_truth: Mapping[str, Any],
        *,
        iou_types: Sequence[str] = IOU_TYPES,
        mask_threshold: float = 0.5,
        verbose: bool = False,
    ) -> None:
        unknown = [iou_type for iou_type in iou_types if iou_type not in IOU_TYPES]
        if unknown or not iou_types:
            raise ValueError(f"iou_types must be a non-empty subset of {IOU_TYPES}, got {list(iou_types)}")
        for key in ("images", "annotations", "categories"):
            if key not in ground_truth:
                raise ValueError(f"ground_truth lacks the COCO key '{key}'")
        self.iou_types = tuple(iou_types)
        self.mask_threshold = mask_threshold
        self.verbose = verbose
        self.coco_gt = _coco_from_dict(ground_truth, verbose=verbose)
        self.category_names = _unique_category_names(ground_truth["categories"])
        self._results: dict[int, list[dict[str, Any]]] = {}

    def reset(self) -> None:
        """Forget all accumulated detections."""
        self._results = {}

    @property
    def image_ids(self) -> list[int]:
        """Ids of the images seen so far, sorted."""
        return sorted(self._results)

    def detections(self) -> list[dict[str, Any]]:
        """Every accumulated detection in the COCO results format, by ascending image id.

        ``category_id`` holds the model label (the ground truth's category id); see
        :func:`results_to_coco_json` for the keys.
        """
        return [dict(detection) for image_id in self.image_ids for detection in self._results[image_id]]

    def update(self, outputs: Sequence[Mapping[str, torch.Tensor]], targets: Sequence[Mapping[str, Any]]) -> None:
        """Add the detections of a batch.

        Args:
            outputs: One dict per image (see the module docstring), in original-image pixels.
            targets: The batch's targets; only ``image_id`` (int or 0-d tensor) is read.

        Raises:
            ValueError: Lengths differ, an image id is not in the ground truth, or masks are missing while
                ``"segm"`` is evaluated.
            NonFinitePredictionError: An image's boxes, scores or masks hold NaN or infinite values (names the
                image's ``file_name`` and the first such detection).
        """
        if len(outputs) != len(targets):
            raise ValueError(f"got {len(outputs)} outputs for {len(targets)} targets")
        image_ids = [int(target["image_id"]) for target in targets]
        for image_id, output in zip(image_ids, outputs):
            if image_id not in self.coco_gt.imgs:
                raise ValueError(f"image id {image_id} is not in the ground truth")
            if "segm" in self.iou_types and "masks" not in output:
                raise ValueError(f"image id {image_id}: output has no 'masks' but 'segm' is evaluated")
            self._check_finite(output, image_id)
        results = results_to_coco_json(outputs, image_ids, mask_threshold=self.mask_threshold)
        per_image: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in image_ids}
        for result in results:
            per_image[result["image_id"]].append(result)
        # An image seen twice (e.g. DistributedSampler padding) keeps one set of detections.
        self._results.update(per_image)

    def _check_finite(self, output: Mapping[str, torch.Tensor], image_id: int) -> None:
        """Refuse NaN / infinite ``boxes``, ``scores`` or ``masks``, naming the image by its ``file_name`` and the
        first such detection (its values; for a mask, how many of its pixels)."""
        count = len(output["boxes"]) if "boxes" in output else 0
        for field_name in ("boxes", "scores", "masks"):
            if field_name not in output or not len(output[field_name]):
                continue
            values = torch.as_tensor(output[field_name]).detach().reshape(len(output[field_name]), -1)
            broken = (~torch.isfinite(values)).any(dim=1).nonzero()
            if not len(broken):
                continue
            row = int(broken[0])
            image = str(self.coco_gt.imgs[image_id].get("file_name", f"#{image_id}"))
            detail = (f"is {values[row].tolist()}" if field_name != "masks" else
                      f"has {int((~torch.isfinite(values[row])).sum())} NaN or infinite of {values.shape[1]} pixels")
            raise NonFinitePredictionError(
                f"predictions of image {image!r} have a NaN or infinite value: {field_name} of detection {row} of "
                f"{count or len(values)} {detail}", image=image)

    def synchronize(self) -> None:
        """Gather detections from every rank when ``torch.distributed`` is initialised; no-op otherwise."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        gathered: list[dict[int, list[dict[str, Any]]] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self._results)
        merged: dict[int, list[dict[str, Any]]] = {}
        for part in gathered:
            if part is not None:
                merged.update(part)
        self._results = merged

    def _evaluate(self, iou_type: str) -> COCOeval:
        coco_dt = self._loaded_detections(iou_type)
        evaluation = _new_cocoeval(self.coco_gt, coco_dt, iou_type)
        evaluation.params.imgIds = self.image_ids
        with _quiet(self.verbose):
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        return evaluation

    def per_image_results(self) -> CocoPerImage:
        """The per-image matches behind ``<type>_AP`` of every evaluated iou type, for bootstrap intervals over the
        images (:class:`CocoPerImage`; computed on demand with pycocotools' ``evaluateImg``, area ``all`` only).

        Raises:
            RuntimeError: :meth:`update` was never called.
        """
        if not self._results:
            raise RuntimeError("CocoEvaluator.per_image_results() called before any update()")
        parts = [_per_image_matches(self.coco_gt, self._loaded_detections(iou_type), iou_type, self.image_ids)
                 for iou_type in self.iou_types]
        return CocoPerImage(
            names=tuple(f"{iou_type}_AP" for iou_type in self.iou_types),
            npig=np.stack([part["npig"] for part in parts]), defined=np.stack([part["defined"] for part in parts]),
            det_metric=np.concatenate([np.full(len(part["score"]), index, dtype=np.int64)
                                       for index, part in enumerate(parts)]),
            det_image=np.concatenate([part["image"] for part in parts]),
            det_category=np.concatenate([part["category"] for part in parts]),
            det_score=np.concatenate([part["score"] for part in parts]),
            det_tp=np.concatenate([part["tp"] for part in parts], axis=1),
            det_fp=np.concatenate([part["fp"] for part in parts], axis=1),
            recall_thresholds=parts[0]["recall_thresholds"])

    def _loaded_detections(self, iou_type: str) -> COCO:
        """The accumulated detections as a COCO results object for ``iou_type`` (boxes only for ``bbox``)."""
        detections = [detection for image_id in self.image_ids for detection in self._results[image_id]]
        if iou_type == "bbox":
            detections = [{key: value for key, value in detection.items() if key != "segmentation"}
                          for detection in detections]
        if detections:
            with _quiet(self.verbose):
                # loadRes and COCOeval change the result dicts in place (ids, areas; faster-coco-eval turns RLE
                # counts into bytes): they get a copy, so the detections stay as written to results.json
                coco_dt = self.coco_gt.loadRes(copy.deepcopy(detections))
        else:  # pycocotools' loadRes cannot take an empty list; no detection at all means AP 0.
            coco_dt = _coco_from_dict({"images": list(self.coco_gt.dataset["images"]), "annotations": [],
                                       "categories": list(self.coco_gt.dataset["categories"])}, verbose=self.verbose)
        return coco_dt

    def compute(self) -> dict[str, float]:
        """COCO metrics of the detections seen so far.

        Returns:
            For each iou type ``t`` in ``("bbox", "segm")``: ``t_AP`` (IoU 0.50:0.95), ``t_AP50``, ``t_AP75``,
            ``t_APs``, ``t_APm``, ``t_APl`` and ``t_AP_<category name>`` per category; fractions in
            ``[0, 1]``, ``nan`` where undefined.

        Raises:
            RuntimeError: :meth:`update` was never called.
        """
        if not self._results:
            raise RuntimeError("CocoEvaluator.compute() called before any update()")
        metrics: dict[str, float] = {}
        for iou_type in self.iou_types:
            evaluation = self._evaluate(iou_type)
            for name, value in zip(_SUMMARY_NAMES, evaluation.stats[: len(_SUMMARY_NAMES)]):
                metrics[f"{iou_type}_{name}"] = float(value) if value > -1 else math.nan
            # precision: [IoU thresholds, recall thresholds, categories, area ranges, max detections]
            precision = evaluation.eval["precision"]
            for category_index, category_id in enumerate(evaluation.params.catIds):
                name = self.category_names[category_id]
                metrics[f"{iou_type}_AP_{name}"] = _mean_precision(precision[:, :, category_index, 0, -1])
        return metrics
