"""Plain-dict checkpoints, written atomically and loaded safely.

A visiontune checkpoint is a dict with ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``ema``,
``epoch``, ``step``, ``config``, ``version`` (of visiontune), ``format_version`` (of this layout,
:data:`CHECKPOINT_FORMAT_VERSION`; 1 when absent), ``meta`` (class names, ...), ``best_metric``, ``rng`` and
``history``. It only holds tensors and plain Python containers, so ``torch.load(weights_only=True)``
reads it.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT_VERSION = 1
"""Version of the checkpoint layout written as ``format_version``; :func:`load_checkpoint` refuses newer ones."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a visiontune checkpoint."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash while writing leaves the previous file intact; readers never see a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError:
        pass
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a visiontune checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: the file is missing, corrupt, or not a visiontune checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a broken file
        raise CheckpointError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "config" not in checkpoint:
        keys = list(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"{path} is not a visiontune checkpoint (expected a dict with 'model' and 'config', found {keys}); "
            "to initialise a model from plain weights use model.checkpoint=..."
        )
    check_format_version(checkpoint, path)
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
    numpy_state = np.random.get_state()
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
