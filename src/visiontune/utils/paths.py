"""Where prediction files go: one output name per input image, mirroring the source folder, never outside it.

:func:`output_names` names the images of a folder or list source; :func:`safe_output_names` is the one way a
file name taken from user data (an image's path, a COCO ``file_name``, a WIDER image path) becomes a path under an
output folder: it flattens names that would leave the folder and refuses symbolic links that lead out of it.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path, PurePath, PurePosixPath

__all__ = ["flatten_name", "output_names", "relative_posix", "safe_output_names"]

logger = logging.getLogger(__name__)

_DRIVE = re.compile(r"^(?:[A-Za-z]:)+")
"""Windows drive prefixes of a component (``C:``, also ``C:name``, drive-relative)."""


def relative_posix(path: str | PurePath, root: str | PurePath | None) -> str:
    """``path`` relative to ``root`` (``/``-separated; both made absolute first) when inside it, else as given:
    how messages name a file of a dataset (relative to ``data.root``)."""
    if root is not None:
        try:
            return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
        except ValueError:
            pass
    return str(path)


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


def flatten_name(name: str | PurePath) -> tuple[PurePosixPath | None, bool]:
    """``name`` as a relative ``/``-separated path that cannot leave the folder it is joined to.

    Backslashes count as separators (a Windows path); a drive (``C:``, at the start of any component), a root or UNC
    prefix and every ``.``, ``..`` and empty component are dropped: ``../../escape/v.jpg`` -> ``escape/v.jpg``,
    ``/home/me/v.jpg`` -> ``home/me/v.jpg``, ``C:\\x\\v.jpg`` -> ``x/v.jpg``, ``\\\\host\\share\\v.jpg`` ->
    ``host/share/v.jpg``.

    Returns:
        The flattened name (None when nothing is left, e.g. ``..``) and whether anything that leads out of the folder
        was dropped (a ``..``, a root, a drive or a backslash; dropping ``./`` or ``//`` inside a name is not
        counted).
    """
    text = str(name)
    escaping = "\\" in text or text.startswith("/")
    parts = []
    for part in text.replace("\\", "/").split("/"):
        escaping = escaping or bool(_DRIVE.match(part))
        part = _DRIVE.sub("", part)
        if part not in ("", "."):
            parts.append(part)
    escaping = escaping or ".." in parts
    kept = [part for part in parts if part != ".."]
    return (PurePosixPath(*kept) if kept else None), escaping


def safe_output_names(output_dir: str | Path, names: Sequence[str | PurePath], *, source: object,
                      suffixes: Sequence[str] = ("",), folder: str = "", flat: bool = False) -> list[PurePosixPath]:
    """The name under ``output_dir`` of the files of each user-derived image name; the caller writes
    ``output_dir / f"{name}{suffix}"`` for its ``suffixes``.

    Each name is flattened by :func:`flatten_name` (or reduced to its last component with ``flat``), loses its
    suffix (``sub/a.jpg`` -> ``sub/a``, the caller adds its own) and is put under ``folder``. Renamed names are
    said in one warning line per call, naming ``source``, the first renamed input and the file written for it.
    Nothing is written or created.

    Args:
        output_dir: The folder every file must stay in (need not exist yet).
        names: User-derived names with their image suffix: an image path relative to the source folder, a COCO
            ``file_name``, a WIDER ``# <image path>``.
        source: The input the names come from (named in the warning and errors).
        suffixes: What the caller appends to each name (``.json``, ``.png``): each such file is checked.
        folder: A fixed sub-folder of the caller (``overlays``), not user data.
        flat: Keep only the last component (a flat folder of overlays).

    Returns:
        One relative ``/``-separated name per input, in order, without suffix.

    Raises:
        ValueError: a name has nothing left once flattened (``..``), two names give one output name (they would
            overwrite each other's files), or a folder or file on the way under ``output_dir`` is a symbolic link
            leading outside it.
    """
    result: list[PurePosixPath] = []
    owners: dict[PurePosixPath, str | PurePath] = {}
    renamed: list[tuple[str | PurePath, PurePosixPath]] = []
    for name in names:
        flattened, escaping = flatten_name(name)
        if flattened is None:
            raise ValueError(f"{source}: image name {str(name)!r} leaves no file name once its '..', root and drive "
                             "parts are dropped")
        stem = PurePosixPath(folder, flattened.name if flat else flattened).with_suffix("")
        if stem in owners:
            raise ValueError(f"{source}: images {str(owners[stem])!r} and {str(name)!r} would both be written as "
                             f"{stem}.* in {output_dir}; rename one or predict them separately")
        owners[stem] = name
        if escaping:
            renamed.append((name, stem))
        result.append(stem)
    _refuse_links_out(Path(output_dir), result, suffixes)
    if renamed:
        first, stem = renamed[0]
        others = f" (and {len(renamed) - 1} more)" if len(renamed) > 1 else ""
        logger.warning("%s: image name %r leads out of the output folder %s; writing its files as %s%s inside it%s",
                       source, str(first), output_dir, stem, suffixes[0] if suffixes else "", others)
    return result


def _refuse_links_out(output_dir: Path, names: Sequence[PurePosixPath], suffixes: Sequence[str]) -> None:
    """Raise ``ValueError`` when a folder or file ``output_dir / f"{name}{suffix}"`` would reach through a symbolic
    link leading outside ``output_dir`` (links that stay inside are followed). Files are looked at only in folders
    that exist."""
    base, root = os.fspath(output_dir), os.path.realpath(output_dir)
    folders = {PurePosixPath("."): os.path.isdir(base)}  # checked folder -> whether it exists
    for name in names:
        for parent in reversed(name.parents):
            if parent not in folders:
                folders[parent] = folders[parent.parent] and _refuse_link(os.path.join(base, str(parent)), root,
                                                                          output_dir)
        if folders[name.parent]:
            stem = os.path.join(base, str(name))
            for suffix in suffixes:
                _refuse_link(stem + suffix, root, output_dir)


def _refuse_link(path: str, root: str, output_dir: Path) -> bool:
    """Raise ``ValueError`` when ``path`` is a symbolic link whose target is outside ``root`` (a real path); return
    whether ``path`` exists (as a link or not)."""
    try:
        is_link = stat.S_ISLNK(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):  # a file where a folder is wanted: the write says so
        return False
    if is_link:
        target = os.path.realpath(path)
        if target != root and not target.startswith(root.rstrip(os.sep) + os.sep):
            raise ValueError(f"{path} is a symbolic link to {target}, outside the output folder {output_dir}: "
                             "remove the link or choose another output folder")
    return True
