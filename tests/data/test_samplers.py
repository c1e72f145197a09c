"""Class imbalance: the check-data ratio and warning, the balanced and repeat-factor draws, the loss weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

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


# ------------------------------------------------------------------------------------------ the engine's samplers


class _Labelled(torch.utils.data.Dataset):
    """A dataset that only has labels (as ClassificationDataset and FeatureDataset)."""

    def __init__(self, labels: list[int]) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> int:
        return self.labels[index]


class _Annotated(torch.utils.data.Dataset):
    """A detection-like dataset: categories per image, no class label."""

    def __init__(self, categories: list[list[int]]) -> None:
        self.categories = categories

    def __len__(self) -> int:
        return len(self.categories)

    def __getitem__(self, index: int) -> list[int]:
        return self.categories[index]

    def image_categories(self) -> list[list[int]]:
        return self.categories


def _config(*overrides: str):
    from visiontune.config import load_config

    return load_config(None, ["seed=7", *overrides])


def _sampler(dataset, *overrides: str, rank: int = 0, world_size: int = 1):
    from visiontune.engine.build import build_train_sampler
    from visiontune.utils.comm import DistInfo

    return build_train_sampler(dataset, _config(*overrides), DistInfo(rank=rank, world_size=world_size))


def test_balanced_sampler_draws_classes_evenly_with_the_epoch_length_of_the_dataset() -> None:
    labels = [0] * 80 + [1] * 16 + [2] * 4
    sampler = _sampler(_Labelled(labels), "data.sampler=balanced")
    assert len(sampler) == len(labels)
    drawn = []
    for epoch in range(60):
        sampler.set_epoch(epoch)
        drawn.extend(index for _, index in sampler)
    per_class = np.bincount(np.array(labels)[drawn], minlength=3) / len(drawn)
    assert np.abs(per_class - 1 / 3).max() < 0.03  # 80/16/4 % without it
    sampler.set_epoch(1)
    first = [index for _, index in sampler]
    sampler.set_epoch(2)
    assert [index for _, index in sampler] != first  # a new draw per epoch (seed + epoch)


def test_two_ranks_take_disjoint_shares_whose_union_is_the_global_draw() -> None:
    for overrides, dataset in ((["data.sampler=balanced"], _Labelled([0] * 30 + [1] * 10)),
                               (["data.sampler=repeat_factor", "data.repeat_thresh=0.5"],
                                _Annotated([[1]] * 30 + [[1, 2]] * 4 + [[]] * 6))):
        ranks = [_sampler(dataset, *overrides, rank=rank, world_size=2) for rank in range(2)]
        single = _sampler(dataset, *overrides)
        for sampler in (*ranks, single):
            sampler.set_epoch(3)
        global_draw = ranks[0].global_order()
        unpadded = single.global_order()
        assert global_draw[:len(unpadded)] == unpadded  # one draw whatever the world size (+ padding to even out)
        shares = [sampler.order() for sampler in ranks]
        assert shares[0] == global_draw[0::2] and shares[1] == global_draw[1::2]  # disjoint positions
        interleaved = [index for pair in zip(*shares) for index in pair]
        assert interleaved == global_draw and len(shares[0]) == len(ranks[0])


def test_resume_mid_epoch_gives_the_same_remaining_samples_and_seeds() -> None:
    dataset = _Annotated([[1]] * 20 + [[2]] * 2)
    full = _sampler(dataset, "data.sampler=repeat_factor", "data.repeat_thresh=0.5")
    full.set_epoch(4)
    everything = list(full)
    resumed = _sampler(dataset, "data.sampler=repeat_factor", "data.repeat_thresh=0.5")
    resumed.set_epoch(4, start=6)
    assert list(resumed) == everything[6:] and len(resumed) == len(everything) - 6


def test_repeat_factor_epoch_length_and_fresh_augmentation_seeds_for_repeats() -> None:
    dataset = _Annotated([[1]] * 18 + [[2]] * 2)  # f(2) = 0.1, t = 0.4: r = 2 for the last two images
    sampler = _sampler(dataset, "data.sampler=repeat_factor", "data.repeat_thresh=0.4")
    assert sampler.epoch_length == 22 and len(sampler) == 22
    sampler.set_epoch(0)
    pairs = list(sampler)
    assert sorted(index for _, index in pairs) == [*range(18), 18, 18, 19, 19]  # whole factors: exact
    seeds_of_18 = {seed for seed, index in pairs if index == 18}
    assert len(seeds_of_18) == 2  # each repeat is augmented differently


def test_grouped_batches_follow_the_draw_and_resume() -> None:
    from visiontune.engine.loaders import GroupedTrainBatchSampler

    dataset = _Annotated([[1]] * 18 + [[2]] * 2)
    sampler = _sampler(dataset, "data.sampler=repeat_factor", "data.repeat_thresh=0.4")
    batches = GroupedTrainBatchSampler(sampler, [index % 2 for index in range(20)], batch_size=4)
    sampler.set_epoch(1)
    every = list(batches)
    assert len(every) == len(batches) == 5
    assert all(pair in sampler.seeded_order() for batch in every for pair in batch)
    sampler.set_epoch(1, start=8)
    assert list(batches) == every[2:]


def test_a_sampler_the_task_cannot_use_is_one_error_line(tiny_shapes: Path, tmp_path: Path, capsys) -> None:
    from visiontune.config import ConfigError

    with pytest.raises(ConfigError, match=r"data.sampler=balanced draws classes evenly: classification only"):
        _sampler(_Annotated([[1]]), "data.sampler=balanced")
    code = main(["train", "task=classification", "device=cpu", f"data.root={tiny_shapes}", f"project={tmp_path}",
                 "model.name=test_resnet", "data.image_size=32", "data.num_workers=0", "train.progress=false",
                 "data.sampler=repeat_factor"])
    err = capsys.readouterr().err
    assert code == 2
    assert ("visiontune train: error: data.sampler=repeat_factor repeats images of rare categories: detection and "
            "segmentation only, not task 'classification' (use data.sampler=balanced for classification)") in err
    assert "Traceback" not in err
