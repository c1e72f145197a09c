"""Tests for visiontune.data.classification: folder / list / CSV readers and the dataset with corrupt files."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader
from torchvision.transforms.functional import pil_to_tensor

from visiontune.data.classification import (
    ClassificationDataset,
    ClassificationSource,
    collate_skip_none,
    read_annotation_list,
    read_csv_list,
    scan_image_folder,
)


def write_image(path: Path, *, value: int = 128, size: tuple[int, int] = (8, 6), mode: str = "RGB") -> Path:
    """Write a solid image (JPEG/PNG by suffix) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode != "RGB" else (value, value // 2, 255 - value)).save(path)
    return path


def write_truncated_jpeg(path: Path) -> Path:
    """A noisy JPEG cut in half, so decoding runs out of data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def make_tree(root: Path, counts: dict[str, int], *, suffix: str = ".png") -> Path:
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            write_image(root / name / f"{index}{suffix}", value=10 * index)
    return root


# ------------------------------------------------------------------------------------------------ folder layout


def test_scan_image_folder_sorts_classes_and_assigns_indices(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "train", {"zebra": 2, "ant": 1, "Moth": 1})
    write_image(root / "ant" / "nested" / "deep.JPG")  # nested folders and upper-case extensions count
    (root / "ant" / "notes.txt").write_text("not an image")
    (root / ".cache").mkdir()  # hidden folders are not classes
    source = scan_image_folder(root)
    assert source.classes == ["Moth", "ant", "zebra"]
    assert source.origin == str(root)
    labels = {path.relative_to(root).as_posix(): label for path, label in source.samples}
    assert labels == {"Moth/0.png": 0, "ant/0.png": 1, "ant/nested/deep.JPG": 1, "zebra/0.png": 2, "zebra/1.png": 2}
    assert source.class_counts() == {"Moth": 1, "ant": 2, "zebra": 2}


def test_scan_image_folder_missing_folder_names_path_and_hint(tmp_path: Path) -> None:
    missing = tmp_path / "data" / "train"
    message = f"data folder not found: {re.escape(str(missing))} \\(data.root \\+ data.train_split\\)"
    with pytest.raises(ValueError, match=message):
        scan_image_folder(missing, hint="data.root + data.train_split")


def test_scan_image_folder_rejects_a_file(tmp_path: Path) -> None:
    file = write_image(tmp_path / "image.png")
    with pytest.raises(ValueError, match="data folder is not a directory: .*image.png"):
        scan_image_folder(file)


def test_scan_image_folder_without_class_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no class sub-folders in .*empty: expected .*<class name>/<image>$"):
        scan_image_folder(tmp_path / "empty")
    write_image(tmp_path / "flat" / "a.png")
    write_image(tmp_path / "flat" / "b.png")
    with pytest.raises(ValueError, match=r"found 2 image\(s\) directly in it"):
        scan_image_folder(tmp_path / "flat")


def test_scan_image_folder_empty_class_folder_is_named(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "train", {"cat": 2, "dog": 0})
    (root / "dog" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"1 empty class folder\(s\) .*: " + re.escape(str(root / "dog")) + "$"):
        scan_image_folder(root)


def test_scan_image_folder_no_images_at_all(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "train", {"cat": 0, "dog": 0})
    with pytest.raises(ValueError, match=r"no images found under .*train \(looked in 2 class folder\(s\)"):
        scan_image_folder(root)


def test_val_folder_uses_train_class_indices(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    train = scan_image_folder(make_tree(tmp_path / "train", {"ant": 1, "bee": 1, "cat": 1}))
    val_root = make_tree(tmp_path / "val", {"cat": 2, "ant": 1})
    with caplog.at_level(logging.WARNING):
        val = scan_image_folder(val_root, classes=train.classes)
    assert val.classes == ["ant", "bee", "cat"]
    assert sorted(label for _, label in val.samples) == [0, 2, 2]
    assert "1 training class(es) have no samples in this split: bee" in caplog.text


def test_val_folder_with_extra_class_is_an_error(tmp_path: Path) -> None:
    train = scan_image_folder(make_tree(tmp_path / "train", {"ant": 1, "bee": 1}))
    val_root = make_tree(tmp_path / "val", {"ant": 1, "lynx": 1, "wolf": 1})
    with pytest.raises(ValueError, match=r"2 class\(es\) not in the training classes: lynx, wolf \(training has 2"):
        scan_image_folder(val_root, classes=train.classes)


# ------------------------------------------------------------------------------------------------ annotation lists


def test_read_annotation_list_fgvc_layout(tmp_path: Path) -> None:
    images = tmp_path / "images"
    for image_id in ("1025794", "0056978", "1514522", "0062765"):
        write_image(images / f"{image_id}.jpg")
    list_file = tmp_path / "images_variant_trainval.txt"
    list_file.write_text("1025794 707-320\n0056978 A300B4\n\n1514522 Boeing 707\n0062765 707-320  \n")
    source = read_annotation_list(list_file, images)
    assert source.classes == ["707-320", "A300B4", "Boeing 707"]
    assert source.samples == [
        (images / "1025794.jpg", 0),
        (images / "0056978.jpg", 1),
        (images / "1514522.jpg", 2),
        (images / "0062765.jpg", 0),
    ]
    assert source.origin == str(list_file)


def test_read_annotation_list_malformed_line(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "1.jpg")
    list_file = tmp_path / "list.txt"
    list_file.write_text("1 A300B4\n1234\n")
    with pytest.raises(ValueError, match=r"list.txt:2: expected '<image id> <label>', got '1234'"):
        read_annotation_list(list_file, tmp_path / "images")


def test_read_annotation_list_missing_image(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "1.jpg")
    list_file = tmp_path / "list.txt"
    list_file.write_text("1 A300B4\n\n999 A300B4\n")
    expected = re.escape(f"{list_file}:3: image not found: {tmp_path / 'images' / '999.jpg'}")
    with pytest.raises(ValueError, match=expected):
        read_annotation_list(list_file, tmp_path / "images")


def test_read_annotation_list_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="annotation list not found: .*nope.txt"):
        read_annotation_list(tmp_path / "nope.txt", tmp_path)
    (tmp_path / "list.txt").write_text("1 a\n")
    with pytest.raises(ValueError, match="image folder not found: .*pics"):
        read_annotation_list(tmp_path / "list.txt", tmp_path / "pics")
    (tmp_path / "blank.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="annotation list has no entries"):
        read_annotation_list(tmp_path / "blank.txt", tmp_path)


def test_read_annotation_list_extra_class_and_duplicates(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for image_id in ("1", "2"):
        write_image(tmp_path / "images" / f"{image_id}.png")
    list_file = tmp_path / "val.txt"
    list_file.write_text("1 A300B4\n2 Concorde\n")
    with pytest.raises(ValueError, match=r"val.txt: 1 class\(es\) not in the training classes: Concorde"):
        read_annotation_list(list_file, tmp_path / "images", image_ext=".png", classes=["A300B4", "Boeing 707"])
    list_file.write_text("1 A300B4\n2 A300B4\n1 A300B4\n")
    with caplog.at_level(logging.WARNING):
        source = read_annotation_list(list_file, tmp_path / "images", image_ext=".png")
    assert "1 image path(s) are listed more than once (1 extra entries)" in caplog.text
    assert source.duplicate_paths() == {tmp_path / "images" / "1.png": 2}


# ------------------------------------------------------------------------------------------------ CSV lists


def test_read_csv_list_relative_to_csv_and_root(tmp_path: Path) -> None:
    write_image(tmp_path / "imgs" / "a.png")
    write_image(tmp_path / "imgs" / "b.png")
    csv_file = tmp_path / "train.csv"
    csv_file.write_text("path,label,extra\nimgs/a.png,dog,x\nimgs/b.png,cat,y\n")
    source = read_csv_list(csv_file)
    assert source.classes == ["cat", "dog"]
    assert source.samples == [(tmp_path / "imgs" / "a.png", 1), (tmp_path / "imgs" / "b.png", 0)]

    other = tmp_path / "lists"
    other.mkdir()
    (other / "train.csv").write_text("label,path\ndog,a.png\n")
    assert read_csv_list(other / "train.csv", root=tmp_path / "imgs").samples == [(tmp_path / "imgs" / "a.png", 0)]


def test_read_csv_list_bad_header(tmp_path: Path) -> None:
    csv_file = tmp_path / "data.csv"
    csv_file.write_text("file,class\na.png,dog\n")
    with pytest.raises(ValueError, match=r"data.csv:1: header must have columns 'path,label'; missing path, label"):
        read_csv_list(csv_file)
    csv_file.write_text("a.png,dog\n")  # header forgotten
    with pytest.raises(ValueError, match=r"header must have columns 'path,label'; missing path, label in header"):
        read_csv_list(csv_file)
    csv_file.write_text("")
    with pytest.raises(ValueError, match="data.csv: empty file, expected a header with columns 'path,label'"):
        read_csv_list(csv_file)


def test_read_csv_list_bad_rows_report_file_and_line(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    csv_file = tmp_path / "data.csv"
    csv_file.write_text("path,label\nmissing.png,dog\na.png,\na.png\n")
    with pytest.raises(ValueError) as error:
        read_csv_list(csv_file)
    message = str(error.value)
    assert message.startswith(f"3 problem(s) in CSV file {csv_file}:")
    assert f"{csv_file}:2: image not found: {tmp_path / 'missing.png'}" in message
    assert f"{csv_file}:3: empty label for a.png" in message
    assert f"{csv_file}:4: expected 2 columns (path,label), got 1" in message


# ------------------------------------------------------------------------------------------------ dataset


def test_dataset_returns_rgb_tensor_and_label(tmp_path: Path) -> None:
    write_image(tmp_path / "train" / "gray" / "g.png", mode="L", value=77)
    write_image(tmp_path / "train" / "rgb" / "c.jpg")
    dataset = ClassificationDataset(scan_image_folder(tmp_path / "train"), transform=pil_to_tensor)
    assert len(dataset) == 2
    assert dataset.labels == [0, 1]
    image, label = dataset[0]
    assert label == 0
    assert image.shape == (3, 6, 8) and image.dtype == torch.uint8
    assert torch.all(image == 77)  # grayscale converted to RGB
    assert dataset.num_skipped == 0


def test_dataset_corrupt_image_error_names_file_and_reason(tmp_path: Path) -> None:
    bad = tmp_path / "train" / "cat" / "bad.jpg"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"this is not a jpeg")
    dataset = ClassificationDataset(ClassificationSource([(bad, 0)], ["cat"], "test"))
    with pytest.raises(ValueError, match=r"cannot decode image .*bad.jpg: UnidentifiedImageError: cannot identify"):
        dataset[0]


def test_dataset_detects_truncated_jpeg(tmp_path: Path) -> None:
    truncated = write_truncated_jpeg(tmp_path / "cut.jpg")
    with Image.open(truncated) as image:
        assert image.size == (64, 64)  # the header is intact, only decoding fails
    dataset = ClassificationDataset(ClassificationSource([(truncated, 0)], ["a"], "test"))
    with pytest.raises(ValueError, match=r"cannot decode image .*cut.jpg: OSError: image file is truncated"):
        dataset[0]
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_dataset_rejects_unknown_policy(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_corrupt must be 'error' or 'skip', got 'ignore'"):
        ClassificationDataset(ClassificationSource([], [], "test"), on_corrupt="ignore")  # type: ignore[arg-type]


def test_dataset_skip_mode_in_main_process(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = write_image(tmp_path / "good.png")
    bad = write_truncated_jpeg(tmp_path / "bad.jpg")
    dataset = ClassificationDataset(
        ClassificationSource([(good, 0), (bad, 1)], ["a", "b"], "test"), pil_to_tensor, on_corrupt="skip"
    )
    with caplog.at_level(logging.WARNING):
        assert dataset[1] is None
    assert dataset.num_skipped == 1
    assert "skipping corrupt image" in caplog.text and "bad.jpg" in caplog.text
    images, labels = collate_skip_none([dataset[0], dataset[1]])
    assert images.shape == (1, 3, 6, 8) and labels.tolist() == [0]


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_dataset_skip_counter_is_shared_with_workers(tmp_path: Path, start_method: str) -> None:
    samples = [(write_image(tmp_path / f"good{i}.png", value=20 * i), i % 3) for i in range(6)]
    (tmp_path / "text.png").write_text("not an image")
    samples.insert(2, (tmp_path / "text.png", 1))
    samples.insert(5, (write_truncated_jpeg(tmp_path / "cut.jpg"), 2))
    samples.append((tmp_path / "empty.jpg", 0))
    (tmp_path / "empty.jpg").write_bytes(b"")
    dataset = ClassificationDataset(ClassificationSource(samples, ["a", "b", "c"], "test"), pil_to_tensor,
                                    on_corrupt="skip")
    # persistent workers: spawn start-up (a fresh interpreter importing torch) is paid once for both epochs
    loader = DataLoader(dataset, batch_size=3, num_workers=2, multiprocessing_context=start_method,
                        collate_fn=collate_skip_none, persistent_workers=True)
    labels = []
    for _ in range(2):  # the counter accumulates over epochs
        for images, batch_labels in loader:
            assert images.shape[1:] == (3, 6, 8)
            labels.extend(batch_labels.tolist())
    assert labels == [0, 1, 2, 0, 1, 2] * 2
    assert dataset.num_skipped == 6


def test_collate_skip_none_shapes_and_errors() -> None:
    images, labels = collate_skip_none([None, None])
    assert images.shape == (0, 3, 0, 0) and images.dtype == torch.float32
    assert labels.shape == (0,) and labels.dtype == torch.int64
    images, labels = collate_skip_none([(torch.ones(3, 4, 5), 2), None, (torch.zeros(3, 4, 5), 0)])
    assert images.shape == (2, 3, 4, 5)
    assert labels.dtype == torch.int64 and labels.tolist() == [2, 0]
    with pytest.raises(TypeError, match="expects Tensor images \\(set a transform\\), got Image"):
        collate_skip_none([(Image.new("RGB", (2, 2)), 0)])


def test_many_bad_rows_are_summarised_and_repeated_classes_rejected(tmp_path: Path) -> None:
    csv_file = tmp_path / "data.csv"
    csv_file.write_text("path,label\n" + "".join(f"missing{i}.png,dog\n" for i in range(12)))
    with pytest.raises(ValueError) as error:
        read_csv_list(csv_file)
    lines = str(error.value).splitlines()
    assert lines[0] == f"12 problem(s) in CSV file {csv_file}:"
    listed = [f"  {csv_file}:{i + 2}: image not found: {tmp_path / f'missing{i}.png'}" for i in range(10)]
    assert lines[1:] == [*listed, "  ... and 2 more"]
    write_image(tmp_path / "a.png")
    csv_file.write_text("path,label\na.png,dog\n")
    with pytest.raises(ValueError, match="classes list repeats names: dog"):
        read_csv_list(csv_file, classes=["dog", "cat", "dog"])


def _two_class_tree(root: Path) -> Path:
    for name in ("cat", "dog"):
        for index in range(2):
            (root / "train" / name).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(root / "train" / name / f"{index}.png")
    return root / "train"


def test_self_referencing_folder_link_is_followed_once_and_reported(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    train = _two_class_tree(tmp_path)
    (train / "cat" / "self").symlink_to(".")
    source = scan_image_folder(train)
    assert source.class_counts() == {"cat": 2, "dog": 2}  # not 2 x 41 repeats through cat/self/self/...
    assert source.skipped_links == [(train / "cat" / "self", (train / "cat").resolve())]
    assert "skipped the folder link" in caplog.text and "cat/self" in caplog.text


def test_folder_link_loop_to_the_parent_does_not_hang_or_mislabel(tmp_path: Path) -> None:
    train = _two_class_tree(tmp_path)
    (train / "cat" / "loop").symlink_to("..")
    source = scan_image_folder(train)  # used to walk train/ again from inside cat/, forever
    assert source.class_counts() == {"cat": 2, "dog": 2}  # dog's images are not labelled cat
    assert [link for link, _ in source.skipped_links] == [train / "cat" / "loop"]


def test_check_data_reports_a_skipped_folder_link(tmp_path: Path) -> None:
    from visiontune.data.image_check import check_classification_sources

    train = _two_class_tree(tmp_path)
    (train / "dog" / "loop").symlink_to("..")
    report = check_classification_sources({"train": scan_image_folder(train)}, progress=False)
    assert any("folder link" in warning and "dog/loop" in warning and "not followed" in warning
               for warning in report.warnings)
    assert "dog/loop" in report.format()


def test_missing_split_folder_suggests_the_folder_next_to_it(tmp_path):
    from visiontune.data.classification import scan_image_folder as scan

    for split in ("train", "eval"):
        (tmp_path / split / "cat").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / split / "cat" / "a.jpg")
    with pytest.raises(ValueError) as error:
        scan(tmp_path / "val", hint="data.root + data.val_split", setting="data.val_split", split="val",
             exclude=["train"])
    assert str(error.value) == (f"data folder not found: {tmp_path / 'val'} (data.root + data.val_split); found a "
                                "folder 'eval' next to it: set data.val_split=eval")
    (tmp_path / "eval").rename(tmp_path / "holdout")
    with pytest.raises(ValueError, match=r"; folders next to it: holdout \(set data.val_split to the split folder"):
        scan(tmp_path / "val", setting="data.val_split", split="val", exclude=["train"])
    with pytest.raises(ValueError, match=r"data folder not found: \S+val$"):
        scan(tmp_path / "val")
