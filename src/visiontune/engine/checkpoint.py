"""Plain-dict checkpoints, written atomically and loaded safely.

A visiontune checkpoint is a dict with ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``ema``,
``epoch``, ``step``, ``config``, ``version`` (of visiontune), ``format_version`` (of this layout,
:data:`CHECKPOINT_FORMAT_VERSION`; 1 when absent), ``meta`` (class names, ...), ``best_metric``, ``rng`` and
``history``. It only holds tensors and plain Python containers, so ``torch.load(weights_only=True)``
reads it.

Every checkpoint written by :func:`atomic_save` also holds ``checksums``: the SHA-256 of every tensor (its dtype,
shape and bytes) and of the other entries, which :func:`load_checkpoint` verifies, so that a file corrupted on disk
or in transfer is refused with the file and the tensor named instead of loading wrong weights (the zip container
that ``torch.save`` writes is not checked by ``torch.load``). Files without ``checksums`` (written before) load
unchecked.

Writes go through :mod:`visiontune.utils.files`: a temporary file ``.<name>.<8 characters>.tmp`` in the target
folder, created with the process umask like any other file, then renamed over the target: a failed write (disk
full, read-only folder) raises a :class:`CheckpointWriteError` of one line and keeps the previous file.
:func:`remove_stale_temp_files` deletes the temporary files that a killed process left behind.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from visiontune.config import Config
from visiontune.utils import files
from visiontune.utils.checksums import CHECKSUM_KEY, ChecksumError, add_checksums, verify_checksums
from visiontune.utils.files import FileWriteError

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT_VERSION = 1
"""Version of the checkpoint layout written as ``format_version``; :func:`load_checkpoint` refuses newer ones."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a visiontune checkpoint."""


class CheckpointWriteError(CheckpointError, FileWriteError):
    """A checkpoint (or another run file) could not be written: disk full, read-only or forbidden folder.

    The message is one line naming the file; the previous version of the file is kept."""


TEMP_FILE_PATTERN = re.compile(r"^\.(?:.+\.pt|metrics\.csv)\.[a-z0-9_]{8}\.tmp$")
"""Names of the temporary files of :func:`atomic_save` / :func:`atomic_write_text` (``.last.pt.1a2b3c4d.tmp``;
older versions used :func:`tempfile.mkstemp`, whose 8 characters also match)."""


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(stream)`` on a temporary file beside ``path``, fsync, rename over ``path``
    (:func:`visiontune.utils.files.atomic_write`), raising :class:`CheckpointWriteError` for a failed write."""
    return files.atomic_write(path, write, error_type=CheckpointWriteError)


def detached_copy(obj: Any) -> Any:
    """A copy of a checkpoint dict whose tensors are CPU copies (the model can go on training while it waits to be
    written); other values are copied as containers, leaves shared."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, Mapping):
        return {key: detached_copy(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(detached_copy(value) for value in obj)
    return obj


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash while writing leaves the previous file intact; readers never see a partial file. A dict gets a
    ``checksums`` entry (:func:`add_checksums`) that :func:`load_checkpoint` verifies. The file's mode is 0666 less
    the process umask, like every other file of the run.

    Raises:
        CheckpointWriteError: the disk is full, or the folder cannot be written (one line naming ``path``); the
            previous file is kept and the temporary file removed.
    """
    if isinstance(obj, Mapping):
        obj = add_checksums(obj)
    return atomic_write(path, lambda stream: torch.save(obj, stream))


def atomic_write_text(text: str, path: str | Path) -> Path:
    """Write ``text`` (UTF-8) to ``path`` like :func:`atomic_save`: the old file stays until the new one is
    complete."""
    return files.atomic_write_text(text, path, error_type=CheckpointWriteError)


def remove_stale_temp_files(folder: str | Path) -> tuple[int, int]:
    """Delete the temporary files of interrupted writes (a process killed while saving) in ``folder`` only.

    Call it where this process alone writes (rank 0 of the run, before training). Returns ``(files, bytes)``.
    """
    count = freed = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0, 0
    for child in folder.iterdir():
        if not TEMP_FILE_PATTERN.match(child.name) or not child.is_file():
            continue
        try:
            size = child.stat().st_size
            child.unlink()
        except OSError as error:
            logger.warning("could not remove the stale temporary file %s: %s", child, error)
            continue
        count, freed = count + 1, freed + size
    return count, freed


PLAIN_WEIGHTS_HINT = "to initialise a model from plain weights use model.checkpoint=..."
"""What :func:`load_checkpoint` tells a user who gave plain weights (a caller may say what fits its command)."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    plain_weights_hint: str = PLAIN_WEIGHTS_HINT) -> dict[str, Any]:
    """Load a visiontune checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: the file is missing, corrupt (also: a tensor differs from its stored SHA-256,
            :func:`verify_checksums`), not a visiontune checkpoint (an ONNX model, a file holding pickled Python
            objects, ...: one line saying what it is), or its weights (``model``, ``ema``) hold NaN or infinite
            values (:func:`~visiontune.models.loading.check_finite`).
    """
    from visiontune.models.loading import WeightValuesError, check_finite, describe_torch_load_failure

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a broken file
        what = describe_torch_load_failure(path, error)
        if not what.startswith("a damaged"):
            what += ", not a visiontune checkpoint (expected the last.pt / best.pt of a visiontune run)"
        hint = "; visiontune predict runs it: checkpoint=<model>.onnx" if what.startswith("an ONNX model") else ""
        raise CheckpointError(f"cannot read checkpoint {path}: it is {what}{hint}") from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "config" not in checkpoint:
        keys = list(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"{path} is not a visiontune checkpoint (expected a dict with 'model' and 'config', found {keys}); "
            f"{plain_weights_hint}"
        )
    check_format_version(checkpoint, path)
    try:
        verify_checksums(checkpoint, path)
    except ChecksumError as error:
        raise CheckpointError(str(error)) from None
    checkpoint.pop(CHECKSUM_KEY, None)  # verified; a caller that saves the dict again gets fresh ones
    for key in ("model", "ema"):
        if isinstance(checkpoint.get(key), Mapping):
            try:
                check_finite({name: value for name, value in checkpoint[key].items()
                              if isinstance(value, torch.Tensor)}, source=f"{path} ({key})")
            except WeightValuesError as error:
                raise CheckpointError(str(error)) from None
    return checkpoint


def check_format_version(checkpoint: dict[str, Any], path: str | Path) -> int:
    """The checkpoint's ``format_version`` (1 when missing: written before the field existed).

    Raises:
        CheckpointError: a newer layout than this visiontune reads, or not a version number.
    """
    found = checkpoint.get("format_version", 1)
    if isinstance(found, bool) or not isinstance(found, int):
        raise CheckpointError(f"{path}: checkpoint format_version {found!r} is not a version number")
    if found > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {found}, but this visiontune supports version "
            f"{CHECKPOINT_FORMAT_VERSION} at most: upgrade visiontune to read it")
    return found


def capture_rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), NumPy and ``random``, as weights_only-loadable values."""
    numpy_state: Any = np.random.get_state()  # the legacy tuple (name, keys, pos, has_gauss, cached_gaussian)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": numpy_state[0],
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((
        numpy_state["name"],
        numpy_state["keys"].numpy().astype(np.uint32),
        numpy_state["pos"],
        numpy_state["has_gauss"],
        numpy_state["cached_gaussian"],
    ))
    random.setstate(_python_state_from_plain(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_plain(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_plain(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def checkpoint_recency(path: Path) -> tuple[int, int, int]:
    """Sort key of a run's checkpoints, larger = newer: modification time, then the name.

    File-system clocks are coarse (a few milliseconds), so checkpoints written in quick succession can share a
    modification time; then ``last.pt`` (an epoch's checkpoint is written after the step checkpoint of the same
    step) beats ``step_N.pt``, and a higher ``N`` beats a lower one.
    """
    step = -1
    if path.stem.startswith("step_") and path.stem[len("step_"):].isdigit():
        step = int(path.stem[len("step_"):])
    return path.stat().st_mtime_ns, int(path.name == "last.pt"), step


def find_valid_checkpoint(candidates: list[Path]) -> Path | None:
    """Return the newest loadable checkpoint among ``candidates`` (:func:`checkpoint_recency`), skipping corrupt
    ones with a warning."""
    for path in sorted(candidates, key=checkpoint_recency, reverse=True):
        try:
            load_checkpoint(path)
        except CheckpointError as error:
            logger.warning("skipping unusable checkpoint %s: %s", path, error)
            continue
        return path
    return None


def check_checkpoint_task(stored_task: str, asked: str, path: str | Path | None, *, preset: str | None = None) -> None:
    """Refuse to run the weights of a ``stored_task`` checkpoint as task ``asked``.

    Raises:
        CheckpointError: one line naming the checkpoint, its task and the one asked for (and the ``preset`` file
            that may have asked for it).
    """
    if asked != stored_task:
        where = f" (by -c {preset} or task=)" if preset else ""
        raise CheckpointError(
            f"task mismatch: {path or 'the checkpoint'} holds a {stored_task} model, but task={asked} was asked for"
            f"{where}; a checkpoint runs as the task it was trained for: leave out the task (or the config) of "
            f"another task, or give a {asked} checkpoint")


def merge_checkpoint_config(stored: Config, requested: Config, path: str | Path | None = None) -> Config:
    """``requested`` (the ``-c`` file and the overrides of ``eval`` / ``predict``) with the task and the ``model``
    section of the checkpoint's config ``stored``: they describe the stored weights.

    The ``model.*`` keys that ``requested`` sets (:attr:`~visiontune.config.Config.set_keys`) to other values than the
    checkpoint's are ignored with one warning naming them (``model.checkpoint`` naming ``path`` itself is the
    checkpoint, not a setting).

    Raises:
        CheckpointError: ``requested`` sets another task (:func:`check_checkpoint_task`).
    """
    given = set(requested.set_keys or ())
    if "task" in given:
        check_checkpoint_task(stored.task, requested.task, path, preset=requested.preset_file)
    ignored = []
    for key in sorted(name for name in given if name.startswith("model.")):
        field = key.removeprefix("model.")
        value, kept = getattr(requested.model, field), getattr(stored.model, field)
        if value != kept and not (field == "checkpoint" and path is not None and str(value) == str(path)):
            ignored.append(f"{key}={value!r} (the checkpoint's: {kept!r})")
    if ignored:
        logger.warning("ignored %s: %s fixes the model section", ", ".join(ignored), path or "the checkpoint")
    requested.model = stored.model
    requested.task = stored.task
    return requested
