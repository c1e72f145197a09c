"""Image batches finished on the training device: uint8 from the loader workers, float and normalised on the device.

The CPU pipeline ends each image with ``ToTensor`` + ``Normalize`` in the worker, so float32 batches travel
through the worker queue, pinned memory and PCIe. :class:`DevicePrefetcher` takes the batches of a uint8
pipeline instead (timm's ``create_transform(..., use_prefetcher=True)``: the same augmentations, ending with
``MaybePILToTensor``; 4x fewer bytes), copies the next batch on a side CUDA stream while the current one trains,
and on the device converts to float, normalises, switches to channels-last and applies random erasing, as timm's
``PrefetchLoader`` does. Every step runs on any device, so its arithmetic is tested on the CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

__all__ = ["DevicePrefetcher", "normalize_uint8"]


def normalize_uint8(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``Tensor[B, C, H, W]`` uint8 -> normalised float, with the operations (and so the float results) of
    torchvision's ``ToTensor`` (``x / 255``) and ``Normalize`` (``(x - mean) / std``) on each image.

    ``mean`` and ``std`` are ``Tensor[1, C, 1, 1]`` (0-1 scale) on ``images``' device.
    """
    return images.to(dtype).div_(255).sub_(mean).div_(std)


class DevicePrefetcher:
    """Iterates ``loader``'s ``(uint8 images, targets)`` batches as ``(normalised images, targets)`` on ``device``.

    Args:
        loader: Yields ``(Tensor[B, C, H, W] uint8, targets)`` (targets: a tensor or nested tensors).
        device: Where the batches go; on CUDA the copy of the next batch and its conversion run on a side stream,
            overlapping the current step. On the CPU the same steps run in order (tests, debugging).
        mean, std: Per-channel normalisation on the 0-1 scale (the model's ``data.mean`` / ``data.std``).
        channels_last: Return the images in channels-last memory format.
        re_prob, re_mode, re_count, re_num_splits: Random erasing on the device, timm's ``RandomErasing`` on the
            batch (the same probability per image, area and aspect ranges and fill modes as the CPU transform's
            ``re_prob`` / ``re_mode``); ``re_prob=0``: none.
        dtype: The float dtype of the returned images.
    """

    def __init__(self, loader: Iterable[Any], *, device: torch.device | str, mean: Sequence[float],
                 std: Sequence[float], channels_last: bool = False, re_prob: float = 0.0, re_mode: str = "const",
                 re_count: int = 1, re_num_splits: int = 0, dtype: torch.dtype = torch.float32) -> None:
        self.loader = loader
        self.device = torch.device(device)
        self.dtype = dtype
        self.mean = torch.tensor(list(mean), dtype=dtype, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=dtype, device=self.device).view(1, -1, 1, 1)
        self.channels_last = channels_last
        self.random_erasing = None
        if re_prob > 0:
            from timm.data.random_erasing import RandomErasing

            self.random_erasing = RandomErasing(probability=re_prob, mode=re_mode, max_count=re_count,
                                                num_splits=re_num_splits, device=str(self.device))

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    @property
    def dataset(self) -> Any:
        return getattr(self.loader, "dataset", None)

    def convert(self, images: torch.Tensor) -> torch.Tensor:
        """One batch already on the device: uint8 -> normalised float (random erasing, channels-last)."""
        if images.dtype != torch.uint8:
            raise TypeError(f"the device prefetcher expects uint8 image batches, got {images.dtype} (a transform "
                            "that ends with ToTensor/Normalize: build it with use_prefetcher=True)")
        images = normalize_uint8(images, self.mean, self.std, self.dtype)
        if self.random_erasing is not None:
            images = self.random_erasing(images)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def _to_device(self, batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, (list, tuple)):
            return type(batch)(self._to_device(item) for item in batch)
        if isinstance(batch, dict):
            return {key: self._to_device(value) for key, value in batch.items()}
        return batch

    def _prepare(self, batch: tuple[Any, Any]) -> tuple[torch.Tensor, Any]:
        images, targets = batch
        return self.convert(images.to(self.device, non_blocking=True)), self._to_device(targets)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, Any]]:
        if self.device.type != "cuda":
            for batch in self.loader:
                yield self._prepare(batch)
            return
        stream = torch.cuda.Stream(device=self.device)
        current = torch.cuda.current_stream(self.device)
        ready: tuple[torch.Tensor, Any] | None = None
        for batch in self.loader:
            with torch.cuda.stream(stream):
                upcoming = self._prepare(batch)
            if ready is not None:
                yield ready
            current.wait_stream(stream)  # the step that uses ``upcoming`` waits for its copy and conversion
            _record_stream(upcoming, current)
            ready = upcoming
        if ready is not None:
            yield ready


def _record_stream(batch: Any, stream: torch.cuda.Stream) -> None:
    """Tell the caching allocator that ``stream`` uses the tensors made on the side stream (no early reuse)."""
    if isinstance(batch, torch.Tensor):
        with contextlib.suppress(RuntimeError):
            batch.record_stream(stream)
    elif isinstance(batch, (list, tuple)):
        for item in batch:
            _record_stream(item, stream)
    elif isinstance(batch, dict):
        for item in batch.values():
            _record_stream(item, stream)
