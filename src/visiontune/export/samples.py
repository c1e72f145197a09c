"""Images for the export parity check: user photos, or synthetic images with natural-image statistics.

Pure noise is a poor parity input: it drives activations into ranges real images never reach and, for detectors,
produces no confident detections. The synthetic image here is smooth (a few octaves of upsampled noise, so most
energy is at low frequencies, as in photographs) with some hard-edged shapes on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from visiontune.data.sources import IMAGE_SUFFIXES, list_image_files
from visiontune.data.validation import file_kind
from visiontune.utils.image import open_rgb


def synthetic_photo(height: int, width: int, *, seed: int = 0) -> Image.Image:
    """A smooth random RGB image with a few sharp-edged shapes.

    Args:
        height: rows.
        width: columns.
        seed: random seed; equal arguments give equal images.

    Returns:
        RGB ``PIL.Image`` of size ``(width, height)``.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    generator = np.random.default_rng(seed)
    canvas = np.zeros((height, width, 3), dtype=np.float64)
    for octave, cells in enumerate((2, 4, 8, 16)):
        coarse = generator.uniform(0.0, 255.0, size=(cells, cells, 3)).astype(np.uint8)
        layer = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float64)
        canvas += layer * 0.5 ** (octave + 1)
    canvas = (canvas - canvas.min()) / max(np.ptp(canvas), 1e-9) * 215.0 + 20.0
    image = Image.fromarray(canvas.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x1, x2 = sorted(generator.uniform(0, width, size=2))
        y1, y2 = sorted(generator.uniform(0, height, size=2))
        colour = tuple(int(value) for value in generator.integers(0, 256, size=3))
        if generator.random() < 0.5:
            draw.ellipse((x1, y1, x2, y2), fill=colour)
        else:
            draw.rectangle((x1, y1, x2, y2), fill=colour)
    return image


def collect_sample_images(source: str | Path) -> list[Path]:
    """Image files of ``source`` (one image, or a folder searched recursively, sorted): regular files only (a named
    pipe is never opened; what a folder holds besides images is named in one warning line per kind).

    Raises:
        ValueError: the path does not exist, is not a regular file or folder, or holds no image.
    """
    path = Path(source)
    if not path.exists():
        raise ValueError(f"sample: {path} does not exist (give an image or a folder of images)")
    if path.is_dir():
        images = list_image_files(path)
    elif (kind := file_kind(path)) is not None:
        raise ValueError(f"sample: {path} is {kind}, not a regular file (give an image or a folder of images)")
    else:
        return [path]
    if not images:
        raise ValueError(f"sample: no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    return images


def load_rgb(path: Path) -> Image.Image:
    """An image file as 8-bit RGB with its EXIF orientation applied."""
    return open_rgb(path, exif_transpose=True)


def sample_photos(paths: Sequence[Path], count: int, *, height: int, width: int) -> list[Image.Image]:
    """``count`` RGB images: the given photos in turn (cycled), else synthetic ones of ``height x width``."""
    if paths:
        return [load_rgb(paths[index % len(paths)]) for index in range(count)]
    return [synthetic_photo(height, width, seed=index) for index in range(count)]
