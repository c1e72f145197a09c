"""Run directories: ``<project>/<task>/<name>``, then ``<name>-2``, ``<name>-3``... never overwriting a run.

Every run folder holds a marker file, :data:`RUN_MARKER`, written when :func:`new_run_dir` creates it: visiontune
writes (``config.yaml``, ``metrics.csv``, evaluation results...) only into folders it created as run folders
(:func:`is_run_dir`), never next to a checkpoint that was copied elsewhere.

Two rules keep what a command reads safe from what it writes:

* :func:`check_output_path`: no command writes over a file it reads (checkpoint, source images, config file,
  dataset), nor into the run folder of another run; every command with an output calls it before writing.
* :class:`RunLock`: one process (one ``torchrun`` job, through its rank 0) trains in a run folder at a time; a second
  training of the same folder (``resume``, ``train.auto_resume``) is refused while the first runs.
"""

from __future__ import annotations

import datetime
import functools
import logging
import os
import re
import socket
import sys
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import yaml

from visiontune.config import ConfigError

if sys.platform != "win32":
    import fcntl

logger = logging.getLogger(__name__)

RUN_MARKER = ".visiontune-run"
"""The file that marks a folder created by :func:`new_run_dir`."""

LEGACY_CONFIG_KEYS = frozenset({"task", "name", "project", "train", "data", "model"})
"""Top-level keys of the ``config.yaml`` that every visiontune version wrote into its run folders."""


class RunDirError(ValueError):
    """A run folder cannot be created (read-only or forbidden project folder); one line naming the folder."""


def check_run_name(name: object, key: str = "name") -> str:
    """``name`` if it is one plain folder name: not empty, no path separator, not ``.`` or ``..``.

    Raises:
        ConfigError: naming ``key``, before anything is written.
    """
    text = str(name) if name is not None else ""
    if not text.strip():
        raise ConfigError(f"{key}: the run name must not be empty (the run folder is <project>/<task>/<name>)")
    if "/" in text or "\\" in text or text in (".", "..") or "\0" in text:
        raise ConfigError(f"{key}: {text!r} is not a plain folder name: no '/', '\\' or '..' (the run folder is "
                          "<project>/<task>/<name>; set project= to put runs elsewhere)")
    return text


def is_run_dir(folder: str | Path) -> bool:
    """Whether ``folder`` is a run folder that visiontune created and may write into.

    True when it holds :data:`RUN_MARKER`, or, for folders written before the marker existed, a ``config.yaml``
    whose top level has the keys of a visiontune config (:data:`LEGACY_CONFIG_KEYS`) together with a
    ``metrics.csv`` whose header starts with ``epoch,step``: both files at once, in visiontune's layout, are what
    every earlier version wrote after its first epoch, and what no other tool writes (PyTorch Lightning's CLI
    writes ``config.yaml`` + ``metrics.csv`` too, but with other keys).
    """
    folder = Path(folder)
    if (folder / RUN_MARKER).is_file():
        return True
    config_file, metrics_file = folder / "config.yaml", folder / "metrics.csv"
    if not (config_file.is_file() and metrics_file.is_file()):
        return False
    try:
        with metrics_file.open(encoding="utf-8") as stream:
            header = stream.readline()
        config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return header.startswith("epoch,step") and isinstance(config, dict) and set(config) >= LEGACY_CONFIG_KEYS


def mark_run_dir(folder: str | Path) -> None:
    """Write :data:`RUN_MARKER` into ``folder`` (a run folder of an older version, adopted on resume)."""
    marker = Path(folder) / RUN_MARKER
    if not marker.exists():
        created = datetime.datetime.now().isoformat(timespec="seconds")
        marker.write_text(f"visiontune run folder, created {created}\n", encoding="utf-8")


def _numbered(base: Path, name: str) -> list[tuple[int, Path]]:
    """The existing runs ``base/name[-N]`` as ``(N, folder)``, in order.

    Raises:
        RunDirError: ``base/name`` has a name over the file system's limit, or ``base`` cannot be read.
    """
    too_long = name_too_long(base / name)
    if too_long:
        raise RunDirError(f"the run folder {base / name}: {too_long}")
    pattern = re.compile(rf"^{re.escape(name)}(?:-(\d+))?$")
    runs = []
    try:
        if base.is_dir():
            for child in base.iterdir():
                match = pattern.match(child.name)
                if match and child.is_dir():
                    runs.append((int(match.group(1) or 1), child))
    except OSError as error:
        raise RunDirError(f"cannot read the folder {base}: {error.strerror or error}") from None
    return sorted(runs)


def new_run_dir(base: str | Path, name: str) -> Path:
    """Create and return a fresh run directory ``base/name`` or ``base/name-N`` (N = highest + 1), marked as a
    run folder (:data:`RUN_MARKER`).

    Raises:
        ConfigError: ``name`` is not a plain folder name (:func:`check_run_name`).
        RunDirError: the folder cannot be created (read-only or forbidden ``base``).
    """
    base = Path(base)
    check_run_name(name)
    runs = _numbered(base, name)
    number = runs[-1][0] + 1 if runs else 1
    while True:
        path = base / (name if number == 1 else f"{name}-{number}")
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError:  # a concurrent run took it
            number += 1
            continue
        except OSError as error:
            raise RunDirError(f"cannot create the run folder {path}: {error.strerror or error}") from None
        try:
            mark_run_dir(path)
        except OSError as error:
            raise RunDirError(f"cannot write to {path / RUN_MARKER}: {error.strerror or error}") from None
        return path


def newest_run_dir(base: str | Path, name: str) -> Path | None:
    """The highest-numbered existing run ``base/name[-N]``, or ``None``.

    Raises:
        RunDirError: a name over the file system's limit, or ``base`` cannot be read.
    """
    runs = _numbered(Path(base), check_run_name(name))
    return runs[-1][1] if runs else None


# ------------------------------------------------------------------ outputs never replace inputs


class OutputPathError(ValueError):
    """An output would replace a file the command reads, write into the folder it reads or into another run's
    folder, or is not the kind of path the command writes; one line naming the output and the path it collides
    with."""


NAME_MAX = 255
"""Longest file or folder name (bytes) of the usual file systems, when the file system does not say."""


def run_folder_of(path: str | Path) -> Path | None:
    """The run folder (:func:`is_run_dir`) that holds ``path`` or is ``path``, the nearest one, resolved; ``None``
    when ``path`` is in no run folder. ``path`` need not exist."""
    path = Path(path).resolve()
    for folder in (path, *path.parents):
        try:
            if folder.is_dir() and is_run_dir(folder):
                return folder
        except OSError:  # a name too long, a folder that cannot be read: no run folder there
            continue
    return None


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _named(key: str, output: Path) -> str:
    """How the message names the output: ``output=preds``, ``-o model.ckpt``, or the bare path (no key)."""
    if not key:
        return str(output)
    return f"{key} {output}" if key.startswith("-") else f"{key}={output}"


def name_too_long(path: str | Path) -> str | None:
    """Why ``path`` cannot be created when one of its names is over the file system's limit (``PC_NAME_MAX`` of
    its nearest existing folder, else :data:`NAME_MAX` bytes); ``None`` when every name fits."""
    path = Path(path)
    existing = next((folder for folder in (path, *path.parents) if os.path.lexists(folder)), Path("/"))
    try:
        limit = os.pathconf(existing if existing.is_dir() else existing.parent, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = NAME_MAX
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > limit:
            return f"the name {part[:24]}... is {size} bytes; the file system allows at most {limit} per file or folder"
    return None


def _check_kind(output: Path, named: str, writes: Literal["file", "folder"], command: str) -> None:
    """``output`` is (or can become) what the command writes: a folder, or a file; no name over the limit."""
    too_long = name_too_long(output)
    if too_long:
        raise OutputPathError(f"{named}: {too_long}")
    if writes == "folder" and output.exists() and not output.is_dir():
        raise OutputPathError(f"{named} is a file: {command} writes its files into a folder; give a folder "
                              "(it is created when missing)")
    if writes == "file" and output.is_dir():
        raise OutputPathError(f"{named} is a folder: {command} writes one file; give its path")


def _check_inputs(output: Path, named: str, command: str, inputs: Mapping[str, str | Path | None],
                  contained: tuple[str, ...]) -> None:
    """``output`` is no input file, is not inside an input folder, and holds none of the ``contained`` inputs."""
    resolved = output.resolve()
    for role, given in inputs.items():
        if given is None or str(given) == "" or not os.path.exists(given):
            continue
        path = Path(given).resolve()
        kind = "folder" if path.is_dir() else "file"
        if resolved == path:
            harm = "write into the folder it reads" if path.is_dir() else "write over the file it reads"
            raise OutputPathError(f"{named} is the {role} {kind} {given}: {command} would {harm}; choose another "
                                  "output")
        if path.is_dir() and _is_within(resolved, path):
            raise OutputPathError(f"{named} is inside the {role} folder {given}: {command} would write into the "
                                  "folder it reads; choose an output outside it")
        if role in contained and _is_within(path, resolved):
            raise OutputPathError(f"{named} holds the {role} {kind} {given}: the files {command} writes there could "
                                  "replace it; choose an output that does not contain it")


def check_output_path(output: str | Path, *, command: str, writes: Literal["file", "folder"], key: str = "output",
                      inputs: Mapping[str, str | Path | None] | None = None, contained: tuple[str, ...] = (),
                      own_run: str | Path | None = None) -> Path:
    """Refuse an output that would destroy what the command reads or what another run wrote; call it before
    writing anything.

    Args:
        output: the file or folder the command writes (a folder: the files go inside it).
        command: the command, named in the message (``predict``).
        writes: ``"file"`` (``output`` is the file written) or ``"folder"`` (written files go inside ``output``).
        key: how the user gave ``output`` (``output``, ``-o``, ``project``; empty: the bare path), named in the
            message.
        inputs: what the command reads, by role (``{"checkpoint": ..., "source": ..., "data.root": ...}``): files
            and folders; ``None`` and paths that do not exist are skipped.
        contained: roles of ``inputs`` that ``output`` must not hold either: the folder of images that ``predict``
            writes its copies of, named like them.
        own_run: the run folder ``output`` may write into (the checkpoint's run); any other run folder
            (:func:`is_run_dir`, at or above ``output``) is refused.

    Returns:
        ``output`` as a ``Path``.

    Raises:
        OutputPathError: ``output`` is an input file, an input folder or inside one, holds a ``contained`` input,
            lies in the run folder of another run, has a name over the file system's limit, or is a file where a
            folder is written (or the reverse).
    """
    output = Path(output)
    named = _named(key, output)
    _check_kind(output, named, writes, command)
    _check_inputs(output, named, command, inputs or {}, contained)
    run = run_folder_of(output)
    own = Path(own_run).resolve() if own_run is not None else None
    if run is not None and run != own:
        owner = f" than {own}" if own is not None else ""
        raise OutputPathError(f"{named} is inside the run folder {run} of another run{owner}: {command} does not "
                              "write into other runs' folders; choose an output outside them")
    return output


# ------------------------------------------------------------------ one training per run folder


RUN_LOCK = ".visiontune-run.lock"
"""The lock file of a run folder: the training that writes the folder holds an advisory lock on it (``flock``)
and keeps its pid, host and start time in it as text."""

OWNER_READ_TRIES = 20
"""How often a refused process re-reads an empty lock file (the owner writes it right after locking), 10 ms apart."""


class RunInUseError(RunDirError):
    """Another process trains in the run folder (it holds :data:`RUN_LOCK`); one line naming it and the folder."""


class RunLock:
    """Ownership of one run folder by this process while it trains there (rank 0 of a ``torchrun`` job claims it
    for the whole job: the other ranks write no run files).

    :meth:`claim` takes an exclusive advisory lock (``fcntl.flock``) on the folder's :data:`RUN_LOCK` before
    anything is written into the folder, or refuses with :class:`RunInUseError`. The lock lasts until
    :meth:`release` (also on leaving ``with lock:``) or the end of the process, however it ends: the operating
    system drops it with the process, so a run killed by SIGKILL resumes at once. Worker processes forked while the
    lock is held (data loaders) close their copy, so they never keep it after the owner died. The file stays in the
    folder between runs; what counts is the lock, not the file. Without ``fcntl`` (Windows) nothing is locked.
    """

    def __init__(self) -> None:
        self.folder: Path | None = None
        """The claimed run folder (``None``: none)."""
        self._descriptor: int | None = None

    def claim(self, folder: str | Path) -> Path:
        """Lock ``folder`` (an existing run folder) for this process and write the owner line; returns ``folder``.

        Raises:
            RunInUseError: another process holds the folder (the message names its pid, host and start time).
            RunDirError: the lock file cannot be created (read-only folder).
        """
        folder = Path(folder)
        if self._descriptor is not None:
            if self.folder == folder:
                return folder
            self.release()
        if sys.platform == "win32":  # pragma: no cover - no flock
            self.folder = folder
            return folder
        path = folder / RUN_LOCK
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as error:
            raise RunDirError(f"cannot create the lock file {path}: {error.strerror or error}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(descriptor)
            os.close(descriptor)
            raise RunInUseError(f"the run folder {folder} is in use by {owner}: another training writes it (it holds "
                                f"{RUN_LOCK}); wait until it ends or stop it, or train under another name=") from None
        except OSError as error:  # a file system without locks (some network mounts): train, unguarded
            logger.warning("cannot lock %s (%s): a second training of this run folder would not be refused", path,
                           error.strerror or error)
        self._descriptor, self.folder = descriptor, folder
        try:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, _owner_line().encode("utf-8"), 0)
        except OSError as error:  # disk full, quota
            self.release()
            raise RunDirError(f"cannot write the lock file {path}: {error.strerror or error}") from None
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=functools.partial(_drop_in_child, weakref.ref(self)))
        return folder

    def release(self) -> None:
        """Give the folder up (nothing happens when none is claimed)."""
        descriptor, self._descriptor, self.folder = self._descriptor, None, None
        if descriptor is not None:
            os.close(descriptor)  # closing the last descriptor of the lock's open file releases the lock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _owner_line() -> str:
    since = datetime.datetime.now().astimezone().isoformat(sep=" ", timespec="seconds")
    return f"pid {os.getpid()} on host {socket.gethostname()} since {since}\n"


def _read_owner(descriptor: int) -> str:
    """The owner line of a held lock file (the owner writes it right after locking: wait a moment for it)."""
    for _ in range(OWNER_READ_TRIES):
        text = os.pread(descriptor, 1024, 0).decode("utf-8", errors="replace").strip()
        if text:
            return text
        time.sleep(0.01)
    return "another process (it has not written its pid yet)"


def _drop_in_child(reference: weakref.ref[RunLock]) -> None:
    """In a forked child: close the inherited descriptor (the parent keeps the lock; the child must not outlive
    the parent holding it)."""
    lock = reference()
    if lock is not None and lock._descriptor is not None:
        os.close(lock._descriptor)
        lock._descriptor, lock.folder = None, None
