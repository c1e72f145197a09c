"""faster-coco-eval (``pip install visiontune[coco-fast]``; the dev install brings it) gives the COCO metrics of
pycocotools."""

from __future__ import annotations

import math
import sys

import faster_coco_eval  # noqa: F401  (the dev install brings it: a missing extra fails here, it is never skipped)
import numpy as np
import pytest
import torch

from visiontune.data.coco_dataset import CocoInstanceDataset
from visiontune.data.synthetic_coco import make_synthetic_coco, synthetic_images_dir
from visiontune.evaluation.coco import CocoEvaluator


def noisy_outputs(dataset: CocoInstanceDataset, seed: int = 0):
    """Per image: the ground truth boxes and masks shifted by a few pixels, a false positive, random scores."""
    rng = np.random.default_rng(seed)
    for index in range(len(dataset)):
        _, target = dataset[index]
        boxes = target["boxes"].as_subclass(torch.Tensor).clone()
        masks = target["masks"].as_subclass(torch.Tensor).clone().float()
        labels = target["labels"].clone()
        shift = int(rng.integers(0, 4))
        boxes[:, :2] += shift
        masks = torch.roll(masks, shifts=(shift, shift), dims=(1, 2))
        height, width = masks.shape[-2:]
        boxes = torch.cat([boxes, torch.tensor([[2.0, 2.0, 20.0, 24.0]])])
        spurious = torch.zeros(1, height, width)
        spurious[0, 2:24, 2:20] = 1.0
        masks = torch.cat([masks, spurious])
        labels = torch.cat([labels, labels[:1] if len(labels) else torch.tensor([1])])
        scores = torch.from_numpy(rng.uniform(0.05, 1.0, size=len(labels))).float()
        yield {"boxes": boxes, "labels": labels, "scores": scores, "masks": masks[:, None]}, target


def evaluate(dataset: CocoInstanceDataset) -> dict[str, float]:
    evaluator = CocoEvaluator(dataset.coco_ground_truth())
    for output, target in noisy_outputs(dataset):
        evaluator.update([output], [target])
    return evaluator.compute()


def test_faster_coco_eval_matches_pycocotools(tmp_path, monkeypatch):
    annotation_file = make_synthetic_coco(tmp_path, num_images=12, categories=("book", "cup"), seed=5)
    dataset = CocoInstanceDataset(synthetic_images_dir(annotation_file), annotation_file)
    fast = evaluate(dataset)
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # the import fails: pycocotools' COCOeval
    reference = evaluate(dataset)
    assert fast.keys() == reference.keys()
    assert 0.0 < reference["segm_AP"] < 1.0 and 0.0 < reference["bbox_AP"] < 1.0  # an informative comparison
    for key, value in reference.items():
        if math.isnan(value):
            assert math.isnan(fast[key]), key
        else:
            assert fast[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
