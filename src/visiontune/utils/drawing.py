"""Drawing on images for every task and the reports: boxes with legible captions, face landmarks, instance masks,
captioned thumbnails.

Every caption is text on a filled label in the box colour, in black or white, whichever reads better on it
(:func:`contrast_color`), kept inside the image (:func:`draw_caption`). Every function draws on a copy (RGB) and
leaves its input unchanged. Lines are ``max(1, round(min(W, H) / 300))`` pixels wide unless told otherwise, so
drawings stay readable on large photos.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps
from pycocotools import mask as mask_utils

from visiontune.utils.image import DECODE_ERRORS, TRANSPOSING_ORIENTATIONS, exif_orientation, to_rgb

__all__ = ["BOX_COLOR", "LANDMARK_COLORS", "PALETTE", "caption_image", "color_of", "contrast_color", "draw_caption",
           "draw_faces", "draw_instances", "draw_labeled_boxes", "label_color", "line_width", "load_thumbnail"]

Color = tuple[int, int, int]

BOX_COLOR: Color = (255, 0, 0)
"""RGB colour of face boxes and of their score labels."""
LANDMARK_COLORS: tuple[Color, ...] = ((255, 0, 0), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255))
"""RGB colour per face landmark (left eye, right eye, nose, left and right mouth corner), as the RetinaFace
reference drawing."""
PALETTE: tuple[Color, ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40),
)
"""Class colours: model label ``l`` (``1..K``) is ``PALETTE[(l - 1) % len(PALETTE)]`` (:func:`label_color`), 0-based
class index ``i`` is ``PALETTE[i % len(PALETTE)]`` (:func:`color_of`)."""


def line_width(image: Image.Image) -> int:
    """Outline width in pixels for ``image``: ``max(1, round(min(W, H) / 300))``."""
    return max(1, round(min(image.size) / 300))


def color_of(index: int) -> Color:
    """The :data:`PALETTE` colour of a 0-based class index."""
    return PALETTE[int(index) % len(PALETTE)]


def label_color(label: int) -> Color:
    """The :data:`PALETTE` colour of model label ``label`` (``1..K``)."""
    return color_of(int(label) - 1)


def contrast_color(background: Sequence[int]) -> Color:
    """Black or white, whichever reads better on ``background`` (WCAG relative luminance)."""

    def channel(value: int) -> float:
        c = value / 255.0
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(int(v)) for v in background[:3])
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return (0, 0, 0) if luminance > 0.179 else (255, 255, 255)


@functools.lru_cache(maxsize=16)
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's bundled font at ``size`` pixels (scalable since Pillow 10.1; the bitmap font before)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def font_size_for(image: Image.Image) -> int:
    """Caption height for ``image``: about 1/22 of the shorter side, 10-28 px."""
    return max(10, min(28, round(min(image.size) / 22)))


def draw_caption(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, color: Sequence[int], *,
                 size: int, bounds: tuple[int, int], above: bool = True) -> None:
    """``text`` on a filled ``color`` label, in black or white (:func:`contrast_color`).

    ``xy`` is the anchor (a box's top-left corner); the label sits above it when there is room (``above``),
    else below the anchor (inside the box), and is shifted to stay within ``bounds`` (image width, height).
    """
    face = font(size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=face)
    pad_y = max(1, size // 10)
    pad_x = pad_y + 1
    width, height = right - left + 2 * pad_x, bottom - top + 2 * pad_y
    x, y = xy
    y = y - height if above and y - height >= 0 else y
    x = max(0.0, min(x, bounds[0] - width))
    y = max(0.0, min(y, bounds[1] - height))
    draw.rectangle((x, y, x + width - 1, y + height - 1), fill=tuple(color))
    draw.text((x + pad_x - left, y + pad_y - top), text, fill=contrast_color(color), font=face)


def draw_labeled_boxes(image: Image.Image, boxes: Sequence[Sequence[float]], captions: Sequence[str] | None = None,
                       colors: Sequence[Color] | None = None, *, width: int | None = None,
                       font_size: int | None = None) -> Image.Image:
    """Draw xyxy ``boxes`` with optional captions (:func:`draw_caption`) on an RGB copy of ``image``.

    All outlines are drawn first, then the captions, so no box crosses a label. ``width`` defaults to
    :func:`line_width`, ``font_size`` to :func:`font_size_for`; boxes without a colour use ``PALETTE[0]``.
    """
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = width or line_width(canvas)
    size = font_size or font_size_for(canvas)

    def color(index: int) -> Color:
        if not colors:
            return PALETTE[0]
        red, green, blue = colors[index][:3]
        return int(red), int(green), int(blue)

    for index, box in enumerate(boxes):
        x1, y1, x2, y2 = (float(v) for v in box[:4])
        draw.rectangle((x1, y1, max(x1, x2), max(y1, y2)), outline=color(index), width=width)
    for index, box in enumerate(boxes):
        if captions and index < len(captions) and captions[index]:
            draw_caption(draw, (float(box[0]), float(box[1])), captions[index], color(index), size=size,
                         bounds=canvas.size)
    return canvas


def caption_image(image: Image.Image, text: str, color: Color = (31, 59, 87), *, font_size: int | None = None
                  ) -> Image.Image:
    """``image`` (RGB copy) with ``text`` on a filled band at its top-left corner (a class name over a thumbnail)."""
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    size = font_size or max(10, min(18, round(min(canvas.size) / 9)))
    draw_caption(draw, (0, 0), text, color, size=size, bounds=canvas.size, above=False)
    return canvas


def load_thumbnail(path: str, max_side: int = 256) -> tuple[Image.Image, float] | None:
    """Open ``path`` as training does (EXIF orientation applied, 16-bit and float images scaled to 8 bit:
    :func:`visiontune.utils.image.to_rgb`), shrunk to ``max_side``; returns the image and the scale applied (to
    pixels of the upright original), None if unreadable."""
    try:
        with Image.open(path) as opened:
            orientation = exif_orientation(opened)
            width, height = opened.size
            original = (height, width) if orientation in TRANSPOSING_ORIENTATIONS else (width, height)
            opened.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced size, much faster
            image = to_rgb(ImageOps.exif_transpose(opened) if orientation != 1 else opened, path)
    except DECODE_ERRORS:
        return None
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    scale = image.size[0] / original[0] if original[0] > 0 else 1.0
    return image, scale


def draw_faces(image: Image.Image, boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray) -> Image.Image:
    """Draw face boxes (xyxy), their scores (labelled) and five landmarks (``[K, 5, 2]``) on a copy of ``image``."""
    canvas = draw_labeled_boxes(image, [list(box) for box in boxes], [f"{score:.2f}" for score in scores],
                                [BOX_COLOR] * len(boxes))
    return draw_landmarks(canvas, landmarks)


def draw_landmarks(canvas: Image.Image, landmarks: np.ndarray, radius: float | None = None) -> Image.Image:
    """Draw five-point face landmarks (``[K, 5, 2]`` x, y in pixels of ``canvas``) in place, one colour per point
    (left eye, right eye, nose, left and right mouth corner: ``LANDMARK_COLORS``); returns ``canvas``."""
    draw = ImageDraw.Draw(canvas)
    radius = radius or max(1.5, line_width(canvas) * 1.5)
    for points in np.asarray(landmarks, dtype=float).reshape(-1, 5, 2):
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
    """Draw masks, boxes and labels (class name and score) on a copy of ``image``.

    Args:
        image: The image the detections belong to (any PIL mode; drawn in RGB).
        detections: COCO results of that image (:func:`~visiontune.evaluation.coco.results_to_coco_json`) whose
            ``category_id`` is the model label ``1..K``: ``bbox`` ``[x, y, w, h]`` in pixels, ``score`` and
            ``segmentation`` (RLE of the image's size).
        class_names: ``class_names[label - 1]`` is written on each box's label.
        score_threshold: Detections scoring below it are not drawn.
        mask_alpha: Opacity of the mask colour, in [0, 1].

    Returns:
        A new RGB image; the highest-scoring instance is drawn last (on top).
    """
    canvas = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    kept = sorted((item for item in detections if item["score"] >= score_threshold), key=lambda item: item["score"])
    colors = [label_color(item["category_id"]) for item in kept]
    _blend_masks(canvas, kept, colors, alpha=mask_alpha)
    boxes, captions = [], []
    for item in kept:
        x, y, box_width, box_height = (float(value) for value in item["bbox"])
        label = int(item["category_id"])
        name = class_names[label - 1] if 1 <= label <= len(class_names) else str(label)
        boxes.append((x, y, x + box_width, y + box_height))
        captions.append(f"{name} {item['score']:.2f}")
    return draw_labeled_boxes(Image.fromarray(np.clip(canvas.round(), 0, 255).astype(np.uint8)), boxes, captions,
                              colors)
