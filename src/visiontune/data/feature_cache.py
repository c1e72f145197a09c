"""Cached backbone features: a frozen backbone runs once per split, the head trains on what it produced.

:class:`FeatureDataset` has the length and order of the image dataset it replaces, so samplers, resumes and the
per-rank shards of distributed training work unchanged; item ``i`` is ``(Tensor[D] float32, label)``, or ``None``
for an image skipped as corrupt (``data.on_corrupt=skip``; :func:`~visiontune.data.classification.collate_skip_none`
drops it).

:func:`cached_features` computes the features in batches (with a progress bar) into memory, or, above a size
limit, into ``<cache_dir>/<name>.npy`` memory-mapped with ``np.load(mmap_mode="r")``; a JSON file beside it
records the cache key (a digest of the backbone weights, the transform and the file list), so that a resume reuses
a valid file and rebuilds a stale one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from visiontune.utils.files import atomic_path, atomic_write_json, temp_files_of

logger = logging.getLogger(__name__)

CACHE_FORMAT = 2
"""Bumped when the cached content changes meaning: older files are then stale (2: images turned upright by their
EXIF orientation before the backbone)."""


class FeatureDataset(Dataset):
    """Pre-computed features and labels, index-aligned with the image dataset they come from.

    Args:
        features: ``[N, D]`` float32, a tensor or a (memory-mapped) numpy array.
        labels: ``N`` label indices.
        skipped: Indices whose image could not be read (``None`` items).
        source: Where the features live (``"memory"`` or the ``.npy`` path), for messages.
    """

    uses_workers = False
    """Rows of an array: the loaders fetch them in the main process (no DataLoader workers)."""

    def __init__(self, features: torch.Tensor | np.ndarray, labels: Sequence[int], *,
                 skipped: Iterable[int] = (), source: str = "memory") -> None:
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} feature rows for {len(labels)} labels")
        self.features = features
        self.labels = [int(label) for label in labels]
        self.skipped = frozenset(int(index) for index in skipped)
        self.source = source

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        if index in self.skipped:
            return None
        row = self.features[index]
        if isinstance(row, np.ndarray):
            row = torch.from_numpy(np.array(row, dtype=np.float32))
        return row, self.labels[index]


def cache_key(*, backbone_digest: str, transform: Any, samples: Sequence[tuple[Path | str, int]],
              extra: dict[str, Any] | None = None) -> str:
    """A digest of what the features depend on: backbone weights, transform, files (path, label, size, mtime)."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": CACHE_FORMAT, "backbone": backbone_digest, "transform": repr(transform),
                              **(extra or {})}, sort_keys=True, default=str).encode())
    for path, label in samples:
        try:
            stat = os.stat(path)
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        digest.update(f"{path}\t{label}\t{size}\t{mtime}\n".encode())
    return digest.hexdigest()


class _Indexed(Dataset):
    """``(index, sample)`` items, so that batches keep track of skipped samples."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[int, Any]:
        return index, self.dataset[index]


def _collate_indexed(batch: list[tuple[int, Any]]) -> tuple[torch.Tensor, torch.Tensor | None]:
    kept = [(index, sample) for index, sample in batch if sample is not None]
    if not kept:
        return torch.empty(0, dtype=torch.int64), None
    return torch.tensor([index for index, _ in kept]), torch.stack([sample[0] for _, sample in kept])


def compute_features(encode: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, *,
                     allocate: Callable[[int, int], Any], batch_size: int, num_workers: int = 0,
                     progress: bool = True, description: str = "features",
                     feature_dim: int | None = None) -> tuple[Any, list[int]]:
    """Run ``encode`` (images -> ``[B, D]``) over ``dataset`` in order; returns the filled array and the skipped
    indices. ``allocate(N, D)`` makes the output (a tensor or a writable memory map) once ``D`` is known (at once
    when ``feature_dim`` is given: then a dataset without a readable image gives an all-skipped array instead of
    an error, as one shard of a larger split may)."""
    from tqdm import tqdm

    loader = DataLoader(_Indexed(dataset), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_collate_indexed)
    total = len(dataset)  # type: ignore[arg-type]
    output = allocate(total, feature_dim) if feature_dim is not None else None
    written = np.zeros(total, dtype=bool)
    for indices, images in tqdm(loader, desc=description, disable=not progress, leave=False):
        if images is None:
            continue
        features = encode(images).float().cpu()
        if output is None:
            output = allocate(total, features.shape[1])
        rows = indices.numpy()
        output[rows] = features if isinstance(output, torch.Tensor) else features.numpy()
        written[rows] = True
    if output is None:
        raise ValueError(f"{description}: no readable image, nothing to cache")
    return output, [int(index) for index in np.flatnonzero(~written)]


def cached_features(encode: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, labels: Sequence[int], *,
                    name: str, key: str, feature_dim: int, cache_dir: Path, memory_limit_bytes: float,
                    batch_size: int, num_workers: int = 0, progress: bool = True, is_main: bool = True,
                    barrier: Callable[[], None] = lambda: None, shard: tuple[int, int] = (0, 1),
                    gather: Callable[[Any], list[Any]] | None = None) -> FeatureDataset:
    """The features of ``dataset`` as a :class:`FeatureDataset`, computed or read from a valid cache file.

    Features of at most ``memory_limit_bytes`` are computed in memory (a stale file of the same name is removed):
    with ``shard=(rank, world_size)`` and ``gather`` (one object per rank -> the list of all, in rank order), each
    process computes every ``world_size``-th image from ``rank`` on and all of them receive the whole split (every
    rank trains on all of it: its shard of the training set changes each epoch). Larger ones live in
    ``cache_dir/<name>.npy``: a file whose recorded key equals ``key`` is reused, any other is rebuilt by the main
    process while the others wait at ``barrier`` and then read it.
    """
    npy, meta = cache_dir / f"{name}.npy", cache_dir / f"{name}.json"
    total = len(dataset)  # type: ignore[arg-type]
    size = total * feature_dim * 4
    if size <= memory_limit_bytes and not _valid(npy, meta, key, total):
        if is_main and (npy.exists() or meta.exists()):
            logger.info("feature cache %s: removing the stale file (the features now fit in memory)", npy)
            meta.unlink(missing_ok=True)
            npy.unlink(missing_ok=True)
        features, skipped = _features_in_memory(encode, dataset, feature_dim=feature_dim, batch_size=batch_size,
                                                num_workers=num_workers, progress=progress, name=name, shard=shard,
                                                gather=gather)
        spread = f", computed in {shard[1]} shards" if shard[1] > 1 else ""
        logger.info("cached %s features in memory: %d x %d (%.1f MB%s)", name, total, feature_dim, size / 2**20,
                    spread)
        return FeatureDataset(features, labels, skipped=skipped)
    if is_main:
        if _valid(npy, meta, key, total):
            logger.info("feature cache %s: reusing it (backbone weights, transform and files unchanged)", npy)
        else:
            if npy.exists() or meta.exists():
                logger.info("feature cache %s is stale (backbone weights, transform or file list changed): "
                            "rebuilding it", npy)
            _build_file(encode, dataset, npy, meta, key, batch_size=batch_size, num_workers=num_workers,
                        progress=progress, name=name)
    barrier()
    if not _valid(npy, meta, key, total):
        raise RuntimeError(f"feature cache {npy} is missing or stale on this process: the run folder must be shared "
                           "by all processes, or raise finetune.cache_memory_limit_mb to keep the features in memory")
    skipped = json.loads(meta.read_text(encoding="utf-8"))["skipped"]
    return FeatureDataset(np.load(npy, mmap_mode="r"), labels, skipped=skipped, source=str(npy))


def _features_in_memory(encode: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, *, feature_dim: int,
                        batch_size: int, num_workers: int, progress: bool, name: str, shard: tuple[int, int],
                        gather: Callable[[Any], list[Any]] | None) -> tuple[torch.Tensor, list[int]]:
    """``[N, D]`` features and the skipped indices; this process's shard only, then gathered, when sharded."""
    rank, world_size = shard
    total = len(dataset)  # type: ignore[arg-type]
    description = f"caching {name} features"
    if world_size == 1 or gather is None:
        return compute_features(encode, dataset, allocate=lambda n, d: torch.zeros(n, d), batch_size=batch_size,
                                num_workers=num_workers, progress=progress, description=description)
    indices = list(range(rank, total, world_size))
    part, part_skipped = compute_features(encode, Subset(dataset, indices), allocate=lambda n, d: torch.zeros(n, d),
                                          batch_size=batch_size, num_workers=num_workers, progress=progress,
                                          description=description, feature_dim=feature_dim)
    features = torch.zeros(total, feature_dim)
    skipped: list[int] = []
    for source, (rows, missing) in enumerate(gather((part, [indices[i] for i in part_skipped]))):
        features[source::world_size] = rows
        skipped += missing
    if len(skipped) == total:
        raise ValueError(f"{description}: no readable image, nothing to cache")
    return features, sorted(skipped)


def _valid(npy: Path, meta: Path, key: str, total: int) -> bool:
    try:
        recorded = json.loads(meta.read_text(encoding="utf-8"))
        if recorded.get("key") != key or recorded.get("rows") != total:
            return False
        return np.load(npy, mmap_mode="r").shape[0] == total
    except (OSError, ValueError, KeyError):
        return False


def _build_file(encode: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, npy: Path, meta: Path, key: str, *,
                batch_size: int, num_workers: int, progress: bool, name: str) -> None:
    """Compute the features into ``npy`` (memory-mapped), then record ``key`` in ``meta``, both atomically.

    The array is built in a temporary file beside ``npy`` (:func:`~visiontune.utils.files.atomic_path`), renamed
    into place once complete and removed if the build fails or is interrupted; the temporary files of an earlier
    build that was killed are removed first (only the main process builds).
    """
    meta.unlink(missing_ok=True)  # the key goes last: an interrupted build leaves no valid cache
    for stale in [*temp_files_of(npy), *temp_files_of(meta), npy.with_name(npy.name + ".tmp.npy")]:
        if stale.is_file():  # ".<name>.npy.<8>.tmp" of a killed build; "<name>.npy.tmp.npy" of older versions
            logger.info("feature cache: removing %s, left by an interrupted build", stale)
            stale.unlink(missing_ok=True)
    with atomic_path(npy) as temporary:
        features, skipped = compute_features(
            encode, dataset, allocate=lambda n, d: np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32,
                                                                             shape=(n, d)),
            batch_size=batch_size, num_workers=num_workers, progress=progress,
            description=f"caching {name} features")
        rows, dim = features.shape
        features.flush()
        del features  # closes the memory map before the rename
    atomic_write_json({"key": key, "rows": rows, "dim": dim, "skipped": skipped, "format": CACHE_FORMAT}, meta)
    logger.info("cached %s features in %s: %d x %d (%.1f MB, memory-mapped)", name, npy, rows, dim,
                rows * dim * 4 / 2**20)
