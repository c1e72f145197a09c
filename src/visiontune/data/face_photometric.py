"""Photometric face-detection transforms: brightness, contrast, saturation and hue (reference ``_distort``).

Step 2 of the RetinaFace training augmentation (:mod:`visiontune.data.face_transforms`): each step is applied with
probability 0.5; contrast comes either before or after the HSV steps (probability 0.5 each), as in the reference.
The steps run in float32 and round to uint8 once at the end. Images are BGR with values in 0..255; randomness
comes only from the ``numpy.random.Generator`` passed to each call.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = [
    "PhotometricParams",
    "apply_photometric",
    "bgr_to_hsv",
    "hsv_to_bgr",
    "photometric_distort",
    "sample_photometric_params",
]


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
