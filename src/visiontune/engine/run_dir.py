"""Run directories: ``<project>/<task>/<name>``, then ``<name>-2``, ``<name>-3``... never overwriting a run.

Every run folder holds a marker file, :data:`RUN_MARKER`, written when :func:`new_run_dir` creates it: visiontune
writes (``config.yaml``, ``metrics.csv``, evaluation results...) only into folders it created as run folders
(:func:`is_run_dir`), never next to a checkpoint that was copied elsewhere.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import yaml

from visiontune.config import ConfigError

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
    pattern = re.compile(rf"^{re.escape(name)}(?:-(\d+))?$")
    runs = []
    if base.is_dir():
        for child in base.iterdir():
            match = pattern.match(child.name)
            if match and child.is_dir():
                runs.append((int(match.group(1) or 1), child))
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
    """The highest-numbered existing run ``base/name[-N]``, or ``None``."""
    runs = _numbered(Path(base), check_run_name(name))
    return runs[-1][1] if runs else None
