"""Tests for visiontune.data.image_check: per-image inspection and the check-data report."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from visiontune.data.classification import ClassificationSource, scan_image_folder
from visiontune.data.image_check import ImageFinding, check_classification_sources, inspect_image, scan_images


def write_image(path: Path, *, mode: str = "RGB", size: tuple[int, int] = (8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path)
    return path


def write_truncated_jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(1).integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_inspect_image_accepts_rgb(tmp_path: Path) -> None:
    assert inspect_image(write_image(tmp_path / "ok.png")) is None
    assert inspect_image(write_image(tmp_path / "ok.jpg")) is None


@pytest.mark.parametrize(("mode", "suffix"), [("L", ".png"), ("CMYK", ".jpg"), ("RGBA", ".png"), ("P", ".png")])
def test_inspect_image_non_rgb_mode_is_a_warning(tmp_path: Path, mode: str, suffix: str) -> None:
    path = write_image(tmp_path / f"image{suffix}", mode=mode)
    assert inspect_image(path) == ImageFinding(path, "warning", f"mode {mode}, not RGB (converted to RGB when loaded)")


def test_inspect_image_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert inspect_image(empty) == ImageFinding(empty, "error", "empty file (0 bytes)")

    text = tmp_path / "text.jpg"
    text.write_text("hello")
    expected = "not an image PIL can read (unknown or broken file format)"
    assert inspect_image(text) == ImageFinding(text, "error", expected)

    missing = tmp_path / "missing.png"
    assert inspect_image(missing) == ImageFinding(missing, "error", "cannot read file: No such file or directory")

    assert inspect_image(tmp_path) == ImageFinding(tmp_path, "error", "a directory, not a regular file (never opened)")


def test_inspect_image_truncated_jpeg(tmp_path: Path) -> None:
    finding = inspect_image(write_truncated_jpeg(tmp_path / "cut.jpg"))
    assert finding is not None and finding.level == "error"
    assert finding.message.startswith("corrupt or truncated image: OSError: image file is truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_inspect_image_corrupt_png_data(tmp_path: Path) -> None:
    noise = np.random.default_rng(2).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    path = tmp_path / "broken.png"
    Image.fromarray(noise).save(path)
    data = bytearray(path.read_bytes())
    data[200:260] = bytes(byte ^ 0xFF for byte in data[200:260])  # inside the compressed pixel data
    path.write_bytes(bytes(data))
    finding = inspect_image(path)
    assert finding is not None and finding.level == "error"
    assert finding.message.startswith("corrupt or truncated image: ")


def test_inspect_image_zero_width_png(tmp_path: Path) -> None:
    header = struct.pack(">IIBBBBB", 0, 4, 8, 2, 0, 0, 0)  # width 0, height 4, 8-bit RGB
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(
        b"IEND", b""
    )
    path = tmp_path / "zero.png"
    path.write_bytes(data)
    assert inspect_image(path) == ImageFinding(path, "error", "zero-size image (0x4 pixels in the file header)")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_scan_images_keeps_order_and_dedups(tmp_path: Path, num_workers: int) -> None:
    good = write_image(tmp_path / "a.png")
    gray = write_image(tmp_path / "b.png", mode="L")
    bad = tmp_path / "c.png"
    bad.write_bytes(b"\x89PNG broken")
    findings = scan_images([bad, good, gray, bad, str(gray)], desc="test", num_workers=num_workers, progress=False)
    assert [(finding.path, finding.level) for finding in findings] == [(bad, "error"), (gray, "warning")]


def test_scan_images_rejects_negative_workers() -> None:
    with pytest.raises(ValueError, match="num_workers must be >= 0, got -1"):
        scan_images([], desc="x", num_workers=-1)


def make_split(root: Path, counts: dict[str, int]) -> Path:
    for name, count in counts.items():
        for index in range(count):
            write_image(root / name / f"{index}.png")
    return root


def test_check_report_clean_dataset(tmp_path: Path) -> None:
    train = scan_image_folder(make_split(tmp_path / "train", {"circle": 3, "square": 2}))
    val = scan_image_folder(make_split(tmp_path / "val", {"circle": 1, "square": 1}), classes=train.classes)
    report = check_classification_sources({"train": train, "val": val}, progress=False)
    assert not report.has_errors
    assert report.num_images_checked == 7
    assert "images decoded: 7" in report.format()
    text = report.format()
    lines = text.splitlines()
    assert lines[0] == f"split 'train': 5 images, 2 classes ({tmp_path / 'train'})"
    assert lines[1] == f"split 'val': 2 images, 2 classes ({tmp_path / 'val'})"
    assert "class    train     val" in lines
    assert "circle       3       1" in lines
    assert "square       2       1" in lines
    assert lines[-1] == "result: OK (0 error(s), 0 warning(s))"


def test_check_report_finds_problems(tmp_path: Path) -> None:
    train_root = make_split(tmp_path / "train", {"circle": 2, "square": 2, "star": 1})
    write_truncated_jpeg(train_root / "square" / "cut.jpg")
    write_image(train_root / "circle" / "gray.png", mode="L")
    train = scan_image_folder(train_root)
    val_root = make_split(tmp_path / "val", {"circle": 1, "square": 1})
    val = scan_image_folder(val_root, classes=train.classes)
    val.samples.append((val_root / "circle" / "0.png", 1))  # listed twice, with two labels
    val.samples.append((train_root / "circle" / "0.png", 0))  # leaks from train

    report = check_classification_sources({"train": train, "val": val}, progress=False)
    assert report.has_errors
    assert report.num_errors == 2 and report.num_warnings == 4
    text = report.format()
    assert "star         1       0" in text
    assert f"  - split 'val': {val_root / 'circle' / '0.png'} is listed with different labels: circle, square" in text
    assert f"  - train: {train_root / 'square' / 'cut.jpg'}: corrupt or truncated image: OSError: image file is" in text
    assert "  - split 'val' has no images for 1 class(es): star" in text
    assert "  - split 'val' lists 1 image path(s) more than once (1 extra entries)" in text
    assert "  - 1 image path(s) appear in both 'train' and 'val'" in text
    assert f"  - train: {train_root / 'circle' / 'gray.png'}: mode L, not RGB" in text
    assert text.splitlines()[-1] == "result: FAILED (2 error(s), 4 warning(s))"


def test_check_report_class_mismatch_between_splits(tmp_path: Path) -> None:
    image = write_image(tmp_path / "a.png")
    train = ClassificationSource([(image, 0)], ["cat", "dog"], "train.txt")
    val_extra = ClassificationSource([(image, 0)], ["cat", "lynx"], "val.txt")
    report = check_classification_sources({"train": train, "val": val_extra}, check_images=False, progress=False)
    assert report.errors == ["split 'val' has 1 class(es) not in 'train': lynx"]
    assert "split 'val' lacks 1 class(es) of 'train': dog" in report.warnings
    assert report.num_images_checked == 0
    assert "images not decoded (image check disabled)" in report.format()

    reordered = ClassificationSource([(image, 0)], ["dog", "cat"], "val.txt")
    report = check_classification_sources({"train": train, "val": reordered}, check_images=False, progress=False)
    assert report.errors == [
        "splits 'train' and 'val' order their classes differently, so the same label index means different classes"
    ]
    with pytest.raises(ValueError, match="needs at least one split"):
        check_classification_sources({})
