"""``loss.class_weights`` of classification: weights from the training class counts, logged, used by the loss, not
saved in checkpoints; and a training run with ``data.sampler=balanced``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from tests.helpers import shapes
from visiontune.cli import main
from visiontune.config import ConfigError, load_config
from visiontune.tasks import create_task
from visiontune.tasks.classification import ClassWeightedCrossEntropy


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """circle 8, square 2, triangle 8 training images."""
    root = shapes(tmp_path_factory.mktemp("imbalanced"), train_per_class=8, val_per_class=2)
    for path in sorted((root / "train" / "square").glob("*.png"))[2:]:
        path.unlink()
    return root


def _task(root: Path, *overrides: str):
    config = load_config(None, ["task=classification", f"data.root={root}", "model.name=test_resnet",
                                "data.image_size=32", "data.num_workers=0", *overrides])
    task = create_task(config)
    task.build_dataset("train", train=True)
    return task


def test_inverse_weights_weigh_the_loss_and_are_logged(imbalanced: Path, caplog) -> None:
    task = _task(imbalanced, "loss.class_weights=inverse")
    with caplog.at_level(logging.INFO):
        model = task.build_model(load_weights=False)
    # 1/8, 1/2, 1/8 normalised to average 1
    expected = torch.tensor([1 / 8, 1 / 2, 1 / 8]) / (0.75 / 3)
    assert isinstance(model.criterion, ClassWeightedCrossEntropy)
    assert torch.allclose(model.criterion.weight, expected)
    assert ("loss.class_weights=inverse (class: weight, average 1): circle 0.500, square 2.000, triangle 0.500"
            in caplog.text)
    logits, targets = torch.randn(5, 3), torch.tensor([0, 1, 1, 2, 0])
    assert torch.allclose(model.criterion(logits, targets),
                          torch.nn.functional.cross_entropy(logits, targets, weight=expected))
    assert not any("criterion" in key for key in model.state_dict())  # checkpoints load without the weights


def test_effective_number_weights(imbalanced: Path, caplog) -> None:
    task = _task(imbalanced, "loss.class_weights=effective", "loss.class_weights_beta=0.9")
    with caplog.at_level(logging.INFO):
        weight = task.class_weights()
    raw = torch.tensor([(1 - 0.9) / (1 - 0.9**n) for n in (8, 2, 8)], dtype=torch.float64)
    assert weight is not None and torch.allclose(weight.double(), raw / raw.mean(), atol=1e-6)
    assert "loss.class_weights=effective, beta 0.9 (class: weight, average 1): circle 0." in caplog.text


def test_no_weights_by_default_and_none_with_mixup_is_refused(imbalanced: Path) -> None:
    model = _task(imbalanced).build_model(load_weights=False)
    assert type(model.criterion) is torch.nn.CrossEntropyLoss and model.criterion.weight is None
    with pytest.raises(ConfigError, match=r"loss.class_weights=inverse weighs hard labels: not with data.mixup=0.2"):
        _task(imbalanced, "loss.class_weights=inverse", "data.mixup=0.2").build_model(load_weights=False)


def test_train_with_balanced_sampler_and_class_weights(imbalanced: Path, tmp_path: Path, capsys) -> None:
    code = main(["train", "task=classification", "device=cpu", f"data.root={imbalanced}", f"project={tmp_path}",
                 "model.name=test_resnet", "data.image_size=32", "data.crop_pct=1.0", "data.batch_size=6",
                 "data.num_workers=0", "train.progress=false", "train.epochs=1", "train.report=false",
                 "data.sampler=balanced", "loss.class_weights=effective"])
    captured = capsys.readouterr()
    assert code == 0
    assert "loss.class_weights=effective, beta 0.999 (class: weight, average 1): circle " in captured.err
    log = (tmp_path / "classification" / "exp" / "train.log").read_text()
    assert "loss.class_weights=effective" in log and "epoch 1: step=3" in log  # 18 images, batch 6: 3 steps
