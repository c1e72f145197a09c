"""Drawing predictions on images for every task: boxes with captions, face landmarks and instance masks.

Every function draws on a copy (RGB) and leaves its input unchanged. Lines are ``max(1, round(min(W, H) / 300))``
pixels wide, so drawings stay readable on large photos.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

__all__ = ["BOX_COLOR", "LANDMARK_COLORS", "PALETTE", "draw_faces", "draw_instances", "label_color", "line_width"]

Color = tuple[int, int, int]

BOX_COLOR: Color = (255, 0, 0)
"""RGB colour of face boxes and scores."""
LANDMARK_COLORS: tuple[Color, ...] = ((255, 0, 0), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255))
"""RGB colour per face landmark (left eye, right eye, nose, left and right mouth corner), as the RetinaFace
reference drawing."""
PALETTE: tuple[Color, ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40),
)
"""RGB colour of label ``l`` (``1..K``) is ``PALETTE[(l - 1) % len(PALETTE)]`` (:func:`label_color`)."""
CAPTION_HEIGHT = 11
"""Pixels above a box's top edge where its caption starts (PIL's default font)."""


def line_width(image: Image.Image) -> int:
    """Outline width in pixels for ``image``: ``max(1, round(min(W, H) / 300))``."""
    return max(1, round(min(image.size) / 300))


def label_color(label: int) -> Color:
    """The :data:`PALETTE` colour of model label ``label`` (``1..K``)."""
    return PALETTE[(int(label) - 1) % len(PALETTE)]


def _captioned_box(draw: ImageDraw.ImageDraw, box: Iterable[float], caption: str, color: Color, *, width: int,
                   indent: float = 0.0) -> None:
    """An xyxy box outline with ``caption`` above its top-left corner (inside the image), ``indent`` to the right."""
    x1, y1, x2, y2 = (float(value) for value in box)
    draw.rectangle((x1, y1, x2, y2), outline=color, width=width)
    draw.text((x1 + indent, max(0.0, y1 - CAPTION_HEIGHT - width)), caption, fill=color)


def draw_faces(image: Image.Image, boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray) -> Image.Image:
    """Draw face boxes (xyxy), their scores and five landmarks (``[K, 5, 2]``) on a copy of ``image``."""
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = line_width(canvas)
    radius = max(1.5, width * 1.5)
    for box, score, points in zip(boxes, scores, landmarks):
        _captioned_box(draw, box, f"{score:.2f}", BOX_COLOR, width=width)
        for (x, y), color in zip(points, LANDMARK_COLORS):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=color)
    return canvas


def _blend_masks(canvas: np.ndarray, detections: Sequence[Mapping[str, Any]], colors: Sequence[Color], *,
                 alpha: float) -> None:
    """Blend the RLE ``segmentation`` of each detection into ``canvas`` (float ``[H, W, 3]``) in place."""
    for item, color in zip(detections, colors):
        if "segmentation" not in item:
            continue
        mask = mask_utils.decode(item["segmentation"]).astype(bool)
        if mask.shape != canvas.shape[:2]:
            raise ValueError(f"image id {item.get('image_id')}: mask of size {mask.shape} for an image of size "
                             f"{canvas.shape[:2]}")
        canvas[mask] = canvas[mask] * (1.0 - alpha) + np.asarray(color, dtype=np.float32) * alpha


def draw_instances(
    image: Image.Image,
    detections: Sequence[Mapping[str, Any]],
    *,
    class_names: Sequence[str],
    score_threshold: float,
    mask_alpha: float = 0.5,
) -> Image.Image:
    """Draw masks, boxes, labels and scores on a copy of ``image``.

    Args:
        image: The image the detections belong to (any PIL mode; drawn in RGB).
        detections: COCO results of that image (:func:`~visiontune.evaluation.coco.results_to_coco_json`) whose
            ``category_id`` is the model label ``1..K``: ``bbox`` ``[x, y, w, h]`` in pixels, ``score`` and
            ``segmentation`` (RLE of the image's size).
        class_names: ``class_names[label - 1]`` is written next to each box.
        score_threshold: Detections scoring below it are not drawn.
        mask_alpha: Opacity of the mask colour, in [0, 1].

    Returns:
        A new RGB image; the highest-scoring instance is drawn last (on top).
    """
    canvas = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    kept = sorted((item for item in detections if item["score"] >= score_threshold), key=lambda item: item["score"])
    colors = [label_color(item["category_id"]) for item in kept]
    _blend_masks(canvas, kept, colors, alpha=mask_alpha)
    drawn = Image.fromarray(np.clip(canvas.round(), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(drawn)
    width = line_width(drawn)
    for item, color in zip(kept, colors):
        x, y, box_width, box_height = (float(value) for value in item["bbox"])
        label = int(item["category_id"])
        name = class_names[label - 1] if 1 <= label <= len(class_names) else str(label)
        _captioned_box(draw, (x, y, x + box_width, y + box_height), f"{name} {item['score']:.2f}", color,
                       width=width, indent=width)
    return drawn
