"""The RetinaFace detector: body -> FPN -> SSH per level -> class/box/landmark heads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from visiontune.models.retinaface.heads import AnchorHead
from visiontune.models.retinaface.loss import RetinaFaceLoss
from visiontune.models.retinaface.neck import FeaturePyramid, SSHContext
from visiontune.models.retinaface.postprocess import RetinaFacePostprocessConfig, postprocess_detections
from visiontune.models.retinaface.priors import PriorCache, PriorConfig

NUM_LANDMARK_POINTS = 5


class RetinaFace(nn.Module):
    """RetinaFace single-stage face detector with 5-point landmarks.

    Submodule names (``body``, ``fpn``, ``ssh1..3``, ``ClassHead``, ``BboxHead``, ``LandmarkHead``) equal the reference
    implementation's state-dict keys, so its checkpoints load with ``strict=True``.

    Input contract: ``images: Tensor[B, 3, H, W]`` float32, BGR channel order, 0-255 values minus the mean
    (104, 117, 123) (see :mod:`visiontune.models.retinaface.preprocess`). Any ``H, W`` works; priors are generated
    for (and cached per) input size.

    * Train mode: ``model(images, targets)`` returns ``{"loss_box", "loss_cls", "loss_landmarks"}`` (weighted; sum
      them). ``targets`` has one dict per image: ``boxes: Tensor[N, 4]`` float32 xyxy pixels of the input tensor,
      ``landmarks: Tensor[N, 5, 2]`` float32 pixels, ``landmarks_valid: Tensor[N]`` bool (see
      :func:`~visiontune.models.retinaface.loss.validate_target`).
    * Eval mode: ``model(images)`` returns one dict per image: ``boxes: Tensor[K, 4]`` xyxy pixels of the input,
      ``scores: Tensor[K]``, ``landmarks: Tensor[K, 5, 2]`` pixels, ``labels: Tensor[K]`` int64 (1 = face).

    Args:
        body: backbone returning three feature maps at strides 8, 16, 32 and exposing
            ``feature_channels: tuple[int, int, int]``.
        out_channels: channels of the FPN and SSH outputs (64 for MobileNet0.25, 256 for ResNet-50).
        num_classes: classes including background (2: background, face).
        prior_config: prior layout; three levels.
        loss: training loss (its box coder is also used for decoding); ``RetinaFaceLoss()`` when None.
        postprocess: detection thresholds; reference defaults when None. Settable later via ``model.postprocess``.
    """

    def __init__(
        self,
        body: nn.Module,
        *,
        out_channels: int,
        num_classes: int = 2,
        prior_config: PriorConfig | None = None,
        loss: RetinaFaceLoss | None = None,
        postprocess: RetinaFacePostprocessConfig | None = None,
    ) -> None:
        super().__init__()
        feature_channels = getattr(body, "feature_channels", None)
        if feature_channels is None or len(feature_channels) != 3:
            raise ValueError(
                f"body {type(body).__name__} must expose feature_channels with 3 entries (strides 8, 16, 32), "
                f"got {feature_channels!r}"
            )
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        prior_config = prior_config or PriorConfig()
        if len(prior_config.steps) != 3:
            raise ValueError(f"RetinaFace has 3 pyramid levels; prior_config has steps={prior_config.steps}")
        self.num_classes = num_classes
        self.prior_config = prior_config
        self.body = body
        self.fpn = FeaturePyramid(feature_channels, out_channels)
        self.ssh1 = SSHContext(out_channels, out_channels)
        self.ssh2 = SSHContext(out_channels, out_channels)
        self.ssh3 = SSHContext(out_channels, out_channels)
        anchors = prior_config.anchors_per_level
        self.ClassHead = nn.ModuleList(
            AnchorHead(out_channels, num_anchors=count, values_per_anchor=num_classes) for count in anchors
        )
        self.BboxHead = nn.ModuleList(
            AnchorHead(out_channels, num_anchors=count, values_per_anchor=4) for count in anchors
        )
        self.LandmarkHead = nn.ModuleList(
            AnchorHead(out_channels, num_anchors=count, values_per_anchor=2 * NUM_LANDMARK_POINTS) for count in anchors
        )
        self.loss = loss or RetinaFaceLoss()
        self.postprocess = postprocess or RetinaFacePostprocessConfig()
        self.prior_cache = PriorCache(prior_config)

    def priors(self, image_size: tuple[int, int], *, device: torch.device | None = None) -> Tensor:
        """Cached priors ``Tensor[P, 4]`` (cx, cy, w, h) normalised, for an input of ``(height, width)``."""
        device = device if device is not None else next(self.parameters()).device
        return self.prior_cache.get(image_size, device=device)

    def _predict(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Run the network: box deltas ``[B, P, 4]``, class logits ``[B, P, C]``, landmark deltas ``[B, P, 10]``."""
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            description = f"Tensor{list(images.shape)} {images.dtype}" if isinstance(images, Tensor) else type(images)
            raise ValueError(f"RetinaFace expects images as a float Tensor[B, 3, H, W], got {description}")
        pyramid = self.fpn(self.body(images))
        features = [self.ssh1(pyramid[0]), self.ssh2(pyramid[1]), self.ssh3(pyramid[2])]
        box_deltas = torch.cat([head(level) for head, level in zip(self.BboxHead, features)], dim=1)
        class_logits = torch.cat([head(level) for head, level in zip(self.ClassHead, features)], dim=1)
        landmark_deltas = torch.cat([head(level) for head, level in zip(self.LandmarkHead, features)], dim=1)
        return box_deltas, class_logits, landmark_deltas

    def forward_raw(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Raw per-prior outputs (the reference network's test-phase outputs; used for parity checks and export).

        Args:
            images: ``Tensor[B, 3, H, W]`` float32, BGR minus mean.

        Returns:
            ``(box_deltas Tensor[B, P, 4], class_scores Tensor[B, P, C] softmax, landmark_deltas Tensor[B, P, 10])``,
            priors ordered as :meth:`priors`.
        """
        box_deltas, class_logits, landmark_deltas = self._predict(images)
        return box_deltas, class_logits.softmax(dim=-1), landmark_deltas

    def forward(
        self, images: Tensor, targets: Sequence[Mapping[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Losses in train mode, detections in eval mode (see the class docstring); eval mode ignores ``targets``."""
        if self.training and targets is None:
            raise ValueError("RetinaFace in training mode needs targets (one dict per image)")
        box_deltas, class_logits, landmark_deltas = self._predict(images)
        # Decoding and losses run in (at least) float32, also when the network ran under autocast.
        compute_dtype = torch.promote_types(box_deltas.dtype, torch.float32)
        box_deltas, class_logits, landmark_deltas = (
            output.to(compute_dtype) for output in (box_deltas, class_logits, landmark_deltas)
        )
        image_size = (images.shape[-2], images.shape[-1])
        priors = self.priors(image_size, device=images.device).to(compute_dtype)
        if priors.shape[0] != box_deltas.shape[1]:
            raise ValueError(
                f"the heads produced {box_deltas.shape[1]} predictions for a {image_size} input but the prior layout "
                f"has {priors.shape[0]}: the body's feature maps must be ceil(size / step) for steps "
                f"{self.prior_config.steps}"
            )
        if self.training:
            return self.loss(
                box_deltas, class_logits, landmark_deltas, priors=priors, targets=targets, image_size=image_size
            )
        return postprocess_detections(
            box_deltas,
            class_logits.softmax(dim=-1),
            landmark_deltas,
            priors=priors,
            image_size=image_size,
            config=self.postprocess,
            box_coder=self.loss.box_coder,
        )
