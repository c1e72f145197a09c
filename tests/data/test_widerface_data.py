"""Tests for the WIDER FACE data: the three annotation layouts (visiontune.data.widerface_annotations), the dataset
and collate_faces (visiontune.data.widerface_dataset)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from visiontune.data.face_transforms import FaceEvalTransform, RetinaFaceTrainTransform
from visiontune.data.widerface_annotations import read_annotations
from visiontune.data.widerface_dataset import WiderFaceDataset, collate_faces, load_bgr_image
from visiontune.utils.image import EXIF_ORIENTATION, oriented_size
from visiontune.utils.widerface_format import WiderFaceFormatError

LANDMARKS_LINE = (
    "449 330 122 149 488.906 373.643 0.0 542.089 376.442 0.0 515.031 412.83 0.0 485.741 434.229 1.0 "
    "538.357 431.491 0.0 0.82"
)
MISSING_LANDMARKS_LINE = "10 20 30 40 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0"

RETINAFACE_LABELS = f"""# 0--Parade/0_Parade_marchingband_1_849.jpg
{LANDMARKS_LINE}
{MISSING_LANDMARKS_LINE}
# 0--Parade/0_Parade_Parade_0_904.jpg
# 1--Handshaking/1_Handshaking_1.jpg
5 6 0 10 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1
7 8 9 10
"""

OFFICIAL_ANNOTATIONS = """0--Parade/0_Parade_marchingband_1_849.jpg
2
449 330 122 149 0 0 0 0 0 0 
361 98 263 339 2 1 0 1 2 1 
0--Parade/0_Parade_Parade_0_452.jpg
0
0 0 0 0 0 0 0 0 0 0 
0--Parade/0_Parade_Parade_0_1.jpg
0
1--Handshaking/1_Handshaking_1.jpg
2
78 221 7 8 2 0 0 0 0 0 
78 238 14 0 2 0 0 1 0 0 
"""  # noqa: W291 (the official files end face lines with a space)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -------------------------------------------------------------------------------------------------------------------
# Parsers
# -------------------------------------------------------------------------------------------------------------------


def test_parse_retinaface_labels(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "label.txt", RETINAFACE_LABELS)

    with caplog.at_level(logging.WARNING, logger="visiontune.data.widerface_annotations"):
        records = read_annotations(path, "retinaface").records

    assert [record.relative_path for record in records] == [
        "0--Parade/0_Parade_marchingband_1_849.jpg",
        "0--Parade/0_Parade_Parade_0_904.jpg",
        "1--Handshaking/1_Handshaking_1.jpg",
    ]
    assert [record.line_number for record in records] == [1, 4, 5]
    assert records[0].image_id == "0--Parade/0_Parade_marchingband_1_849"
    first = records[0]
    np.testing.assert_array_equal(first.boxes, np.asarray([[449, 330, 571, 479], [10, 20, 40, 60]], np.float32))
    expected_landmarks = [
        [488.906, 373.643], [542.089, 376.442], [515.031, 412.83], [485.741, 434.229], [538.357, 431.491]
    ]
    np.testing.assert_array_equal(first.landmarks[0], np.asarray(expected_landmarks, np.float32))
    np.testing.assert_array_equal(first.landmarks[1], np.full((5, 2), -1.0, np.float32))
    assert first.landmarks_valid.tolist() == [True, False]
    assert first.attributes is None
    # An image without faces is a valid sample.
    assert records[1].num_faces == 0 and records[1].boxes.shape == (0, 4) and records[1].landmarks.shape == (0, 5, 2)
    # The degenerate box (w = 0) is dropped; the 4-number box-only line is a face without landmarks.
    np.testing.assert_array_equal(records[2].boxes, np.asarray([[7, 8, 16, 18]], np.float32))
    assert records[2].landmarks_valid.tolist() == [False]
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "label.txt: dropped 1 face(s) with width or height <= 0 (first at line 6)" in warnings[0].getMessage()


def test_parse_official_annotations(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "wider_face_val_bbx_gt.txt", OFFICIAL_ANNOTATIONS)

    with caplog.at_level(logging.WARNING, logger="visiontune.data.widerface_annotations"):
        records = read_annotations(path, "official").records

    assert [record.image_id for record in records] == [
        "0--Parade/0_Parade_marchingband_1_849",
        "0--Parade/0_Parade_Parade_0_452",
        "0--Parade/0_Parade_Parade_0_1",
        "1--Handshaking/1_Handshaking_1",
    ]
    assert [record.line_number for record in records] == [1, 5, 8, 10]
    np.testing.assert_array_equal(records[0].boxes, np.asarray([[449, 330, 571, 479], [361, 98, 624, 437]], np.float32))
    assert records[0].attributes.tolist() == [[0, 0, 0, 0, 0, 0], [2, 1, 0, 1, 2, 1]]
    assert records[0].attributes.dtype == np.int64
    assert records[0].landmarks_valid.tolist() == [False, False]
    np.testing.assert_array_equal(records[0].landmarks, np.full((2, 5, 2), -1.0, np.float32))
    # A zero count with and without the line of zeros.
    assert records[1].num_faces == 0 and records[1].attributes.shape == (0, 6)
    assert records[2].num_faces == 0
    # The h = 0 face is dropped.
    np.testing.assert_array_equal(records[3].boxes, np.asarray([[78, 221, 85, 229]], np.float32))
    assert records[3].attributes.tolist() == [[2, 0, 0, 0, 0, 0]]
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "wider_face_val_bbx_gt.txt: dropped 1 face(s) with width or height <= 0 (first at line 13)" in (
        warnings[0].getMessage()
    )


def test_parse_image_list(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "wider_val.txt", "# 0--Parade/a.jpg\n\n1--Handshaking/b.jpg\n/2--Demonstration/c.jpg\n")
    with caplog.at_level(logging.WARNING):
        records = read_annotations(path, "list").records
    assert [record.relative_path for record in records] == [
        "0--Parade/a.jpg",
        "1--Handshaking/b.jpg",
        "2--Demonstration/c.jpg",
    ]
    assert [record.line_number for record in records] == [1, 3, 4]
    assert all(record.num_faces == 0 and record.boxes.dtype == np.float32 for record in records)
    assert not caplog.records


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("# a/b.jpg\n1 2 3 4 5\n", r"label\.txt:2: expected 20 numbers after '# a/b\.jpg' .* got 5"),
        (f"{LANDMARKS_LINE}\n# a/b.jpg\n", r"label\.txt:1: face line before the first '# <image path>' line"),
        ("# a/b.jpg\n\n1 2 3 x4\n", r"label\.txt:3: could not parse 'x4' as a number in a face line"),
        ("# a/b.jpg\n1 2 3 nan\n", r"label\.txt:2: expected finite numbers in a face line, got 'nan'"),
        (
            "# a/b.jpg\n1 2 3 4 5 6 0 -1 -1 0 7 8 0 9 9 0 1 1 0 0.9\n",
            r"label\.txt:2: landmarks \[1\] are \(-1, -1\) \(missing\) but the others are not",
        ),
        ("# a/b.jpg\n1 2 3 4\n# c.jpg\n# a/b.jpg\n", r"label\.txt:4: image 'a/b\.jpg' is already listed at line 1"),
        ("# \n", r"label\.txt:1: expected an image path, got an empty one"),
        ("# ../secret.jpg\n", r"label\.txt:1: image path '\.\./secret\.jpg' must not contain '\.\.'"),
    ],
)
def test_parse_retinaface_labels_errors(tmp_path: Path, text: str, pattern: str) -> None:
    path = write(tmp_path, "label.txt", text)
    with pytest.raises(WiderFaceFormatError, match=pattern) as error:
        read_annotations(path, "retinaface")
    assert isinstance(error.value, ValueError)
    assert str(error.value).startswith(f"{path}:")


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("a/b.jpg\ntwo\n1 2 3 4 0 0 0 0 0 0\n", r"gt\.txt:2: expected the number of faces of 'a/b\.jpg', got 'two'"),
        ("a/b.jpg\n-1\n", r"gt\.txt:2: expected the number of faces of 'a/b\.jpg', got '-1'"),
        ("a/b.jpg\n", r"gt\.txt:1: file ends before the face count of 'a/b\.jpg'"),
        (
            "a/b.jpg\n1\n1 2 3 4 0 0 0 0 0\n",
            r"gt\.txt:3: expected 10 numbers \(x y w h blur expression illumination invalid occlusion pose\) "
            r"for face 1 of 1 of 'a/b\.jpg', got 9",
        ),
        ("a/b.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n", r"gt\.txt:2: file ends after 1 of 2 faces of 'a/b\.jpg'"),
        (
            "a/b.jpg\n0\n1 2 3 4 0 0 0 0 0 0\n",
            r"gt\.txt:3: a face count of 0 must be followed by a line of 10 zeros or the next image path",
        ),
        ("a/b.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n1 2 3 4 0 0 0 0 0 0\n", r"gt\.txt:4: expected an image path, got '1 2 3 4"),
        ("a/b.jpg\n1\n1 2 3 4 0 0.5 0 0 0 0\n", r"gt\.txt:3: expected integer attributes, got \['0', '0\.5'"),
        ("a/b.jpg\n1\n1 2 3 4 0 0 0 0 0 zero\n", r"gt\.txt:3: could not parse 'zero' as a number in a face line"),
        ("a/b.jpg\n0\nc.jpg\n0\na/b.jpg\n0\n", r"gt\.txt:5: image 'a/b\.jpg' is already listed at line 1"),
    ],
)
def test_parse_official_annotations_errors(tmp_path: Path, text: str, pattern: str) -> None:
    path = write(tmp_path, "gt.txt", text)
    with pytest.raises(WiderFaceFormatError, match=pattern):
        read_annotations(path, "official")


def test_parse_image_list_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "list.txt", "a/b.jpg\n1 2 3 4\n")
    with pytest.raises(WiderFaceFormatError, match=r"list\.txt:2: expected an image path, got '1 2 3 4'"):
        read_annotations(path, "list")
    path = write(tmp_path, "list.txt", "a/b.jpg\n\n#\n")
    with pytest.raises(WiderFaceFormatError, match=r"list\.txt:3: expected an image path, got an empty one"):
        read_annotations(path, "list")


def test_read_annotations_counts_the_dropped_faces(tmp_path: Path) -> None:
    labels = read_annotations(write(tmp_path, "label.txt", RETINAFACE_LABELS), "retinaface")
    assert labels.dropped_lines == (6,) and labels.dropped_faces == 1
    assert [record.relative_path for record in labels.records] == [
        "0--Parade/0_Parade_marchingband_1_849.jpg", "0--Parade/0_Parade_Parade_0_904.jpg",
        "1--Handshaking/1_Handshaking_1.jpg"]
    assert labels.counts() == ("3 faces; 1 images without faces; 2 faces without landmarks; "
                               "1 degenerate boxes dropped (width or height <= 0)")
    official = read_annotations(write(tmp_path, "gt.txt", OFFICIAL_ANNOTATIONS), "official")
    assert official.dropped_lines == (13,) and official.num_faces == 3
    listed = read_annotations(write(tmp_path, "list.txt", "a.jpg\n# b.jpg\n"), "list")
    assert listed.dropped_faces == 0 and len(listed.records) == 2


def test_read_annotations_rejects_unknown_format_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "label.txt", "# a.jpg\n")
    pattern = r"unknown WIDER FACE annotation format 'coco'; expected one of \('retinaface', 'official', 'list'\)"
    with pytest.raises(ValueError, match=pattern):
        read_annotations(path, "coco")
    with pytest.raises(FileNotFoundError, match=r"annotation file not found: .*nothing\.txt"):
        read_annotations(tmp_path / "nothing.txt", "official")


# -------------------------------------------------------------------------------------------------------------------
# Dataset
# -------------------------------------------------------------------------------------------------------------------

FaceData = tuple[Path, Path, dict[str, np.ndarray]]
IMAGE_SIZES = {"0--Parade/a.png": (30, 50), "0--Parade/b.png": (40, 40), "1--Handshaking/c.png": (60, 45)}


@pytest.fixture()
def face_data(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Random-noise images ``images/<event>/<name>.png``, a RetinaFace ``label.txt`` for them and their RGB pixels."""
    root = tmp_path / "images"
    generator = np.random.default_rng(0)
    pixels = {}
    for relative_path, (height, width) in IMAGE_SIZES.items():
        (root / relative_path).parent.mkdir(parents=True, exist_ok=True)
        pixels[relative_path] = generator.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels[relative_path]).save(root / relative_path)
    labels = (
        "# 0--Parade/a.png\n"
        "5 6 10 12 7 9 0 12 9 0 10 12 0 8 15 0 12 15 0 0.9\n"
        "30 10 8 8\n"
        "# 0--Parade/b.png\n"
        "# 1--Handshaking/c.png\n"
        "10 20 20 20 14 26 0 24 26 0 20 30 0 15 35 0 25 35 0 0.8\n"
    )
    return root, write(tmp_path, "label.txt", labels), pixels


def test_dataset_item_at_original_size(face_data: FaceData) -> None:
    root, labels, pixels = face_data
    dataset = WiderFaceDataset(root, labels, "retinaface", transform=FaceEvalTransform())
    assert len(dataset) == 3

    image, target = dataset[0]

    assert image.shape == (3, 30, 50) and image.dtype == torch.float32
    rgb = pixels["0--Parade/a.png"].astype(np.float32)
    for channel, (rgb_channel, mean) in enumerate([(2, 104.0), (1, 117.0), (0, 123.0)]):  # BGR minus the mean
        torch.testing.assert_close(image[channel], torch.from_numpy(rgb[:, :, rgb_channel] - mean), rtol=0, atol=0)
    assert target["image_id"] == "0--Parade/a"
    assert target["orig_size"] == (30, 50)
    assert target["scale"] == 1.0
    torch.testing.assert_close(target["boxes"], torch.tensor([[5.0, 6.0, 15.0, 18.0], [30.0, 10.0, 38.0, 18.0]]))
    assert target["landmarks"].shape == (2, 5, 2) and target["landmarks"].dtype == torch.float32
    torch.testing.assert_close(target["landmarks"][0, 3], torch.tensor([8.0, 15.0]))
    torch.testing.assert_close(target["landmarks"][1], torch.full((5, 2), -1.0))
    assert target["landmarks_valid"].tolist() == [True, False]
    # The zero-face image is a valid sample.
    _, empty_target = dataset[1]
    assert empty_target["boxes"].shape == (0, 4) and empty_target["landmarks_valid"].shape == (0,)


def test_dataset_with_rescaling_eval_transform_records_scale(face_data: FaceData) -> None:
    root, labels, _ = face_data
    dataset = WiderFaceDataset(root, labels, "retinaface", transform=FaceEvalTransform(target_size=60, max_size=90))
    image, target = dataset[0]  # 30 x 50: 60 / 30 = 2, but 2 * 50 = 100 > 90, so 90 / 50 = 1.8
    assert target["scale"] == pytest.approx(1.8)
    assert image.shape == (3, 54, 90)
    assert target["orig_size"] == (30, 50)
    torch.testing.assert_close(target["boxes"][0], torch.tensor([5.0, 6.0, 15.0, 18.0]) * 1.8)


def test_dataset_training_items_and_collate(face_data: FaceData) -> None:
    root, labels, _ = face_data
    dataset = WiderFaceDataset(root, labels, "retinaface", transform=RetinaFaceTrainTransform(image_size=32))

    torch.manual_seed(0)
    images, targets = collate_faces([dataset[index] for index in range(3)])

    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert [target["image_id"] for target in targets] == ["0--Parade/a", "0--Parade/b", "1--Handshaking/c"]
    assert [target["orig_size"] for target in targets] == [(30, 50), (40, 40), (60, 45)]
    assert targets[1]["boxes"].shape == (0, 4)
    for target in targets:
        assert target["boxes"].dtype == torch.float32 and target["landmarks"].dtype == torch.float32
        assert target["landmarks_valid"].dtype == torch.bool
        assert bool((target["boxes"] >= -1e-4).all() and (target["boxes"] <= 32 + 1e-4).all())


def test_dataset_is_reproducible_given_the_torch_seed(face_data: FaceData) -> None:
    root, labels, _ = face_data
    dataset = WiderFaceDataset(root, labels, "retinaface", transform=RetinaFaceTrainTransform(image_size=32))

    def run(seed: int, num_workers: int) -> list[tuple[torch.Tensor, list[dict]]]:
        torch.manual_seed(seed)
        loader = DataLoader(dataset, batch_size=2, shuffle=True, num_workers=num_workers, collate_fn=collate_faces)
        return [batch for _ in range(2) for batch in loader]

    def assert_same(first: list, second: list) -> None:
        assert len(first) == len(second)
        for (images_a, targets_a), (images_b, targets_b) in zip(first, second):
            torch.testing.assert_close(images_a, images_b, rtol=0, atol=0)
            for target_a, target_b in zip(targets_a, targets_b):
                assert target_a["image_id"] == target_b["image_id"]
                torch.testing.assert_close(target_a["boxes"], target_b["boxes"], rtol=0, atol=0)
                torch.testing.assert_close(target_a["landmarks"], target_b["landmarks"], rtol=0, atol=0)

    assert_same(run(seed=11, num_workers=0), run(seed=11, num_workers=0))
    assert_same(run(seed=11, num_workers=2), run(seed=11, num_workers=2))
    different = run(seed=12, num_workers=0)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(run(seed=11, num_workers=0), different))
    # Two epochs of one run draw different augmentations of the same images.
    torch.manual_seed(11)
    first_epoch, second_epoch = dataset[2][0], dataset[2][0]
    assert not torch.equal(first_epoch, second_epoch)


def test_dataset_eval_sizes_stop_at_the_limit(face_data: FaceData) -> None:
    root, labels, _ = face_data
    dataset = WiderFaceDataset(root, labels, "retinaface")
    assert dataset.dropped_faces == 0
    assert dataset.eval_sizes(FaceEvalTransform()) == {(30, 50): "0--Parade/a.png", (40, 40): "0--Parade/b.png"}
    assert dataset.eval_sizes(FaceEvalTransform(), limit=5) == {
        (30, 50): "0--Parade/a.png", (40, 40): "0--Parade/b.png", (60, 45): "1--Handshaking/c.png"}
    assert dataset.eval_sizes(FaceEvalTransform(20, max_size=100), limit=5) == {
        (20, 33): "0--Parade/a.png", (20, 20): "0--Parade/b.png", (27, 20): "1--Handshaking/c.png"}


def test_oriented_size_follows_the_exif_orientation(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = image.getexif()
    exif[EXIF_ORIENTATION] = 6  # rotated by 90 degrees: displayed 20 wide, 40 high
    image.save(tmp_path / "rotated.jpg", exif=exif)
    image.save(tmp_path / "plain.png")
    assert oriented_size(tmp_path / "rotated.jpg") == (40, 20) == load_bgr_image(tmp_path / "rotated.jpg").shape[:2]
    assert oriented_size(tmp_path / "plain.png") == (20, 40)


def test_load_bgr_image_scales_16_bit_images_and_names_an_undecodable_file(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 6), 25700, dtype=np.uint16)).save(tmp_path / "deep.png")  # 25700 / 257 = 100
    bgr = load_bgr_image(tmp_path / "deep.png")
    assert bgr.shape == (4, 6, 3) and bgr.dtype == np.uint8 and np.all(bgr == 100)
    Image.new("RGB", (3, 2), (10, 20, 30)).save(tmp_path / "colour.png")
    assert load_bgr_image(tmp_path / "colour.png")[0, 0].tolist() == [30, 20, 10]
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=rf"cannot decode image {re.escape(str(tmp_path / 'broken.jpg'))}: "):
        load_bgr_image(tmp_path / "broken.jpg")


def test_dataset_missing_image_names_path_and_line(face_data: FaceData) -> None:
    root, labels, _ = face_data
    (root / "0--Parade" / "b.png").unlink()
    expected = (
        rf"image file not found: {re.escape(str(root / '0--Parade' / 'b.png'))} "
        r"\(listed at .*label\.txt:4\); 1 of 3 images are missing"
    )
    with pytest.raises(FileNotFoundError, match=expected):
        WiderFaceDataset(root, labels, "retinaface")


def test_dataset_rejects_an_annotation_file_without_images(tmp_path: Path) -> None:
    path = write(tmp_path, "list.txt", "\n")
    with pytest.raises(ValueError, match=r"list\.txt: lists no images"):
        WiderFaceDataset(tmp_path, path, "list")


def test_dataset_list_format_has_no_faces(face_data: FaceData, tmp_path: Path) -> None:
    root, _, _ = face_data
    listing = write(tmp_path, "wider_val.txt", "/0--Parade/a.png\n# 1--Handshaking/c.png\n")
    dataset = WiderFaceDataset(root, listing, "list")
    image, target = dataset[1]
    assert image.shape == (3, 60, 45)
    assert target["image_id"] == "1--Handshaking/c" and target["boxes"].shape == (0, 4)


def test_collate_faces_rejects_different_sizes() -> None:
    batch = [
        (torch.zeros(3, 4, 5), {"image_id": "a/one"}),
        (torch.zeros(3, 5, 4), {"image_id": "b/two"}),
    ]
    with pytest.raises(ValueError, match=r"different sizes \(a/one: \(3, 4, 5\), b/two: \(3, 5, 4\)\)"):
        collate_faces(batch)
    with pytest.raises(ValueError, match="empty batch"):
        collate_faces([])


# -------------------------------------------------------------------------------------------------------------------
# Real data: the official ground-truth subset with its seven WIDER FACE val images
# -------------------------------------------------------------------------------------------------------------------


def test_official_subset_with_fixture_images(fixtures_dir: Path, tmp_path: Path) -> None:
    fixture = fixtures_dir / "retinaface"
    annotation_file = fixture / "wider_face_val_bbx_gt_subset.txt"
    records = read_annotations(annotation_file, "official").records
    root = tmp_path / "images"
    for record in records:
        destination = root / record.relative_path
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.symlink_to(fixture / "images" / Path(record.relative_path).name)

    dataset = WiderFaceDataset(root, annotation_file, "official", transform=FaceEvalTransform())

    assert len(dataset) == 7
    assert [record.num_faces for record in dataset.records] == [142, 126, 132, 17, 37, 5, 3]
    assert dataset.records[0].image_id == "0--Parade/0_Parade_Parade_0_873"
    np.testing.assert_array_equal(dataset.records[0].boxes[0], np.asarray([30, 432, 59, 476], np.float32))
    assert dataset.records[0].attributes[0].tolist() == [1, 0, 0, 0, 0, 0]
    image, target = dataset[6]
    with Image.open(fixture / "images" / "9_Press_Conference_Press_Conference_9_183.jpg") as reference:
        width, height = reference.size
        rgb = np.asarray(reference.convert("RGB"), dtype=np.float32)
    assert target["image_id"] == "9--Press_Conference/9_Press_Conference_Press_Conference_9_183"
    assert target["orig_size"] == (height, width) and image.shape == (3, height, width)
    expected = rgb[:, :, ::-1] - np.asarray([104, 117, 123], np.float32)
    torch.testing.assert_close(image, torch.from_numpy(expected.transpose(2, 0, 1).copy()), rtol=0, atol=0)
    torch.testing.assert_close(target["boxes"][0], torch.tensor([218.0, 190.0, 330.0, 350.0]))
    assert target["landmarks_valid"].tolist() == [False, False, False]

    dataset.transform = RetinaFaceTrainTransform(image_size=640)
    torch.manual_seed(0)
    train_image, train_target = dataset[0]
    assert train_image.shape == (3, 640, 640) and train_image.dtype == torch.float32
    assert train_target["boxes"].shape[0] >= 1
    assert bool((train_target["boxes"] >= -1e-3).all() and (train_target["boxes"] <= 640 + 1e-3).all())
