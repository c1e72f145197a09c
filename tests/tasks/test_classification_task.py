"""Classification task: transforms from config, mixup on odd batches, prediction inputs."""

import pytest
import torch
from PIL import Image

from visiontune.config import load_config
from visiontune.tasks.classification import ClassificationTask, collect_prediction_inputs


@pytest.mark.parametrize("policy, expected", [
    ("rand-m7-mstd0.5", "RandAugment"),
    ("original", "AutoAugment"),
    ("augmix-m5", "AugMixAugment"),
    ("trivialaugment", "TrivialAugmentWide"),
])
def test_augment_policies_from_config(policy, expected):
    task = ClassificationTask(load_config(None, ["model.name=test_resnet", f"data.auto_augment={policy}",
                                                 "data.image_size=32", "data.reprob=0.25"]))
    transform = task.build_transform(train=True)
    names = [type(step).__name__ for step in transform.transforms]
    assert expected in names and "RandomErasing" in names
    image = transform(Image.new("RGB", (40, 50), (120, 30, 200)))
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32


def test_eval_transform_uses_crop_pct():
    task = ClassificationTask(load_config(None, ["model.name=test_resnet", "data.image_size=64",
                                                 "data.crop_pct=0.5"]))
    resize = task.build_transform(train=False).transforms[0]
    assert resize.size == 128  # 64 / 0.5


def test_mixup_handles_odd_batches():
    task = ClassificationTask(load_config(None, ["model.name=test_resnet", "data.mixup=0.8", "data.cutmix=1.0",
                                                 "data.label_smoothing=0.1", "model.num_classes=4"]))
    task.build_model(load_weights=False)
    images = torch.randn(5, 3, 16, 16)
    mixed, targets = task.prepare_train_batch(images, torch.tensor([0, 1, 2, 3, 0]))
    assert mixed.shape == images.shape and targets.shape == (5, 4)
    assert torch.allclose(targets.sum(1), torch.ones(5))
    assert targets[4, 0] == pytest.approx(0.9 + 0.1 / 4)  # the odd one out: smoothed one-hot


def test_prediction_inputs(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "tree" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "tree" / cls / "x.png")
    assert [label for _, label in collect_prediction_inputs(str(tmp_path / "tree"), ["a", "b"])] == ["a", "b"]
    assert [label for _, label in collect_prediction_inputs(str(tmp_path / "tree"), ["z"])] == [None, None]
    listing = tmp_path / "list.txt"
    listing.write_text("tree/a/x.png\ntree/missing.png\n")
    with pytest.raises(ValueError, match=r"list.txt:2: image not found: .*missing.png"):
        collect_prediction_inputs(str(listing), ["a"])
    with pytest.raises(ValueError, match=r"source not found"):
        collect_prediction_inputs(str(tmp_path / "nope"), ["a"])
