"""Atomic file writes: the one way visiontune writes a file that must never be seen half written.

Every writer here works the same way: the content goes to a temporary file ``.<name>.<8 hex>.tmp`` (see
:func:`temp_name`) beside the target, created exclusively with mode 0666 less the process umask like any other
file, is flushed to disk (``fsync``), then renamed over the target (``os.replace``), and the folder is synced so the
rename itself survives a crash. Readers see the old file or the new one, never a partial one.

A failed write (disk full, quota exceeded, read-only or forbidden folder) raises a :class:`FileWriteError` of one
line naming the file (a ``ValueError``: the command line prints it as one line), keeps the previous file and removes
the temporary file. Any other error of the writer (a bug, ``KeyboardInterrupt``) propagates unchanged, also after
removing the temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "TEMP_FILE_PATTERN",
    "FileWriteError",
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "open_temp_file",
    "temp_files_of",
    "temp_name",
    "write_error",
]

TEMP_FILE_PATTERN = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
"""Names of the temporary files of these writers (``.last.pt.1a2b3c4d.tmp``); ``name`` is the target's name.
(The 8 characters also match those of :func:`tempfile.mkstemp`, which older versions used.)"""

_SHORT_WRITE_MARKERS = ("unexpected pos", "PytorchStreamWriter failed writing")
"""What ``torch.save`` says when the disk filled up (it writes through C++, without ``errno``)."""

class FileWriteError(ValueError):
    """A file could not be written: disk full, quota exceeded, read-only or forbidden folder.

    The message is one line naming the file; the previous version of the file is kept.
    """


def temp_name(path: str | os.PathLike[str]) -> Path:
    """A fresh temporary name beside ``path``: ``.<name>.<8 random hex digits>.tmp`` (hidden, never ``*.npy`` etc.).

    Args:
        path: The file that the temporary file will replace.

    Returns:
        The temporary path (not created).
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def open_temp_file(path: str | os.PathLike[str]) -> tuple[int, Path]:
    """Create a temporary file for ``path`` (:func:`temp_name`) exclusively, with mode 0666 less the process umask.

    Args:
        path: The file that the temporary file will replace; its folder must exist.

    Returns:
        The open file descriptor (write-only, binary; the caller closes it) and the temporary path.

    Raises:
        OSError: the folder cannot be written.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    while True:
        temp = temp_name(path)
        try:
            return os.open(temp, flags, 0o666), temp
        except FileExistsError:  # pragma: no cover - 2**32 names
            continue


def temp_files_of(path: str | os.PathLike[str]) -> list[Path]:
    """The temporary files that interrupted writes of ``path`` left beside it (see :data:`TEMP_FILE_PATTERN`).

    Only remove them where this process alone writes ``path``: another process may be writing one of them.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(child for child in path.parent.glob(f".{path.name}.*.tmp")
                  if (found := TEMP_FILE_PATTERN.match(child.name)) and found["name"] == path.name)


def write_error(error: BaseException, path: str | os.PathLike[str],
                error_type: type[FileWriteError] = FileWriteError) -> FileWriteError | None:
    """The one-line ``error_type`` for a failed write of ``path``.

    Args:
        error: What the write raised.
        path: The file being written (named in the message).
        error_type: The :class:`FileWriteError` subclass to build.

    Returns:
        The error to raise instead, or ``None`` when ``error`` is not a write failure (then it propagates as it is).
    """
    if isinstance(error, OSError):
        if error.errno == errno.ENOSPC:
            return error_type(f"no space left on device while writing {path}")
        if error.errno == getattr(errno, "EDQUOT", None):
            return error_type(f"disk quota exceeded while writing {path}")
        return error_type(f"cannot write to {path}: {error.strerror or error}")
    if isinstance(error, RuntimeError) and any(marker in str(error) for marker in _SHORT_WRITE_MARKERS):
        return error_type(f"no space left on device while writing {path}")
    return None


def _discard(temp: Path | None) -> None:
    """Remove a temporary file, quietly (the original error matters more)."""
    if temp is not None:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)


def _raise_one_line(error: BaseException, path: Path, error_type: type[FileWriteError]) -> None:
    """Raise the one-line ``error_type`` for ``error`` if it is a write failure; return otherwise."""
    one_line = write_error(error, path, error_type) if isinstance(error, Exception) else None
    if one_line is not None:
        raise one_line from error


def _fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable (not possible everywhere, e.g. on Windows: then skipped)."""
    try:
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError:
        pass


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object], *,
                 error_type: type[FileWriteError] = FileWriteError) -> Path:
    """Call ``write(stream)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    Args:
        path: The file to write; its folder is created if needed.
        write: Writes the whole content to the binary stream it is given (``torch.save``, a serializer, ...).
        error_type: The :class:`FileWriteError` subclass raised for a failed write.

    Returns:
        ``path``.

    Raises:
        FileWriteError: (``error_type``) the disk is full, or the folder cannot be written (one line naming
            ``path``); the previous file is kept and the temporary file removed. Other errors of ``write``
            propagate unchanged, also after removing the temporary file.
    """
    path = Path(path)
    try:
        with atomic_path(path, error_type=error_type) as temp, \
                os.fdopen(os.open(temp, os.O_WRONLY | getattr(os, "O_BINARY", 0)), "wb") as stream:
            write(stream)
    except FileWriteError:
        raise
    except BaseException as error:  # a failure of ``write`` itself (disk full while writing)
        _raise_one_line(error, path, error_type)
        raise
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *,
                error_type: type[FileWriteError] = FileWriteError) -> Iterator[Path]:
    """A temporary file for a writer that needs a file name rather than a stream (``np.lib.format.open_memmap``).

    Yields the path of a new, empty temporary file beside ``path`` (:func:`temp_name`). When the block ends
    normally the file (which the block must have closed) is fsynced and renamed over ``path``; when it raises, or
    is interrupted, the temporary file is removed and ``path`` is left as it was::

        with atomic_path(cache / "train.npy") as temporary:
            array = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=shape)
            ...

    Args:
        path: The file to write; its folder is created if needed.
        error_type: The :class:`FileWriteError` subclass raised for a failed creation or rename.

    Raises:
        FileWriteError: (``error_type``) the temporary file cannot be created, synced or renamed (one line naming
            ``path``). Errors raised inside the block propagate unchanged.
    """
    path = Path(path)
    temp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = open_temp_file(path)
        os.close(handle)
    except BaseException as error:
        _discard(temp)
        _raise_one_line(error, path, error_type)
        raise
    try:
        yield temp
    except BaseException:
        _discard(temp)
        raise
    try:
        with temp.open("r+b") as stream:  # written through another handle (a memory map): sync what it wrote
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException as error:
        _discard(temp)
        _raise_one_line(error, path, error_type)
        raise
    _fsync_directory(path.parent)


def atomic_write_bytes(data: bytes, path: str | os.PathLike[str], *,
                       error_type: type[FileWriteError] = FileWriteError) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`); returns ``path``.

    Raises:
        FileWriteError: (``error_type``) the file cannot be written; the previous file is kept.
    """
    return atomic_write(path, lambda stream: stream.write(data), error_type=error_type)


def atomic_write_text(text: str, path: str | os.PathLike[str], *,
                      error_type: type[FileWriteError] = FileWriteError) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically (:func:`atomic_write`); returns ``path``.

    Raises:
        FileWriteError: (``error_type``) the file cannot be written; the previous file is kept.
    """
    return atomic_write_bytes(text.encode("utf-8"), path, error_type=error_type)


def atomic_write_json(obj: Any, path: str | os.PathLike[str], *, indent: int | None = 2,
                      error_type: type[FileWriteError] = FileWriteError) -> Path:
    """Write ``json.dumps(obj, indent=indent)`` and a newline to ``path`` atomically; returns ``path``.

    Args:
        obj: A JSON-serializable value.
        path: The file to write.
        indent: Passed to :func:`json.dumps` (``None``: one compact line).
        error_type: The :class:`FileWriteError` subclass raised for a failed write.

    Raises:
        TypeError: ``obj`` is not JSON-serializable (nothing is written).
        FileWriteError: (``error_type``) the file cannot be written; the previous file is kept.
    """
    return atomic_write_text(json.dumps(obj, indent=indent) + "\n", path, error_type=error_type)
