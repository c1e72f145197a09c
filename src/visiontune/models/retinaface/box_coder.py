"""Encoding of boxes and landmarks as offsets from RetinaFace priors (SSD-style, with variances).

All coordinates here are normalised to the image (x divided by the width, y by the height), like the priors.
With priors ``(pcx, pcy, pw, ph)`` and variances ``(v0, v1)``:

* box ``(x1, y1, x2, y2)`` -> ``((cx - pcx) / (v0 pw), (cy - pcy) / (v0 ph), log(w / pw) / v1, log(h / ph) / v1)``
* landmark point ``(x, y)`` -> ``((x - pcx) / (v0 pw), (y - pcy) / (v0 ph))``

Every function broadcasts over leading batch dimensions: ``priors`` is ``Tensor[P, 4]`` and the other arguments are
``Tensor[..., P, k]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class BoxCoder:
    """Encodes/decodes boxes and 5-point landmarks relative to priors.

    Attributes:
        variances: ``(centre_variance, size_variance)``; ``(0.1, 0.2)`` for RetinaFace.
    """

    variances: tuple[float, float] = (0.1, 0.2)

    def __post_init__(self) -> None:
        if len(self.variances) != 2 or any(value <= 0 for value in self.variances):
            raise ValueError(f"variances must be two positive numbers, got {self.variances}")

    def encode_boxes(self, boxes: Tensor, priors: Tensor) -> Tensor:
        """Encode boxes as regression targets.

        Args:
            boxes: ``Tensor[..., P, 4]`` xyxy, normalised, with ``x2 > x1`` and ``y2 > y1``.
            priors: ``Tensor[P, 4]`` (cx, cy, w, h), normalised.

        Returns:
            ``Tensor[..., P, 4]`` deltas ``(dx, dy, dw, dh)``.
        """
        centre_variance, size_variance = self.variances
        centres = (boxes[..., :2] + boxes[..., 2:]) / 2
        sizes = boxes[..., 2:] - boxes[..., :2]
        centre_deltas = (centres - priors[:, :2]) / (centre_variance * priors[:, 2:])
        size_deltas = torch.log(sizes / priors[:, 2:]) / size_variance
        return torch.cat([centre_deltas, size_deltas], dim=-1)

    def decode_boxes(self, deltas: Tensor, priors: Tensor) -> Tensor:
        """Decode regression outputs into boxes (inverse of :meth:`encode_boxes`).

        Args:
            deltas: ``Tensor[..., P, 4]`` ``(dx, dy, dw, dh)``.
            priors: ``Tensor[P, 4]`` (cx, cy, w, h), normalised.

        Returns:
            ``Tensor[..., P, 4]`` xyxy boxes, normalised (multiply by ``(W, H, W, H)`` for pixels).
        """
        centre_variance, size_variance = self.variances
        centres = priors[:, :2] + deltas[..., :2] * centre_variance * priors[:, 2:]
        sizes = priors[:, 2:] * torch.exp(deltas[..., 2:] * size_variance)
        top_left = centres - sizes / 2
        return torch.cat([top_left, sizes + top_left], dim=-1)

    def encode_landmarks(self, landmarks: Tensor, priors: Tensor) -> Tensor:
        """Encode landmark points as regression targets.

        Args:
            landmarks: ``Tensor[..., P, K, 2]`` (x, y) points, normalised (K = 5 for RetinaFace).
            priors: ``Tensor[P, 4]`` (cx, cy, w, h), normalised.

        Returns:
            ``Tensor[..., P, 2K]`` deltas ordered ``(dx0, dy0, dx1, dy1, ...)``.
        """
        centre_variance = self.variances[0]
        prior_centres = priors[:, None, :2]
        prior_sizes = priors[:, None, 2:]
        deltas = (landmarks - prior_centres) / (centre_variance * prior_sizes)
        return deltas.flatten(start_dim=-2)

    def decode_landmarks(self, deltas: Tensor, priors: Tensor) -> Tensor:
        """Decode landmark outputs into points (inverse of :meth:`encode_landmarks`).

        Args:
            deltas: ``Tensor[..., P, 2K]`` ``(dx0, dy0, dx1, dy1, ...)``.
            priors: ``Tensor[P, 4]`` (cx, cy, w, h), normalised.

        Returns:
            ``Tensor[..., P, K, 2]`` (x, y) points, normalised (multiply by ``(W, H)`` for pixels).
        """
        centre_variance = self.variances[0]
        points = deltas.unflatten(-1, (-1, 2))
        return priors[:, None, :2] + points * centre_variance * priors[:, None, 2:]
