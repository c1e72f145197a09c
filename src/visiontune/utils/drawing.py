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

__all__ = [
    "BOX_COLOR", "FITTED_WIDTH", "LANDMARK_COLORS", "MIN_FITTED_FONT", "PALETTE", "caption_image", "caption_rect",
    "color_of", "contrast_color", "draw_box_labels", "draw_caption", "draw_faces", "draw_instances",
    "draw_labeled_boxes", "fitted_size", "font", "font_path", "label_color", "line_width", "load_thumbnail",
    "wrap_text",
]

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


Rect = tuple[float, float, float, float]
"""A label's rectangle ``(x1, y1, x2, y2)`` in pixels, inclusive of its last pixel row and column."""

MIN_FITTED_FONT = 8
"""Smallest caption size (pixels) of labels sized to their box (``fit=True``): smaller text cannot be read."""
FITTED_WIDTH = 1.5
"""A label sized to its box (``fit=True``) is at most this many times as wide as the box."""


@functools.lru_cache(maxsize=1)
def font_path() -> str | None:
    """The TrueType file of DejaVu Sans, which matplotlib ships (it has arrows and accented letters, which PIL's
    bundled font lacks); None when matplotlib cannot find it."""
    try:
        from matplotlib import font_manager

        path = font_manager.findfont("DejaVu Sans", fallback_to_default=False)
    except (ImportError, ValueError):
        return None
    return str(path)


@functools.lru_cache(maxsize=32)
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans (:func:`font_path`) at ``size`` pixels; PIL's bundled font when it cannot be loaded."""
    path = font_path()
    if path is not None:
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            pass
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def font_size_for(image: Image.Image) -> int:
    """Caption height for ``image``: about 1/22 of the shorter side, 10-28 px."""
    return max(10, min(28, round(min(image.size) / 22)))


def wrap_text(text: str, size: int, max_width: float) -> str:
    """``text`` broken into lines (``\n``) no wider than ``max_width`` pixels at ``size``: at spaces, and inside a
    word only where the word alone is wider."""
    face = font(size)
    lines: list[str] = []
    for word in text.split(" "):
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and face.getlength(candidate) <= max_width:
            lines[-1] = candidate
            continue
        piece = ""
        for character in word:
            if piece and face.getlength(piece + character) > max_width:
                lines.append(piece)
                piece = ""
            piece += character
        lines.append(piece)
    return "\n".join(lines)


def caption_rect(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, *, size: int,
                 bounds: tuple[int, int], above: bool = True) -> Rect:
    """Where :func:`draw_caption` puts the label of ``text`` anchored at ``xy`` (see there)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font(size))
    pad_y = max(1, size // 10)
    pad_x = pad_y + 1
    width, height = right - left + 2 * pad_x, bottom - top + 2 * pad_y
    x, y = xy
    y = y - height if above and y - height >= 0 else y
    x = max(0.0, min(x, bounds[0] - width))
    y = max(0.0, min(y, bounds[1] - height))
    return x, y, x + width - 1, y + height - 1


def draw_caption(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, color: Sequence[int], *,
                 size: int, bounds: tuple[int, int], above: bool = True) -> Rect:
    """``text`` (lines split at ``\n``) on a filled ``color`` label, in black or white (:func:`contrast_color`).

    ``xy`` is the anchor (a box's top-left corner); the label sits above it when there is room (``above``),
    else below the anchor (inside the box), and is shifted to stay within ``bounds`` (image width, height).
    Returns the label's rectangle.
    """
    face = font(size)
    rect = caption_rect(draw, xy, text, size=size, bounds=bounds, above=above)
    left, top, _right, _bottom = draw.textbbox((0, 0), text, font=face)
    pad_y = max(1, size // 10)
    draw.rectangle(rect, fill=tuple(color))
    draw.text((rect[0] + pad_y + 1 - left, rect[1] + pad_y - top), text, fill=contrast_color(color), font=face)
    return rect


def _overlaps(rect: Rect, others: Sequence[Rect]) -> bool:
    return any(rect[0] <= o[2] and o[0] <= rect[2] and rect[1] <= o[3] and o[1] <= rect[3] for o in others)


def fitted_size(draw: ImageDraw.ImageDraw, text: str, box: Sequence[float], size: int) -> int | None:
    """The largest caption size up to ``size`` whose label is no taller than half the box and no wider than
    :data:`FITTED_WIDTH` times the box (at least :data:`MIN_FITTED_FONT`); None when even that label is wider."""
    box_width, box_height = max(0.0, box[2] - box[0]), max(0.0, box[3] - box[1])
    for candidate in range(min(size, max(MIN_FITTED_FONT, int(box_height / 2))), MIN_FITTED_FONT - 1, -1):
        left, _top, right, _bottom = draw.textbbox((0, 0), text, font=font(candidate))
        if right - left + 2 * (max(1, candidate // 10) + 1) <= FITTED_WIDTH * box_width:
            return candidate
    return None


def draw_box_labels(draw: ImageDraw.ImageDraw, boxes: Sequence[Sequence[float]], captions: Sequence[str],
                    colors: Sequence[Color], *, size: int, bounds: tuple[int, int], fit: bool = False) -> list[Rect]:
    """Draw the captions of xyxy ``boxes`` in order (:func:`draw_caption`); returns the rectangles drawn.

    With ``fit`` (crowds of small objects: faces), each label is sized to its box (:func:`fitted_size`), tried
    above the box then inside its top edge, and left out when it is wider than the box even at
    :data:`MIN_FITTED_FONT` or would overlap a label drawn before it: put the most important boxes first.
    """
    placed: list[Rect] = []
    for box, caption, color in zip(boxes, captions, colors):
        if not caption:
            continue
        anchor = (float(box[0]), float(box[1]))
        if not fit:
            placed.append(draw_caption(draw, anchor, caption, color, size=size, bounds=bounds))
            continue
        fitted = fitted_size(draw, caption, box, size)
        if fitted is None:
            continue
        for above in (True, False):
            rect = caption_rect(draw, anchor, caption, size=fitted, bounds=bounds, above=above)
            if not _overlaps(rect, placed):
                placed.append(draw_caption(draw, anchor, caption, color, size=fitted, bounds=bounds, above=above))
                break
    return placed


def draw_labeled_boxes(image: Image.Image, boxes: Sequence[Sequence[float]], captions: Sequence[str] | None = None,
                       colors: Sequence[Color] | None = None, *, width: int | None = None,
                       font_size: int | None = None, fit: bool = False) -> Image.Image:
    """Draw xyxy ``boxes`` with optional captions (:func:`draw_box_labels`) on an RGB copy of ``image``.

    All outlines are drawn first, then the captions, so no box crosses a label. ``width`` defaults to
    :func:`line_width`, ``font_size`` to :func:`font_size_for`; boxes without a colour use ``PALETTE[0]``;
    ``fit`` sizes each label to its box and leaves out labels that would overlap (see :func:`draw_box_labels`).
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
    if captions:
        texts = [captions[index] if index < len(captions) else "" for index in range(len(boxes))]
        draw_box_labels(draw, [[float(v) for v in box[:4]] for box in boxes], texts,
                        [color(index) for index in range(len(boxes))], size=size, bounds=canvas.size, fit=fit)
    return canvas


def caption_image(image: Image.Image, text: str, color: Color = (31, 59, 87), *, font_size: int | None = None
                  ) -> Image.Image:
    """``image`` (RGB copy) with ``text`` on a filled band at its top-left corner (a class name over a thumbnail),
    wrapped onto more lines where it is wider than the image."""
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    size = font_size or max(10, min(18, round(min(canvas.size) / 9)))
    pad = 2 * (max(1, size // 10) + 1)
    draw_caption(draw, (0, 0), wrap_text(text, size, canvas.size[0] - pad), color, size=size, bounds=canvas.size,
                 above=False)
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
    """Draw face boxes (xyxy), their scores and five landmarks (``[K, 5, 2]``) on a copy of ``image``.

    Score labels are sized to their face and placed from the highest score down; a label that would overlap one
    already drawn, or that is wider than its face even at :data:`MIN_FITTED_FONT`, is left out (the box and the
    landmarks are always drawn)."""
    order = np.argsort(-np.asarray(scores, dtype=float).reshape(-1), kind="stable")
    canvas = draw_labeled_boxes(image, [list(boxes[i]) for i in order], [f"{scores[i]:.2f}" for i in order],
                                [BOX_COLOR] * len(order), fit=True)
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
