from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visiontune.models.retinaface import load_retinaface_input, normalize_bgr, read_image_bgr


def test_read_image_bgr_channel_order(tmp_path: Path) -> None:
    pixels = np.zeros((2, 3, 3), dtype=np.uint8)
    pixels[0, 0] = (200, 100, 50)  # R, G, B
    pixels[1, 2] = (1, 2, 3)
    path = tmp_path / "image.png"
    Image.fromarray(pixels).save(path)
    image = read_image_bgr(path)
    assert image.shape == (3, 2, 3) and image.dtype == torch.float32
    assert image[:, 0, 0].tolist() == [50.0, 100.0, 200.0]
    assert image[:, 1, 2].tolist() == [3.0, 2.0, 1.0]
    normalised = load_retinaface_input(path)
    assert normalised[:, 0, 0].tolist() == [50.0 - 104.0, 100.0 - 117.0, 200.0 - 123.0]
    torch.testing.assert_close(normalize_bgr(image[None]), normalised[None])


def test_grayscale_and_exif_orientation(tmp_path: Path) -> None:
    gray = Image.fromarray(np.full((4, 6), 77, dtype=np.uint8))
    path = tmp_path / "gray.png"
    gray.save(path)
    assert read_image_bgr(path).shape == (3, 4, 6) and float(read_image_bgr(path).max()) == 77.0

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    rotated_path = tmp_path / "rotated.jpg"
    Image.new("RGB", (16, 8)).save(rotated_path, exif=exif)
    assert read_image_bgr(rotated_path).shape == (3, 16, 8)
    assert read_image_bgr(rotated_path, apply_exif_orientation=False).shape == (3, 8, 16)


def test_unreadable_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("not an image")
    with pytest.raises(ValueError, match=r"notes.jpg: not a readable image"):
        read_image_bgr(path)
    with pytest.raises(ValueError, match=r"expected a BGR image Tensor\[..., 3, H, W\], got shape \[4, 5\]"):
        normalize_bgr(torch.zeros(4, 5))
