"""Wall-clock timing of inference: network and post-processing time per image, also on CUDA."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = ["InferenceTimer", "TimeShare", "synchronize_device"]


def synchronize_device(tensor: Tensor) -> None:
    """Wait for the device of ``tensor`` to finish its queued work (no-op on the CPU)."""
    if tensor.is_cuda:
        torch.cuda.synchronize(tensor.device)


def _first_tensor(output: Any) -> Tensor | None:
    """The first tensor of an eval output ``list[dict[str, Tensor]]`` (one per image), or None."""
    if isinstance(output, list) and output and isinstance(output[0], Mapping):
        return next((value for value in output[0].values() if isinstance(value, Tensor)), None)
    return None


class InferenceTimer:
    """Network and post-processing time of a model in eval mode, per image, measured with module hooks.

    :meth:`attach` registers a pre-hook on the model (start), a hook on the last module of the network proper (end
    of the network) and a hook on the model (end of decoding, thresholding and NMS). Calls in train mode are not
    measured. On CUDA each mark synchronises the device, so the times are wall-clock times of the work, not of
    kernel launches.
    """

    def __init__(self) -> None:
        self.images = 0
        self.forward_seconds = 0.0
        self.postprocess_seconds = 0.0
        self._start: float | None = None
        self._network_end: float | None = None
        self._batch_size = 0

    def reset(self) -> None:
        """Forget the accumulated times."""
        self.images = 0
        self.forward_seconds = 0.0
        self.postprocess_seconds = 0.0
        self._start = None
        self._network_end = None

    def attach(self, model: nn.Module, network_end: nn.Module) -> list[RemovableHandle]:
        """Register the hooks on ``model`` and on its module ``network_end`` (the last one before the
        post-processing, e.g. RetinaFace's last landmark head); returns their handles (``handle.remove()``
        detaches)."""
        return [
            model.register_forward_pre_hook(self._on_start),
            network_end.register_forward_hook(self._on_network_end),
            model.register_forward_hook(self._on_end),
        ]

    def _on_start(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._start = None
        self._network_end = None
        images = args[0] if args else None
        if module.training or not isinstance(images, Tensor):
            return
        synchronize_device(images)
        self._batch_size = int(images.shape[0])
        self._start = time.perf_counter()

    def _on_network_end(self, module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
        if self._start is None:
            return
        synchronize_device(output)
        self._network_end = time.perf_counter()

    def _on_end(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self._start is None or self._network_end is None:
            return
        first = _first_tensor(output)
        if first is not None:
            synchronize_device(first)
        end = time.perf_counter()
        self.forward_seconds += self._network_end - self._start
        self.postprocess_seconds += end - self._network_end
        self.images += self._batch_size
        self._start = None
        self._network_end = None

    def add(self, *, forward_seconds: float, postprocess_seconds: float, images: int = 1) -> None:
        """Add a measurement taken outside the hooks (prediction times the two parts itself)."""
        self.forward_seconds += forward_seconds
        self.postprocess_seconds += postprocess_seconds
        self.images += images

    def summary(self) -> str:
        """``"N images: forward X ms, post-processing Y ms per image (Z images/s)"``."""
        if not self.images:
            return "no image timed"
        forward_ms = 1e3 * self.forward_seconds / self.images
        post_ms = 1e3 * self.postprocess_seconds / self.images
        total = self.forward_seconds + self.postprocess_seconds
        rate = self.images / total if total > 0 else float("inf")
        return (f"{self.images} images: forward {forward_ms:.1f} ms, post-processing {post_ms:.2f} ms per image "
                f"({rate:.1f} images/s)")


class TimeShare:
    """Keeps an optional chore (redrawing plots, refreshing a report) under a share of the wall time.

    :meth:`due` says whether the time already spent in :meth:`spending` is at most ``share`` of the time since
    :meth:`start`; a chore that is skipped now runs later, when the rest of the work has made room for it.

    Args:
        share: The largest fraction of the wall time the chore may take (0.05 = 5%).
    """

    def __init__(self, share: float) -> None:
        self.share = share
        self.started = time.perf_counter()
        self.spent = 0.0

    def start(self) -> None:
        """Count the wall time from now (the chore's time so far is kept)."""
        self.started = time.perf_counter()

    def due(self) -> bool:
        return self.spent <= self.share * (time.perf_counter() - self.started)

    @contextlib.contextmanager
    def spending(self) -> Iterator[None]:
        """Count the time of the ``with`` block as the chore's."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.spent += time.perf_counter() - began
