"""Tests of the synthetic COCO generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from visiontune.data.synthetic_coco import make_synthetic_coco, synthetic_images_dir

BASE_COLORS = {10: (220, 60, 50), 20: (40, 170, 70), 30: (50, 90, 220)}


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_layout_and_content(tmp_path: Path) -> None:
    annotation_file = make_synthetic_coco(tmp_path, num_images=8, image_size=(64, 80), split="val", seed=1)
    assert annotation_file == tmp_path / "annotations" / "instances_val.json"
    assert synthetic_images_dir(annotation_file) == tmp_path / "val"
    document = json.loads(annotation_file.read_text())
    assert document["categories"] == [{"id": 10, "name": "book", "supercategory": "shape"},
                                      {"id": 20, "name": "cup", "supercategory": "shape"},
                                      {"id": 30, "name": "ball", "supercategory": "shape"}]
    assert [image["id"] for image in document["images"]] == list(range(1, 9))
    assert all((image["height"], image["width"]) == (64, 80) for image in document["images"])
    with_objects = {a["image_id"] for a in document["annotations"]}
    assert len(with_objects) == 8 - 2  # num_empty_images defaults to num_images // 4
    assert [a["id"] for a in document["annotations"]] == list(range(1, len(document["annotations"]) + 1))
    crowd = [a for a in document["annotations"] if a["iscrowd"] == 1]
    assert len(crowd) == 1
    assert crowd[0]["category_id"] == 30 and isinstance(crowd[0]["segmentation"]["counts"], str)
    polygons = [a for a in document["annotations"] if a["iscrowd"] == 0]
    assert polygons and all(isinstance(a["segmentation"], list) for a in polygons)
    assert all(Image.open(tmp_path / "val" / image["file_name"]).size == (80, 64) for image in document["images"])


def test_boxes_areas_and_pixels_agree_with_the_masks(tmp_path: Path) -> None:
    annotation_file = make_synthetic_coco(tmp_path, num_images=6, seed=2)
    document = json.loads(annotation_file.read_text())
    images = {image["id"]: image for image in document["images"]}
    for entry in document["annotations"]:
        image = images[entry["image_id"]]
        segmentation = entry["segmentation"]
        if isinstance(segmentation, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, image["height"], image["width"]))
        else:
            rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode()}
        mask = mask_utils.decode(rle).astype(bool)
        rows, cols = np.nonzero(mask)
        assert entry["bbox"] == [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
        assert entry["area"] == mask.sum()
        pixels = np.asarray(Image.open(tmp_path / "train" / image["file_name"])).astype(np.float64)
        mean_color = pixels[mask].mean(axis=0)  # painted in the category colour plus noise of std 8
        assert np.abs(mean_color - BASE_COLORS[entry["category_id"]]).max() < 6


def test_objects_do_not_overlap(tmp_path: Path) -> None:
    annotation_file = make_synthetic_coco(tmp_path, num_images=10, max_objects_per_image=4, seed=5)
    document = json.loads(annotation_file.read_text())
    for image in document["images"]:
        boxes = [a["bbox"] for a in document["annotations"] if a["image_id"] == image["id"]]
        for i, (x, y, w, h) in enumerate(boxes):
            for other_x, other_y, other_w, other_h in boxes[i + 1:]:
                assert x + w <= other_x or other_x + other_w <= x or y + h <= other_y or other_y + other_h <= y


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    make_synthetic_coco(tmp_path / "a", num_images=4, seed=7)
    make_synthetic_coco(tmp_path / "b", num_images=4, seed=7)
    make_synthetic_coco(tmp_path / "c", num_images=4, seed=8)
    assert folder_bytes(tmp_path / "a") == folder_bytes(tmp_path / "b")
    assert folder_bytes(tmp_path / "a") != folder_bytes(tmp_path / "c")


def test_options(tmp_path: Path) -> None:
    annotation_file = make_synthetic_coco(tmp_path, num_images=5, categories=("a", "b"), num_empty_images=0,
                                          with_crowd=False, max_objects_per_image=1, seed=0)
    document = json.loads(annotation_file.read_text())
    assert [c["name"] for c in document["categories"]] == ["a", "b"]
    assert len(document["annotations"]) == 5 and not any(a["iscrowd"] for a in document["annotations"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": (32, 128)}, r"image_size must be at least 48 pixels per side, got \(32, 128\)"),
        ({"categories": ("a", "a")}, r"categories must be non-empty and unique, got \['a', 'a'\]"),
        ({"num_images": 3, "num_empty_images": 3}, r"num_empty_images must be in \[0, num_images\), got 3"),
        ({"num_images": 0}, "num_images and max_objects_per_image must be >= 1"),
    ],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_synthetic_coco(tmp_path, **kwargs)
