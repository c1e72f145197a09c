"""Face-detection transforms: the RetinaFace training augmentation and the evaluation resize.

The training pipeline reproduces the behaviour of the reference RetinaFace ``data_augment.py`` (``preproc``) with
numpy, PIL and torch only (no OpenCV), in the reference order:

1. :func:`random_square_crop`: square crop of ``scale * short side`` with ``scale`` drawn from
   ``(0.3, 0.45, 0.6, 0.8, 1.0)``; a crop is accepted when at least one face lies entirely inside it, and it keeps
   the faces whose centres lie strictly inside it (boxes clipped, landmarks clamped to the crop). Up to 250
   attempts, then the full image is kept (and padded to a square in step 3).
2. :func:`photometric_distort`: brightness, contrast, saturation and hue, each applied with probability 0.5;
   contrast comes either before or after the HSV steps (probability 0.5 each), as in the reference.
3. :func:`pad_to_square`: only when the crop fell back to the full image; the image stays at the top-left corner
   and the rest is filled with the mean colour.
4. :func:`horizontal_flip` with probability 0.5; landmarks swap left/right eye (0 <-> 1) and left/right mouth
   corner (3 <-> 4).
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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

__all__ = [
    "BGR_MEAN",
    "DEFAULT_CROP_SCALES",
    "INTERPOLATIONS",
    "LANDMARK_FLIP_ORDER",
    "CropResult",
    "FaceEvalTransform",
    "FaceInstances",
    "FaceTransform",
    "PhotometricParams",
    "RetinaFaceTrainTransform",
    "apply_photometric",
    "bgr_to_hsv",
    "compute_eval_scale",
    "horizontal_flip",
    "hsv_to_bgr",
    "pad_to_square",
    "photometric_distort",
    "random_square_crop",
    "resize_image",
    "sample_photometric_params",
    "to_normalized_tensor",
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

NUM_LANDMARKS = 5
MISSING_LANDMARK_VALUE = -1.0


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
    """What :class:`~visiontune.data.widerface.WiderFaceDataset` calls on every sample.

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


# ---------------------------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------------------------


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


def to_normalized_tensor(image: np.ndarray, mean: Sequence[float] = BGR_MEAN) -> torch.Tensor:
    """Convert a BGR ``[H, W, 3]`` image in 0..255 to ``float32 [3, H, W]`` minus ``mean`` (BGR order)."""
    planar = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(torch.float32)
    return planar.sub_(torch.tensor(mean, dtype=torch.float32).view(3, 1, 1))


# ---------------------------------------------------------------------------------------------------------------
# Photometric distortion
# ---------------------------------------------------------------------------------------------------------------


def _hsv_planes_from_bgr(planes: np.ndarray) -> np.ndarray:
    """``float32 [3, ...]`` BGR planes -> ``float32 [3, ...]`` HSV planes (see :func:`bgr_to_hsv`)."""
    blue, green, red = planes
    maximum = np.maximum(np.maximum(blue, green), red)
    chroma = maximum - np.minimum(np.minimum(blue, green), red)
    degrees_per_unit = np.divide(60.0, chroma, out=np.zeros_like(chroma), where=chroma > 0)
    hue = np.where(
        maximum == red,
        (green - blue) * degrees_per_unit,
        np.where(maximum == green, (blue - red) * degrees_per_unit + 120.0, (red - green) * degrees_per_unit + 240.0),
    )
    hue = np.where(hue < 0.0, hue + 360.0, hue)
    saturation = np.divide(chroma, maximum, out=np.zeros_like(chroma), where=maximum > 0)
    return np.stack([hue, saturation, maximum])


def _bgr_planes_from_hsv(planes: np.ndarray) -> np.ndarray:
    """``float32 [3, ...]`` HSV planes -> ``float32 [3, ...]`` BGR planes (see :func:`hsv_to_bgr`)."""
    hue, saturation, value = planes
    hue_sector = np.mod(hue, 360.0) / 60.0
    chroma = value * saturation
    channels = []
    for offset in (1.0, 3.0, 5.0):  # blue, green, red
        sector = np.mod(hue_sector + offset, 6.0)
        channels.append(value - chroma * np.clip(np.minimum(sector, 4.0 - sector), 0.0, 1.0))
    return np.stack(channels)


def bgr_to_hsv(image: np.ndarray) -> np.ndarray:
    """Convert BGR ``[..., 3]`` values in 0..255 to float32 HSV ``[..., 3]``: hue in degrees ``[0, 360)``,
    saturation ``[0, 1]``, value ``[0, 255]``. Grey pixels get hue 0 and black pixels saturation 0."""
    planes = np.ascontiguousarray(np.moveaxis(np.asarray(image), -1, 0), dtype=np.float32)
    return np.moveaxis(_hsv_planes_from_bgr(planes), 0, -1)


def hsv_to_bgr(hsv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`bgr_to_hsv`: float32 BGR ``[..., 3]`` in 0..255 (hue taken modulo 360)."""
    planes = np.ascontiguousarray(np.moveaxis(np.asarray(hsv), -1, 0), dtype=np.float32)
    return np.moveaxis(_bgr_planes_from_hsv(planes), 0, -1)


@dataclasses.dataclass(frozen=True)
class PhotometricParams:
    """One draw of the photometric distortion; None means the step is skipped.

    Attributes:
        brightness_delta: added to every channel, drawn from ``U(-32, 32)``.
        contrast_factor: multiplies every channel, ``U(0.5, 1.5)``.
        saturation_factor: multiplies HSV saturation, ``U(0.5, 1.5)``.
        hue_shift_degrees: added to the hue, ``2 * k`` degrees with integer ``k`` in ``[-18, 18]`` (OpenCV's 8-bit
            hue unit is 2 degrees).
        contrast_last: True applies contrast after saturation and hue, False before them.
    """

    brightness_delta: float | None = None
    contrast_factor: float | None = None
    saturation_factor: float | None = None
    hue_shift_degrees: float | None = None
    contrast_last: bool = False


def sample_photometric_params(generator: np.random.Generator) -> PhotometricParams:
    """Draw :class:`PhotometricParams` like the reference ``_distort`` (each step with probability 0.5)."""

    def maybe_uniform(low: float, high: float) -> float | None:
        return float(generator.uniform(low, high)) if generator.random() < 0.5 else None

    contrast_last = bool(generator.random() < 0.5)
    brightness = maybe_uniform(-32.0, 32.0)
    contrast = None if contrast_last else maybe_uniform(0.5, 1.5)
    saturation = maybe_uniform(0.5, 1.5)
    hue = 2.0 * float(generator.integers(-18, 19)) if generator.random() < 0.5 else None
    if contrast_last:
        contrast = maybe_uniform(0.5, 1.5)
    return PhotometricParams(
        brightness_delta=brightness,
        contrast_factor=contrast,
        saturation_factor=saturation,
        hue_shift_degrees=hue,
        contrast_last=contrast_last,
    )


def apply_photometric(image: np.ndarray, params: PhotometricParams) -> np.ndarray:
    """Apply brightness, contrast, saturation and hue to a BGR image (values 0..255, clipped after each step).

    Args:
        image: ``[H, W, 3]`` BGR image, any real dtype.
        params: which steps to apply and their amounts.

    Returns:
        ``uint8 [H, W, 3]`` BGR image (rounded once, at the end).
    """
    planes = np.ascontiguousarray(np.moveaxis(image, -1, 0), dtype=np.float32)  # [3, H, W] BGR

    def contrast(values: np.ndarray) -> np.ndarray:
        if params.contrast_factor is not None:
            np.multiply(values, params.contrast_factor, out=values)
            np.clip(values, 0.0, 255.0, out=values)
        return values

    if params.brightness_delta is not None:
        np.add(planes, params.brightness_delta, out=planes)
        np.clip(planes, 0.0, 255.0, out=planes)
    if not params.contrast_last:
        planes = contrast(planes)
    if params.saturation_factor is not None or params.hue_shift_degrees is not None:
        hsv = _hsv_planes_from_bgr(planes)
        if params.saturation_factor is not None:
            np.clip(hsv[1] * params.saturation_factor, 0.0, 1.0, out=hsv[1])
        if params.hue_shift_degrees is not None:
            hsv[0] = np.mod(hsv[0] + params.hue_shift_degrees, 360.0)
        planes = np.clip(_bgr_planes_from_hsv(hsv), 0.0, 255.0)
    if params.contrast_last:
        planes = contrast(planes)
    np.rint(planes, out=planes)
    return np.ascontiguousarray(np.moveaxis(planes.astype(np.uint8), 0, -1))


def photometric_distort(image: np.ndarray, generator: np.random.Generator) -> np.ndarray:
    """Randomly distort brightness, contrast, saturation and hue (reference ``_distort``); returns uint8 BGR."""
    return apply_photometric(image, sample_photometric_params(generator))


# ---------------------------------------------------------------------------------------------------------------
# Composed transforms
# ---------------------------------------------------------------------------------------------------------------


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
