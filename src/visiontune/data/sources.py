"""Prediction sources shared by the tasks: an image, a folder, or a text list of images."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from visiontune.data.validation import SkippedFiles, file_kind, file_problem, read_utf8_text

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def list_image_files(folder: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The regular files under ``folder`` (recursively, sorted) whose extension is in ``suffixes``.

    Hidden entries are ignored. Files with another extension and entries that are not regular files (a named pipe
    called ``a.jpg`` would block ``open()``) are left out and named in one warning line per reason.
    """
    images: list[Path] = []
    skipped = SkippedFiles()
    for path in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts) or path.is_dir():
            continue
        if path.suffix.lower() not in suffixes:
            skipped.add(f"with an extension other than {', '.join(suffixes)}", path)
        elif (kind := file_kind(path)) is not None:
            skipped.add(f"that are {kind}, not regular files", path)
        else:
            images.append(path)
    skipped.warn(logger, str(folder))
    return images


def collect_images(source: str | Path) -> list[Path]:
    """Expand a prediction source into image files.

    Args:
        source: An image file; a folder (searched recursively, sorted; other files are named in a warning, see
            :func:`list_image_files`); or a text file listing one image per line (e.g. video frames), relative to
            the text file's folder or absolute (blank lines ignored).

    Raises:
        ValueError: The source does not exist, holds no image, is not a regular file, or a listed image is missing
            or not a regular file (naming the line).
    """
    path = Path(source)
    if not path.exists():
        raise ValueError(f"source not found: {path}")
    if path.is_dir():
        images = list_image_files(path)
        if not images:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {path}")
        return images
    problem = file_problem(path, "source")
    if problem is not None:
        raise ValueError(problem)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [path]
    images = []
    for number, line in enumerate(read_utf8_text(path, "image list").splitlines(), start=1):
        entry = line.strip()
        if not entry:
            continue
        image = Path(entry) if Path(entry).is_absolute() else path.parent / entry
        problem = file_problem(image)
        if problem is not None:
            raise ValueError(f"{path}:{number}: {problem}")
        images.append(image)
    if not images:
        raise ValueError(f"{path}: lists no images (expected one image path per line)")
    return images
