"""RetinaFace prior (anchor) boxes.

Priors are square in pixels and laid on the cells of the stride-8, 16 and 32 feature maps. They are returned in
centre-size form ``(cx, cy, w, h)`` normalised by the image size: ``cx, w`` divided by the width, ``cy, h`` by the
height. Order: level, then feature-map row, then column, then min size - the order of the heads' outputs.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PriorConfig:
    """Prior layout of RetinaFace.

    Attributes:
        min_sizes: per level, the side lengths in pixels of the square priors placed at each cell.
        steps: per level, the feature-map stride in pixels.
        clip: clamp the normalised priors to ``[0, 1]`` (the reference's ``clip`` option, off by default).
    """

    min_sizes: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
    steps: tuple[int, ...] = (8, 16, 32)
    clip: bool = False

    def __post_init__(self) -> None:
        if len(self.min_sizes) != len(self.steps):
            raise ValueError(
                f"PriorConfig needs one min_sizes entry per step, got {len(self.min_sizes)} min_sizes for "
                f"steps={self.steps}"
            )
        if any(len(sizes) == 0 for sizes in self.min_sizes):
            raise ValueError(f"PriorConfig.min_sizes has an empty level: {self.min_sizes}")
        if any(step <= 0 for step in self.steps) or any(size <= 0 for sizes in self.min_sizes for size in sizes):
            raise ValueError(f"PriorConfig steps and min_sizes must be positive, got {self.steps}, {self.min_sizes}")

    @property
    def anchors_per_level(self) -> tuple[int, ...]:
        """Number of priors per feature-map cell at each level."""
        return tuple(len(sizes) for sizes in self.min_sizes)


def feature_map_sizes(image_size: tuple[int, int], steps: Sequence[int]) -> list[tuple[int, int]]:
    """Feature-map sizes ``(ceil(H / step), ceil(W / step))`` for each step.

    Args:
        image_size: ``(height, width)`` of the network input in pixels.
        steps: strides in pixels.

    Returns:
        One ``(rows, columns)`` pair per step.
    """
    height, width = image_size
    return [(math.ceil(height / step), math.ceil(width / step)) for step in steps]


def count_priors(image_size: tuple[int, int], config: PriorConfig | None = None) -> int:
    """Number of priors for an input of ``image_size = (height, width)`` (16800 at 640x640 with the default layout)."""
    config = config or PriorConfig()
    sizes = feature_map_sizes(image_size, config.steps)
    return sum(rows * columns * anchors for (rows, columns), anchors in zip(sizes, config.anchors_per_level))


def generate_priors(
    image_size: tuple[int, int],
    config: PriorConfig | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Generate the priors for one input size.

    Computed in float64 and cast to ``dtype``, which reproduces the reference's Python-float arithmetic.

    Args:
        image_size: ``(height, width)`` of the network input in pixels; need not be square.
        config: prior layout; the RetinaFace default when None.
        device: device of the result.
        dtype: dtype of the result.

    Returns:
        ``Tensor[P, 4]`` priors ``(cx, cy, w, h)`` normalised to the image; ``P = count_priors(image_size, config)``.
    """
    config = config or PriorConfig()
    height, width = image_size
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be positive (height, width), got {image_size}")
    levels = []
    for (rows, columns), step, min_sizes in zip(feature_map_sizes(image_size, config.steps), config.steps,
                                                config.min_sizes):
        centre_x = (torch.arange(columns, dtype=torch.float64) + 0.5) * step / width
        centre_y = (torch.arange(rows, dtype=torch.float64) + 0.5) * step / height
        sizes = torch.tensor(min_sizes, dtype=torch.float64)
        grid_y, grid_x, size = torch.meshgrid(centre_y, centre_x, sizes, indexing="ij")
        levels.append(torch.stack([grid_x, grid_y, size / width, size / height], dim=-1).reshape(-1, 4))
    priors = torch.cat(levels, dim=0)
    if config.clip:
        priors = priors.clamp(min=0.0, max=1.0)
    return priors.to(device=device, dtype=dtype)


class PriorCache:
    """Generates priors on demand and keeps the most recently used sizes.

    Keys are ``(height, width, device, dtype)``; at most ``max_entries`` are kept (least recently used dropped).

    Args:
        config: prior layout.
        max_entries: cache capacity; multi-scale training touches a handful of sizes.
    """

    def __init__(self, config: PriorConfig, *, max_entries: int = 16) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.config = config
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, int, str, torch.dtype], Tensor] = OrderedDict()

    def get(self, image_size: tuple[int, int], *, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
        """Priors for ``image_size = (height, width)``; see :func:`generate_priors`."""
        key = (int(image_size[0]), int(image_size[1]), str(device), dtype)
        priors = self._entries.get(key)
        if priors is None:
            priors = generate_priors(key[:2], self.config, device=device, dtype=dtype)
            self._entries[key] = priors
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return priors

    def __len__(self) -> int:
        """The number of cached prior tensors (at most ``max_entries``)."""
        return len(self._entries)

    def keys(self) -> list[tuple[int, int, str, torch.dtype]]:
        """The cached ``(height, width, device, dtype)`` keys, least recently used first."""
        return list(self._entries)

    def clear(self) -> None:
        """Forget every cached prior tensor."""
        self._entries.clear()
