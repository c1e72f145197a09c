"""NaN or infinite predictions in evaluation name the image file, the epoch and what to change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from visiontune.cli import main
from visiontune.config import load_config
from visiontune.evaluation.widerface_predictions import NonFinitePredictionError
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
