"""Face-detection transforms: the RetinaFace training augmentation and the evaluation resize.

The training pipeline reproduces the behaviour of the reference RetinaFace ``data_augment.py`` (``preproc``) with
numpy, PIL and torch only (no OpenCV), in the reference order:

1. :func:`~visiontune.data.face_geometry.random_square_crop`: square crop of ``scale * short side`` with
   ``scale`` drawn from ``(0.3, 0.45, 0.6, 0.8, 1.0)``; a crop is accepted when at least one face lies entirely
   inside it, and it keeps the faces whose centres lie strictly inside it (boxes clipped, landmarks clamped to the
   crop). Up to 250 attempts, then the full image is kept (and padded to a square in step 3).
2. :func:`~visiontune.data.face_photometric.photometric_distort`: brightness, contrast, saturation and hue, each
   applied with probability 0.5; contrast comes either before or after the HSV steps (probability 0.5 each), as in
   the reference.
3. :func:`~visiontune.data.face_geometry.pad_to_square`: only when the crop fell back to the full image; the image
   stays at the top-left corner and the rest is filled with the mean colour.
4. :func:`~visiontune.data.face_geometry.horizontal_flip` with probability 0.5; landmarks swap left/right eye
   (0 <-> 1) and left/right mouth corner (3 <-> 4).
5. Resize to ``image_size x image_size`` with an interpolation drawn uniformly from five filters, convert to
   float32 and subtract the BGR mean (104, 117, 123).

Differences from the reference, all deliberate:

* The reference crop loop carries the comment "make sure that the cropped image contains at least one face > 16
  pixel at training image scale", but its threshold is ``> 0.0``, so it drops nothing. ``min_face_size=0.0``
  reproduces that; pass ``min_face_size=16.0`` to enforce the comment.
* Crop offsets are drawn from ``[0, width - side]`` inclusive (the reference's ``randrange`` never reaches the
  last offset).
* The photometric steps run in float32 and round to uint8 once at the end (the reference truncates to uint8 after
  every step and round-trips through 8-bit HSV even when neither saturation nor hue changes).
* Resizing uses PIL filters (bilinear, bicubic, box for OpenCV's "area", nearest, Lanczos); PIL low-pass filters
  when shrinking, OpenCV does not.
* The reference asserts that every image has a face; here images without faces are valid samples: they skip the
  crop search (no crop can contain a face) and are padded to a square.

Coordinates are continuous pixels: a box ``(x1, y1, x2, y2)`` covers ``x1 <= x < x2``, so a horizontal flip maps
``x`` to ``width - x``. Randomness comes only from the ``numpy.random.Generator`` passed to each call.

The steps live in :mod:`visiontune.data.face_geometry` (crop, pad, flip, resize) and
:mod:`visiontune.data.face_photometric` (colour distortion); the faces in :mod:`visiontune.data.face_instances`.
This module composes them (:class:`RetinaFaceTrainTransform`, :class:`FaceEvalTransform`) and ends both pipelines
with :func:`to_normalized_tensor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from visiontune.data.face_geometry import (
    BGR_MEAN,
    DEFAULT_CROP_SCALES,
    INTERPOLATIONS,
    horizontal_flip,
    pad_to_square,
    random_square_crop,
    resize_image,
)
from visiontune.data.face_instances import FaceInstances
from visiontune.data.face_photometric import photometric_distort

__all__ = [
    "FaceEvalTransform",
    "RetinaFaceTrainTransform",
    "compute_eval_scale",
    "to_normalized_tensor",
]


def to_normalized_tensor(image: np.ndarray, mean: Sequence[float] = BGR_MEAN) -> torch.Tensor:
    """Convert a BGR ``[H, W, 3]`` image in 0..255 to ``float32 [3, H, W]`` minus ``mean`` (BGR order)."""
    planar = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(torch.float32)
    return planar.sub_(torch.tensor(mean, dtype=torch.float32).view(3, 1, 1))


class RetinaFaceTrainTransform:
    """RetinaFace training augmentation: crop, distort, pad, mirror, resize, subtract mean (see module docstring).

    Args:
        image_size: side ``S`` of the square output (640 for MobileNet-0.25, 840 for ResNet-50 in the reference).
        crop_scales: crop sides as fractions of the short side.
        max_crop_attempts: crop attempts before falling back to the full image.
        min_face_size: faces not larger than this many output pixels after the crop are dropped (reference 0.0).
        distort: apply the photometric distortion.
        mirror_probability: probability of the horizontal flip.
        interpolations: resize filters (names in :data:`INTERPOLATIONS`), one drawn uniformly per sample.
        mean: BGR mean used for padding and subtracted from the output.

    Call with ``(image uint8 [H, W, 3] BGR, faces, generator)``; returns ``float32 [3, S, S]`` and a target with
    ``boxes float32 [N, 4]`` xyxy, ``landmarks float32 [N, 5, 2]`` (-1 where not valid) and
    ``landmarks_valid bool [N]``, all in pixels of the output.
    """

    def __init__(
        self,
        image_size: int = 640,
        *,
        crop_scales: Sequence[float] = DEFAULT_CROP_SCALES,
        max_crop_attempts: int = 250,
        min_face_size: float = 0.0,
        distort: bool = True,
        mirror_probability: float = 0.5,
        interpolations: Sequence[str] = tuple(INTERPOLATIONS),
        mean: Sequence[float] = BGR_MEAN,
    ) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if not crop_scales or any(not 0.0 < scale <= 1.0 for scale in crop_scales):
            raise ValueError(f"crop_scales must be a non-empty list of values in (0, 1], got {list(crop_scales)}")
        if not 0.0 <= mirror_probability <= 1.0:
            raise ValueError(f"mirror_probability must be in [0, 1], got {mirror_probability}")
        unknown = [name for name in interpolations if name not in INTERPOLATIONS]
        if unknown or not interpolations:
            raise ValueError(f"unknown interpolations {unknown}; expected a non-empty subset of {list(INTERPOLATIONS)}")
        self.image_size = int(image_size)
        self.crop_scales = tuple(float(scale) for scale in crop_scales)
        self.max_crop_attempts = int(max_crop_attempts)
        self.min_face_size = float(min_face_size)
        self.distort = distort
        self.mirror_probability = float(mirror_probability)
        self.interpolations = tuple(interpolations)
        self.mean = tuple(float(value) for value in mean)

    def __call__(
        self, image: np.ndarray, faces: FaceInstances, generator: np.random.Generator
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        crop = random_square_crop(
            image,
            faces,
            generator,
            image_size=self.image_size,
            scales=self.crop_scales,
            max_attempts=self.max_crop_attempts,
            min_face_size=self.min_face_size,
        )
        image, faces = crop.image, crop.faces
        if self.distort:
            image = photometric_distort(image, generator)
        if not crop.cropped:
            image = pad_to_square(image, self.mean)
        if generator.random() < self.mirror_probability:
            image, faces = horizontal_flip(image, faces)
        side = image.shape[0]
        interpolation = self.interpolations[int(generator.integers(len(self.interpolations)))]
        image = resize_image(image, size=(self.image_size, self.image_size), interpolation=interpolation)
        factor = self.image_size / side
        faces.boxes = (faces.boxes * factor).astype(np.float32)
        faces.landmarks = (faces.landmarks * factor).astype(np.float32)
        return to_normalized_tensor(image, self.mean), faces.to_tensors()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(image_size={self.image_size}, crop_scales={self.crop_scales}, "
            f"min_face_size={self.min_face_size}, distort={self.distort}, "
            f"mirror_probability={self.mirror_probability}, interpolations={self.interpolations})"
        )


def compute_eval_scale(height: int, width: int, *, target_size: int | None, max_size: int) -> float:
    """Scale factor of the reference WIDER FACE test (``test_widerface.py``).

    ``target_size / short side``, reduced to ``max_size / long side`` when ``round(scale * long side)`` would
    exceed ``max_size``. ``target_size`` None means the original size (1.0).
    """
    if target_size is None:
        return 1.0
    scale = target_size / min(height, width)
    if round(scale * max(height, width)) > max_size:
        scale = max_size / max(height, width)
    return float(scale)


class FaceEvalTransform:
    """Evaluation transform: original size, or the reference multi-size test rescale.

    Args:
        target_size: None keeps the original size (use batch size 1); otherwise the short side is scaled to
            ``target_size`` (reference 1600) ...
        max_size: ... unless the long side would then exceed ``max_size`` (reference ``test_widerface.py``: 2150).
        mean: BGR mean subtracted from the output.

    Call with ``(image uint8 [H, W, 3] BGR, faces, generator)`` (the generator is ignored); returns
    ``float32 [3, H', W']`` with ``H' = round(H * scale)``, ``W' = round(W * scale)`` (bilinear) and a target with
    ``boxes``, ``landmarks`` multiplied by ``scale`` (pixels of the returned image), ``landmarks_valid`` and
    ``scale: float``. Divide predicted coordinates by ``scale`` to get original pixels.
    """

    def __init__(self, target_size: int | None = None, *, max_size: int = 2150, mean: Sequence[float] = BGR_MEAN):
        if target_size is not None and target_size < 1:
            raise ValueError(f"target_size must be positive or None, got {target_size}")
        if max_size < 1:
            raise ValueError(f"max_size must be positive, got {max_size}")
        self.target_size = target_size
        self.max_size = int(max_size)
        self.mean = tuple(float(value) for value in mean)

    def __call__(
        self, image: np.ndarray, faces: FaceInstances, generator: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        height, width = image.shape[:2]
        scale = compute_eval_scale(height, width, target_size=self.target_size, max_size=self.max_size)
        faces = faces.copy()
        if scale != 1.0:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            image = resize_image(image, size=size, interpolation="bilinear")
            faces.boxes = (faces.boxes * scale).astype(np.float32)
            faces.landmarks = (faces.landmarks * scale).astype(np.float32)
        target: dict[str, Any] = faces.to_tensors()
        target["scale"] = scale
        return to_normalized_tensor(image, self.mean), target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target_size={self.target_size}, max_size={self.max_size})"
