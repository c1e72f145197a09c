"""Box geometry on NumPy arrays, computed with ``torchvision.ops`` (one implementation for every caller)."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou as _torch_box_iou

__all__ = ["box_iou", "xywh_to_xyxy", "xyxy_to_xywh"]


def box_iou(boxes: np.ndarray, other: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes ``[N, 4]`` and ``[M, 4]`` -> ``float64 [N, M]`` (0 where the union is empty).

    Plain (exclusive) pixel areas, ``torchvision.ops.box_iou`` in float64; the official WIDER FACE matching with
    inclusive pixels is :func:`~visiontune.evaluation.widerface.box_iou_inclusive`.
    """
    first = torch.from_numpy(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
    second = torch.from_numpy(np.asarray(other, dtype=np.float64).reshape(-1, 4))
    return torch.nan_to_num(_torch_box_iou(first, second), nan=0.0).numpy()


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``float64 [N, 4]`` ``x, y, w, h`` of xyxy boxes (any shape ending in 4 values per box)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``float64 [N, 4]`` xyxy of ``x, y, w, h`` boxes (any shape ending in 4 values per box)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
