"""Geometric face-detection transforms: the random square crop, padding, the horizontal flip and resizing.

These are steps 1, 3, 4 and 5 of the RetinaFace training augmentation (:mod:`visiontune.data.face_transforms`
describes the pipeline and its differences from the reference ``data_augment.py``); they move the faces' boxes and
landmarks with the image.

Coordinates are continuous pixels: a box ``(x1, y1, x2, y2)`` covers ``x1 <= x < x2``, so a horizontal flip maps
``x`` to ``width - x``. Randomness comes only from the ``numpy.random.Generator`` passed to each call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from PIL import Image

from visiontune.data.face_instances import FaceInstances

__all__ = [
    "BGR_MEAN",
    "DEFAULT_CROP_SCALES",
    "INTERPOLATIONS",
    "LANDMARK_FLIP_ORDER",
    "CropResult",
    "horizontal_flip",
    "pad_to_square",
    "random_square_crop",
    "resize_image",
]

BGR_MEAN: tuple[float, float, float] = (104.0, 117.0, 123.0)
"""Per-channel mean subtracted from BGR images in 0..255, as in the reference RetinaFace."""

DEFAULT_CROP_SCALES: tuple[float, ...] = (0.3, 0.45, 0.6, 0.8, 1.0)
"""Crop side lengths, as fractions of the image's short side (reference ``PRE_SCALES``)."""

LANDMARK_FLIP_ORDER: tuple[int, ...] = (1, 0, 2, 4, 3)
"""Landmark order after a horizontal flip. Landmarks are (left eye, right eye, nose, left mouth corner, right
mouth corner), so the eyes (0, 1) and the mouth corners (3, 4) trade places."""

INTERPOLATIONS: dict[str, Image.Resampling] = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}
"""Resize filters by name; the training resize draws one uniformly (reference: linear, cubic, area, nearest,
Lanczos-4)."""


@dataclasses.dataclass
class CropResult:
    """Output of :func:`random_square_crop`.

    Attributes:
        image: ``uint8 [S, S, 3]`` crop, or the unchanged input image when no crop was accepted.
        faces: the kept faces in pixels of ``image``.
        roi: ``(left, top, right, bottom)`` of the accepted crop in input pixels, or None for the fallback.
    """

    image: np.ndarray
    faces: FaceInstances
    roi: tuple[int, int, int, int] | None

    @property
    def cropped(self) -> bool:
        """True when a crop was accepted (the image is square), False for the full-image fallback."""
        return self.roi is not None


def random_square_crop(
    image: np.ndarray,
    faces: FaceInstances,
    generator: np.random.Generator,
    *,
    image_size: int,
    scales: Sequence[float] = DEFAULT_CROP_SCALES,
    max_attempts: int = 250,
    min_face_size: float = 0.0,
) -> CropResult:
    """Randomly crop a square that contains at least one whole face (reference ``_crop``).

    Each attempt draws ``scale`` uniformly from ``scales``, sets ``side = int(scale * min(H, W))`` and draws the
    top-left corner uniformly. The attempt is accepted when at least one face box lies entirely inside the crop and
    at least one face survives the filters: the face's box centre lies strictly inside the crop, and its clipped
    size scaled to ``image_size`` (``min(w, h) * image_size / side``) exceeds ``min_face_size``. Surviving boxes
    are clipped to the crop; landmarks are shifted and clamped to ``[0, side]`` like the reference.

    Args:
        image: ``uint8 [H, W, 3]`` image.
        faces: faces in pixels of ``image``.
        generator: random source.
        image_size: side of the network input the crop will be resized to (used by ``min_face_size``).
        scales: crop sides as fractions of the short side.
        max_attempts: attempts before falling back to the full image.
        min_face_size: faces whose scaled size is not above this are dropped (reference: 0.0).

    Returns:
        The crop, or the unchanged image with all faces (``roi`` None) after ``max_attempts`` failures, or at once
        when the image has no face.
    """
    height, width = image.shape[:2]
    if len(faces) == 0 or not scales:
        return CropResult(image=image, faces=faces.copy(), roi=None)
    boxes = faces.boxes.astype(np.float64)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    short_side = min(height, width)
    for _ in range(max_attempts):
        scale = float(scales[int(generator.integers(len(scales)))])
        side = int(scale * short_side)
        if side < 1:
            continue
        left = int(generator.integers(0, width - side + 1))
        top = int(generator.integers(0, height - side + 1))
        roi_min = np.array([left, top], dtype=np.float64)
        roi_max = roi_min + side
        fully_inside = np.all((boxes[:, :2] >= roi_min) & (boxes[:, 2:] <= roi_max), axis=1)
        if not fully_inside.any():
            continue
        keep = np.all((centres > roi_min) & (centres < roi_max), axis=1)
        clipped = np.concatenate([np.maximum(boxes[:, :2], roi_min), np.minimum(boxes[:, 2:], roi_max)], axis=1)
        clipped_size = np.minimum(clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1])
        keep &= clipped_size * (image_size / side) > min_face_size
        if not keep.any():
            continue
        kept = faces.select(keep)
        kept.boxes = (clipped[keep] - np.concatenate([roi_min, roi_min])).astype(np.float32)
        kept.landmarks = np.clip(kept.landmarks - roi_min, 0.0, float(side)).astype(np.float32)
        crop = image[top : top + side, left : left + side]
        return CropResult(image=crop, faces=kept, roi=(left, top, left + side, top + side))
    return CropResult(image=image, faces=faces.copy(), roi=None)


def pad_to_square(image: np.ndarray, fill: Sequence[float] = BGR_MEAN) -> np.ndarray:
    """Pad ``image`` (``[H, W, C]``) on the right or bottom to ``[L, L, C]``, ``L = max(H, W)``.

    The image stays at the top-left corner, so face coordinates are unchanged. ``fill`` is cast to the image dtype
    (uint8 images get the mean rounded down, like the reference's ``np.empty(...)[:] = mean``).
    """
    height, width, channels = image.shape
    side = max(height, width)
    if height == width:
        return image
    padded = np.empty((side, side, channels), dtype=image.dtype)
    padded[:] = np.asarray(fill, dtype=np.float64).astype(image.dtype)
    padded[:height, :width] = image
    return padded


def horizontal_flip(image: np.ndarray, faces: FaceInstances) -> tuple[np.ndarray, FaceInstances]:
    """Mirror an image and its faces left to right.

    Boxes map to ``(W - x2, y1, W - x1, y2)`` and landmarks to ``(W - x, y)``; the landmark order is then permuted
    by :data:`LANDMARK_FLIP_ORDER` so that index 0 is again the eye on the image's left.

    Args:
        image: ``[H, W, C]`` image.
        faces: faces in pixels of ``image``.

    Returns:
        The flipped image (a contiguous copy) and the flipped faces.
    """
    width = image.shape[1]
    flipped = faces.copy()
    flipped.boxes = np.stack(
        [width - faces.boxes[:, 2], faces.boxes[:, 1], width - faces.boxes[:, 0], faces.boxes[:, 3]], axis=1
    ).astype(np.float32)
    landmarks = faces.landmarks.astype(np.float32, copy=True)
    landmarks[:, :, 0] = width - landmarks[:, :, 0]
    flipped.landmarks = landmarks[:, list(LANDMARK_FLIP_ORDER)]
    return np.ascontiguousarray(image[:, ::-1]), flipped


def resize_image(image: np.ndarray, *, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """Resize a ``uint8 [H, W, 3]`` image to ``size = (height, width)`` with a PIL filter named in
    :data:`INTERPOLATIONS`."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {sorted(INTERPOLATIONS)}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {tuple(image.shape)}")
    height, width = size
    if (height, width) == image.shape[:2]:
        return image
    resized = Image.fromarray(np.ascontiguousarray(image)).resize(
        (width, height), resample=INTERPOLATIONS[interpolation]
    )
    return np.asarray(resized)
