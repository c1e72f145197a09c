"""Where prediction files go: one output name per input image, mirroring the source folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

__all__ = ["output_names"]


def output_names(images: Sequence[Path], source: Path) -> list[PurePosixPath]:
    """Relative output name per image, with its suffix: relative to the source folder, else the file name.

    Callers replace the suffix by their own (``.json``, ``.png``), so two images that differ only in their suffix
    (``a.jpg``, ``a.png``) would overwrite each other's files: that is an error.

    Raises:
        ValueError: two images share a name without suffix.
    """
    base = source if source.is_dir() else source.parent
    names = []
    for image in images:
        try:
            names.append(PurePosixPath(image.resolve().relative_to(base.resolve()).as_posix()))
        except ValueError:
            names.append(PurePosixPath(image.name))
    owners: dict[PurePosixPath, Path] = {}
    for name, image in zip(names, images):
        stem = name.with_suffix("")
        if stem in owners:
            raise ValueError(f"{owners[stem]} and {image} would both be written as {stem}.*; predict them separately")
        owners[stem] = image
    return names
