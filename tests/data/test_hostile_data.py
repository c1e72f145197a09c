"""Data that used to be read wrongly without a word, or to hang: each case is named in one line."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from visiontune.cli import main
from visiontune.config import load_config
from visiontune.data.classification import ClassificationDataset, read_csv_list, scan_image_folder
from visiontune.data.coco import CocoFormatError, check_coco_data, parse_coco_instances
from visiontune.data.image_check import check_classification_sources, inspect_image
from visiontune.data.sources import collect_images
from visiontune.data.widerface import WiderFaceFormatError, parse_retinaface_labels
from visiontune.tasks.classification import ClassificationTask
from visiontune.utils.image import EXIF_ORIENTATION

COLOURS = ((200, 30, 30), (30, 200, 30), (30, 30, 200))


@contextlib.contextmanager
def fails_instead_of_hanging(seconds: int = 60) -> Iterator[None]:
    """Raise TimeoutError in the block after ``seconds`` (a blocking ``open()`` of a named pipe is interrupted)."""
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still blocked after {seconds} s")

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
        assert main(["check-data", *options]) == 0  # warnings only
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
