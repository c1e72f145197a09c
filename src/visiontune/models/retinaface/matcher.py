"""Assignment of ground-truth faces to RetinaFace priors."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert, box_iou

BACKGROUND = -1
"""Matched index of a prior that is assigned to no face."""


def match_priors(
    gt_boxes: Tensor,
    priors: Tensor,
    *,
    iou_threshold: float = 0.35,
    min_forced_match_iou: float = 0.2,
) -> Tensor:
    """Assign each prior to at most one ground-truth box.

    A prior is positive for the face it overlaps most when that IoU is ``>= iou_threshold``. In addition every face
    takes its best-overlapping prior (forced match), whatever that IoU, as long as it is ``>= min_forced_match_iou``:
    the reference implementation ignores faces below 0.2 ("hard" faces no prior can represent); pass 0.0 to force a
    match for every face. A forced match overrides the IoU assignment of that prior; when several faces share the same
    best prior the one with the highest index keeps it (as in the reference).

    Args:
        gt_boxes: ``Tensor[N, 4]`` xyxy ground-truth boxes, in the same (normalised) coordinates as the priors. N may
            be 0.
        priors: ``Tensor[P, 4]`` (cx, cy, w, h) priors.
        iou_threshold: minimum IoU for a positive prior.
        min_forced_match_iou: faces whose best IoU is below this get no forced match.

    Returns:
        ``Tensor[P]`` int64: the index of the matched face for each prior, or :data:`BACKGROUND` (-1).
    """
    num_priors = priors.shape[0]
    matched = torch.full((num_priors,), BACKGROUND, dtype=torch.int64, device=priors.device)
    if gt_boxes.shape[0] == 0:
        return matched
    overlaps = box_iou(gt_boxes, box_convert(priors, in_fmt="cxcywh", out_fmt="xyxy"))  # [N, P]
    best_face_overlap, best_face = overlaps.max(dim=0)  # per prior
    matched = torch.where(best_face_overlap >= iou_threshold, best_face, matched)

    best_prior_overlap, best_prior = overlaps.max(dim=1)  # per face
    eligible = best_prior_overlap >= min_forced_match_iou
    # faces below min_forced_match_iou scatter BACKGROUND, which "amax" never prefers: no host-side branch
    face_indices = torch.arange(gt_boxes.shape[0], device=priors.device)
    forced = torch.full_like(matched, BACKGROUND)
    forced.scatter_reduce_(0, best_prior, torch.where(eligible, face_indices, BACKGROUND), reduce="amax")
    return torch.where(forced != BACKGROUND, forced, matched)
