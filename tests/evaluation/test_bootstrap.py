"""Bootstrap intervals over the evaluated images: known answers, paired changes, and the full-sample recomputation
of every task's metrics from its per-image results equal to the evaluator's own numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from visiontune.data.coco_dataset import CocoInstanceDataset
from visiontune.data.synthetic_coco import make_synthetic_coco, synthetic_images_dir
from visiontune.evaluation.bootstrap import (
    bootstrap_intervals,
    full_sample_metrics,
    load_per_image,
    paired_change_intervals,
    percentile_interval,
    resample_counts,
    save_per_image,
    summary_intervals,
)
from visiontune.evaluation.classification import ClassificationEvaluator, ClassificationPerImage
from visiontune.evaluation.coco import CocoEvaluator
from visiontune.evaluation.face_detection import FaceDetectionEvaluator, FacePredictions
from visiontune.evaluation.widerface import evaluate_widerface
from visiontune.evaluation.widerface_ground_truth import DIFFICULTIES, WiderFaceGroundTruth


def _classification(num_images: int, num_correct: int, num_classes: int = 4) -> ClassificationPerImage:
    labels = np.arange(num_images) % num_classes
    predictions = labels.copy()
    predictions[num_correct:] = (labels[num_correct:] + 1) % num_classes
    return ClassificationPerImage(labels=labels, predictions=predictions, num_classes=num_classes)


def test_resample_counts_are_seeded_multiplicities() -> None:
    first = np.concatenate(list(resample_counts(50, 300, seed=3)))
    again = np.concatenate(list(resample_counts(50, 300, seed=3)))
    other = np.concatenate(list(resample_counts(50, 300, seed=4)))
    assert first.shape == (300, 50) and (first.sum(axis=1) == 50).all() and (first >= 0).all()
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    with pytest.raises(ValueError, match="cannot resample an evaluation of 0 images"):
        next(resample_counts(0, 10, seed=0))


def test_top1_interval_matches_the_binomial_normal_approximation() -> None:
    """n = 400 images, k = 300 correct: p = 0.75, the normal approximation p +- 1.96 sqrt(p (1 - p) / n) is
    [0.7076, 0.7924]; the percentile bootstrap (2000 resamples) agrees within 0.01 at each end."""
    results = _classification(400, 300)
    low, high = bootstrap_intervals(results, resamples=2000, seed=0)["top1"]
    half_width = 1.96 * math.sqrt(0.75 * 0.25 / 400)
    assert low == pytest.approx(0.75 - half_width, abs=0.01)
    assert high == pytest.approx(0.75 + half_width, abs=0.01)
    assert full_sample_metrics(results)["top1"] == 0.75


def test_classification_full_sample_equals_the_evaluator() -> None:
    generator = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(60, 5, generator=generator), torch.randint(0, 5, (60,), generator=generator)
    evaluator = ClassificationEvaluator(5, topk=(1,))
    evaluator.update(logits, labels)
    metrics = evaluator.compute()
    recomputed = full_sample_metrics(evaluator.per_image_results())
    assert recomputed["top1"] == metrics["top1"]
    assert recomputed["macro_f1"] == pytest.approx(metrics["macro_f1"], abs=1e-15)


def test_paired_change_of_identical_evaluations_is_exactly_zero() -> None:
    results = _classification(80, 50)
    assert paired_change_intervals(results, results, resamples=200, seed=1) == {"top1": (0.0, 0.0),
                                                                                "macro_f1": (0.0, 0.0)}


def test_paired_change_of_a_clear_improvement_excludes_zero_and_a_tiny_one_does_not() -> None:
    before = _classification(200, 100)
    clearly = paired_change_intervals(before, _classification(200, 160), resamples=200, seed=0)["top1"]
    assert 0.0 < clearly[0] < 0.3 < clearly[1]
    labels = before.labels
    one_more = before.predictions.copy()
    one_more[100] = labels[100]  # one more image right: within the noise of 200 images
    tiny = paired_change_intervals(before, ClassificationPerImage(labels, one_more, 4), resamples=200, seed=0)
    assert tiny["top1"][0] == 0.0 and 0.0 < tiny["top1"][1] <= 0.02  # the image drawn 0 to 4 times: 0 to 4 / 200
    with pytest.raises(ValueError, match="needs the same images: 200 vs 10"):
        paired_change_intervals(before, _classification(10, 5), resamples=10, seed=0)


def test_percentile_interval_skips_undefined_resamples_and_checks_the_level() -> None:
    assert percentile_interval(np.array([np.nan, 1.0, 1.0])) == (1.0, 1.0)
    assert all(math.isnan(value) for value in percentile_interval(np.array([np.nan])))
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\), got 1.5"):
        percentile_interval(np.array([1.0]), 1.5)


def test_summary_intervals_has_every_role_and_the_change() -> None:
    baseline, best = _classification(100, 40), _classification(100, 90)
    intervals = summary_intervals({"baseline": baseline, "best": best, "last": best, "missing": None},
                                  resamples=200, seed=0)
    assert (intervals["level"], intervals["resamples"], intervals["unit"]) == (0.95, 200, "image")
    assert set(intervals["val_top1"]) == {"baseline", "best", "last", "change"}
    low, high = intervals["val_top1"]["change"]
    assert 0.0 < low <= 0.5 <= high
    assert set(intervals) == {"level", "resamples", "unit", "val_top1", "val_macro_f1"}


def test_save_and_load_round_trip_and_a_foreign_file(tmp_path: Path) -> None:
    results = _classification(30, 20)
    path = save_per_image(results, tmp_path / "eval" / "per_image_3.npz")
    loaded = load_per_image(path)
    assert isinstance(loaded, ClassificationPerImage) and np.array_equal(loaded.labels, results.labels)
    np.savez(tmp_path / "other.npz", values=np.ones(3))
    with pytest.raises(ValueError, match="other.npz: not a per-image evaluation file"):
        load_per_image(tmp_path / "other.npz")


def _wider_case(seed: int) -> tuple[WiderFaceGroundTruth, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    image_ids, boxes, counted = [], [], {difficulty: [] for difficulty in DIFFICULTIES}
    predictions = {}
    for index in range(25):
        num_faces = int(rng.integers(0, 6))
        faces = np.c_[rng.uniform(0, 200, (num_faces, 2)), rng.uniform(4, 40, (num_faces, 2))].round(1)
        hard = rng.random(len(faces)) < 0.9
        medium = hard & (rng.random(len(faces)) < 0.7)
        for difficulty, mask in zip(DIFFICULTIES, (medium & (rng.random(len(faces)) < 0.6), medium, hard)):
            counted[difficulty].append(mask)
        image_id = f"{index % 3}--Event/image_{index}"
        image_ids.append(image_id)
        boxes.append(faces)
        found = faces[rng.random(len(faces)) < 0.8]
        jittered = found + rng.normal(0, 0.1, found.shape) * np.repeat(found[:, 2:], 2, axis=1)
        false = np.c_[rng.uniform(0, 200, (2, 2)), rng.uniform(4, 40, (2, 2))]
        detections = np.concatenate([jittered, false])
        predictions[image_id] = np.c_[detections, rng.integers(0, 21, len(detections)) / 20.0]
    return WiderFaceGroundTruth(image_ids=tuple(image_ids), boxes=tuple(boxes), counted=counted), predictions


@pytest.mark.parametrize("seed", [0, 1])
def test_widerface_full_sample_equals_the_evaluator_exactly(seed: int) -> None:
    ground_truth, predictions = _wider_case(seed)
    result = evaluate_widerface(predictions, ground_truth)
    assert result.per_image is not None
    assert full_sample_metrics(result.per_image) == result.as_dict()
    intervals = bootstrap_intervals(result.per_image, resamples=200, seed=0)
    assert all(low <= result.ap[name[3:]] <= high for name, (low, high) in intervals.items())


@dataclass
class _Faces:
    image_id: str
    boxes: np.ndarray
    landmarks: np.ndarray
    landmarks_valid: np.ndarray

    @property
    def num_faces(self) -> int:
        return len(self.boxes)


def test_face_evaluator_per_image_results_follow_the_split_order() -> None:
    """The official ground truth lists the images in another order than the split: the per-image counts of
    ``ap_easy``... are moved to the split's order, so a resample weights the same image in every metric."""
    ground_truth, predictions = _wider_case(2)
    order = np.random.default_rng(0).permutation(ground_truth.num_images)
    records = [_Faces(ground_truth.image_ids[index], np.c_[ground_truth.boxes[index][:, :2],
                                                          ground_truth.boxes[index][:, :2]
                                                          + ground_truth.boxes[index][:, 2:]],
                      np.zeros((len(ground_truth.boxes[index]), 5, 2)), np.zeros(len(ground_truth.boxes[index]), bool))
               for index in order]
    evaluator = FaceDetectionEvaluator(records, ground_truth=ground_truth, wider_boxes="decimal")
    for image_id, rows in predictions.items():
        boxes = np.c_[rows[:, :2], rows[:, :2] + rows[:, 2:4]]
        evaluator.predictions[image_id] = FacePredictions(boxes=boxes, scores=rows[:, 4],
                                                          landmarks=np.zeros((len(rows), 5, 2)))
    metrics = evaluator.compute()
    per_image = evaluator.per_image_results()
    assert per_image is not None and per_image.num_images == len(records)
    recomputed = full_sample_metrics(per_image)
    assert recomputed == {name: metrics[name] for name in ("ap", "ap_easy", "ap_medium", "ap_hard")}
    hard = per_image.faces[per_image.names.index("ap_hard")]
    assert hard.tolist() == [int(ground_truth.counted["hard"][index].sum()) for index in order]


def test_coco_full_sample_equals_the_evaluator(tmp_path: Path) -> None:
    annotation_file = make_synthetic_coco(tmp_path, num_images=12, image_size=(48, 64), categories=("cup", "ball"),
                                          max_objects_per_image=3, seed=0)
    dataset = CocoInstanceDataset(synthetic_images_dir(annotation_file), annotation_file)
    evaluator = CocoEvaluator(dataset.coco_ground_truth())
    rng = np.random.default_rng(0)
    for index in range(len(dataset)):
        image, target = dataset[index]
        boxes = target["boxes"].as_subclass(torch.Tensor).float()
        boxes = torch.cat([boxes + torch.from_numpy(rng.normal(0, 2, boxes.shape)).float(),
                           torch.tensor([[2.0, 2.0, 20.0, 20.0]])])
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        masks = torch.zeros(len(boxes), 1, *image.shape[-2:])
        for row, (x1, y1, x2, y2) in enumerate(boxes.round().int().clamp(min=0).tolist()):
            masks[row, 0, y1:y2, x1:x2] = 0.9
        output = {"boxes": boxes, "labels": torch.cat([target["labels"], torch.tensor([1])]),
                  "scores": torch.from_numpy(rng.uniform(0.05, 1.0, len(boxes))).float(), "masks": masks}
        evaluator.update([output], [target])
    metrics = evaluator.compute()
    per_image = evaluator.per_image_results()
    recomputed = full_sample_metrics(per_image)
    assert recomputed["bbox_AP"] == pytest.approx(metrics["bbox_AP"], rel=1e-12)
    assert recomputed["segm_AP"] == pytest.approx(metrics["segm_AP"], rel=1e-12)
    assert 0.0 < metrics["bbox_AP"] < 1.0
    low, high = bootstrap_intervals(per_image, resamples=200, seed=0)["bbox_AP"]
    assert low < metrics["bbox_AP"] < high
