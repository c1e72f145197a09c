"""Tests of the COCO instance-segmentation loader, data checker and detection data pipeline."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torchvision import tv_tensors

from visiontune.data.coco_check import check_coco_data
from visiontune.data.coco_dataset import CocoInstanceDataset
from visiontune.data.coco_format import CocoFormatError, parse_coco_instances
from visiontune.data.coco_rle import decode_compressed_rle_counts
from visiontune.data.detection_transforms import (
    SanitizeDetectionTarget,
    collate_detection,
    create_aspect_ratio_groups,
    make_detection_eval_transforms,
    make_detection_train_transforms,
)
from visiontune.data.synthetic_coco import make_synthetic_coco, synthetic_images_dir

SQUARE = [[2, 2, 6, 2, 6, 6, 2, 6]]  # pycocotools fills rows 2..5 and columns 2..5


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    annotation_file = make_synthetic_coco(tmp_path_factory.mktemp("coco"), num_images=8, seed=3)
    return synthetic_images_dir(annotation_file), annotation_file, json.loads(annotation_file.read_text())


def write_coco(
    folder: Path,
    annotations: list[dict[str, Any]],
    *,
    images: list[dict[str, Any]] | None = None,
    categories: list[dict[str, Any]] | None = None,
    name: str = "instances_bad.json",
) -> Path:
    """Write a COCO file (default: one black 10x12 image, categories book=1 and cup=2) and its images."""
    images = images if images is not None else [{"id": 1, "file_name": "a.png", "height": 10, "width": 12}]
    categories = categories if categories is not None else [{"id": 1, "name": "book"}, {"id": 2, "name": "cup"}]
    for image in images:
        if image["width"] > 0 and image["height"] > 0:
            Image.new("RGB", (image["width"], image["height"])).save(folder / image["file_name"])
    path = folder / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def annotation(annotation_id: int = 7, **overrides: Any) -> dict[str, Any]:
    entry = {"id": annotation_id, "image_id": 1, "category_id": 1, "bbox": [2, 2, 4, 4], "area": 16.0,
             "iscrowd": 0, "segmentation": SQUARE}
    entry.update(overrides)
    return entry


# --------------------------------------------------------------------------- loading


def test_round_trip_on_synthetic_data(synthetic: tuple[Path, Path, dict[str, Any]]) -> None:
    images_dir, annotation_file, document = synthetic
    dataset = CocoInstanceDataset(images_dir, annotation_file)
    assert len(dataset) == len(document["images"]) == 8
    assert dataset.label_to_category == {1: {"id": 10, "name": "book"}, 2: {"id": 20, "name": "cup"},
                                         3: {"id": 30, "name": "ball"}}
    assert dataset.class_names == ["book", "cup", "ball"]
    assert dataset.num_classes == 4
    label_of = {10: 1, 20: 2, 30: 3}
    expected = [a for a in document["annotations"] if not a["iscrowd"]]
    seen = 0
    for index in range(len(dataset)):
        image, target = dataset[index]
        assert isinstance(image, tv_tensors.Image) and image.dtype == torch.float32
        assert image.shape == (3, 96, 128) and image.min() >= 0.0 and image.max() <= 1.0
        pixels = np.asarray(Image.open(images_dir / document["images"][index]["file_name"]))
        torch.testing.assert_close(image, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
        assert target["image_id"] == document["images"][index]["id"]
        mine = [a for a in expected if a["image_id"] == target["image_id"]]
        assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
        assert target["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY and target["boxes"].canvas_size == (96, 128)
        assert isinstance(target["masks"], tv_tensors.Mask) and target["masks"].dtype == torch.uint8
        assert target["masks"].shape == (len(mine), 96, 128)
        assert target["labels"].dtype == torch.int64
        assert target["labels"].tolist() == [label_of[a["category_id"]] for a in mine]
        assert target["area"].tolist() == [a["area"] for a in mine]
        assert target["iscrowd"].tolist() == [0] * len(mine)
        for box, mask, entry in zip(target["boxes"], target["masks"], mine):
            x, y, w, h = entry["bbox"]
            assert box.tolist() == [x, y, x + w, y + h]
            rows, cols = torch.nonzero(mask, as_tuple=True)  # box and mask agree exactly
            assert box.tolist() == [cols.min().item(), rows.min().item(), cols.max().item() + 1, rows.max().item() + 1]
            assert mask.sum().item() == entry["area"]
            assert set(mask.unique().tolist()) <= {0, 1}
        seen += len(mine)
    assert seen == len(expected)


def test_empty_images_keep_or_drop(synthetic: tuple[Path, Path, dict[str, Any]]) -> None:
    images_dir, annotation_file, document = synthetic
    with_objects = {a["image_id"] for a in document["annotations"] if not a["iscrowd"]}
    dropped = CocoInstanceDataset(images_dir, annotation_file, empty_images="drop")
    assert dropped.image_ids == [image["id"] for image in document["images"] if image["id"] in with_objects]
    assert len(dropped) < 8
    assert dropped.aspect_ratios() == [128 / 96] * len(dropped)
    with pytest.raises(ValueError, match="empty_images must be 'keep' or 'drop', got 'skip'"):
        CocoInstanceDataset(images_dir, annotation_file, empty_images="skip")  # type: ignore[arg-type]


def test_category_subset_is_remapped_in_the_given_order(synthetic: tuple[Path, Path, dict[str, Any]]) -> None:
    images_dir, annotation_file, document = synthetic
    dataset = CocoInstanceDataset(images_dir, annotation_file, categories=["ball", "book"], empty_images="drop")
    assert dataset.label_to_category == {1: {"id": 30, "name": "ball"}, 2: {"id": 10, "name": "book"}}
    assert dataset.class_names == ["ball", "book"]
    expected = [a for a in document["annotations"] if not a["iscrowd"] and a["category_id"] in (30, 10)]
    labels = [label for index in range(len(dataset)) for label in dataset[index][1]["labels"].tolist()]
    assert sorted(labels) == sorted(1 if a["category_id"] == 30 else 2 for a in expected)
    assert {a["image_id"] for a in expected} == set(dataset.image_ids)
    ground_truth = dataset.coco_ground_truth()
    assert ground_truth["categories"] == [{"id": 1, "name": "ball"}, {"id": 2, "name": "book"}]
    assert {a["category_id"] for a in ground_truth["annotations"]} <= {1, 2}


def test_unknown_category_name_suggests_close_names(synthetic: tuple[Path, Path, dict[str, Any]]) -> None:
    images_dir, annotation_file, _ = synthetic
    with pytest.raises(CocoFormatError, match=r"unknown category name 'bok' \(did you mean 'book'\?\); "
                                              r"available names: ball, book, cup"):
        CocoInstanceDataset(images_dir, annotation_file, categories=["bok"])
    with pytest.raises(ValueError, match=r"categories lists \['cup'\] more than once"):
        CocoInstanceDataset(images_dir, annotation_file, categories=["cup", "cup"])


def test_crowd_annotations_are_not_targets_but_stay_in_ground_truth(
    synthetic: tuple[Path, Path, dict[str, Any]],
) -> None:
    images_dir, annotation_file, document = synthetic
    crowd = [a for a in document["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and isinstance(crowd[0]["segmentation"]["counts"], str)
    dataset = CocoInstanceDataset(images_dir, annotation_file)
    index = dataset.image_ids.index(crowd[0]["image_id"])
    target = dataset[index][1]
    non_crowd = [a for a in document["annotations"] if a["image_id"] == crowd[0]["image_id"] and not a["iscrowd"]]
    assert len(target["labels"]) == len(non_crowd)
    ground_truth = dataset.coco_ground_truth()
    crowd_gt = [a for a in ground_truth["annotations"] if a["iscrowd"]]
    assert [a["id"] for a in crowd_gt] == [crowd[0]["id"]]
    assert crowd_gt[0]["category_id"] == 3 and crowd_gt[0]["segmentation"] == crowd[0]["segmentation"]
    assert len(ground_truth["annotations"]) == len(document["annotations"])


def test_an_image_with_only_a_crowd_region_is_empty(tmp_path: Path) -> None:
    crowd = annotation(1, iscrowd=1)
    path = write_coco(tmp_path, [crowd])
    assert len(CocoInstanceDataset(tmp_path, path, empty_images="drop")) == 0
    kept = CocoInstanceDataset(tmp_path, path)
    assert kept[0][1]["boxes"].shape == (0, 4) and kept[0][1]["masks"].shape == (0, 10, 12)
    assert kept.coco_ground_truth()["annotations"][0]["iscrowd"] == 1


def test_polygon_and_rle_masks_decode_to_the_same_pixels(tmp_path: Path) -> None:
    # Hand-made 10x12 mask: the square rows 2..5 x columns 2..5 plus pixel (row 8, column 10).
    expected = np.zeros((10, 12), dtype=np.uint8)
    expected[2:6, 2:6] = 1
    expected[8, 10] = 1
    flat = expected.flatten(order="F")  # COCO RLE runs go down the columns
    runs, value, length = [], 0, 0
    for pixel in flat:
        if pixel == value:
            length += 1
        else:
            runs.append(length)
            value, length = pixel, 1
    runs.append(length)
    assert sum(runs) == 120
    compressed = mask_utils.encode(np.asfortranarray(expected))["counts"].decode("ascii")
    assert decode_compressed_rle_counts(compressed) == runs
    dot = [[10, 8, 11, 8, 11, 9, 10, 9]]  # the single pixel at row 8, column 10
    annotations = [
        annotation(1, segmentation=SQUARE + dot, bbox=[2, 2, 9, 7], area=None),
        annotation(2, segmentation={"size": [10, 12], "counts": runs}, bbox=[2, 2, 9, 7]),
        annotation(3, segmentation={"size": [10, 12], "counts": compressed}, bbox=[2, 2, 9, 7]),
    ]
    del annotations[0]["area"]
    dataset = CocoInstanceDataset(tmp_path, write_coco(tmp_path, annotations))
    target = dataset[0][1]
    for mask in target["masks"]:
        np.testing.assert_array_equal(mask.numpy(), expected)
    assert target["area"].tolist() == [17.0, 16.0, 16.0]  # no 'area' in the file: the mask area


def test_degenerate_boxes_and_empty_masks_are_dropped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    annotations = [
        annotation(1),
        annotation(2, bbox=[2, 2, 0.5, 4]),  # narrower than a pixel
        annotation(3, bbox=[20, 2, 4, 4]),  # entirely right of the 12-pixel-wide image
        annotation(4, segmentation=[]),  # no mask
        annotation(5, bbox=[-1, 2, 5, 4]),  # partly outside: clamped
    ]
    path = write_coco(tmp_path, annotations)
    with caplog.at_level(logging.WARNING, logger="visiontune.data.coco_dataset"):
        dataset = CocoInstanceDataset(tmp_path, path)
    records = [record for record in caplog.records if record.name == "visiontune.data.coco_dataset"]
    assert len(records) == 1
    message = records[0].getMessage()
    assert str(path) in message
    assert "dropped 2 annotation(s) with a degenerate box (width or height < 1 pixel) (annotation ids 2, 3)" in message
    assert "dropped 1 annotation(s) with an empty mask (annotation ids 4)" in message
    assert "clamped 1 box(es) that extended beyond the image (annotation ids 5)" in message
    target = dataset[0][1]
    assert target["boxes"].tolist() == [[2, 2, 6, 6], [0, 2, 4, 6]]
    assert [a["id"] for a in dataset.coco_ground_truth()["annotations"]] == [1, 5]


def test_no_warning_for_clean_data(
    synthetic: tuple[Path, Path, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    images_dir, annotation_file, _ = synthetic
    with caplog.at_level(logging.WARNING, logger="visiontune.data.coco_dataset"):
        CocoInstanceDataset(images_dir, annotation_file)
    assert not [record for record in caplog.records if record.name == "visiontune.data.coco_dataset"]


BROKEN_ANNOTATIONS = [
    (annotation(image_id=99), r"annotation id 7: unknown image_id 99 \(no such id in 'images'\)"),
    (annotation(category_id=5), r"annotation id 7: unknown category_id 5 \(known ids: 1, 2\)"),
    (annotation(segmentation=[[1, 1, 5, 1, 5]]),
     r"annotation id 7: malformed segmentation: segmentation polygon 0 has 5 coordinates; expected an even number"),
    (annotation(segmentation=[[1, 1, 5, 1]]), r"annotation id 7: malformed segmentation: .* has 4 coordinates"),
    (annotation(segmentation=[[1, 1, 5, "x", 3, 3]]),
     r"annotation id 7: malformed segmentation: segmentation polygon 0 must be a list of finite numbers"),
    (annotation(segmentation={"size": [10, 11], "counts": [110]}),
     r"annotation id 7: malformed segmentation: RLE 'size' \[10, 11\] does not match the image's "
     r"\[height, width\] = \[10, 12\]"),
    (annotation(segmentation={"size": [10, 12], "counts": [100, 10]}),
     r"annotation id 7: malformed segmentation: RLE 'counts' cover 110 pixels; expected height \* width = 120"),
    (annotation(segmentation={"size": [10, 12], "counts": "ab~"}),
     r"annotation id 7: malformed segmentation: compressed RLE 'counts' has an invalid character '~' at position 2"),
    (annotation(segmentation={"size": [10, 12], "counts": "Q"}),
     r"annotation id 7: malformed segmentation: compressed RLE 'counts' ends in the middle of a run length"),
    (annotation(segmentation={"size": [10, 12]}), r"annotation id 7: malformed segmentation: RLE 'counts' must be"),
    (annotation(segmentation="polygon"),
     r"annotation id 7: malformed segmentation: segmentation must be a list of polygons or an RLE dict, got str"),
    ({k: v for k, v in annotation().items() if k != "segmentation"},
     r"annotation id 7: malformed segmentation: missing 'segmentation'"),
    (annotation(bbox=[1, 2, 3]), r"annotation id 7: malformed bbox \[1, 2, 3\]; expected \[x, y, width, height\]"),
    (annotation(bbox=[1, 2, -3, 4]), r"annotation id 7: malformed bbox .*width and height must be >= 0"),
    (annotation(iscrowd=2), r"annotation id 7: 'iscrowd' must be 0 or 1, got 2"),
    (annotation(area=-1), r"annotation id 7: 'area' must be a non-negative number, got -1"),
    ({"image_id": 1}, r"annotation #0 must be an object with an int 'id'"),
]


@pytest.mark.parametrize(("entry", "message"), BROKEN_ANNOTATIONS)
def test_broken_annotation_raises_naming_file_and_id(tmp_path: Path, entry: dict[str, Any], message: str) -> None:
    path = write_coco(tmp_path, [entry])
    with pytest.raises(CocoFormatError, match=r"instances_bad\.json: " + message):
        CocoInstanceDataset(tmp_path, path)


def test_duplicate_ids_raise(tmp_path: Path) -> None:
    path = write_coco(tmp_path, [annotation(4), annotation(4)])
    with pytest.raises(CocoFormatError, match=r"instances_bad\.json: duplicate annotation id 4"):
        parse_coco_instances(path)
    images = [{"id": 1, "file_name": "a.png", "height": 10, "width": 12}] * 2
    path = write_coco(tmp_path, [annotation()], images=images)
    with pytest.raises(CocoFormatError, match="duplicate image id 1"):
        parse_coco_instances(path)
    path = write_coco(tmp_path, [], images=[{"id": 1, "file_name": "a.png", "height": 0, "width": 12}])
    with pytest.raises(CocoFormatError, match=r"image id 1: 'height' and 'width' must be positive ints, got 0, 12"):
        parse_coco_instances(path)


def test_invalid_json_and_missing_keys_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "instances_x.json"
    path.write_text('{"images": [],\n "annotations": [,]}')
    with pytest.raises(CocoFormatError, match=r"instances_x\.json: invalid JSON at line 2, column 18"):
        parse_coco_instances(path)
    path.write_text('{"images": [], "annotations": []}')
    with pytest.raises(CocoFormatError, match=r"instances_x\.json: missing top-level key 'categories'"):
        parse_coco_instances(path)
    with pytest.raises(FileNotFoundError, match="COCO annotation file not found: .*nothing.json"):
        parse_coco_instances(tmp_path / "nothing.json")


def test_image_of_another_size_than_declared_raises(tmp_path: Path) -> None:
    path = write_coco(tmp_path, [annotation()])
    Image.new("RGB", (13, 10)).save(tmp_path / "a.png")
    dataset = CocoInstanceDataset(tmp_path, path)
    with pytest.raises(ValueError, match=r"a\.png: image is 13x10 \(width x height\) but .* declares 12x10"):
        dataset[0]


# --------------------------------------------------------------------------- check_coco_data


def test_check_coco_data_on_clean_data(synthetic: tuple[Path, Path, dict[str, Any]]) -> None:
    images_dir, annotation_file, document = synthetic
    report = check_coco_data(images_dir, annotation_file)
    assert report.ok and report.problems == []
    counts = {name: sum(1 for a in document["annotations"] if a["category_id"] == category_id and not a["iscrowd"])
              for category_id, name in ((10, "book"), (20, "cup"), (30, "ball"))}
    assert report.instances_per_category == counts
    assert report.crowd_per_category == {"book": 0, "cup": 0, "ball": 1}
    with_objects = {a["image_id"] for a in document["annotations"] if not a["iscrowd"]}
    without = [image["file_name"] for image in document["images"] if image["id"] not in with_objects]
    assert report.images_without_annotations == without
    text = report.format_report()
    assert "images: 8, annotations: " in text and "result: OK" in text and "problems: 0" in text


def test_check_coco_data_collects_every_problem(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "a.png", "height": 10, "width": 12},
              {"id": 2, "file_name": "missing.png", "height": 10, "width": 12},
              {"id": 3, "file_name": "corrupt.png", "height": 10, "width": 12},
              {"id": 4, "file_name": "small.png", "height": 10, "width": 12}]
    path = write_coco(tmp_path, [annotation(1), annotation(2, image_id=9), annotation(3, category_id=8),
                                 annotation(4, bbox=[0, 0, 0.2, 3])], images=images[:1])
    document = json.loads(path.read_text())
    document["images"] = images
    path.write_text(json.dumps(document))
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.new("RGB", (6, 5)).save(tmp_path / "small.png")
    report = check_coco_data(tmp_path, path, categories=["book", "cupp"])
    assert not report.ok
    assert len(report.broken_annotations) == 3
    assert "unknown category name 'cupp' (did you mean 'cup'?)" in report.broken_annotations[0]
    assert "annotation id 2: unknown image_id 9" in report.broken_annotations[1]
    assert "annotation id 3: unknown category_id 8" in report.broken_annotations[2]
    assert len(report.unreadable_images) == 3
    assert "missing.png: file not found (image id 2)" in report.unreadable_images[0]
    assert "corrupt.png: cannot decode image id 3" in report.unreadable_images[1]
    assert "small.png: image is 6x5 (width x height)" in report.unreadable_images[2]
    assert report.instances_per_category == {"book": 1}
    assert report.images_without_annotations == ["missing.png", "corrupt.png", "small.png"]
    assert "annotation ids 4" in (report.dropped_summary or "")
    text = report.format_report()
    assert "problems: 6" in text and "result: FAILED" in text


def test_check_coco_data_reports_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "instances_x.json"
    path.write_text("{")
    report = check_coco_data(tmp_path, path)
    assert len(report.problems) == 1 and "invalid JSON at line 1" in report.problems[0]


# --------------------------------------------------------------------------- transforms and batching


def test_train_transforms_flip_boxes_and_masks_together(synthetic: tuple[Path, Path, dict[str, Any]]) -> None:
    images_dir, annotation_file, _ = synthetic
    plain = CocoInstanceDataset(images_dir, annotation_file, empty_images="drop")
    flip = make_detection_train_transforms(min_size=96, max_size=128, horizontal_flip_prob=1.0, photometric=False)
    flipped = CocoInstanceDataset(images_dir, annotation_file, empty_images="drop", transforms=flip)
    image, target = plain[0]
    flipped_image, flipped_target = flipped[0]
    torch.testing.assert_close(flipped_image, image.flip(-1))
    torch.testing.assert_close(flipped_target["masks"], target["masks"].flip(-1))
    x1, y1, x2, y2 = target["boxes"].unbind(-1)
    torch.testing.assert_close(flipped_target["boxes"].as_subclass(torch.Tensor),
                               torch.stack([128 - x2, y1, 128 - x1, y2], dim=-1).as_subclass(torch.Tensor))
    assert flipped_target["labels"].tolist() == target["labels"].tolist()
    assert flipped_target["num_removed_boxes"] == 0


def test_train_transforms_resize_to_min_size(synthetic: tuple[Path, Path, dict[str, Any]]) -> None:
    images_dir, annotation_file, _ = synthetic
    transforms = make_detection_train_transforms(min_size=(48, 72), max_size=200)
    dataset = CocoInstanceDataset(images_dir, annotation_file, empty_images="drop", transforms=transforms)
    torch.manual_seed(0)
    sizes = set()
    for index in range(len(dataset)):
        image, target = dataset[index]
        height, width = image.shape[-2:]
        sizes.add((height, width))
        assert target["masks"].shape[-2:] == (height, width) and target["boxes"].canvas_size == (height, width)
        assert len(target["boxes"]) == len(target["labels"]) == len(target["area"]) == len(target["masks"])
        assert image.dtype == torch.float32 and image.min() >= 0.0 and image.max() <= 1.0
    assert sizes <= {(48, 64), (72, 96)}
    with pytest.raises(ValueError, match="min_size must be positive and <= max_size"):
        make_detection_train_transforms(min_size=800, max_size=600)


def test_eval_transforms_keep_the_sample() -> None:
    image = tv_tensors.Image(torch.rand(3, 5, 7))
    target = {"boxes": tv_tensors.BoundingBoxes([[1, 1, 3, 4]], format="XYXY", canvas_size=(5, 7))}
    out_image, out_target = make_detection_eval_transforms()(image, target)
    torch.testing.assert_close(out_image, image)
    assert out_target["boxes"].tolist() == [[1, 1, 3, 4]]


def test_sanitize_removes_degenerate_boxes_and_keeps_fields_aligned() -> None:
    canvas = (10, 12)
    masks = torch.zeros(3, *canvas, dtype=torch.uint8)
    masks[0, 1:3, 1:3] = 1
    masks[2, 5:9, 5:9] = 1
    target = {
        "boxes": tv_tensors.BoundingBoxes([[1, 1, 3, 3], [14, 2, 20, 6], [5, 5, 9, 13]], format="XYXY",
                                          canvas_size=canvas),
        "labels": torch.tensor([1, 2, 3]),
        "masks": tv_tensors.Mask(masks),
        "area": torch.tensor([4.0, 24.0, 16.0]),
        "iscrowd": torch.zeros(3, dtype=torch.int64),
        "image_id": 5,
    }
    _, out = SanitizeDetectionTarget()(tv_tensors.Image(torch.zeros(3, *canvas)), target)
    assert out["num_removed_boxes"] == 1  # the second box lies right of the image
    assert out["boxes"].tolist() == [[1, 1, 3, 3], [5, 5, 9, 10]]  # the third one is clamped
    assert out["labels"].tolist() == [1, 3] and out["area"].tolist() == [4.0, 16.0]
    assert out["iscrowd"].tolist() == [0, 0] and out["image_id"] == 5
    torch.testing.assert_close(out["masks"].as_subclass(torch.Tensor), masks[[0, 2]])


def test_collate_detection_keeps_lists() -> None:
    batch = [(torch.zeros(3, 4, 5), {"image_id": 1}), (torch.ones(3, 6, 2), {"image_id": 2})]
    images, targets = collate_detection(batch)
    assert [image.shape for image in images] == [(3, 4, 5), (3, 6, 2)]
    assert targets == [{"image_id": 1}, {"image_id": 2}]


def test_aspect_ratio_groups_use_the_reference_bins() -> None:
    # k=1: edges 2**[-1, 0, 1] = [0.5, 1, 2]
    ratios = [0.4, 0.5, 0.99, 1.0, 1.5, 2.0, 3.0]
    assert create_aspect_ratio_groups(ratios, num_bins_per_side=1) == [0, 1, 1, 2, 2, 3, 3]
    assert create_aspect_ratio_groups([0.75, 1.0, 4 / 3], num_bins_per_side=0) == [0, 1, 1]
    # k=3 (the default): edges 2**(-1 + i/3); 1.25 lies in [2**0, 2**(1/3)) = [1, 1.26), the fifth group.
    assert create_aspect_ratio_groups([1.25, 1.27]) == [4, 5]
