"""Tests of the COCO evaluator and the COCO results JSON conversion."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

import visiontune.evaluation.coco as coco_eval
from visiontune.data.coco_dataset import CocoInstanceDataset
from visiontune.data.synthetic_coco import make_synthetic_coco, synthetic_images_dir
from visiontune.evaluation.coco import CocoEvaluator, masks_to_rle, results_to_coco_json

HEIGHT, WIDTH = 20, 24


def box_mask(x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[y1:y2, x1:x2] = 1
    return mask


def gt_annotation(annotation_id: int, image_id: int, box: tuple[int, int, int, int], *, category_id: int = 1,
                  iscrowd: int = 0) -> dict[str, Any]:
    x1, y1, x2, y2 = box
    rle = mask_utils.encode(np.asfortranarray(box_mask(*box)))
    return {"id": annotation_id, "image_id": image_id, "category_id": category_id, "bbox": [x1, y1, x2 - x1, y2 - y1],
            "area": float((x2 - x1) * (y2 - y1)), "iscrowd": iscrowd,
            "segmentation": {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode()}}


BOX_A = (2, 2, 10, 10)
BOX_B = (12, 4, 22, 16)
BOX_C = (1, 12, 9, 19)


@pytest.fixture
def ground_truth() -> dict[str, Any]:
    """Image 1: two 'book' objects; image 2: one 'cup' object and a 'book' crowd region; 'pen' has no object."""
    return {
        "images": [{"id": 1, "height": HEIGHT, "width": WIDTH}, {"id": 2, "height": HEIGHT, "width": WIDTH}],
        "annotations": [gt_annotation(1, 1, BOX_A), gt_annotation(2, 1, BOX_B),
                        gt_annotation(3, 2, BOX_C, category_id=2), gt_annotation(4, 2, BOX_B, iscrowd=1)],
        "categories": [{"id": 1, "name": "book"}, {"id": 2, "name": "cup"}, {"id": 3, "name": "pen"}],
    }


def detections(
    boxes: list[tuple[int, int, int, int]], labels: list[int], scores: list[float]
) -> dict[str, torch.Tensor]:
    """One image's output; masks are the boxes filled with probability 0.9."""
    masks = torch.zeros(len(boxes), HEIGHT, WIDTH)
    for index, box in enumerate(boxes):
        masks[index] = torch.from_numpy(box_mask(*box)).float() * 0.9
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels),
            "scores": torch.tensor(scores), "masks": masks[:, None]}


def evaluate(ground_truth: dict[str, Any], outputs: dict[int, dict[str, torch.Tensor]]) -> dict[str, float]:
    evaluator = CocoEvaluator(ground_truth)
    for image_id, output in outputs.items():
        evaluator.update([output], [{"image_id": torch.tensor(image_id)}])
    evaluator.synchronize()
    return evaluator.compute()


def test_perfect_predictions_give_ap_one(ground_truth: dict[str, Any]) -> None:
    metrics = evaluate(ground_truth, {1: detections([BOX_A, BOX_B], [1, 1], [0.9, 0.8]),
                                      2: detections([BOX_C], [2], [0.7])})
    for iou_type in ("bbox", "segm"):
        for name in ("AP", "AP50", "AP75", "APs", "AP_book", "AP_cup"):
            assert metrics[f"{iou_type}_{name}"] == pytest.approx(1.0), name
        assert math.isnan(metrics[f"{iou_type}_APm"]) and math.isnan(metrics[f"{iou_type}_APl"])  # no such objects
        assert math.isnan(metrics[f"{iou_type}_AP_pen"])  # no ground truth
    assert set(metrics) == {f"{t}_{n}" for t in ("bbox", "segm")
                            for n in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AP_book", "AP_cup", "AP_pen")}


def test_empty_predictions_give_ap_zero(ground_truth: dict[str, Any]) -> None:
    metrics = evaluate(ground_truth, {1: detections([], [], []), 2: detections([], [], [])})
    assert metrics["bbox_AP"] == 0.0 and metrics["segm_AP"] == 0.0
    assert metrics["segm_AP_book"] == 0.0 and metrics["segm_AP_cup"] == 0.0


def test_half_recall_gives_51_of_101_recall_points(ground_truth: dict[str, Any]) -> None:
    # One of two books found: precision 1 at the 51 recall thresholds 0.00..0.50, 0 beyond.
    metrics = evaluate(ground_truth, {1: detections([BOX_A], [1], [0.9])})
    assert metrics["bbox_AP_book"] == pytest.approx(51 / 101)
    assert metrics["segm_AP_book"] == pytest.approx(51 / 101)
    assert math.isnan(metrics["bbox_AP_cup"])  # image 2 not evaluated: only updated images count


def test_false_positive_ranked_first_halves_precision(ground_truth: dict[str, Any]) -> None:
    # Image 2, cup: a wrong box at score 0.9 then the right one at 0.8 -> precision 1/2 at every recall.
    metrics = evaluate(ground_truth, {2: detections([(14, 0, 20, 4), BOX_C], [2, 2], [0.9, 0.8])})
    assert metrics["bbox_AP_cup"] == pytest.approx(0.5)
    assert metrics["segm_AP_cup"] == pytest.approx(0.5)


def test_detection_on_a_crowd_region_is_ignored(ground_truth: dict[str, Any]) -> None:
    # A 'book' detection on the crowd region (image 2) is neither a true nor a false positive.
    metrics = evaluate(ground_truth, {1: detections([BOX_A, BOX_B], [1, 1], [0.9, 0.8]),
                                      2: detections([BOX_B, BOX_C], [1, 2], [0.95, 0.7])})
    assert metrics["bbox_AP_book"] == pytest.approx(1.0)
    assert metrics["segm_AP_book"] == pytest.approx(1.0)


def test_results_json_round_trips_masks_and_boxes() -> None:
    probabilities = torch.zeros(2, 1, HEIGHT, WIDTH)
    probabilities[0, 0, 3:7, 4:9] = 0.8
    probabilities[0, 0, 8, 8] = 0.5  # not above the 0.5 threshold
    probabilities[1, 0, 10:12, 1:3] = 0.6
    output = {"boxes": torch.tensor([[4.0, 3.0, 9.0, 7.0], [1.5, 10.0, 3.0, 12.25]]), "labels": torch.tensor([1, 2]),
              "scores": torch.tensor([0.9, 0.4]), "masks": probabilities}
    results = results_to_coco_json([output], [17], label_to_category_id={1: 44, 2: 7})
    decoded = json.loads(json.dumps(results))
    assert [(r["image_id"], r["category_id"], r["score"]) for r in decoded] == [(17, 44, pytest.approx(0.9)),
                                                                               (17, 7, pytest.approx(0.4))]
    assert decoded[0]["bbox"] == [4.0, 3.0, 5.0, 4.0] and decoded[1]["bbox"] == [1.5, 10.0, 1.5, 2.25]
    for result, probability in zip(decoded, probabilities[:, 0]):
        assert isinstance(result["segmentation"]["counts"], str)
        assert result["segmentation"]["size"] == [HEIGHT, WIDTH]
        rle = {"size": result["segmentation"]["size"], "counts": result["segmentation"]["counts"].encode()}
        np.testing.assert_array_equal(mask_utils.decode(rle), (probability > 0.5).numpy().astype(np.uint8))
    with pytest.raises(ValueError, match="image id 17: label 2 has no category id"):
        results_to_coco_json([output], [17], label_to_category_id={1: 44})


def test_masks_to_rle_accepts_binary_masks() -> None:
    masks = torch.zeros(1, 4, 5, dtype=torch.bool)
    masks[0, 1, 2] = True
    (rle,) = masks_to_rle(masks)
    assert mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()}) == 1
    with pytest.raises(ValueError, match=r"masks must be \[N, 1, H, W\] or \[N, H, W\], got \(1, 2, 4, 5\)"):
        masks_to_rle(torch.zeros(1, 2, 4, 5))


def test_update_errors(ground_truth: dict[str, Any]) -> None:
    evaluator = CocoEvaluator(ground_truth)
    with pytest.raises(RuntimeError, match="before any update"):
        evaluator.compute()
    with pytest.raises(ValueError, match="image id 5 is not in the ground truth"):
        evaluator.update([detections([], [], [])], [{"image_id": 5}])
    no_masks = {key: value for key, value in detections([BOX_A], [1], [0.5]).items() if key != "masks"}
    with pytest.raises(ValueError, match="image id 1: output has no 'masks' but 'segm' is evaluated"):
        evaluator.update([no_masks], [{"image_id": 1}])
    box_only = CocoEvaluator(ground_truth, iou_types=["bbox"])
    box_only.update([no_masks], [{"image_id": 1}])
    assert set(box_only.compute()) == {f"bbox_{n}" for n in ("AP", "AP50", "AP75", "APs", "APm", "APl",
                                                               "AP_book", "AP_cup", "AP_pen")}
    with pytest.raises(ValueError, match="iou_types must be a non-empty subset"):
        CocoEvaluator(ground_truth, iou_types=["keypoints"])


def test_synchronize_merges_other_ranks(ground_truth: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    other_rank = CocoEvaluator(ground_truth)
    other_rank.update([detections([BOX_C], [2], [0.7])], [{"image_id": 2}])
    evaluator = CocoEvaluator(ground_truth)
    evaluator.update([detections([BOX_A, BOX_B], [1, 1], [0.9, 0.8])], [{"image_id": 1}])

    def all_gather_object(gathered: list, obj: Any) -> None:
        gathered[0], gathered[1] = obj, other_rank._results

    monkeypatch.setattr(coco_eval.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(coco_eval.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(coco_eval.dist, "all_gather_object", all_gather_object)
    evaluator.synchronize()
    assert evaluator.image_ids == [1, 2]
    assert evaluator.compute()["segm_AP"] == pytest.approx(1.0)


def test_prints_nothing_unless_verbose(ground_truth: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    evaluate(ground_truth, {1: detections([BOX_A], [1], [0.9])})
    assert capsys.readouterr().out == ""
    evaluator = CocoEvaluator(ground_truth, iou_types=["bbox"], verbose=True)
    evaluator.update([detections([BOX_A], [1], [0.9])], [{"image_id": 1}])
    evaluator.compute()
    assert "Average Precision" in capsys.readouterr().out


def test_dataset_ground_truth_with_its_own_targets_scores_one(tmp_path: Path) -> None:
    annotation_file = make_synthetic_coco(tmp_path, num_images=6, categories=("book", "cup"), seed=4)
    dataset = CocoInstanceDataset(synthetic_images_dir(annotation_file), annotation_file, categories=["cup", "book"])
    evaluator = CocoEvaluator(dataset.coco_ground_truth())
    for index in range(len(dataset)):
        _, target = dataset[index]
        output = {"boxes": target["boxes"].as_subclass(torch.Tensor), "labels": target["labels"],
                  "scores": torch.linspace(1.0, 0.5, len(target["labels"])), "masks": target["masks"][:, None]}
        evaluator.update([output], [target])
    metrics = evaluator.compute()
    assert metrics["bbox_AP"] == pytest.approx(1.0) and metrics["segm_AP"] == pytest.approx(1.0)
    assert metrics["segm_AP_cup"] == pytest.approx(1.0) and metrics["segm_AP_book"] == pytest.approx(1.0)
