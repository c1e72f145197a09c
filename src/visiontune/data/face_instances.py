"""The faces of one image (:class:`FaceInstances`) and the call signature of a face transform.

Landmarks are five ``(x, y)`` points per face in this order: left eye, right eye, nose, left mouth corner, right
mouth corner (left/right as seen in the image). A face without landmarks keeps its row, filled with
:data:`MISSING_LANDMARK_VALUE` and flagged in ``landmarks_valid``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np
import torch

__all__ = ["MISSING_LANDMARK_VALUE", "NUM_LANDMARKS", "FaceInstances", "FaceTransform"]

NUM_LANDMARKS = 5
"""Landmarks per face."""

MISSING_LANDMARK_VALUE = -1.0
"""Coordinate of a landmark that is not annotated (WIDER FACE files write -1; the tensors repeat it)."""


@dataclasses.dataclass
class FaceInstances:
    """The faces of one image, as numpy arrays.

    Attributes:
        boxes: ``float32 [N, 4]`` boxes ``(x1, y1, x2, y2)`` in pixels of the image they belong to.
        landmarks: ``float32 [N, 5, 2]`` ``(x, y)`` pixels, ordered left eye, right eye, nose, left mouth corner,
            right mouth corner (left/right as seen in the image). Rows with ``landmarks_valid`` False carry no
            information and are set to -1 by the transforms.
        landmarks_valid: ``bool [N]``, False where the annotation has no landmarks.
    """

    boxes: np.ndarray
    landmarks: np.ndarray
    landmarks_valid: np.ndarray

    def __post_init__(self) -> None:
        num_faces = self.boxes.shape[0]
        if self.boxes.shape != (num_faces, 4):
            raise ValueError(f"boxes must have shape [N, 4], got {tuple(self.boxes.shape)}")
        if self.landmarks.shape != (num_faces, NUM_LANDMARKS, 2):
            raise ValueError(f"landmarks must have shape [{num_faces}, 5, 2], got {tuple(self.landmarks.shape)}")
        if self.landmarks_valid.shape != (num_faces,):
            raise ValueError(f"landmarks_valid must have shape [{num_faces}], got {tuple(self.landmarks_valid.shape)}")

    @classmethod
    def empty(cls) -> FaceInstances:
        """Return an image's faces when it has none (``N = 0``)."""
        return cls(
            boxes=np.zeros((0, 4), dtype=np.float32),
            landmarks=np.zeros((0, NUM_LANDMARKS, 2), dtype=np.float32),
            landmarks_valid=np.zeros((0,), dtype=bool),
        )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def copy(self) -> FaceInstances:
        """Return a deep copy with float32 coordinates."""
        return FaceInstances(
            boxes=self.boxes.astype(np.float32, copy=True),
            landmarks=self.landmarks.astype(np.float32, copy=True),
            landmarks_valid=self.landmarks_valid.astype(bool, copy=True),
        )

    def select(self, mask: np.ndarray) -> FaceInstances:
        """Return the faces where ``mask`` (``bool [N]``) is True, as copies."""
        return FaceInstances(
            boxes=self.boxes[mask].copy(),
            landmarks=self.landmarks[mask].copy(),
            landmarks_valid=self.landmarks_valid[mask].copy(),
        )

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Return ``boxes`` ``float32 [N, 4]``, ``landmarks`` ``float32 [N, 5, 2]`` (-1 where not valid) and
        ``landmarks_valid`` ``bool [N]`` as tensors."""
        landmarks = self.landmarks.astype(np.float32, copy=True)
        landmarks[~self.landmarks_valid] = MISSING_LANDMARK_VALUE
        return {
            "boxes": torch.from_numpy(self.boxes.astype(np.float32, copy=True)),
            "landmarks": torch.from_numpy(landmarks),
            "landmarks_valid": torch.from_numpy(self.landmarks_valid.astype(bool, copy=True)),
        }


class FaceTransform(Protocol):
    """What :class:`~visiontune.data.widerface_dataset.WiderFaceDataset` calls on every sample.

    Args:
        image: ``uint8 [H, W, 3]`` BGR image.
        faces: the image's faces in its pixels.
        generator: the only source of randomness.

    Returns:
        ``(image, target)``: ``float32 [3, H', W']`` BGR minus mean, and a dict with ``boxes``, ``landmarks``,
        ``landmarks_valid`` tensors in pixels of the returned image (plus transform-specific keys).
    """

    def __call__(
        self, image: np.ndarray, faces: FaceInstances, generator: np.random.Generator
    ) -> tuple[torch.Tensor, dict[str, Any]]: ...
