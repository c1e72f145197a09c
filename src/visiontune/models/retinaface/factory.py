"""``create_retinaface``: build a RetinaFace by backbone name and optionally load weights."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from types import MappingProxyType
from typing import Any

from torch import nn

from visiontune.models.retinaface.backbones import mobilenet_v1_x025_body, resnet50_body
from visiontune.models.retinaface.loading import load_backbone_state_dict, load_retinaface_state_dict
from visiontune.models.retinaface.net import RetinaFace

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetinaFaceBackbone:
    """How to build one RetinaFace variant.

    Attributes:
        build_body: returns a randomly initialised body (see :mod:`visiontune.models.retinaface.backbones`).
        out_channels: FPN/SSH width (the reference config's ``out_channel``).
    """

    build_body: Callable[[], nn.Module]
    out_channels: int


RETINAFACE_BACKBONES: MappingProxyType[str, RetinaFaceBackbone] = MappingProxyType(
    {
        "mobilenet0.25": RetinaFaceBackbone(build_body=mobilenet_v1_x025_body, out_channels=64),
        "resnet50": RetinaFaceBackbone(build_body=resnet50_body, out_channels=256),
    }
)
"""Backbone name -> variant (read-only)."""


def list_retinaface_backbones() -> list[str]:
    """Names accepted by :func:`create_retinaface`."""
    return sorted(RETINAFACE_BACKBONES)


def _lookup_backbone(name: str) -> RetinaFaceBackbone:
    if name in RETINAFACE_BACKBONES:
        return RETINAFACE_BACKBONES[name]
    names = list_retinaface_backbones()
    lowered = {candidate.lower(): candidate for candidate in names}
    close = difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=0.4)
    hint = f"; did you mean {lowered[close[0]]!r}?" if close else ""
    raise ValueError(f"unknown RetinaFace backbone {name!r}{hint} Available: {', '.join(names)}")


def create_retinaface(
    backbone: str = "mobilenet0.25",
    *,
    num_classes: int = 2,
    checkpoint: str | PathLike[str] | None = None,
    backbone_checkpoint: str | PathLike[str] | None = None,
    **kwargs: Any,
) -> RetinaFace:
    """Build a RetinaFace.

    Args:
        backbone: ``"mobilenet0.25"`` or ``"resnet50"``.
        num_classes: classes including background (2 = face detector).
        checkpoint: full model weights (reference ``mobilenet0.25_Final.pth`` / ``Resnet50_Final.pth`` or a
            visiontune state dict), loaded strictly; a class head of another ``num_classes`` is skipped.
        backbone_checkpoint: ImageNet weights for the body only (``mobilenetV1X0.25_pretrain.tar``, or a
            torchvision/timm ``resnet50`` state dict). Applied before ``checkpoint``.
        **kwargs: passed to :class:`~visiontune.models.retinaface.net.RetinaFace` (``prior_config``, ``loss``,
            ``postprocess``).

    Returns:
        The model, in train mode (call ``.eval()`` for detections).

    Raises:
        ValueError: unknown backbone name (with a suggestion), or weights that do not fit.
    """
    variant = _lookup_backbone(backbone)
    model = RetinaFace(variant.build_body(), out_channels=variant.out_channels, num_classes=num_classes, **kwargs)
    if backbone_checkpoint is not None:
        load_backbone_state_dict(model.body, backbone_checkpoint)
    if checkpoint is not None:
        load_retinaface_state_dict(model, checkpoint)
    return model
