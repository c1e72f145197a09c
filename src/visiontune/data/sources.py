"""Prediction sources shared by the detection tasks: an image, a folder, or a text list of images."""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def collect_images(source: str | Path) -> list[Path]:
    """Expand a prediction source into image files.

    Args:
        source: An image file; a folder (searched recursively, sorted); or a text file listing one image per line
            (e.g. video frames), relative to the text file's folder or absolute (blank lines ignored).

    Raises:
        ValueError: The source does not exist, holds no image, or a listed image is missing (naming the line).
    """
    path = Path(source)
    if not path.exists():
        raise ValueError(f"source not found: {path}")
    if path.is_dir():
        images = sorted(item for item in path.rglob("*") if item.is_file() and item.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {path}")
        return images
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [path]
    images = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        entry = line.strip()
        if not entry:
            continue
        image = Path(entry) if Path(entry).is_absolute() else path.parent / entry
        if not image.is_file():
            raise ValueError(f"{path}:{number}: image not found: {image}")
        images.append(image)
    if not images:
        raise ValueError(f"{path}: lists no images (expected one image path per line)")
    return images
