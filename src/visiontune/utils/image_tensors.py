"""RGB images as float tensors and back: ``[3, H, W]`` in [0, 1], the layout of the detection models."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["rgb_to_tensor", "tensor_to_rgb"]


def rgb_to_tensor(image: Image.Image) -> Tensor:
    """RGB PIL image -> float32 ``[3, H, W]`` in [0, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)


def tensor_to_rgb(tensor: Tensor) -> Image.Image:
    """Float ``[3, H, W]`` in [0, 1] -> RGB PIL image."""
    pixels = tensor.detach().cpu().mul(255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(pixels))
