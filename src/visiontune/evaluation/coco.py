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
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = ["CocoEvaluator", "masks_to_rle", "results_to_coco_json"]

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
        """
        if len(outputs) != len(targets):
            raise ValueError(f"got {len(outputs)} outputs for {len(targets)} targets")
        image_ids = [int(target["image_id"]) for target in targets]
        for image_id, output in zip(image_ids, outputs):
            if image_id not in self.coco_gt.imgs:
                raise ValueError(f"image id {image_id} is not in the ground truth")
            if "segm" in self.iou_types and "masks" not in output:
                raise ValueError(f"image id {image_id}: output has no 'masks' but 'segm' is evaluated")
        results = results_to_coco_json(outputs, image_ids, mask_threshold=self.mask_threshold)
        per_image: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in image_ids}
        for result in results:
            per_image[result["image_id"]].append(result)
        # An image seen twice (e.g. DistributedSampler padding) keeps one set of detections.
        self._results.update(per_image)

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
        evaluation = _new_cocoeval(self.coco_gt, coco_dt, iou_type)
        evaluation.params.imgIds = self.image_ids
        with _quiet(self.verbose):
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        return evaluation

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
