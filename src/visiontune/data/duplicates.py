"""Duplicate images within and across splits: exact copies (SHA-1 of the file bytes) and near copies (pHash).

A validation image that is also a training image (copied, resized or re-encoded) makes validation metrics
optimistic. :func:`find_duplicates` hashes every image of every split once and groups them:

* ``exact``: files with the same SHA-1 of their bytes (distance 0);
* ``near``: files whose 64-bit perceptual hashes (``imagehash.phash`` of the grayscale image: the signs of the
  lowest 8x8 DCT frequencies of a 32x32 thumbnail) differ in at most :data:`NEAR_DUPLICATE_BITS` bits, linked
  transitively (a group is a connected component of such pairs) and not byte-identical to each other.

:data:`NEAR_DUPLICATE_BITS` = 8 of 64 bits: on generated 640x480 photo-like images (a shape on a textured gradient,
``benchmarks/image_hashing.py``; ``tests/data/test_duplicates.py`` checks the same on smaller ones) a copy resized to
0.5x and re-saved as JPEG quality 70 differs from its original by 0-2 bits, while two different images differ by 30
bits typically and by 10 at the least (two images of the same shape), so 8 keeps copies together and different
images apart.

Hashes are cached per file (absolute path, size, modification time) in a JSON file (:class:`HashCache`, by default
``<project>/.cache/image_hashes.json``; never inside the dataset), so a second check or training run only hashes
new or changed files. JPEG files are decoded at reduced size (``Image.draft``, DCT scaling: 1/8 of the pixels'
work) before the pHash, which needs only a 32x32 thumbnail.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from visiontune.data.validation import file_kind
from visiontune.utils.files import FileWriteError, atomic_write_json
from visiontune.utils.image import DECODE_ERRORS
from visiontune.utils.paths import relative_posix

logger = logging.getLogger(__name__)

__all__ = [
    "NEAR_DUPLICATE_BITS",
    "SEE_DUPLICATES",
    "DuplicateGroup",
    "HashCache",
    "cross_split_duplicates",
    "duplicate_summary",
    "find_duplicates",
    "hamming_distances",
    "hash_cache_path",
    "hash_image",
    "hash_images",
    "leak_warning",
]

NEAR_DUPLICATE_BITS = 8
"""Largest pHash Hamming distance (of 64 bits) of a near duplicate: survives a 0.5x resize plus JPEG quality 70
(0-2 bits measured) and stays below the distance of different images (30 typically, 10 at the least)."""

_CACHE_VERSION = 1
_BLOCK = 1024  # rows of the pairwise distance matrix computed at once (1024 x N uint8)


def hash_cache_path(project: str | Path) -> Path:
    """The hash cache of a project folder: ``<project>/.cache/image_hashes.json``."""
    return Path(project) / ".cache" / "image_hashes.json"


def hash_image(path: str | Path) -> tuple[str, int | None]:
    """SHA-1 of the file's bytes and the 64-bit pHash of its image.

    Args:
        path: An image file.

    Returns:
        ``(sha1 hex digest, phash)``: the pHash as an unsigned 64-bit integer (bit 63 = the first DCT coefficient),
        ``None`` when the file is not a decodable image (the SHA-1 still finds byte-identical copies).

    Raises:
        OSError: the file cannot be read.
    """
    import imagehash

    data = Path(path).read_bytes()
    digest = hashlib.sha1(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format == "JPEG":
                image.draft("L", (64, 64))  # DCT scaling: decode at 1/2..1/8 size, still >= 64 px for the 32 px pHash
            bits = imagehash.phash(image.convert("L")).hash.flatten()
    except DECODE_ERRORS:
        return digest, None
    return digest, int.from_bytes(np.packbits(bits).tobytes(), "big")


class HashCache:
    """Hashes of image files keyed by absolute path, valid while the file's size and modification time match.

    Args:
        path: The JSON cache file (created on :meth:`save`); ``None`` keeps the hashes in memory only.

    Attributes:
        computed: Files hashed (not found in the cache) since this object was made.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.computed = 0
        self._entries: dict[str, list[Any]] = {}
        self._changed = False
        if self.path is not None and self.path.is_file():
            try:
                stored = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                logger.warning("image hash cache %s is unreadable (%s): hashing again", self.path, error)
                stored = {}
            if isinstance(stored, dict) and stored.get("version") == _CACHE_VERSION:
                self._entries = dict(stored.get("entries", {}))

    @staticmethod
    def _key(path: Path) -> tuple[str, int, int]:
        status = path.stat()
        return str(path.resolve()), status.st_size, status.st_mtime_ns

    def lookup(self, path: Path) -> tuple[str, int | None] | None:
        """The cached ``(sha1, phash)`` of ``path``, or None when absent or the file changed since."""
        key, size, mtime = self._key(path)
        entry = self._entries.get(key)
        if entry is None or entry[0] != size or entry[1] != mtime:
            return None
        return str(entry[2]), (None if entry[3] is None else int(entry[3], 16))

    def store(self, path: Path, hashes: tuple[str, int | None]) -> None:
        """Remember the hashes of ``path`` (with its current size and modification time)."""
        key, size, mtime = self._key(path)
        self._entries[key] = [size, mtime, hashes[0], None if hashes[1] is None else f"{hashes[1]:016x}"]
        self._changed = True

    def save(self) -> None:
        """Write the cache file if anything was added (atomically); a failed write is one warning line."""
        if self.path is None or not self._changed:
            return
        try:
            atomic_write_json({"version": _CACHE_VERSION, "entries": self._entries}, self.path, indent=None)
        except FileWriteError as error:
            logger.warning("image hashes not cached: %s", error)
            return
        self._changed = False


def _hash_or_none(path: Path) -> tuple[str, int | None] | None:
    try:
        return hash_image(path)
    except OSError:
        return None  # unreadable: check-data reports it as an image error


def hash_images(paths: Iterable[Path], *, cache: HashCache | None = None,
                num_workers: int = 2) -> dict[Path, tuple[str, int | None]]:
    """``(sha1, phash)`` of every distinct readable file of ``paths`` (see :func:`hash_image`).

    Args:
        paths: Image files; unreadable ones and those that are not regular files (never opened) are left out of
            the result.
        cache: Looked up first; newly computed hashes are stored in it and saved at the end.
        num_workers: Hashing threads (decoding and hashing release the GIL); ``0`` or ``1``: the calling thread.

    Returns:
        ``path -> (sha1, phash or None)``.
    """
    cache = cache if cache is not None else HashCache(None)
    result: dict[Path, tuple[str, int | None]] = {}
    missing: list[Path] = []
    for path in dict.fromkeys(Path(path) for path in paths):
        if file_kind(path) is not None:
            continue  # never opened: a named pipe would block the read (check-data names such files itself)
        try:
            cached = cache.lookup(path)
        except OSError:
            continue
        if cached is None:
            missing.append(path)
        else:
            result[path] = cached
    if num_workers > 1 and len(missing) > 1:
        with ThreadPoolExecutor(max_workers=num_workers) as executor:
            computed = list(executor.map(_hash_or_none, missing))
    else:
        computed = [_hash_or_none(path) for path in missing]
    for path, hashes in zip(missing, computed):
        if hashes is not None:
            cache.computed += 1
            cache.store(path, hashes)
            result[path] = hashes
    cache.save()
    return result


def hamming_distances(rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Bit differences between 64-bit hashes: ``(len(rows), len(columns))`` uint8 matrix.

    Args:
        rows: ``(N,)`` uint64 hashes.
        columns: ``(M,)`` uint64 hashes.
    """
    xor = np.bitwise_xor(rows.astype(np.uint64)[:, None], columns.astype(np.uint64)[None, :])
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(xor).astype(np.uint8)
    table = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)
    return table[xor.view(np.uint8).reshape(*xor.shape, 8)].sum(axis=-1, dtype=np.uint8)


@dataclass(frozen=True)
class DuplicateGroup:
    """Files holding the same image.

    Attributes:
        kind: ``"exact"`` (same bytes) or ``"near"`` (pHash within the threshold, see :func:`find_duplicates`).
        files: The files, in split order then path order.
        splits: The split of each file (same length as ``files``).
        distance: 0 for exact groups; for near groups the largest pHash distance (bits) of the pairs that link it.
    """

    kind: Literal["exact", "near"]
    files: tuple[Path, ...]
    splits: tuple[str, ...]
    distance: int

    def to_json(self, root: str | Path | None = None) -> dict[str, Any]:
        """``{"kind", "files", "splits", "distance"}`` with the files relative to ``root`` (POSIX) when inside it."""
        return {"kind": self.kind, "files": [relative_posix(path, root) for path in self.files],
                "splits": list(self.splits), "distance": self.distance}


def _components(count: int, pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components (of 2 or more members, each sorted) of the graph on ``range(count)``."""
    parent = list(range(count))

    def find(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for first, second in pairs:
        parent[find(first)] = find(second)
    groups: dict[int, list[int]] = {}
    for node in range(count):
        groups.setdefault(find(node), []).append(node)
    return [members for members in groups.values() if len(members) > 1]


def _near_pairs(hashes: np.ndarray, threshold: int) -> list[tuple[int, int, int]]:
    """``(i, j, distance)`` for ``i < j`` with a distance of at most ``threshold`` bits, by blocks of rows."""
    pairs: list[tuple[int, int, int]] = []
    for start in range(0, len(hashes), _BLOCK):
        block = hamming_distances(hashes[start:start + _BLOCK], hashes)
        rows, columns = np.nonzero(block <= threshold)
        for row, column in zip(rows.tolist(), columns.tolist()):
            if start + row < column:
                pairs.append((start + row, column, int(block[row, column])))
    return pairs


def find_duplicates(splits: Mapping[str, Sequence[str | Path]], *, threshold: int = NEAR_DUPLICATE_BITS,
                    cache: HashCache | None = None, num_workers: int = 2) -> list[DuplicateGroup]:
    """Exact and near duplicate images within and across ``splits``.

    Every ``(split, file)`` entry counts once (a file listed twice in one split is a listing problem, reported by
    the split checks, not an image duplicate); the same file in two splits is an exact duplicate across them.
    Near groups link the distinct contents (one per SHA-1) whose pHashes differ in at most ``threshold`` bits; each
    lists every file of its contents. Files that cannot be read or decoded are left out.

    Args:
        splits: Split name -> image files.
        threshold: Largest pHash distance (bits of 64) of a near duplicate.
        cache: Hash cache (see :class:`HashCache`); None hashes every file.
        num_workers: Hashing threads.

    Returns:
        Exact groups, then near groups, each sorted by its first file.
    """
    entries = list(dict.fromkeys((name, Path(path)) for name, paths in splits.items() for path in paths))
    hashes = hash_images((path for _, path in entries), cache=cache, num_workers=num_workers)
    by_digest: dict[str, list[tuple[str, Path]]] = {}
    phash_of: dict[str, int] = {}
    for name, path in entries:
        if path in hashes:
            digest, phash = hashes[path]
            by_digest.setdefault(digest, []).append((name, path))
            if phash is not None:
                phash_of[digest] = phash
    digests = list(phash_of)
    pairs = _near_pairs(np.array([phash_of[d] for d in digests], dtype=np.uint64), threshold)
    distance = {(i, j): d for i, j, d in pairs}
    order = {name: index for index, name in enumerate(splits)}
    groups = [_group("exact", members, 0, order) for members in by_digest.values() if len(members) > 1]
    for component in _components(len(digests), ((i, j) for i, j, _ in pairs)):
        inside = set(component)
        linked = max(d for (i, j), d in distance.items() if i in inside and j in inside)
        members = [member for index in component for member in by_digest[digests[index]]]
        groups.append(_group("near", members, linked, order))
    return sorted(groups, key=lambda group: (group.kind != "exact", str(group.files[0])))


def _group(kind: Literal["exact", "near"], members: list[tuple[str, Path]], distance: int,
           order: Mapping[str, int]) -> DuplicateGroup:
    ordered = sorted(members, key=lambda member: (order[member[0]], str(member[1])))
    return DuplicateGroup(kind, tuple(path for _, path in ordered), tuple(name for name, _ in ordered), distance)


def cross_split_duplicates(groups: Sequence[DuplicateGroup], split: str, reference: str) -> list[Path]:
    """Files of ``split`` that duplicate (exactly or nearly) a file of ``reference``, e.g. validation images that
    are also training images."""
    found: dict[Path, None] = {}
    for group in groups:
        if reference in group.splits:
            found.update((path, None) for path, name in zip(group.files, group.splits) if name == split)
    return list(found)


SEE_DUPLICATES = "visiontune check-data <the same -c/data.* options> --report"
"""The command that shows the duplicates side by side (named by the warnings)."""


def duplicate_summary(groups: Sequence[DuplicateGroup], split_names: Sequence[str], *,
                      threshold: int = NEAR_DUPLICATE_BITS) -> tuple[str, list[str]]:
    """The check-data text of :func:`find_duplicates`' groups: one summary line and the warnings.

    Warnings: a split holding duplicate images (within itself), and each later split whose images duplicate images
    of the first split (the training split: a leak that makes the validation metrics optimistic).

    Args:
        groups: The groups found.
        split_names: The checked splits, the training split first.
        threshold: The near-duplicate threshold used (named in the summary).
    """
    kinds = {kind: [group for group in groups if group.kind == kind] for kind in ("exact", "near")}
    summary = (f"duplicate images: {len(kinds['exact'])} exact group(s) "
               f"({sum(len(group.files) for group in kinds['exact'])} files, same SHA-1), {len(kinds['near'])} near "
               f"group(s) ({sum(len(group.files) for group in kinds['near'])} files, pHash within {threshold} of 64 "
               "bits)")
    warnings = []
    for name in split_names:
        within = [group for group in groups if group.splits.count(name) > 1]
        if within:
            warnings.append(f"split {name!r} holds {len(within)} group(s) of duplicate images "
                            f"({sum(group.kind == 'exact' for group in within)} exact, "
                            f"{sum(group.kind == 'near' for group in within)} near): see them with {SEE_DUPLICATES}")
    if split_names:
        for name in split_names[1:]:
            leak = leak_warning(groups, name, split_names[0])
            if leak:
                warnings.append(leak)
    return summary, warnings


def leak_warning(groups: Sequence[DuplicateGroup], split: str, reference: str) -> str | None:
    """The one-line warning about images of ``split`` duplicating images of ``reference`` (None: there are none)."""
    exact = cross_split_duplicates([group for group in groups if group.kind == "exact"], split, reference)
    found = cross_split_duplicates(groups, split, reference)
    if not found:
        return None
    return (f"{len(found)} {split!r} image(s) duplicate {reference!r} images ({len(exact)} exact, "
            f"{len(found) - len(exact)} near only): {split} metrics are optimistic; see them with {SEE_DUPLICATES}")
