"""NaN or infinite predictions in evaluation name the image file, the epoch and what to change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from visiontune.cli import main
from visiontune.config import load_config
from visiontune.data.synthetic_coco import make_synthetic_coco
from visiontune.evaluation.widerface_predictions import NonFinitePredictionError
from visiontune.models.classification import ImageClassifier
from visiontune.models.retinaface import RetinaFace
from visiontune.tasks import create_task


@pytest.fixture()
def faces(tmp_path: Path) -> Path:
    """Two 64x48 images with one face each, in the RetinaFace label.txt format."""
    lines = []
    for name in ("a", "b"):
        path = tmp_path / "data" / "images" / "party" / f"{name}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (120, 90, 60)).save(path)
        points = " ".join(f"{x:g} {y:g} 0" for x, y in ((16, 14), (24, 14), (20, 20), (17, 26), (23, 26)))
        lines += [f"# party/{name}.jpg", f"10 8 20 24 {points} 1"]
    (tmp_path / "data" / "label.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "data"


def overrides(root: Path, project: Path) -> list[str]:
    return ["task=face_detection", "model.name=retinaface_mobilenet0.25", "data.format=retinaface",
            f"data.root={root}", "data.train_split=label.txt", "data.val_split=label.txt", "data.images_dir=images",
            "data.batch_size=2", "data.num_workers=0", "data.image_size=64", "train.epochs=1", "train.progress=false",
            "train.plots=false", "device=cpu", f"project={project}", "name=nan"]


def test_evaluator_names_the_image_file_relative_to_the_data_root(faces: Path, tmp_path: Path):
    task = create_task(load_config(None, overrides(faces, tmp_path)))
    evaluator = task.build_evaluator(task.build_dataset("label.txt", train=False))
    finite = {"boxes": torch.tensor([[1.0, 2.0, 9.0, 9.0]]), "scores": torch.tensor([0.9]),
              "landmarks": torch.zeros(1, 5, 2)}
    broken = dict(finite, boxes=torch.tensor([[1.0, 2.0, 9.0, 9.0], [float("nan"), 0.0, 4.0, 4.0]]),
                  scores=torch.tensor([0.9, 0.8]), landmarks=torch.zeros(2, 5, 2))
    evaluator.update([finite], [{"image_id": "party/a"}])
    with pytest.raises(NonFinitePredictionError) as caught:
        evaluator.update([broken], [{"image_id": "party/b"}])
    assert str(caught.value) == ("predictions of image 'images/party/b.jpg' have a NaN or infinite value: boxes of "
                                 "detection 1 of 2 is [nan, 0.0, 4.0, 4.0]")
    assert caught.value.image == "images/party/b.jpg"


def test_training_run_with_nan_in_evaluation_names_epoch_image_and_fixes(faces: Path, tmp_path: Path, monkeypatch,
                                                                          capsys):
    forward = RetinaFace.forward

    def diverged(self, images, targets=None):
        outputs = forward(self, images, targets)
        if not self.training:  # evaluation only: the training loss stays finite
            for output in outputs:
                output["boxes"] = torch.full_like(output["boxes"], float("inf"))
                output["scores"] = torch.ones_like(output["scores"])
        return outputs

    monkeypatch.setattr(RetinaFace, "forward", diverged)
    assert main(["train", *overrides(faces, tmp_path / "runs")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("visiontune train: error: epoch 0: predictions of image 'images/party/a.jpg' have a NaN "
                            "or infinite value: boxes of detection 0 of ")
    assert error.endswith("; the training loss was finite, the NaN appeared in evaluation: lower optim.lr or set "
                          "train.clip_grad (e.g. 1.0)")


def classification_overrides(root: Path, project: Path) -> list[str]:
    return ["task=classification", "model.name=test_resnet", f"data.root={root}", "data.image_size=32",
            "data.batch_size=4", "data.num_workers=0", "train.epochs=1", "train.progress=false", "train.plots=false",
            "device=cpu", f"project={project}", "name=nan"]


def test_classification_evaluator_names_the_image_file_relative_to_the_data_root(tiny_shapes: Path, tmp_path: Path):
    task = create_task(load_config(None, classification_overrides(tiny_shapes, tmp_path)))
    dataset = task.build_dataset("val", train=False)
    evaluator = task.build_evaluator(dataset)
    samples = dataset.source.samples
    labels = torch.tensor([label for _path, label in samples[:3]])
    evaluator.update(torch.zeros(2, 3), labels[:2])
    broken = torch.zeros(1, 3)
    broken[0, 2] = float("nan")
    with pytest.raises(NonFinitePredictionError) as caught:
        evaluator.update(broken, labels[2:3])
    image = Path(samples[2][0]).relative_to(tiny_shapes).as_posix()
    assert image.startswith("val/")
    assert str(caught.value) == (f"predictions of image '{image}' have a NaN or infinite value: logits of class 2 "
                                 "of 3 is nan")
    assert caught.value.image == image and evaluator.num_samples == 2  # the broken batch is not counted


def test_classification_run_with_nan_in_evaluation_names_epoch_image_and_fixes(tiny_shapes: Path, tmp_path: Path,
                                                                                monkeypatch, capsys):
    forward = ImageClassifier.forward

    def diverged(self, images, targets=None):
        outputs = forward(self, images, targets)
        if not self.training:  # evaluation only: the training loss stays finite
            for output in outputs:
                output["logits"] = torch.full_like(output["logits"], float("nan"))
        return outputs

    monkeypatch.setattr(ImageClassifier, "forward", diverged)
    assert main(["train", *classification_overrides(tiny_shapes, tmp_path / "runs")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == ("visiontune train: error: epoch 0: predictions of image 'val/circle/circle_0000.png' have a "
                     "NaN or infinite value: logits of class 0 of 3 is nan; the training loss was finite, the NaN "
                     "appeared in evaluation: lower optim.lr or set train.clip_grad (e.g. 1.0)")


def test_coco_evaluator_names_the_image_file(tmp_path: Path):
    make_synthetic_coco(tmp_path, num_images=2, split="val", num_empty_images=0, with_crowd=False, seed=1)
    config = load_config(None, [
        "task=instance_segmentation", "model.name=maskrcnn_resnet50_fpn", "data.format=coco", f"data.root={tmp_path}",
        "data.train_split=annotations/instances_val.json", "data.val_split=annotations/instances_val.json",
        "data.images_dir=val", "data.num_workers=0", "device=cpu"])
    task = create_task(config)
    evaluator = task.build_evaluator(task.build_dataset("annotations/instances_val.json", train=False))
    file_names = {image["id"]: image["file_name"] for image in
                  json.loads((tmp_path / "annotations" / "instances_val.json").read_text())["images"]}

    def output(**broken: torch.Tensor) -> dict[str, torch.Tensor]:
        masks = torch.zeros(2, 1, 96, 128)
        masks[:, :, 10:30, 10:30] = 0.9
        finite = {"boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0], [12.0, 12.0, 32.0, 32.0]]),
                  "labels": torch.tensor([1, 1]), "scores": torch.tensor([0.9, 0.8]), "masks": masks}
        return {**finite, **broken}

    evaluator.update([output()], [{"image_id": 1}])
    nan_mask = output()["masks"].clone()
    nan_mask[1, 0, :2, :3] = float("nan")
    cases = [({"scores": torch.tensor([0.9, float("inf")])}, "scores of detection 1 of 2 is [inf]"),
             ({"boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0], [float("nan"), 1.0, 5.0, 5.0]])},
              "boxes of detection 1 of 2 is [nan, 1.0, 5.0, 5.0]"),
             ({"masks": nan_mask}, "masks of detection 1 of 2 has 6 NaN or infinite of 12288 pixels")]
    for broken, detail in cases:
        with pytest.raises(NonFinitePredictionError) as caught:
            evaluator.update([output(**broken)], [{"image_id": 2}])
        assert str(caught.value) == f"predictions of image {file_names[2]!r} have a NaN or infinite value: {detail}"
        assert caught.value.image == file_names[2]
    assert evaluator.coco.image_ids == [1]  # nothing of the broken image was kept
