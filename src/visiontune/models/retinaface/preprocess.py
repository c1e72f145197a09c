"""Input preparation for RetinaFace: BGR float pixels minus the per-channel mean (104, 117, 123).

The reference implementation reads images with OpenCV (``cv2.imread``: BGR, EXIF orientation applied) and subtracts
the mean in BGR order. These helpers reproduce that with Pillow.
"""

from __future__ import annotations

from os import PathLike

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from visiontune.utils.image import to_rgb

RETINAFACE_BGR_MEAN: tuple[float, float, float] = (104.0, 117.0, 123.0)
"""Per-channel mean subtracted from the B, G, R channels (0-255 scale)."""


def read_image_bgr(path: str | PathLike[str], *, apply_exif_orientation: bool = True) -> Tensor:
    """Read an image file as a BGR float tensor.

    Args:
        path: image file (any format Pillow reads; grayscale, palette and CMYK images are converted to RGB first).
        apply_exif_orientation: rotate/flip according to the EXIF orientation tag, as ``cv2.imread`` does.

    Returns:
        ``Tensor[3, H, W]`` float32, channels B, G, R, values 0-255.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not an image Pillow can decode.
    """
    try:
        with Image.open(path) as file:
            image: Image.Image = ImageOps.exif_transpose(file) if apply_exif_orientation else file
            rgb = np.asarray(to_rgb(image, path), dtype=np.float32)
    except UnidentifiedImageError as error:
        raise ValueError(f"{path}: not a readable image ({error})") from error
    bgr = np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))
    return torch.from_numpy(bgr)


def normalize_bgr(image: Tensor, *, mean: tuple[float, float, float] = RETINAFACE_BGR_MEAN) -> Tensor:
    """Subtract the BGR mean.

    Args:
        image: ``Tensor[..., 3, H, W]`` float BGR, 0-255.
        mean: per-channel mean in B, G, R order.

    Returns:
        ``Tensor[..., 3, H, W]`` float, same dtype as ``image``.
    """
    if image.ndim < 3 or image.shape[-3] != 3:
        raise ValueError(f"expected a BGR image Tensor[..., 3, H, W], got shape {list(image.shape)}")
    return image - torch.tensor(mean, dtype=image.dtype, device=image.device)[:, None, None]


def load_retinaface_input(path: str | PathLike[str]) -> Tensor:
    """Read an image file and prepare it for :class:`~visiontune.models.retinaface.net.RetinaFace`.

    Args:
        path: image file.

    Returns:
        ``Tensor[3, H, W]`` float32, BGR minus :data:`RETINAFACE_BGR_MEAN`, original size.
    """
    return normalize_bgr(read_image_bgr(path))
