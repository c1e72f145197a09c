"""predict and the evaluation artifacts write only inside their output folder, whatever the image names say.

Each task is fed hostile names through each of its source formats (folder, list file, CSV, WIDER label.txt, COCO
JSON): ``..`` components, absolute paths, Windows names (``C:\\x\\v.jpg``, a plain file name on POSIX) and symbolic
links in the output folder that lead out of it. The tests compare every file of ``tmp_path`` before and after.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tests.helpers import FixedMaskModel
from visiontune.config import load_config
from visiontune.data.synthetic_coco import make_synthetic_coco
from visiontune.data.widerface import WiderFaceRecord
from visiontune.evaluation.face_detection import FaceDetectionEvaluator
from visiontune.tasks import create_task
from visiontune.tasks.classification import ClassificationTask
from visiontune.tasks.face_detection import FaceDetectionTask
from visiontune.tasks.instance_segmentation import InstanceSegmentationTask

CPU = torch.device("cpu")
WINDOWS_NAME = "C:\\x\\w.png"
"""A Windows absolute path: on POSIX one plain file name, which is how the tests create it."""


def snapshot(root: Path) -> dict[Path, bytes]:
    """Every regular file under ``root`` (links not followed) and its bytes."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if not path.is_symlink():
                files[path] = path.read_bytes()
    return files


def assert_only_inside(before: dict[Path, bytes], root: Path, output: Path) -> list[Path]:
    """The files of ``root`` before are unchanged and every new file lies in ``output``; returns the new files."""
    after = snapshot(root)
    assert [path for path, data in before.items() if after.get(path) != data] == []  # the user's files: unchanged
    new = sorted(path for path in after if path not in before)
    assert [path for path in new if output not in path.parents] == []
    return new


def write_image(path: Path, size: tuple[int, int] = (48, 40), color: tuple[int, int, int] = (120, 90, 60)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


# --------------------------------------------------------------------------------------------- classification


@pytest.fixture()
def classifier() -> tuple[ClassificationTask, nn.Module]:
    config = load_config(None, ["task=classification", "model.name=test_resnet", "data.image_size=32",
                                "data.batch_size=4", "train.progress=false"])
    task = ClassificationTask(config)
    task.meta["class_names"] = ["blue", "red"]
    torch.manual_seed(0)
    return task, task.build_model(load_weights=False).eval()


@pytest.mark.parametrize("source_format", ["folder", "list", "csv"])
def test_classification_writes_its_fixed_files_only(classifier, tmp_path: Path, source_format: str):
    task, model = classifier
    write_image(tmp_path / "elsewhere" / "v.jpg")
    absolute = write_image(tmp_path / "other" / "a.jpg")
    write_image(tmp_path / "data" / "deep" / "here.jpg")
    rows = ["../elsewhere/v.jpg", str(absolute), "deep/here.jpg"]
    if source_format == "list":
        source = tmp_path / "data" / "list.txt"
        source.write_text("\n".join(rows) + "\n")
    elif source_format == "csv":
        source = tmp_path / "data" / "list.csv"
        source.write_text("path,label\n" + "".join(f"{row},red\n" for row in rows))
    else:
        source = tmp_path / "data"
    output = tmp_path / "data" / "out"  # inside the source folder's tree, and named by no image
    before = snapshot(tmp_path)
    written = task.predict(model, str(source), output, device=CPU)
    new = assert_only_inside(before, tmp_path, output)
    assert new == sorted(written) and {path.name for path in new} <= {"predictions.csv", "pred.txt", "metrics.json"}
    predicted = [row["path"] for row in csv.DictReader((output / "predictions.csv").open())]
    assert len(predicted) == (3 if source_format != "folder" else 1)


# --------------------------------------------------------------------------------------------- face detection


@pytest.fixture()
def detector(tmp_path: Path) -> tuple[FaceDetectionTask, nn.Module]:
    config = load_config(None, ["task=face_detection", "model.name=retinaface_mobilenet0.25",
                                f"data.root={tmp_path / 'faces'}", "data.format=retinaface", "train.progress=false"])
    task = create_task(config)
    assert isinstance(task, FaceDetectionTask)
    torch.manual_seed(0)
    return task, task.build_model().eval()


def test_face_folder_source_flattens_windows_names(detector, tmp_path: Path, caplog):
    task, model = detector
    folder = tmp_path / "faces" / "images"
    write_image(folder / "party" / "a.jpg")
    write_image(folder / WINDOWS_NAME)
    output = tmp_path / "out"
    before = snapshot(tmp_path)
    with caplog.at_level(logging.WARNING):
        written = task.predict(model, str(folder), output, device=CPU)
    new = assert_only_inside(before, tmp_path, output)
    assert sorted(path.relative_to(output).as_posix() for path in new) == [
        "party/a.jpg", "party/a.json", "x/w.json", "x/w.png"]
    assert sorted(written) == new
    assert warnings_of(caplog) == [f"{folder}: image name {WINDOWS_NAME!r} leads out of the output folder {output}; "
                                   "writing its files as x/w.json inside it"]


def test_face_list_source_names_outside_images_by_their_file_name(detector, tmp_path: Path):
    task, model = detector
    write_image(tmp_path / "elsewhere" / "v.jpg")
    absolute = write_image(tmp_path / "other" / "w.png")
    listing = tmp_path / "faces" / "frames.txt"
    listing.parent.mkdir(parents=True)
    listing.write_text(f"../elsewhere/v.jpg\n{absolute}\n")
    output = tmp_path / "out"
    before = snapshot(tmp_path)
    task.predict(model, str(listing), output, device=CPU)
    new = assert_only_inside(before, tmp_path, output)
    assert sorted(path.relative_to(output).as_posix() for path in new) == ["v.jpg", "v.json", "w.json", "w.png"]


def test_face_label_txt_source_flattens_windows_names(detector, tmp_path: Path, caplog):
    task, model = detector
    root = tmp_path / "faces"
    write_image(root / "images" / "party" / "a.jpg")
    write_image(root / "images" / WINDOWS_NAME)
    label = root / "label.txt"
    label.write_text(f"# party/a.jpg\n# {WINDOWS_NAME}\n")  # no face: no metrics, the per-image files only
    output = tmp_path / "out"
    before = snapshot(tmp_path)
    with caplog.at_level(logging.WARNING):
        task.predict(model, str(label), output, device=CPU)
    new = assert_only_inside(before, tmp_path, output)
    assert sorted(path.relative_to(output).as_posix() for path in new) == [
        "party/a.jpg", "party/a.json", "x/w.json", "x/w.png"]
    assert f"{label}: image name {WINDOWS_NAME!r} leads out of the output folder {output}; writing its files as " \
           "x/w.json inside it" in warnings_of(caplog)


@pytest.mark.parametrize("hostile", ["../../escape/v.jpg", "/escape/v.jpg"])
def test_face_label_txt_with_escaping_paths_writes_nothing_outside(detector, tmp_path: Path, hostile: str):
    task, model = detector
    root = tmp_path / "faces"
    write_image(root / "images" / "a.jpg")
    write_image(tmp_path / "escape" / "v.jpg")  # where ../../escape/v.jpg leads from faces/images
    write_image(root / "images" / "escape" / "v.jpg")  # where the reader takes /escape/v.jpg
    label = root / "label.txt"
    label.write_text(f"# a.jpg\n# {hostile}\n")
    output = root / "predictions" / "out"
    before = snapshot(tmp_path)
    try:
        task.predict(model, str(label), output, device=CPU)
    except ValueError as error:  # the reader may refuse the path itself: then with the file and line
        assert f"{label}:" in str(error)
    new = assert_only_inside(before, tmp_path, output)
    assert all(".." not in path.relative_to(output).parts for path in new)


def test_face_output_with_a_link_leading_out_is_refused(detector, tmp_path: Path):
    task, model = detector
    folder = tmp_path / "faces" / "images"
    write_image(folder / "party" / "a.jpg")
    outside = tmp_path / "outside"
    outside.mkdir()
    output = tmp_path / "out"
    output.mkdir()
    (output / "party").symlink_to(outside, target_is_directory=True)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as error:
        task.predict(model, str(folder), output, device=CPU)
    assert str(error.value) == (f"{output / 'party'} is a symbolic link to {outside.resolve()}, outside the output "
                                f"folder {output}: remove the link or choose another output folder")
    assert assert_only_inside(before, tmp_path, output) == [] and list(outside.iterdir()) == []


def test_face_evaluation_artifacts_refuse_an_event_link_leading_out(tmp_path: Path):
    record = WiderFaceRecord(relative_path="party/a.jpg", line_number=1, boxes=np.array([[4, 4, 20, 20]], np.float32),
                             landmarks=np.full((1, 5, 2), -1.0, np.float32), landmarks_valid=np.zeros(1, bool))
    evaluator = FaceDetectionEvaluator([record])
    evaluator.update([{"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0]]), "scores": torch.tensor([0.9]),
                       "landmarks": torch.zeros(1, 5, 2)}], [{"image_id": "party/a"}])
    evaluator.compute()
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "eval" / "widerface_predictions").mkdir(parents=True)
    (tmp_path / "eval" / "widerface_predictions" / "party").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match=r"widerface_predictions/party is a symbolic link to .*outside, outside the "
                                         r"output folder .*widerface_predictions: remove the link"):
        evaluator.save_artifacts(tmp_path / "eval")
    assert list(outside.iterdir()) == []
    (tmp_path / "eval" / "widerface_predictions" / "party").unlink()
    written = evaluator.save_artifacts(tmp_path / "eval")
    assert tmp_path / "eval" / "widerface_predictions" / "party" / "a.txt" in written


# --------------------------------------------------------------------------------------------- instance segmentation


@pytest.fixture()
def segmenter(tmp_path: Path) -> tuple[InstanceSegmentationTask, Path]:
    """A task with the categories of a synthetic COCO set under ``tmp_path/a/b/coco`` (two 48 x 64 images in
    ``val``)."""
    root = tmp_path / "a" / "b" / "coco"
    make_synthetic_coco(root, num_images=2, image_size=(48, 64), split="val", seed=0)
    config = load_config(None, [
        "task=instance_segmentation", "model.name=maskrcnn_resnet50_fpn", "data.format=coco", f"data.root={root}",
        "data.train_split=annotations/instances_val.json", "data.val_split=annotations/instances_val.json",
        "data.images_dir=val", "data.num_workers=0", "train.progress=false"])
    task = create_task(config)
    assert isinstance(task, InstanceSegmentationTask)
    task.build_dataset("annotations/instances_val.json", train=True)
    return task, root


def write_coco_images(path: Path, file_names: list[str], *, annotated: bool = False) -> Path:
    """A COCO image-info file (no ``annotations``: predicted only) listing ``file_names``."""
    raw: dict = {"images": [{"id": index, "file_name": name, "height": 40, "width": 48}
                            for index, name in enumerate(file_names, start=1)]}
    if annotated:
        raw.update(annotations=[], categories=[{"id": 10, "name": "book"}])
    path.write_text(json.dumps(raw))
    return path


def test_coco_source_file_names_leading_out_are_flattened(segmenter, tmp_path: Path, caplog):
    task, root = segmenter
    user_image = write_image(tmp_path / "photos" / "mine.png")  # an absolute file_name: beside it was the overlay
    write_image(tmp_path / "a" / "b" / "escape" / "v.png")  # where ../../escape/v.png leads from coco/val
    write_image(root / "val" / WINDOWS_NAME)
    source = write_coco_images(root / "annotations" / "hostile.json",
                               ["../../escape/v.png", str(user_image), WINDOWS_NAME, "000001.png"])
    output = root / "out"
    before = snapshot(tmp_path)
    with caplog.at_level(logging.WARNING):
        task.predict(FixedMaskModel(label=1), str(source), output, device=CPU)
    new = assert_only_inside(before, tmp_path, output)
    relative_user_image = user_image.relative_to("/").with_suffix("").as_posix()
    assert sorted(path.relative_to(output).as_posix() for path in new) == sorted([
        "results.json", "images.json", "overlays/escape/v.png", f"overlays/{relative_user_image}.png",
        "overlays/x/w.png", "overlays/000001.png"])
    assert warnings_of(caplog) == [
        f"{source}: image name '../../escape/v.png' leads out of the output folder {output}; writing its files as "
        "overlays/escape/v.png inside it (and 2 more)"]
    # images.json keeps the source's names: results.json still loads against the source
    assert [image["file_name"] for image in json.loads((output / "images.json").read_text())["images"]] == [
        "../../escape/v.png", str(user_image), WINDOWS_NAME, "000001.png"]


def test_coco_source_names_that_flatten_to_one_are_refused_before_writing(segmenter, tmp_path: Path):
    task, root = segmenter
    write_image(root / "val" / "sub" / "v.png")
    write_image(root / "sub" / "v.png")
    source = write_coco_images(root / "annotations" / "twice.json", ["sub/v.png", "../sub/v.png"])
    output = tmp_path / "out"
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as error:
        task.predict(FixedMaskModel(label=1), str(source), output, device=CPU)
    assert str(error.value) == (f"{source}: images 'sub/v.png' and '../sub/v.png' would both be written as "
                                f"overlays/sub/v.* in {output}; rename one or predict them separately")
    assert assert_only_inside(before, tmp_path, output) == [] and not output.exists()


@pytest.mark.parametrize("source_format", ["folder", "list", "coco", "annotated coco"])
def test_segmentation_output_with_an_overlay_link_leading_out_is_refused(segmenter, tmp_path: Path,
                                                                        source_format: str):
    task, root = segmenter
    sources = {"folder": root / "val", "list": root / "val" / "list.txt",
               "coco": write_coco_images(root / "info.json", ["000001.png", "000002.png"]),
               "annotated coco": root / "annotations" / "instances_val.json"}
    (root / "val" / "list.txt").write_text("000001.png\n000002.png\n")
    victim = write_image(tmp_path / "victim.png")
    output = tmp_path / "out"
    (output / "overlays").mkdir(parents=True)
    (output / "overlays" / "000002.png").symlink_to(victim)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=rf"^{output / 'overlays' / '000002.png'} is a symbolic link to "
                                         rf"{victim.resolve()}, outside the output folder {output}: remove the link "
                                         "or choose another output folder$"):
        task.predict(FixedMaskModel(label=1), str(sources[source_format]), output, device=CPU)
    assert assert_only_inside(before, tmp_path, output) == []


def test_segmentation_list_source_names_outside_images_by_their_file_name(segmenter, tmp_path: Path):
    task, root = segmenter
    write_image(tmp_path / "elsewhere" / "v.png")
    (root / "list.txt").write_text(f"../../../elsewhere/v.png\n{root / 'val' / '000001.png'}\n")
    output = tmp_path / "out"
    before = snapshot(tmp_path)
    task.predict(FixedMaskModel(label=1), str(root / "list.txt"), output, device=CPU)
    new = assert_only_inside(before, tmp_path, output)
    assert sorted(path.relative_to(output).as_posix() for path in new) == [
        "images.json", "overlays/v.png", "overlays/val/000001.png", "results.json"]


def test_evaluation_overlays_never_overwrite_an_image_of_the_same_name(segmenter, tmp_path: Path):
    task, root = segmenter
    raw = json.loads((root / "annotations" / "instances_val.json").read_text())
    for folder, image in zip(("one", "two"), raw["images"]):
        (root / "val" / folder).mkdir()
        shutil.copy(root / "val" / image["file_name"], root / "val" / folder / "v.png")
        image["file_name"] = f"{folder}/v.png"
    (root / "annotations" / "instances_same.json").write_text(json.dumps(raw))
    dataset = task.build_dataset("annotations/instances_same.json", train=False)
    evaluator = task.build_evaluator(dataset)
    evaluator.reset()
    evaluator.update(FixedMaskModel(label=1)([dataset.load_image(0), dataset.load_image(1)]),
                     [{"image_id": image_id} for image_id in dataset.image_ids])
    evaluator.compute()
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "eval" / "overlays").mkdir(parents=True)
    (tmp_path / "eval" / "overlays" / "v.png").symlink_to(outside / "v.png")
    with pytest.raises(ValueError, match=r"overlays/v\.png is a symbolic link to .*outside/v\.png, outside the output "
                                         r"folder"):
        evaluator.save_artifacts(tmp_path / "eval")
    assert list(outside.iterdir()) == []
    (tmp_path / "eval" / "overlays" / "v.png").unlink()
    written = evaluator.save_artifacts(tmp_path / "eval")
    assert written[1:] == [tmp_path / "eval" / "overlays" / "v.png"]  # the second v.png is skipped, not drawn over


# --------------------------------------------------------------------------------------------- the command line


def test_predict_command_prints_the_renaming_and_the_refusal(fixtures_dir: Path, tmp_path: Path, capsys):
    from visiontune.cli import main

    root = tmp_path / "faces"
    write_image(root / "images" / "party" / "a.jpg")
    write_image(root / "images" / WINDOWS_NAME)
    label = root / "label.txt"
    label.write_text(f"# party/a.jpg\n# {WINDOWS_NAME}\n")
    weights = fixtures_dir / "retinaface" / "mobilenet0.25_Final.pth"
    command = ["predict", "task=face_detection", "model.name=retinaface_mobilenet0.25", f"checkpoint={weights}",
               f"source={label}", "train.progress=false"]
    output = tmp_path / "out"
    before = snapshot(tmp_path)
    assert main([*command, f"output={output}"]) == 0
    assert f"{label}: image name {WINDOWS_NAME!r} leads out of the output folder {output}; writing its files as " \
           "x/w.json inside it" in capsys.readouterr().err.splitlines()
    assert {path.relative_to(output).as_posix() for path in assert_only_inside(before, tmp_path, output)} == {
        "party/a.jpg", "party/a.json", "x/w.json", "x/w.png"}

    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "party").symlink_to(root / "images" / "party", target_is_directory=True)
    before = snapshot(tmp_path)
    assert main([*command, f"output={linked}"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"visiontune predict: error: {linked / 'party'} is a symbolic link to {root / 'images' / 'party'}, outside "
        f"the output folder {linked}: remove the link or choose another output folder")
    assert assert_only_inside(before, tmp_path, linked) == []
