"""SHA-256 checksums of a checkpoint's contents, stored in it when written and verified when read.

Like git's object hashes, they catch a file changed after it was written (a flipped bit on disk, a truncated copy
that still unpickles): :func:`add_checksums` seals a checkpoint dict, :func:`verify_checksums` names the first tensor
(``model/fc.weight``) or entry that differs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

CHECKSUM_KEY = "checksums"
"""The checkpoint entry holding the SHA-256 digests (``{"algorithm", "tensors", "entries"}``)."""


class ChecksumError(ValueError):
    """A checkpoint's contents differ from the checksums stored in it; the message names the file and tensor."""


def _walk(obj: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """``(path, leaf)`` of every leaf of nested dicts / lists / tuples; paths join keys with ``/``."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _walk(value, f"{prefix}/{key}")
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            yield from _walk(value, f"{prefix}/{index}")
    else:
        yield prefix, obj


def tensor_digest(tensor: torch.Tensor) -> str | None:
    """SHA-256 of a tensor's dtype, shape and element bytes (``None`` for layouts without plain bytes)."""
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.device.type == "meta":
        return None
    digest = hashlib.sha256(f"{tensor.dtype}:{tuple(tensor.shape)}:".encode())
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    if flat.numel():
        digest.update(flat.view(torch.uint8).numpy().data)
    return digest.hexdigest()


def _entry_digest(value: Any, key: str) -> str:
    """SHA-256 of the non-tensor leaves (type and ``repr``) of one top-level entry, with their paths."""
    digest = hashlib.sha256()
    for path, leaf in _walk(value, key):
        if isinstance(leaf, torch.Tensor):
            continue
        text = repr(sorted(leaf, key=repr)) if isinstance(leaf, (set, frozenset)) else repr(leaf)
        digest.update(f"{path}={type(leaf).__name__}:{text}\n".encode())
    return digest.hexdigest()


def compute_checksums(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The ``checksums`` entry of ``checkpoint``: SHA-256 of every tensor (by path, e.g. ``model/fc.weight``) and
    of the other contents of each top-level entry."""
    tensors: dict[str, str] = {}
    entries: dict[str, str] = {}
    for key, value in checkpoint.items():
        if key == CHECKSUM_KEY:
            continue
        for path, leaf in _walk(value, str(key)):
            if isinstance(leaf, torch.Tensor):
                found = tensor_digest(leaf)
                if found is not None:
                    tensors[path] = found
        entries[str(key)] = _entry_digest(value, str(key))
    return {"algorithm": "sha256", "tensors": tensors, "entries": entries}


def add_checksums(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy of ``checkpoint`` with its ``checksums`` entry (:func:`compute_checksums`)."""
    sealed = {key: value for key, value in checkpoint.items() if key != CHECKSUM_KEY}
    sealed[CHECKSUM_KEY] = compute_checksums(sealed)
    return sealed


def verify_checksums(checkpoint: Mapping[str, Any], path: str | Path) -> None:
    """Compare ``checkpoint`` with its stored ``checksums``; nothing to do for files written without them.

    Raises:
        ChecksumError: a tensor (or another entry) differs from when the file was written; the message names the
            file and the first tensor that differs.
    """
    stored = checkpoint.get(CHECKSUM_KEY)
    if stored is None:
        return
    if not isinstance(stored, Mapping) or stored.get("algorithm") != "sha256":
        raise ChecksumError(f"{path}: unreadable checksums entry (the file is corrupt or from a newer visiontune)")
    actual = compute_checksums(checkpoint)
    wrong = [name for name, digest in stored.get("tensors", {}).items() if actual["tensors"].get(name) != digest]
    wrong += [name for name in actual["tensors"] if name not in stored.get("tensors", {})]
    if wrong:
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise ChecksumError(
            f"{path} is corrupt: tensor {wrong[0]}{more} does not match the SHA-256 checksum stored when the file was "
            "written; use another copy or an earlier checkpoint")
    wrong = [name for name, digest in stored.get("entries", {}).items() if actual["entries"].get(name) != digest]
    if wrong:
        raise ChecksumError(
            f"{path} is corrupt: entry {wrong[0]!r} does not match the SHA-256 checksum stored when the file was "
            "written; use another copy or an earlier checkpoint")
