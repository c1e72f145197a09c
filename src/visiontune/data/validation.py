"""Checks shared by the data readers before a file is opened or a value trusted.

* :func:`file_kind` / :func:`file_problem`: only regular files are opened (a named pipe called ``a.jpg`` would block
  ``open()`` forever; a socket or device fails in odd ways).
* :class:`SkippedFiles`: files a folder scan leaves out, named in one warning line per reason (count + examples).
* :func:`read_utf8_text`: an annotation file as text (an optional UTF-8 byte-order mark is accepted); invalid UTF-8 is
  an error naming the file and line.
* :func:`fits_float32`: a number that stays finite once stored as float32 (``1e39`` does not).
* :func:`is_json_int` / :func:`is_json_number`: a JSON value that is an int / a float32-finite number (``true`` is
  neither).
* :func:`repeated_names`: names (file names, category names) used by more than one id.
* :func:`orientation_note`: one line naming the images that carry an EXIF orientation; :func:`upright_note` the
  fragment a size message adds for one such image.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

FLOAT32_MAX: float = float(np.finfo(np.float32).max)
"""Largest finite float32 (about 3.4e38): larger numbers become ``inf`` in a float32 tensor."""

_EXAMPLES = 3  # example paths named per warning line

_KINDS: tuple[tuple[int, str], ...] = (
    (stat.S_IFIFO, "a named pipe"),
    (stat.S_IFSOCK, "a socket"),
    (stat.S_IFCHR, "a character device"),
    (stat.S_IFBLK, "a block device"),
    (stat.S_IFDIR, "a directory"),
)


def file_kind(path: str | os.PathLike[str]) -> str | None:
    """What ``path`` is when it is not a regular file (links followed); ``None`` for a regular file.

    Never opens ``path``: a ``stat`` does not block on a named pipe.

    Returns:
        ``None``, or ``"missing"``, ``"a broken link"``, ``"a named pipe"``, ``"a socket"``, ``"a character device"``,
        ``"a block device"``, ``"a directory"`` or ``"unreadable (<reason>)"``.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken link" if os.path.islink(path) else "missing"
    except OSError as error:
        return f"unreadable ({error.strerror or error})"
    if stat.S_ISREG(mode):
        return None
    return next((name for kind, name in _KINDS if stat.S_IFMT(mode) == kind), "not a regular file")


def file_problem(path: str | os.PathLike[str], what: str = "image") -> str | None:
    """``None`` for a regular file, else ``"<what> not found: <path>"`` or ``"<what> is a named pipe, not a regular
    file: <path>"`` (see :func:`file_kind`)."""
    kind = file_kind(path)
    if kind is None:
        return None
    if kind == "missing":
        return f"{what} not found: {path}"
    return f"{what} is {kind}, not a regular file: {path}"


@dataclass
class SkippedFiles:
    """Files a folder scan left out, by reason (e.g. ``"with an unsupported extension"``), in scan order."""

    by_reason: dict[str, list[Path]] = field(default_factory=dict)

    def add(self, reason: str, path: Path) -> None:
        self.by_reason.setdefault(reason, []).append(path)

    def __len__(self) -> int:
        return sum(len(paths) for paths in self.by_reason.values())

    def lines(self, origin: str) -> list[str]:
        """One line per reason: ``"<origin>: skipped 2 file(s) <reason>, e.g. a.gif, b.gif"``."""
        lines = []
        for reason, paths in self.by_reason.items():
            examples = ", ".join(str(path) for path in paths[:_EXAMPLES])
            more = f" (+{len(paths) - _EXAMPLES} more)" if len(paths) > _EXAMPLES else ""
            lines.append(f"{origin}: skipped {len(paths)} file(s) {reason}, e.g. {examples}{more}")
        return lines

    def warn(self, logger: logging.Logger, origin: str) -> None:
        """Log :meth:`lines` as warnings."""
        for line in self.lines(origin):
            logger.warning("%s", line)


class TextFileError(ValueError):
    """A text file that is not valid UTF-8; the message starts with ``file:line:``.

    Attributes:
        path: The file.
        line_number: 1-based line of the first invalid byte.
        reason: The message without the ``file:line:`` prefix.
    """

    def __init__(self, path: Path, line_number: int, reason: str) -> None:
        super().__init__(f"{path}:{line_number}: {reason}")
        self.path = path
        self.line_number = line_number
        self.reason = reason


def read_utf8_text(path: str | os.PathLike[str], what: str = "annotation file", *,
                   missing: type[Exception] = FileNotFoundError) -> str:
    """The text of ``path`` decoded as UTF-8, without a leading byte-order mark.

    Args:
        path: The text file.
        what: Names the file in messages (``"annotation file not found: <path>"``).
        missing: The error raised when ``path`` does not exist.

    Raises:
        FileNotFoundError: ``path`` does not exist (or ``missing``); the message names ``what``.
        ValueError: ``path`` is not a regular file (a named pipe would block the read).
        TextFileError: invalid UTF-8, naming the line and column of the first bad byte.
    """
    path = Path(path)
    kind = file_kind(path)
    if kind == "missing":
        raise missing(f"{what} not found: {path}")
    if kind is not None:
        raise ValueError(f"{what} is {kind}, not a regular file: {path}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line_start = data.rfind(b"\n", 0, error.start) + 1
        line_number = data.count(b"\n", 0, error.start) + 1
        raise TextFileError(path, line_number, f"not UTF-8 text: byte 0x{data[error.start]:02x} at column "
                                               f"{error.start - line_start + 1} ({error.reason}); save the file as "
                                               "UTF-8") from None


def fits_float32(value: float) -> bool:
    """Whether ``value`` is finite and stays finite as float32 (``abs(value) <= 3.4e38``)."""
    return bool(np.isfinite(value)) and abs(value) <= FLOAT32_MAX


def is_json_int(value: Any) -> TypeGuard[int]:
    """Whether a decoded JSON value is an int (``True``/``False`` are not, though Python counts them as ints)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_json_number(value: Any) -> bool:
    """Whether a decoded JSON value is an int or float (not a bool) that stays finite as float32 (``1e39`` does not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and fits_float32(value)


def repeated_names(entries: Iterable[tuple[int, str]]) -> dict[str, list[int]]:
    """``name -> ids`` (in entry order) of the names that more than one ``(id, name)`` entry uses."""
    ids_by_name: dict[str, list[int]] = {}
    for entry_id, name in entries:
        ids_by_name.setdefault(name, []).append(entry_id)
    return {name: ids for name, ids in ids_by_name.items() if len(ids) > 1}


def orientation_note(orientations: dict[Path, int], *, limit: int = 3) -> str | None:
    """One line naming the images with an EXIF orientation tag other than 1 (count and examples), or ``None``.

    Args:
        orientations: Image path -> EXIF orientation (2-8), as
            :func:`visiontune.data.image_check.scan_images` fills it.
        limit: Example paths named.
    """
    if not orientations:
        return None
    examples = ", ".join(f"{path} (orientation {value})" for path, value in list(orientations.items())[:limit])
    more = f" (+{len(orientations) - limit} more)" if len(orientations) > limit else ""
    return (f"{len(orientations)} image(s) carry an EXIF orientation and are turned upright when loaded (in "
            f"training, evaluation and prediction alike), e.g. {examples}{more}")


def upright_note(orientation: int) -> str:
    """``", upright by its EXIF orientation 6"`` for a size message, or ``""`` for an upright file (orientation 1)."""
    return f", upright by its EXIF orientation {orientation}" if orientation != 1 else ""
