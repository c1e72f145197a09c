"""PIL drawing for the reports: legible captions (text on a filled background in a contrasting colour),
labelled boxes, thumbnails.

Candidates to merge into ``visiontune.utils.drawing``: :func:`contrast_color`, :func:`draw_caption`,
:func:`draw_labeled_boxes` and :func:`caption_image` (the ``_captioned_box`` there draws bare text in the box
colour, hard to read on busy photos). Everything draws on a copy.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

__all__ = ["PALETTE", "caption_image", "color_of", "contrast_color", "draw_caption", "draw_labeled_boxes",
           "load_thumbnail"]

Color = tuple[int, int, int]

PALETTE: tuple[Color, ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40),
)
"""Same colours as ``visiontune.utils.drawing.PALETTE``; index ``i`` for class / category index ``i``."""


def color_of(index: int) -> Color:
    """The :data:`PALETTE` colour of a 0-based class index."""
    return PALETTE[int(index) % len(PALETTE)]


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


def draw_caption(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, color: Color, *,
                 size: int, bounds: tuple[int, int], above: bool = True) -> None:
    """``text`` on a filled ``color`` rectangle, in black or white (:func:`contrast_color`).

    ``xy`` is the anchor (a box's top-left corner); the label sits above it when there is room (``above``),
    else inside, and is shifted left to stay within ``bounds`` (image width, height).
    """
    face = font(size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=face)
    width, height = right - left + 4, bottom - top + 4
    x, y = xy
    y = y - height if above and y - height >= 0 else y
    x = max(0.0, min(x, bounds[0] - width))
    y = max(0.0, min(y, bounds[1] - height))
    draw.rectangle((x, y, x + width, y + height), fill=color)
    draw.text((x + 2 - left, y + 2 - top), text, fill=contrast_color(color), font=face)


def draw_labeled_boxes(image: Image.Image, boxes: Sequence[Sequence[float]], captions: Sequence[str] | None = None,
                       colors: Sequence[Color] | None = None, *, width: int | None = None,
                       font_size: int | None = None) -> Image.Image:
    """Draw xyxy ``boxes`` with optional captions (filled labels) on an RGB copy of ``image``."""
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = width or max(1, round(min(canvas.size) / 150))
    size = font_size or font_size_for(canvas)
    for index, box in enumerate(boxes):
        x1, y1, x2, y2 = (float(v) for v in box[:4])
        color = colors[index] if colors else PALETTE[0]
        draw.rectangle((x1, y1, max(x1, x2), max(y1, y2)), outline=color, width=width)
    if captions:
        for index, box in enumerate(boxes):
            if index < len(captions) and captions[index]:
                color = colors[index] if colors else PALETTE[0]
                draw_caption(draw, (float(box[0]), float(box[1])), captions[index], color, size=size,
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
    """Open ``path`` as RGB, shrunk to ``max_side``; returns the image and the scale applied, None if unreadable."""
    try:
        with Image.open(path) as opened:
            opened.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced size, much faster
            original = _original_size(path)
            image = opened.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    scale = 1.0
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    if original is not None and original[0] > 0:
        scale = image.size[0] / original[0]
    return image, scale


def _original_size(path: str) -> tuple[int, int] | None:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError):
        return None
