"""16-bit and float images reach training scaled to 8 bit, never clipped (visiontune.utils.image)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiontune.data.classification import ClassificationDataset, ClassificationSource
from visiontune.data.image_check import inspect_image
from visiontune.utils.image import ImageModeError, open_rgb, to_rgb

RAMP16 = (np.arange(64 * 64, dtype=np.int64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520


def _save_16bit_png(path: Path) -> Path:
    Image.fromarray(RAMP16).save(path)
    assert Image.open(path).mode == "I;16"  # the mode that PIL's convert("RGB") turns white
    return path


def _save_float_tiff(path: Path, values: np.ndarray) -> Path:
    Image.fromarray(values.astype(np.float32)).save(path)
    assert Image.open(path).mode == "F"
    return path


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    rgb = np.asarray(open_rgb(_save_16bit_png(tmp_path / "depth.png")))
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    expected = np.rint(RAMP16 / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(rgb[..., 0], expected)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    assert (rgb == 255).mean() < 0.01  # PIL's plain convert("RGB") makes 99.6% of this ramp white
    assert (np.asarray(Image.open(tmp_path / "depth.png").convert("RGB")) == 255).mean() > 0.99


@pytest.mark.parametrize(("values", "scale"), [(np.linspace(0, 1, 64), 255.0), (np.linspace(0, 200, 64), 1.0),
                                               (np.linspace(0, 60000, 64), 1 / 257.0)])
def test_float_tiff_is_scaled_by_its_range(tmp_path: Path, values: np.ndarray, scale: float) -> None:
    grid = np.tile(values, (8, 1))
    rgb = np.asarray(open_rgb(_save_float_tiff(tmp_path / "f.tif", grid)))
    np.testing.assert_array_equal(rgb[..., 1], np.clip(np.rint(grid.astype(np.float32) * scale), 0, 255))
    assert rgb.max() >= 199  # not all black, as convert("RGB") makes a 0-1 float image


def test_float_image_without_a_scale_is_refused_naming_file_mode_and_range(tmp_path: Path) -> None:
    path = _save_float_tiff(tmp_path / "signed.tif", np.linspace(-3, 3, 64).reshape(8, 8))
    with pytest.raises(ImageModeError, match=r"signed\.tif: mode F with values -3\.\.3 cannot be scaled to 8 bit"):
        open_rgb(path)
    finding = inspect_image(path)
    assert finding is not None and finding.level == "error"
    assert "mode F with values -3..3 cannot be scaled to 8 bit" in finding.message


def test_check_data_says_how_a_high_bit_depth_image_is_scaled(tmp_path: Path) -> None:
    finding = inspect_image(_save_16bit_png(tmp_path / "depth.png"))
    assert finding is not None and finding.level == "warning"
    assert finding.message == "mode I;16: 16-bit, scaled to 8 bit (value / 257) when loaded"
    finding = inspect_image(_save_float_tiff(tmp_path / "unit.tif", np.linspace(0, 1, 16).reshape(4, 4)))
    assert finding is not None and finding.message == "mode F: float in 0-1, scaled to 8 bit (value x 255) when loaded"


def test_training_dataset_reads_16bit_png_scaled(tmp_path: Path) -> None:
    source = ClassificationSource(samples=[(_save_16bit_png(tmp_path / "depth.png"), 0)], classes=["a"], origin="t")
    image, label = ClassificationDataset(source)[0]
    assert label == 0 and image.mode == "RGB"
    assert np.asarray(image).mean() == pytest.approx(np.rint(RAMP16 / 257.0).mean(), abs=0.01)


def test_eight_bit_modes_are_unchanged() -> None:
    grey = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16))
    np.testing.assert_array_equal(np.asarray(to_rgb(grey))[..., 0], np.asarray(grey))
