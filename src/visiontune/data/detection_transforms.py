"""Detection data pipeline: transforms v2 augmentations, collation and aspect-ratio groups.

The groups of :func:`create_aspect_ratio_groups` feed the engine's
:class:`~visiontune.engine.loaders.GroupedTrainBatchSampler` (through ``Task.train_group_ids``).

Samples are ``(image, target)`` pairs as produced by :class:`visiontune.data.coco_dataset.CocoInstanceDataset`:
``tv_tensors.Image`` ``[3, H, W]`` and a dict holding ``boxes`` (``tv_tensors.BoundingBoxes``),
``labels``, ``masks`` (``tv_tensors.Mask``) and per-instance ``area`` / ``iscrowd`` tensors.

Every training pipeline ends with :class:`SanitizeDetectionTarget`, which clamps boxes to the image,
removes boxes that became degenerate (with their labels, masks, areas and crowd flags) and records how
many it removed in ``target["num_removed_boxes"]`` so that the caller can report it.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torchvision.transforms import v2

__all__ = [
    "SanitizeDetectionTarget",
    "collate_detection",
    "create_aspect_ratio_groups",
    "make_detection_eval_transforms",
    "make_detection_train_transforms",
]

logger = logging.getLogger(__name__)

_PER_INSTANCE_KEYS = ("labels", "area", "iscrowd")


class SanitizeDetectionTarget:
    """Clamp boxes to the image and remove degenerate ones, keeping every per-instance field aligned.

    Boxes smaller than ``min_size`` pixels on a side (or ``min_area`` in area) after clamping are removed
    together with the same rows of ``labels``, ``masks``, ``area`` and ``iscrowd``. The number removed is
    written to ``target["num_removed_boxes"]`` (int) and logged at debug level.

    Args:
        min_size: Smallest kept box side in pixels.
        min_area: Smallest kept box area in square pixels.
    """

    def __init__(self, *, min_size: float = 1.0, min_area: float = 1.0) -> None:
        self.clamp = v2.ClampBoundingBoxes()
        self.sanitize = v2.SanitizeBoundingBoxes(min_size=min_size, min_area=min_area, labels_getter=self._per_instance)

    @staticmethod
    def _per_instance(inputs: tuple[Any, dict[str, Any]]) -> tuple[torch.Tensor, ...]:
        target = inputs[1]
        return tuple(target[key] for key in _PER_INSTANCE_KEYS if key in target)

    def __call__(self, image: Any, target: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        count_before = int(target["boxes"].shape[0])
        image, target = self.clamp(image, target)
        image, target = self.sanitize(image, target)
        removed = count_before - int(target["boxes"].shape[0])
        if removed:
            logger.debug("image id %s: removed %d degenerate box(es) after augmentation",
                         target.get("image_id"), removed)
        target["num_removed_boxes"] = removed
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_size={self.sanitize.min_size}, min_area={self.sanitize.min_area})"


def make_detection_train_transforms(
    *,
    min_size: int | Sequence[int] = 800,
    max_size: int = 1333,
    horizontal_flip_prob: float = 0.5,
    photometric: bool = True,
) -> v2.Compose:
    """Training augmentations for detection and instance segmentation.

    Order: float32 conversion, horizontal flip, resize so that the shorter side is ``min_size`` (picked at
    random when a sequence is given: scale jitter) and the longer side at most ``max_size``, photometric
    distortion (brightness, contrast, saturation, hue, channel order; each with probability 0.5),
    then :class:`SanitizeDetectionTarget`.

    The Mask R-CNN model resizes its inputs again to its own ``min_size``/``max_size``; give the model the
    same values (a tuple ``min_size`` makes the model pick a random size too) so that the resize here only
    saves time and memory on large images.

    Args:
        min_size: Target shorter side in pixels, or several to pick from at random.
        max_size: Upper bound of the longer side in pixels.
        horizontal_flip_prob: Probability of a horizontal flip.
        photometric: Whether to apply photometric distortion.

    Returns:
        A transform called as ``transform(image, target) -> (image, target)``.
    """
    sizes = [min_size] if isinstance(min_size, int) else list(min_size)
    if not sizes or any(size < 1 for size in sizes) or max_size < max(sizes):
        raise ValueError(f"min_size must be positive and <= max_size, got min_size={min_size}, max_size={max_size}")
    if not 0.0 <= horizontal_flip_prob <= 1.0:
        raise ValueError(f"horizontal_flip_prob must be in [0, 1], got {horizontal_flip_prob}")
    transforms: list[Any] = [v2.ToDtype(torch.float32, scale=True)]
    if horizontal_flip_prob > 0:
        transforms.append(v2.RandomHorizontalFlip(p=horizontal_flip_prob))
    transforms.append(v2.RandomShortestSize(min_size=sizes, max_size=max_size, antialias=True))
    if photometric:
        transforms.append(v2.RandomPhotometricDistort(p=0.5))
    transforms.append(SanitizeDetectionTarget())
    return v2.Compose(transforms)


def make_detection_eval_transforms() -> v2.Compose:
    """Evaluation transform: only float32 conversion (the model resizes, and maps outputs back)."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True)])


def collate_detection(batch: Sequence[tuple[Any, dict[str, Any]]]) -> tuple[list[Any], list[dict[str, Any]]]:
    """Collate detection samples without stacking (images may differ in size).

    Args:
        batch: ``(image, target)`` pairs.

    Returns:
        ``(images, targets)``: the list of images ``[3, H_i, W_i]`` and the list of target dicts, in order.
    """
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets


def create_aspect_ratio_groups(aspect_ratios: Sequence[float], *, num_bins_per_side: int = 3) -> list[int]:
    """Assign each image to an aspect-ratio bin, as torchvision's detection references do.

    The bin edges are ``2 ** linspace(-1, 1, 2 * k + 1)`` (width / height from 0.5 to 2) for
    ``k = num_bins_per_side``; group ``g`` holds ratios in ``[edge[g - 1], edge[g])``, with group 0 below
    the first edge and the last group at or above the last one (``2k + 2`` groups). ``k = 0`` gives two
    groups split at ratio 1 (portrait / landscape).

    Args:
        aspect_ratios: Width / height of every image.
        num_bins_per_side: ``k`` above.

    Returns:
        The group id of every image.
    """
    if num_bins_per_side < 0:
        raise ValueError(f"num_bins_per_side must be >= 0, got {num_bins_per_side}")
    steps = 2 * num_bins_per_side
    edges = [2.0 ** (-1.0 + 2.0 * index / steps) for index in range(steps + 1)] if steps else [1.0]
    groups = [bisect.bisect_right(edges, ratio) for ratio in aspect_ratios]
    counts = torch.bincount(torch.tensor(groups, dtype=torch.int64), minlength=len(edges) + 1).tolist()
    logger.debug("aspect-ratio bin edges %s, images per group %s", [round(edge, 3) for edge in edges], counts)
    return groups
