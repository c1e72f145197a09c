"""Decoded images to 8-bit RGB, the one way every task reads pixels.

PIL's ``Image.convert("RGB")`` clips 16-bit and float images instead of scaling them: a 16-bit PNG (mode ``I;16``)
becomes almost white and a float TIFF (mode ``F``, values 0-1) black. :func:`to_rgb` scales such images to 8 bit
first, and refuses (naming the file, mode and value range) an image whose range says nothing about its scale.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SIXTEEN_BIT_MODES: frozenset[str] = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
"""PIL modes of 16-bit single-channel images (values 0-65535)."""

HIGH_BIT_DEPTH_MODES: frozenset[str] = SIXTEEN_BIT_MODES | {"I", "F"}
"""Modes :func:`to_rgb` scales to 8 bit: 16-bit, 32-bit integer and 32-bit float single-channel images."""

DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)
"""What PIL raises for a file it cannot decode: ``UnidentifiedImageError`` and "image file is truncated" are
OSErrors; broken chunks surface as SyntaxError/struct.error/EOFError; oversized images as DecompressionBombError."""

EXIF_ORIENTATION = 0x0112
"""EXIF tag of the image orientation (1: upright; 2-8: mirrored and/or rotated, turned upright when loaded)."""
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
"""EXIF orientations that swap width and height (rotations by 90 degrees, with or without a flip)."""

_SIXTEEN_BIT_DIVISOR = 257.0  # 65535 / 255: maps 0..65535 onto 0..255 exactly at both ends


class ImageModeError(ValueError):
    """An image whose pixel values cannot be mapped to 8 bit without guessing (the message names the file)."""


def _scale_rule(mode: str, low: float, high: float) -> tuple[float, str] | None:
    """``(multiplier, description)`` that maps the values of a ``mode`` image onto 0-255, or ``None`` if none fits."""
    if mode in SIXTEEN_BIT_MODES:
        return 1.0 / _SIXTEEN_BIT_DIVISOR, "16-bit, scaled to 8 bit (value / 257)"
    if low < 0 or not np.isfinite(high):
        return None
    if mode == "F" and high <= 1.0:
        return 255.0, "float in 0-1, scaled to 8 bit (value x 255)"
    if mode == "F" and high <= 255.0:
        return 1.0, "float in 0-255, rounded to 8 bit"
    if high <= 65535.0:
        return 1.0 / _SIXTEEN_BIT_DIVISOR, f"{'float' if mode == 'F' else '32-bit integer'} in 0-65535 (16-bit "
        "data), scaled to 8 bit (value / 257)"
    return None


def _conversion(image: Image.Image, source: str | os.PathLike[str]) -> tuple[np.ndarray, float, str]:
    """The values of a high-bit-depth ``image``, the multiplier onto 0-255 and its description."""
    values = np.asarray(image, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    rule = _scale_rule(image.mode, low, high)
    if rule is None:
        raise ImageModeError(
            f"{source or 'image'}: mode {image.mode} with values {low:g}..{high:g} cannot be scaled to 8 bit "
            "(expected 0-1 or 0-255 floats, or 0-65535 integers); convert it to an 8-bit PNG or JPEG first")
    return values, rule[0], rule[1]


def high_bit_depth_note(image: Image.Image, source: str | os.PathLike[str] = "") -> str | None:
    """What :func:`to_rgb` does to ``image``'s values, for ``check-data``; ``None`` for an ordinary 8-bit image.

    Raises:
        ImageModeError: The image's mode and value range admit no scaling to 8 bit (negative, not finite, or above
            65535); the message names ``source``, the mode and the range.
    """
    if image.mode not in HIGH_BIT_DEPTH_MODES:
        return None
    return f"mode {image.mode}: {_conversion(image, source)[2]}"


def to_rgb(image: Image.Image, source: str | os.PathLike[str] = "") -> Image.Image:
    """Return ``image`` as an 8-bit RGB image, scaling 16-bit and float images instead of clipping them.

    Args:
        image: A decoded PIL image of any mode.
        source: The file it came from, named in errors.

    Returns:
        A mode ``RGB`` image (``uint8`` values); grey images are repeated over the three channels.

    Raises:
        ImageModeError: See :func:`high_bit_depth_note`.
    """
    if image.mode in HIGH_BIT_DEPTH_MODES:
        values, multiplier, _ = _conversion(image, source)
        image = Image.fromarray(np.clip(np.rint(values * multiplier), 0, 255).astype(np.uint8))
    return image.convert("RGB")


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation of an opened image: 1 (upright, also without a tag) to 8."""
    value = image.getexif().get(EXIF_ORIENTATION, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def oriented_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(height, width)`` of an image after its EXIF orientation (as :func:`open_rgb` with ``exif_transpose`` decodes
    it), from the file header."""
    with Image.open(path) as image:
        width, height = image.size
        if exif_orientation(image) in TRANSPOSING_ORIENTATIONS:
            width, height = height, width
    return height, width


def open_rgb(path: str | Path, *, exif_transpose: bool = False) -> Image.Image:
    """Fully decode the image file ``path`` to 8-bit RGB (see :func:`to_rgb`).

    Args:
        path: The image file.
        exif_transpose: Apply the EXIF orientation tag (photos from phones), as every task does when it reads
            training, evaluation and prediction images.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImageModeError: A high-bit-depth image that cannot be scaled to 8 bit.
        ValueError: The file cannot be decoded (not an image, corrupt or truncated); the message names the file and
            PIL's reason.
    """
    try:
        with Image.open(path) as file:
            image: Image.Image = ImageOps.exif_transpose(file) if exif_transpose else file
            return to_rgb(image, path)  # converting decodes the whole image, so truncation surfaces here
    except (FileNotFoundError, ImageModeError):
        raise
    except DECODE_ERRORS as error:
        raise ValueError(f"cannot decode image {path}: {type(error).__name__}: {error}") from error
