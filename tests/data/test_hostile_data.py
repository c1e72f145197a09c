"""Data that used to be read wrongly without a word, or to hang: each case is named in one line."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from visiontune.cli import main
from visiontune.config import load_config
from visiontune.data.classification import ClassificationDataset, read_csv_list, scan_image_folder
from visiontune.data.coco_check import check_coco_data
from visiontune.data.coco_format import CocoFormatError, parse_coco_instances
from visiontune.data.image_check import check_classification_sources, inspect_image
from visiontune.data.sources import collect_images
from visiontune.data.widerface_annotations import read_annotations
from visiontune.tasks.classification import ClassificationTask
from visiontune.tasks.classification_predict import collect_prediction_inputs
from visiontune.utils.image import EXIF_ORIENTATION
from visiontune.utils.widerface_format import WiderFaceFormatError

COLOURS = ((200, 30, 30), (30, 200, 30), (30, 30, 200))


class StillBlocked(BaseException):
    """A blocking ``open()`` of a named pipe, interrupted (a ``BaseException``: no ``except OSError`` swallows it)."""


@contextlib.contextmanager
def fails_instead_of_hanging(seconds: int = 60) -> Iterator[None]:
    """Raise :class:`StillBlocked` in the block after ``seconds`` (a blocking ``open()`` of a named pipe is
    interrupted)."""
    def expire(signum: int, frame: object) -> None:
        raise StillBlocked(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 3) -> Path:
    """``root/train/<class>/<i>.png`` and ``root/val/<class>/<i>.png``, 32 px, one colour per class."""
    for split in ("train", "val"):
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for number in range(per_class):
                Image.new("RGB", (32, 32), COLOURS[index % 3]).save(folder / f"{number}.png")
    return root


def cli_options(root: Path, project: Path) -> list[str]:
    return ["task=classification", "device=cpu", f"data.root={root}", f"project={project}", "model.name=test_resnet",
            "data.image_size=32", "data.crop_pct=1.0", "data.batch_size=4", "data.num_workers=0",
            "train.progress=false", "train.epochs=1"]


def rotated_jpeg(path: Path) -> Image.Image:
    """Save a 40 x 20 (width x height) picture stored on its side with EXIF orientation 6; return the upright one."""
    upright = Image.new("RGB", (40, 20), (250, 250, 250))
    upright.paste((200, 0, 0), (0, 0, 10, 20))  # a red band on the left
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
    return upright


# ---------------------------------------------------------------------------------------------- classification


def test_a_named_pipe_in_a_class_folder_is_skipped_never_opened(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    root = image_folder(tmp_path)
    pipe = root / "train" / "cat" / "f.jpg"
    os.mkfifo(pipe)
    with caplog.at_level(logging.WARNING), fails_instead_of_hanging():
        source = scan_image_folder(root / "train")
        dataset = ClassificationDataset(source)
        images = [dataset[index] for index in range(len(dataset))]
    assert pipe not in [path for path, _ in source.samples] and len(images) == 6
    assert f"{root / 'train'}: skipped 1 file(s) that are a named pipe, not regular files, e.g. {pipe}" in caplog.text
    # a list or CSV naming it is an error, not an open()
    listing = root / "list.csv"
    listing.write_text("path,label\ntrain/cat/0.png,cat\ntrain/cat/f.jpg,cat\n")
    with fails_instead_of_hanging(), pytest.raises(ValueError, match=f"list.csv:3: image is a named pipe, not a "
                                                                     f"regular file: {pipe}"):
        read_csv_list(listing)
    assert inspect_image(pipe).message == "a named pipe, not a regular file (never opened)"


def test_prediction_inputs_skip_or_refuse_a_named_pipe(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    root = image_folder(tmp_path)
    pipe = root / "val" / "cat" / "f.jpg"
    os.mkfifo(pipe)
    (root / "val" / "dog" / "notes.txt").write_text("taken in 2020\n")
    listing = root / "listing.csv"
    listing.write_text("path,label\nval/cat/0.png,cat\nval/cat/f.jpg,cat\n")
    with fails_instead_of_hanging(), caplog.at_level(logging.WARNING):
        items = collect_prediction_inputs(str(root / "val"), ["cat", "dog"])
        with pytest.raises(ValueError, match=f"listing.csv:3: image is a named pipe, not a regular file: {pipe}$"):
            collect_prediction_inputs(str(listing), ["cat", "dog"])
    assert len(items) == 6 and pipe not in [path for path, _ in items]
    assert [record.getMessage() for record in caplog.records] == [
        f"{root / 'val' / 'cat'}: skipped 1 file(s) that are a named pipe, not regular files, e.g. {pipe}",
        f"{root / 'val' / 'dog'}: skipped 1 file(s) with an extension other than .jpg, .jpeg, .png, .bmp, .webp, "
        f".tif, .tiff, .ppm, .pgm, .gif, e.g. {root / 'val' / 'dog' / 'notes.txt'}"]


def test_training_data_and_check_data_name_a_named_pipe_and_a_gif(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                   caplog: pytest.LogCaptureFixture):
    root = image_folder(tmp_path / "data")
    pipe = root / "train" / "cat" / "f.jpg"
    os.mkfifo(pipe)
    gif = root / "train" / "dog" / "anim.gif"
    frames = [Image.new("P", (32, 32), colour) for colour in (1, 2)]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    pipe_line = f"{root / 'train'}: skipped 1 file(s) that are a named pipe, not regular files, e.g. {pipe}"
    gif_line = (f"{root / 'train'}: skipped 1 file(s) with an extension other than .jpg, .jpeg, .png, .ppm, .bmp, "
                f".pgm, .tif, .tiff, .webp, e.g. {gif}")
    options = cli_options(root, tmp_path / "runs")
    with fails_instead_of_hanging(120):
        task = ClassificationTask(load_config(None, options))
        with caplog.at_level(logging.WARNING):
            dataset = task.build_dataset("train", train=True)  # what `visiontune train` reads
        assert len([dataset[index] for index in range(len(dataset))]) == 6
        assert [pipe_line, gif_line] == [record.getMessage() for record in caplog.records]
        assert main(["check-data", *options, "data.duplicates=false"]) == 0  # warnings only (the images are copies)
    out = capsys.readouterr().out
    assert "split 'train': 6 images" in out and "result: OK (0 error(s), 2 warning(s))" in out
    assert f"  - split 'train': {pipe_line}\n  - split 'train': {gif_line}\n" in out


def test_check_data_says_a_multi_page_image_is_read_as_its_first_frame(tmp_path: Path):
    root = image_folder(tmp_path)
    pages = root / "train" / "cat" / "pages.tif"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(pages, save_all=True, append_images=[Image.new("RGB", (32, 32))])
    source = scan_image_folder(root / "train")
    assert pages in [path for path, _ in source.samples]
    report = check_classification_sources({"train": source}, progress=False)
    assert f"train: {pages}: 2 frames (animated or multi-page): only the first frame is read" in report.format()
    assert report.num_warnings == 1 and not report.has_errors


def test_classification_reads_images_upright_and_check_data_names_the_rotated_ones(tmp_path: Path):
    root = image_folder(tmp_path)
    rotated = root / "train" / "cat" / "phone.jpg"
    upright = rotated_jpeg(rotated)
    source = scan_image_folder(root / "train")
    image, _ = ClassificationDataset(source)[[path for path, _ in source.samples].index(rotated)]
    assert image.size == upright.size == (40, 20)
    assert image.getpixel((2, 10))[0] > 150 and image.getpixel((37, 10))[0] > 150 > image.getpixel((2, 10))[1]
    report = check_classification_sources({"train": source}, progress=False)
    assert (f"note: 1 image(s) carry an EXIF orientation and are turned upright when loaded (in training, "
            f"evaluation and prediction alike), e.g. {rotated} (orientation 6)") in report.format()
    assert report.num_warnings == 0


def test_prediction_reads_images_upright(tmp_path: Path):
    folder = tmp_path / "images"
    folder.mkdir()
    rotated_jpeg(folder / "a_rotated.jpg").save(folder / "b_upright.png")
    task = ClassificationTask(load_config(None, ["model.name=test_resnet", "model.num_classes=3", "data.image_size=32",
                                                 "data.crop_pct=1.0", "train.progress=false"]))
    task.meta["class_names"] = ["a", "b", "c"]
    task.predict(task.build_model(load_weights=False), str(folder), tmp_path / "out", device=torch_cpu())
    rows = list(csv.DictReader((tmp_path / "out" / "predictions.csv").open()))
    probabilities = [[float(row[f"prob{rank}"]) for rank in (1, 2, 3)] for row in rows]
    assert probabilities[0] == pytest.approx(probabilities[1], abs=0.02)  # the same picture, once rotated by EXIF


def torch_cpu():  # type: ignore[no-untyped-def]
    import torch

    return torch.device("cpu")


def test_a_single_class_is_refused_for_training_and_an_error_in_check_data(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture):
    root = image_folder(tmp_path / "data", classes=("cat",))
    options = cli_options(root, tmp_path / "runs")
    assert main(["train", *options]) == 2
    expected = (f"{root / 'train'}: found 1 class ('cat'); a classifier needs at least 2 classes (one sub-folder, "
                "or label, per class)")
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"visiontune train: error: {expected}"
    assert main(["check-data", *options]) == 1
    out = capsys.readouterr().out
    assert f"  - split 'train': {expected}" in out and "result: FAILED (1 error(s)" in out


# ---------------------------------------------------------------------------------------------- COCO


def coco_files(root: Path, *, images: list[dict], categories: list[dict], annotations: list[dict]) -> Path:
    """``root/images/<file_name>`` (32 x 32 PNGs, unless present) and ``root/instances.json``."""
    for image in images:
        path = root / "images" / image["file_name"]
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (image["width"], image["height"]), (90, 90, 90)).save(path)
    annotation_file = root / "instances.json"
    annotation_file.write_text(json.dumps({"images": images, "categories": categories, "annotations": annotations}))
    return annotation_file


def box_annotation(annotation_id: int, image_id: int, category_id: int, bbox: list[float] | None = None) -> dict:
    x, y, width, height = bbox or [4, 4, 12, 12]
    polygon = [x, y, x + width, y, x + width, y + height, x, y + height]
    return {"id": annotation_id, "image_id": image_id, "category_id": category_id, "bbox": [x, y, width, height],
            "segmentation": [polygon], "iscrowd": 0, "area": width * height}


def test_coco_file_name_listed_twice_is_an_error_naming_both_ids(tmp_path: Path):
    images = [{"id": 1, "file_name": "a.png", "height": 32, "width": 32},
              {"id": 7, "file_name": "a.png", "height": 32, "width": 32}]
    annotation_file = coco_files(tmp_path, images=images, categories=[{"id": 1, "name": "cat"}],
                                 annotations=[box_annotation(1, 1, 1)])
    message = (f"{annotation_file}: file_name 'a.png' is listed by image ids 1, 7: one picture as several images (an "
               "entry without its annotations would train as an empty negative)")
    with pytest.raises(CocoFormatError) as raised:
        parse_coco_instances(annotation_file)  # as training reads it
    assert str(raised.value) == message
    report = check_coco_data(tmp_path / "images", annotation_file)
    assert report.problems == [message] and "result: FAILED" in report.format_report()


def test_coco_category_name_used_twice_is_an_error_naming_both_ids(tmp_path: Path):
    images = [{"id": 1, "file_name": "a.png", "height": 32, "width": 32}]
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "cat"}]
    annotation_file = coco_files(tmp_path, images=images, categories=categories,
                                 annotations=[box_annotation(1, 1, 1), box_annotation(2, 1, 2)])
    message = (f"{annotation_file}: category name 'cat' is used by category ids 1, 3: they would train as separate "
               "classes of one name (merge them or rename one)")
    with pytest.raises(CocoFormatError) as raised:
        parse_coco_instances(annotation_file)
    assert str(raised.value) == message
    assert check_coco_data(tmp_path / "images", annotation_file).problems == [message]


def test_coco_box_beyond_float32_is_malformed(tmp_path: Path):
    images = [{"id": 1, "file_name": "a.png", "height": 32, "width": 32}]
    annotation_file = coco_files(tmp_path, images=images, categories=[{"id": 1, "name": "cat"}],
                                 annotations=[box_annotation(5, 1, 1, [1, 1, 1e39, 4])])
    with pytest.raises(CocoFormatError, match=r"annotation id 5: malformed bbox \[1, 1, 1e\+39, 4\]"):
        parse_coco_instances(annotation_file)


def test_coco_named_pipe_is_never_opened(tmp_path: Path):
    from visiontune.data.coco_dataset import CocoInstanceDataset

    images = [{"id": 1, "file_name": "a.png", "height": 32, "width": 32},
              {"id": 2, "file_name": "pipe.png", "height": 32, "width": 32}]
    (tmp_path / "images").mkdir()
    pipe = tmp_path / "images" / "pipe.png"
    os.mkfifo(pipe)
    annotation_file = coco_files(tmp_path, images=images, categories=[{"id": 1, "name": "cat"}],
                                 annotations=[box_annotation(1, 1, 1), box_annotation(2, 2, 1)])
    with fails_instead_of_hanging():
        report = check_coco_data(tmp_path / "images", annotation_file)
        assert report.problems == [f"{pipe}: file is a named pipe, not a regular file (image id 2)"]
        expected = f"image file is a named pipe, not a regular file: {pipe} (image id 2)"
        with pytest.raises(ValueError, match=re.escape(expected)):
            CocoInstanceDataset(tmp_path / "images", annotation_file)[1]


def test_coco_images_are_read_upright_and_check_data_names_the_rotated_ones(tmp_path: Path):
    from visiontune.data.coco_dataset import CocoInstanceDataset

    (tmp_path / "images").mkdir()
    rotated_jpeg(tmp_path / "images" / "phone.jpg")  # stored 20 x 40, displayed 40 x 20
    images = [{"id": 1, "file_name": "phone.jpg", "height": 20, "width": 40}]
    annotation_file = coco_files(tmp_path, images=images, categories=[{"id": 1, "name": "cat"}],
                                 annotations=[box_annotation(1, 1, 1)])
    image, _ = CocoInstanceDataset(tmp_path / "images", annotation_file)[0]
    assert tuple(image.shape) == (3, 20, 40) and image[0, 10, 2] > image[1, 10, 2] + 0.3  # red band on the left
    report = check_coco_data(tmp_path / "images", annotation_file)
    assert report.ok
    assert (f"  note: 1 image(s) carry an EXIF orientation and are turned upright when loaded (in training, "
            f"evaluation and prediction alike), e.g. {tmp_path / 'images' / 'phone.jpg'} (orientation 6)"
            in report.format_report())
    declared_as_stored = coco_files(tmp_path, images=[{**images[0], "height": 40, "width": 20}],
                                    categories=[{"id": 1, "name": "cat"}], annotations=[])
    assert check_coco_data(tmp_path / "images", declared_as_stored).problems == [
        f"{tmp_path / 'images' / 'phone.jpg'}: image is 40x20 (width x height, upright by its EXIF orientation 6) "
        "but the annotation file declares 20x40 for image id 1"]


# ---------------------------------------------------------------------------------------------- WIDER FACE


def face_line(x: str = "4", landmark: str = "10") -> str:
    return f"{x} 4 12 12 {landmark} 8 0 14 8 0 12 10 0 9 13 0 14 13 0 1.0"


def wider_data(root: Path, label_text: bytes) -> Path:
    (root / "images" / "party").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (32, 32), (90, 90, 90)).save(root / "images" / "party" / name)
    (root / "label.txt").write_bytes(label_text)
    return root


def face_check(root: Path) -> tuple[str, bool]:
    from visiontune.tasks import create_task

    config = load_config(None, ["task=face_detection", "model.name=retinaface_mobilenet0.25", f"data.root={root}",
                                "data.format=retinaface", "data.train_split=label.txt", "data.val_split=null",
                                "data.images_dir=images",
                                "data.num_workers=0", "train.progress=false"])
    return create_task(config).data_problems()


@pytest.mark.parametrize("line", [face_line(landmark="1e39"), face_line(x="1e39")], ids=["landmark", "box"])
def test_wider_value_beyond_float32_names_file_and_line(tmp_path: Path, line: str):
    root = wider_data(tmp_path, f"# party/a.jpg\n{face_line()}\n# party/b.jpg\n{line}\n".encode())
    message = (f"{root / 'label.txt'}:4: '1e39' in a face line is outside the float32 range (|x| <= 3.4e38): it "
               "would become inf")
    with pytest.raises(WiderFaceFormatError) as raised:
        read_annotations(root / "label.txt", "retinaface")
    assert str(raised.value) == message
    text, has_errors = face_check(root)
    assert has_errors and f"label.txt: error: {message}" in text and text.endswith("errors found")


def test_wider_label_file_with_a_byte_order_mark_is_read(tmp_path: Path):
    root = wider_data(tmp_path, f"\ufeff# party/a.jpg\n{face_line()}\n# party/b.jpg\n".encode())
    records = read_annotations(root / "label.txt", "retinaface").records
    assert [record.relative_path for record in records] == ["party/a.jpg", "party/b.jpg"]
    assert records[0].num_faces == 1


def test_wider_invalid_utf8_names_file_and_line(tmp_path: Path):
    root = wider_data(tmp_path, f"# party/a.jpg\n{face_line()}\n".encode() + b"# party/\xffb.jpg\n")
    message = (f"{root / 'label.txt'}:3: not UTF-8 text: byte 0xff at column 9 (invalid start byte); save the file "
               "as UTF-8")
    with pytest.raises(WiderFaceFormatError) as raised:
        read_annotations(root / "label.txt", "retinaface")
    assert str(raised.value) == message and raised.value.line_number == 3
    text, has_errors = face_check(root)
    assert has_errors and message in text


def test_wider_named_pipe_is_never_opened(tmp_path: Path):
    from visiontune.data.widerface_dataset import WiderFaceDataset

    root = wider_data(tmp_path, f"# party/a.jpg\n{face_line()}\n# party/pipe.jpg\n".encode())
    pipe = root / "images" / "party" / "pipe.jpg"
    os.mkfifo(pipe)
    with fails_instead_of_hanging():
        text, has_errors = face_check(root)
        assert has_errors and f"  error: {pipe}: a named pipe, not a regular file (never opened)" in text
        with pytest.raises(ValueError, match=f"image file is a named pipe, not a regular file: {pipe} "
                                             r"\(listed at .*label.txt:3\)"):
            WiderFaceDataset(root / "images", root / "label.txt")
        with pytest.raises(ValueError, match=f"source is a named pipe, not a regular file: {pipe}"):
            collect_images(pipe)


def test_wider_check_data_names_rotated_images(tmp_path: Path):
    root = wider_data(tmp_path, f"# party/a.jpg\n{face_line()}\n# party/phone.jpg\n".encode())
    rotated_jpeg(root / "images" / "party" / "phone.jpg")
    text, has_errors = face_check(root)
    assert not has_errors
    assert (f"  note: 1 image(s) carry an EXIF orientation and are turned upright when loaded (in training, "
            f"evaluation and prediction alike), e.g. {root / 'images' / 'party' / 'phone.jpg'} (orientation 6)") in text


def test_coco_annotation_file_with_a_byte_order_mark_or_invalid_utf8(tmp_path: Path):
    images = [{"id": 1, "file_name": "a.png", "height": 32, "width": 32}]
    annotation_file = coco_files(tmp_path, images=images, categories=[{"id": 1, "name": "caf\u00e9"}],
                                 annotations=[box_annotation(1, 1, 1)])
    text = annotation_file.read_text(encoding="utf-8").replace("\\u00e9", "\u00e9")  # a raw é, not an escape
    annotation_file.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert parse_coco_instances(annotation_file).available_categories == {1: "caf\u00e9"}
    annotation_file.write_bytes(b"{\n" + text[1:].encode("latin-1"))  # é as the single byte 0xe9 on line 2
    with pytest.raises(CocoFormatError) as raised:
        parse_coco_instances(annotation_file)
    assert str(raised.value).startswith(f"{annotation_file}:2: not UTF-8 text: byte 0xe9 at column ")
    assert check_coco_data(tmp_path / "images", annotation_file).problems == [str(raised.value)]


def test_image_lists_with_a_byte_order_mark_or_invalid_utf8(tmp_path: Path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    listing = tmp_path / "frames.txt"
    listing.write_bytes(b"\xef\xbb\xbfa.png\n")
    assert collect_images(listing) == [tmp_path / "a.png"]
    assert collect_prediction_inputs(str(listing), ["cat"]) == [(tmp_path / "a.png", None)]
    listing.write_bytes(b"a.png\n\xff.png\n")
    message = f"{listing}:2: not UTF-8 text: byte 0xff at column 1 (invalid start byte); save the file as UTF-8"
    for collect in (collect_images, lambda path: collect_prediction_inputs(str(path), ["cat"])):
        with pytest.raises(ValueError) as raised:
            collect(listing)
        assert str(raised.value) == message
