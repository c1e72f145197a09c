"""Class imbalance: the check-data ratio and warning, the balanced and repeat-factor draws, the loss weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from visiontune.cli import main
from visiontune.data.samplers import (
    balanced_draw,
    balanced_weights,
    class_loss_weights,
    imbalance_summary,
    repeat_factor_draw,
    repeat_factors,
)

# ------------------------------------------------------------------------------------------ imbalance in check-data


def test_imbalance_summary_names_the_extremes_and_warns_above_10_to_1() -> None:
    line, warning = imbalance_summary({"cat": 500, "dog": 20, "fox": 60, "empty": 0})
    assert line == "class imbalance (images): largest / smallest = 25.0:1 (cat 500, dog 20)"
    assert warning is not None and warning.startswith("classes are imbalanced: 'cat' has 25.0x the images of 'dog'")
    assert imbalance_summary({"a": 100, "b": 10}, what="instances") == (
        "class imbalance (instances): largest / smallest = 10.0:1 (a 100, b 10)", None)  # 10:1 is not above
    assert imbalance_summary({"a": 4, "b": 4})[0].endswith("= 1.0:1 (every class 4)")


def test_check_data_prints_the_imbalance_and_warns(tmp_path: Path, capsys) -> None:
    from tests.helpers import shapes

    root = shapes(tmp_path / "data", train_per_class=11, val_per_class=1)
    for path in sorted((root / "train" / "square").glob("*.png"))[1:]:
        path.unlink()  # square: 1 training image, the others 11
    code = main(["check-data", "task=classification", f"data.root={root}", f"project={tmp_path / 'runs'}",
                 "train.progress=false", "data.duplicates=false"])
    out = capsys.readouterr().out
    assert code == 0
    assert "note: split 'train': class imbalance (images): largest / smallest = 11.0:1 (circle 11, square 1)" in out
    assert "  - split 'train': classes are imbalanced: 'circle' has 11.0x the images of 'square' (above 10:1)" in out


def test_coco_check_data_counts_instances_and_images_per_category(tmp_path: Path) -> None:
    from visiontune.config import load_config
    from visiontune.data.synthetic_coco import make_synthetic_coco
    from visiontune.tasks import create_task

    make_synthetic_coco(tmp_path, num_images=6, split="train", seed=0)
    config = load_config(None, ["task=instance_segmentation", "data.format=coco", f"data.root={tmp_path}",
                                "data.train_split=annotations/instances_train.json", "data.val_split=null",
                                "data.images_dir=train", f"project={tmp_path / 'runs'}", "data.num_workers=0",
                                "train.progress=false", "data.duplicates=false"])
    text = create_task(config).check_data().text
    assert "instances per category, images holding it" in text
    assert "class imbalance (instances): largest / smallest = " in text
    assert "class imbalance (images): largest / smallest = " in text


# ------------------------------------------------------------------------------------------ draws


def test_balanced_draw_frequencies_follow_the_inverse_class_frequency() -> None:
    labels = [0] * 90 + [1] * 9 + [2] * 1
    weights = balanced_weights(labels)
    assert weights.sum() == pytest.approx(1.0)
    assert [weights[np.array(labels) == c].sum() for c in range(3)] == pytest.approx([1 / 3] * 3)
    draw = np.array(balanced_draw(weights, 30_000, seed=5))
    per_class = np.bincount(np.array(labels)[draw], minlength=3) / len(draw)
    assert np.abs(per_class - 1 / 3).max() < 0.02  # each class a third of the draws, not 90/9/1 %
    assert balanced_draw(weights, 50, seed=5) == balanced_draw(weights, 50, seed=5) != balanced_draw(weights, 50,
                                                                                                     seed=6)


def test_repeat_factors_follow_lvis() -> None:
    # 100 images: category 1 in all of them, category 2 in one image (f = 0.01), category 3 in 4 (f = 0.04)
    images = [[1]] * 95 + [[1, 2]] + [[1, 3, 3]] * 4
    factors = repeat_factors(images, threshold=0.1)
    assert factors[0] == 1.0  # f(1) = 1 > t
    assert factors[95] == pytest.approx(math.sqrt(0.1 / 0.01))  # max over the image's categories
    assert factors[96] == pytest.approx(math.sqrt(0.1 / 0.04))
    assert repeat_factors([[], [1]], threshold=0.5).tolist() == [1.0, 1.0]  # no category: 1; f(1) = 0.5 = t
    with pytest.raises(ValueError, match="data.repeat_thresh"):
        repeat_factors([[1]], threshold=0.0)


def test_repeat_factor_draw_repeats_images_as_often_as_their_factor() -> None:
    factors = np.array([1.0, 1.0, 2.5, 4.0])
    counts = np.zeros(4)
    epochs = 2000
    length = round(factors.sum())
    for epoch in range(epochs):
        draw = repeat_factor_draw(factors, length, seed=epoch)
        assert len(draw) == length
        counts += np.bincount(draw, minlength=4)
    assert counts / epochs == pytest.approx(factors * length / factors.sum(), rel=0.05)


# ------------------------------------------------------------------------------------------ loss weights


def test_class_loss_weights_inverse_and_effective_average_1() -> None:
    inverse = class_loss_weights([100, 10, 1], "inverse")
    assert sum(inverse) / 3 == pytest.approx(1.0)
    assert inverse[2] / inverse[0] == pytest.approx(100.0)
    beta = 0.99
    effective = class_loss_weights([100, 10, 1], "effective", beta=beta)
    raw = [(1 - beta) / (1 - beta**n) for n in (100, 10, 1)]
    assert effective == pytest.approx([value / (sum(raw) / 3) for value in raw])
    assert class_loss_weights([100, 10, 1], "effective", beta=0.0) == pytest.approx([1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="loss.class_weights: expected"):
        class_loss_weights([1, 2], "square")
