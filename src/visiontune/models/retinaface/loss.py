"""RetinaFace training loss: prior matching, hard negative mining, box/class/landmark terms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visiontune.models.retinaface.box_coder import BoxCoder
from visiontune.models.retinaface.matcher import BACKGROUND, match_priors


@dataclass
class PriorTargets:
    """Per-prior training targets for a batch.

    Attributes:
        labels: ``Tensor[B, P]`` int64, 0 = background, ``1..num_classes-1`` = matched face class.
        box_deltas: ``Tensor[B, P, 4]`` encoded boxes (meaningful where ``labels > 0``).
        landmark_deltas: ``Tensor[B, P, 10]`` encoded landmarks (meaningful where ``landmarks_valid``).
        landmarks_valid: ``Tensor[B, P]`` bool, positive priors whose face has landmarks.
    """

    labels: Tensor
    box_deltas: Tensor
    landmark_deltas: Tensor
    landmarks_valid: Tensor


def validate_target(target: Mapping[str, Tensor], *, index: int, num_classes: int) -> None:
    """Check one image's target dict and raise ``ValueError`` naming the image and key on bad input.

    Expected keys: ``boxes: Tensor[N, 4]`` float xyxy pixels with ``x2 > x1, y2 > y1``; optional
    ``landmarks: Tensor[N, 5, 2]`` float pixels with ``landmarks_valid: Tensor[N]`` bool (both or neither; without
    them no face contributes to the landmark loss); optional ``labels: Tensor[N]`` int64 in ``[1, num_classes)``
    (all faces are class 1 when absent).

    Keys, shapes and dtypes are always checked; the values (finite, positive box sizes, label range) only on CPU
    tensors: on an accelerator each check would wait for the device once per image and step. The training pipeline
    checks its annotations when it parses them, before they reach the device.
    """
    if not isinstance(target, Mapping):
        raise ValueError(f"target {index}: expected a dict with 'boxes', got {type(target).__name__}")
    if "boxes" not in target:
        raise ValueError(f"target {index}: missing key 'boxes' (keys: {sorted(target)})")
    boxes = target["boxes"]
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
        raise ValueError(f"target {index}: 'boxes' must be a float Tensor[N, 4] xyxy, got {_describe(boxes)}")
    num_faces = boxes.shape[0]
    values = boxes.device.type == "cpu"
    if values and not bool(torch.isfinite(boxes).all()):
        raise ValueError(f"target {index}: 'boxes' contains NaN or inf")
    degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if values and bool(degenerate.any()):
        bad = int(degenerate.nonzero()[0, 0])
        raise ValueError(
            f"target {index}: box {bad} {boxes[bad].tolist()} has zero or negative width/height (need x2 > x1, y2 > y1)"
        )
    if ("landmarks" in target) != ("landmarks_valid" in target):
        raise ValueError(
            f"target {index}: give both 'landmarks' and 'landmarks_valid' or neither (keys: {sorted(target)})"
        )
    if "landmarks" in target:
        landmarks, valid = target["landmarks"], target["landmarks_valid"]
        if not isinstance(landmarks, Tensor) or tuple(landmarks.shape) != (num_faces, 5, 2):
            raise ValueError(
                f"target {index}: 'landmarks' must be Tensor[{num_faces}, 5, 2], got {_describe(landmarks)}"
            )
        if not isinstance(valid, Tensor) or valid.dtype != torch.bool or tuple(valid.shape) != (num_faces,):
            raise ValueError(
                f"target {index}: 'landmarks_valid' must be a bool Tensor[{num_faces}], got {_describe(valid)}"
            )
        if values and not bool(torch.isfinite(landmarks[valid]).all()):
            raise ValueError(f"target {index}: 'landmarks' marked valid contain NaN or inf")
    if "labels" in target:
        labels = target["labels"]
        if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or tuple(labels.shape) != (num_faces,):
            raise ValueError(f"target {index}: 'labels' must be an int64 Tensor[{num_faces}], got {_describe(labels)}")
        if values and num_faces and (int(labels.min()) < 1 or int(labels.max()) >= num_classes):
            raise ValueError(
                f"target {index}: 'labels' must be in [1, {num_classes - 1}] (0 is background), got {labels.tolist()}"
            )


def _masked_sum(values: Tensor, mask: Tensor) -> Tensor:
    """The sum of ``values`` (``[B, P]`` or ``[B, P, K]``) over the priors where ``mask`` (``[B, P]`` bool) is set."""
    if values.ndim == 3:
        mask = mask[..., None]
    return torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum()


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"Tensor{list(value.shape)} {value.dtype}"
    return type(value).__name__


class RetinaFaceLoss(nn.Module):
    """MultiBox loss of RetinaFace.

    Priors are matched to faces with :func:`~visiontune.models.retinaface.matcher.match_priors`. The class loss
    (cross-entropy) uses all positive priors plus the hardest negatives, ``neg_pos_ratio`` per positive in the same
    image; the box loss (smooth L1 on encoded deltas) uses positive priors; the landmark loss (smooth L1) uses
    positive priors whose face has landmarks. Box and class losses are divided by the number of positives in the
    batch, the landmark loss by the number of positives with landmarks (each at least 1), then multiplied by their
    weights.

    Args:
        loc_weight: weight of the box loss.
        class_weight: weight of the class loss.
        landm_weight: weight of the landmark loss.
        match_thresh: IoU for a prior to be positive.
        neg_pos_ratio: hard negatives per positive.
        variances: box coder variances.
        min_forced_match_iou: see :func:`~visiontune.models.retinaface.matcher.match_priors` (0.2 as the reference).
        min_negatives_per_image: hard negatives mined in every image even when it has few or no positives. The
            reference uses 0, so an image without faces contributes nothing; a positive value lets such images teach
            the classifier what background looks like.
    """

    def __init__(
        self,
        *,
        loc_weight: float = 2.0,
        class_weight: float = 1.0,
        landm_weight: float = 1.0,
        match_thresh: float = 0.35,
        neg_pos_ratio: int = 7,
        variances: tuple[float, float] = (0.1, 0.2),
        min_forced_match_iou: float = 0.2,
        min_negatives_per_image: int = 0,
    ) -> None:
        super().__init__()
        if neg_pos_ratio < 0 or min_negatives_per_image < 0:
            raise ValueError(
                f"neg_pos_ratio and min_negatives_per_image must be >= 0, got {neg_pos_ratio}, "
                f"{min_negatives_per_image}"
            )
        self.loc_weight = loc_weight
        self.class_weight = class_weight
        self.landm_weight = landm_weight
        self.match_thresh = match_thresh
        self.neg_pos_ratio = neg_pos_ratio
        self.min_forced_match_iou = min_forced_match_iou
        self.min_negatives_per_image = min_negatives_per_image
        self.box_coder = BoxCoder(tuple(variances))  # type: ignore[arg-type]

    def build_targets(
        self,
        targets: Sequence[Mapping[str, Tensor]],
        priors: Tensor,
        *,
        image_size: tuple[int, int],
        num_classes: int = 2,
    ) -> PriorTargets:
        """Match every image's faces to the priors and encode the regression targets.

        Args:
            targets: one dict per image, see :func:`validate_target` (coordinates in pixels of the input tensor).
            priors: ``Tensor[P, 4]`` (cx, cy, w, h) normalised priors.
            image_size: ``(height, width)`` of the input tensor, used to normalise the targets.
            num_classes: number of classes including background (to validate ``labels``).

        Returns:
            The per-prior targets of the batch.
        """
        height, width = image_size
        num_priors = priors.shape[0]
        device, dtype = priors.device, priors.dtype
        box_scale = torch.tensor([width, height, width, height], device=device, dtype=dtype)
        point_scale = box_scale[:2]
        labels, box_deltas, landmark_deltas, landmarks_valid = [], [], [], []
        for index, target in enumerate(targets):
            validate_target(target, index=index, num_classes=num_classes)
            boxes = target["boxes"].to(device=device, dtype=dtype) / box_scale
            num_faces = boxes.shape[0]
            if num_faces == 0:
                labels.append(torch.zeros(num_priors, dtype=torch.int64, device=device))
                box_deltas.append(torch.zeros(num_priors, 4, device=device, dtype=dtype))
                landmark_deltas.append(torch.zeros(num_priors, 10, device=device, dtype=dtype))
                landmarks_valid.append(torch.zeros(num_priors, dtype=torch.bool, device=device))
                continue
            if "landmarks" in target:
                face_has_landmarks = target["landmarks_valid"].to(device)
                # Zero the unused points so that no NaN placeholder reaches the arithmetic below.
                points = torch.where(
                    face_has_landmarks[:, None, None], target["landmarks"].to(device=device, dtype=dtype), 0.0
                ) / point_scale
            else:
                face_has_landmarks = torch.zeros(num_faces, dtype=torch.bool, device=device)
                points = torch.zeros(num_faces, 5, 2, device=device, dtype=dtype)
            face_labels = target.get("labels")
            if face_labels is None:
                face_labels = torch.ones(num_faces, dtype=torch.int64, device=device)
            matched = match_priors(
                boxes,
                priors,
                iou_threshold=self.match_thresh,
                min_forced_match_iou=self.min_forced_match_iou,
            )
            positive = matched != BACKGROUND
            face_index = matched.clamp(min=0)
            labels.append(torch.where(positive, face_labels.to(device)[face_index], 0))
            box_deltas.append(self.box_coder.encode_boxes(boxes[face_index], priors))
            landmark_deltas.append(self.box_coder.encode_landmarks(points[face_index], priors))
            landmarks_valid.append(positive & face_has_landmarks[face_index])
        return PriorTargets(
            labels=torch.stack(labels),
            box_deltas=torch.stack(box_deltas),
            landmark_deltas=torch.stack(landmark_deltas),
            landmarks_valid=torch.stack(landmarks_valid),
        )

    def forward(
        self,
        box_deltas: Tensor,
        class_logits: Tensor,
        landmark_deltas: Tensor,
        *,
        priors: Tensor,
        targets: Sequence[Mapping[str, Tensor]],
        image_size: tuple[int, int],
    ) -> dict[str, Tensor]:
        """Compute the weighted losses.

        Args:
            box_deltas: ``Tensor[B, P, 4]`` predicted box deltas.
            class_logits: ``Tensor[B, P, C]`` class logits (before softmax), C including background.
            landmark_deltas: ``Tensor[B, P, 10]`` predicted landmark deltas.
            priors: ``Tensor[P, 4]`` (cx, cy, w, h) normalised priors.
            targets: B dicts, see :func:`validate_target`.
            image_size: ``(height, width)`` of the input tensor in pixels.

        Returns:
            ``{"loss_box", "loss_cls", "loss_landmarks"}``: scalar tensors already multiplied by their weights.
        """
        batch_size, _, num_classes = class_logits.shape
        if len(targets) != batch_size:
            raise ValueError(f"got {len(targets)} targets for a batch of {batch_size} images")
        matched = self.build_targets(targets, priors.detach(), image_size=image_size, num_classes=num_classes)
        # masked sums rather than boolean indexing: the number of selected priors never has to reach the host, so
        # the loss adds no device synchronisation to a training step
        positive = matched.labels > 0
        box_loss = _masked_sum(F.smooth_l1_loss(box_deltas, matched.box_deltas, reduction="none"), positive)
        landmark_mask = matched.landmarks_valid
        landmark_loss = _masked_sum(
            F.smooth_l1_loss(landmark_deltas, matched.landmark_deltas, reduction="none"), landmark_mask
        )

        negative = self._mine_hard_negatives(class_logits.detach(), matched.labels, positive)
        selected = positive | negative
        prior_class_loss = F.cross_entropy(
            class_logits.reshape(-1, num_classes), matched.labels.reshape(-1), reduction="none"
        ).reshape(batch_size, -1)
        class_loss = _masked_sum(prior_class_loss, selected)

        normaliser = positive.sum().clamp(min=1)
        landmark_normaliser = landmark_mask.sum().clamp(min=1)
        return {
            "loss_box": self.loc_weight * box_loss / normaliser,
            "loss_cls": self.class_weight * class_loss / normaliser,
            "loss_landmarks": self.landm_weight * landmark_loss / landmark_normaliser,
        }

    def _mine_hard_negatives(self, class_logits: Tensor, labels: Tensor, positive: Tensor) -> Tensor:
        """Select, per image, the background priors with the highest class loss.

        Args:
            class_logits: ``Tensor[B, P, C]`` (detached).
            labels: ``Tensor[B, P]`` int64 targets.
            positive: ``Tensor[B, P]`` bool.

        Returns:
            ``Tensor[B, P]`` bool mask of the mined negatives (``neg_pos_ratio`` x positives per image, at least
            ``min_negatives_per_image``, at most ``P - 1``).
        """
        batch_size, num_priors, num_classes = class_logits.shape
        prior_loss = F.cross_entropy(
            class_logits.reshape(-1, num_classes), labels.reshape(-1), reduction="none"
        ).reshape(batch_size, num_priors)
        prior_loss = prior_loss.masked_fill(positive, 0.0)
        rank = prior_loss.argsort(dim=1, descending=True).argsort(dim=1)
        num_negative = (self.neg_pos_ratio * positive.sum(dim=1, keepdim=True)).clamp(
            min=self.min_negatives_per_image, max=num_priors - 1
        )
        return (rank < num_negative) & ~positive
