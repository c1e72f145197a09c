"""Turning RetinaFace's raw outputs into detections: decode, score threshold, top-k, NMS."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import batched_nms, nms

from visiontune.models.retinaface.box_coder import BoxCoder


@dataclass
class RetinaFacePostprocessConfig:
    """Detection thresholds (defaults = the reference's WIDER FACE evaluation settings).

    Attributes:
        score_threshold: keep candidates whose face score is strictly greater than this.
        pre_nms_top_k: keep at most this many highest-scoring candidates per image before NMS.
        nms_iou_threshold: NMS suppresses a box overlapping a higher-scoring one with IoU above this.
        max_detections: keep at most this many detections per image after NMS.
        nms_inclusive_pixels: compute NMS IoU with inclusive pixel extents (width ``x2 - x1 + 1``), as the
            reference's ``py_cpu_nms`` does; this reproduces its low-score detections exactly (evaluation parity).
            Off by default: plain ``torchvision.ops.nms`` geometry.
    """

    score_threshold: float = 0.02
    pre_nms_top_k: int = 5000
    nms_iou_threshold: float = 0.4
    max_detections: int = 750
    nms_inclusive_pixels: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in [0, 1), got {self.score_threshold}")
        if not 0.0 < self.nms_iou_threshold <= 1.0:
            raise ValueError(f"nms_iou_threshold must be in (0, 1], got {self.nms_iou_threshold}")
        if self.pre_nms_top_k < 1 or self.max_detections < 1:
            raise ValueError(
                f"pre_nms_top_k and max_detections must be >= 1, got {self.pre_nms_top_k}, {self.max_detections}"
            )


def postprocess_detections(
    box_deltas: Tensor,
    class_scores: Tensor,
    landmark_deltas: Tensor,
    *,
    priors: Tensor,
    image_size: tuple[int, int],
    config: RetinaFacePostprocessConfig | None = None,
    box_coder: BoxCoder | None = None,
) -> list[dict[str, Tensor]]:
    """Decode a batch of raw outputs into per-image detections.

    With 2 classes (background, face) this is the reference procedure: face score ``> score_threshold``, the
    ``pre_nms_top_k`` best, ``torchvision.ops.nms`` (see ``nms_inclusive_pixels``), the first ``max_detections``.
    With more classes each (prior, foreground class) pair is a candidate and NMS runs per class.

    Args:
        box_deltas: ``Tensor[B, P, 4]`` predicted box deltas.
        class_scores: ``Tensor[B, P, C]`` softmax scores, column 0 = background.
        landmark_deltas: ``Tensor[B, P, 10]`` predicted landmark deltas.
        priors: ``Tensor[P, 4]`` (cx, cy, w, h) normalised priors.
        image_size: ``(height, width)`` of the network input in pixels.
        config: thresholds; defaults when None.
        box_coder: decoder; variances (0.1, 0.2) when None.

    Returns:
        One dict per image, sorted by decreasing score: ``boxes: Tensor[K, 4]`` float xyxy in pixels of the input,
        ``scores: Tensor[K]`` float, ``landmarks: Tensor[K, 5, 2]`` float (x, y) pixels, ``labels: Tensor[K]`` int64
        (1 = face).
    """
    config = config or RetinaFacePostprocessConfig()
    box_coder = box_coder or BoxCoder()
    height, width = image_size
    box_scale = torch.tensor([width, height, width, height], device=box_deltas.device, dtype=box_deltas.dtype)
    boxes = box_coder.decode_boxes(box_deltas, priors) * box_scale
    landmarks = box_coder.decode_landmarks(landmark_deltas, priors) * box_scale[:2]
    num_foreground = class_scores.shape[-1] - 1
    detections = []
    for image_index in range(box_deltas.shape[0]):
        foreground_scores = class_scores[image_index, :, 1:].reshape(-1)  # prior-major, then class
        candidates = torch.nonzero(foreground_scores > config.score_threshold).squeeze(1)
        scores = foreground_scores[candidates]
        order = scores.argsort(descending=True)[: config.pre_nms_top_k]
        candidates, scores = candidates[order], scores[order]
        prior_index = candidates // num_foreground
        labels = candidates % num_foreground + 1
        image_boxes = boxes[image_index, prior_index]
        nms_boxes = image_boxes
        if config.nms_inclusive_pixels:
            # IoU of inclusive pixel boxes equals plain IoU after growing x2, y2 by one pixel.
            nms_boxes = torch.cat([image_boxes[:, :2], image_boxes[:, 2:] + 1.0], dim=1)
        if num_foreground == 1:
            keep = nms(nms_boxes, scores, config.nms_iou_threshold)
        else:
            keep = batched_nms(nms_boxes, scores, labels, config.nms_iou_threshold)
        keep = keep[: config.max_detections]
        detections.append(
            {
                "boxes": image_boxes[keep],
                "scores": scores[keep],
                "landmarks": landmarks[image_index, prior_index[keep]],
                "labels": labels[keep],
            }
        )
    return detections
