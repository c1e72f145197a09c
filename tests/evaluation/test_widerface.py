"""Tests for the WIDER FACE evaluation: hand-computed APs, a literal port of the official loops, the .mat
loader, the prediction files, the landmark NME and the PR plot."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import scipy.io

from visiontune.evaluation.widerface import (
    box_iou_inclusive,
    evaluate_widerface,
    landmark_nme,
    plot_widerface_pr_curves,
    voc_ap,
)
from visiontune.evaluation.widerface_ground_truth import DIFFICULTIES, WiderFaceGroundTruth, load_widerface_ground_truth
from visiontune.evaluation.widerface_predictions import read_widerface_predictions, write_widerface_predictions
from visiontune.utils.widerface_format import WiderFaceFormatError

LOGGER_NAME = "visiontune.evaluation.widerface"


def _ground_truth(images: dict[str, tuple[list[list[float]], dict[str, list[bool]]]]) -> WiderFaceGroundTruth:
    """``{image_id: (boxes xywh, {difficulty: counted mask})}``; a difficulty left out counts every face."""
    boxes = [np.asarray(faces, dtype=np.float64).reshape(-1, 4) for faces, _ in images.values()]
    counted = {
        difficulty: [np.asarray(masks.get(difficulty, [True] * len(faces)), dtype=bool).reshape(-1)
                     for faces, masks in images.values()]
        for difficulty in DIFFICULTIES
    }
    return WiderFaceGroundTruth(image_ids=tuple(images), boxes=tuple(boxes), counted=counted)


def _predictions(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


# --------------------------------------------------------------------------------------------------------------
# Box overlap and VOC AP
# --------------------------------------------------------------------------------------------------------------


def test_box_iou_uses_inclusive_pixels() -> None:
    # Inclusive corners: [0, 0, 9, 9] is 10 x 10 = 100 px; [0, 0, 4, 9] is 5 x 10 = 50 px, fully inside -> 0.5
    # (exclusive corners would give 36 / 81 = 0.444 and no match at 0.5).
    # [9, 0, 18, 9] shares the column x = 9: intersection 1 x 10 = 10, union 190 -> 1 / 19.
    # [10, 0, 19, 9] only touches it: +1 width is 0 -> 0.
    boxes = np.array([[0.0, 0.0, 9.0, 9.0]])
    queries = np.array([[0.0, 0.0, 4.0, 9.0], [9.0, 0.0, 18.0, 9.0], [10.0, 0.0, 19.0, 9.0]])
    np.testing.assert_allclose(box_iou_inclusive(boxes, queries), [[0.5, 1.0 / 19.0, 0.0]], rtol=0, atol=1e-15)


def test_voc_ap_all_point_envelope() -> None:
    # mrec = [0, .25, .5, .5, 1, 1], mpre = [0, .5, 1, .2, .6, 0]; envelope [1, 1, 1, .6, .6, 0]
    # AP = .25 * 1 + .25 * 1 + .5 * .6 = 0.8
    assert voc_ap(np.array([0.25, 0.5, 0.5, 1.0]), np.array([0.5, 1.0, 0.2, 0.6])) == pytest.approx(0.8, abs=1e-15)
    # NaN precision (no proposal yet) at recall 0 changes nothing: .5 * 1 + .5 * .5 = 0.75
    assert voc_ap(np.array([0.0, 0.5, 1.0]), np.array([np.nan, 1.0, 0.5])) == pytest.approx(0.75, abs=1e-15)


# --------------------------------------------------------------------------------------------------------------
# Hand-computed evaluations
# --------------------------------------------------------------------------------------------------------------


def _one_image_case() -> tuple[WiderFaceGroundTruth, dict[str, np.ndarray]]:
    # Faces g0, g1, g2 (10 x 10, far apart). easy counts g0, g1; medium g1, g2; hard all three.
    ground_truth = _ground_truth({
        "0--Event/image": (
            [[0, 0, 10, 10], [20, 0, 10, 10], [40, 0, 10, 10]],
            {"easy": [True, True, False], "medium": [False, True, True], "hard": [True, True, True]},
        )
    })
    # Scores already span [0, 1], so normalisation is the identity. p0 and p1 tie at 1.0.
    predictions = {"0--Event/image": _predictions([
        [100, 100, 10, 10, 1.0],  # p1: false positive, given first among the tie
        [0, 0, 10, 10, 1.0],  # p0: g0
        [20, 0, 10, 10, 0.0],  # p4: g1
        [0, 0, 10, 10, 0.5],  # p2: g0 again (a duplicate: a proposal, no new recall)
        [40, 0, 10, 10, 0.25],  # p3: g2
    ])}
    return ground_truth, predictions


def test_hand_computed_ap_with_tie_duplicate_and_ignored_faces() -> None:
    ground_truth, predictions = _one_image_case()
    result = evaluate_widerface(predictions, ground_truth, num_thresholds=4)
    # Thresholds .75, .5, .25, 0 admit {p0, p1}, + p2, + p3, + p4.
    # easy (2 faces; g2 ignored, so p3 is neither TP nor FP):
    #   proposals 2, 3, 3, 4; recalled 1, 1, 1, 2 -> P .5, 1/3, 1/3, .5; R .5, .5, .5, 1
    #   envelope .5 everywhere -> AP = .5 * .5 + .5 * .5 = 0.5
    # medium (2 faces; g0 ignored, so p0 and p2 are neither):
    #   proposals 1, 1, 2, 3; recalled 0, 0, 1, 2 -> P 0, 0, .5, 2/3; R 0, 0, .5, 1
    #   envelope 2/3 -> AP = .5 * 2/3 + .5 * 2/3 = 2/3
    # hard (3 faces): proposals 2, 3, 4, 5; recalled 1, 1, 2, 3 -> P .5, 1/3, .5, .6; R 1/3, 1/3, 2/3, 1
    #   envelope .6 -> AP = 0.6
    assert result.ap["easy"] == pytest.approx(0.5, abs=1e-12)
    assert result.ap["medium"] == pytest.approx(2.0 / 3.0, abs=1e-12)
    assert result.ap["hard"] == pytest.approx(0.6, abs=1e-12)
    np.testing.assert_allclose(result.thresholds, [0.75, 0.5, 0.25, 0.0])
    np.testing.assert_allclose(result.precision["easy"], [0.5, 1 / 3, 1 / 3, 0.5])
    np.testing.assert_allclose(result.recall["easy"], [0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(result.precision["medium"], [0.0, 0.0, 0.5, 2 / 3])
    np.testing.assert_allclose(result.recall["hard"], [1 / 3, 1 / 3, 2 / 3, 1.0])
    assert result.num_faces == {"easy": 2, "medium": 2, "hard": 3}
    assert result.num_predictions == 5
    assert result.as_dict() == {"ap_easy": result.ap["easy"], "ap_medium": result.ap["medium"],
                                "ap_hard": result.ap["hard"]}
    # The scores sit on the 1000-threshold grid too, so the default gives the same APs.
    default = evaluate_widerface(predictions, ground_truth)
    assert default.as_dict() == pytest.approx(result.as_dict(), abs=1e-12)
    assert default.precision["hard"].shape == (1000,)


def test_prediction_whose_best_match_is_ignored_is_neither_tp_nor_fp() -> None:
    # Counted face c = [0, 0, 10, 10] (x 0..10), ignored face i = [2, 0, 10, 10] (x 2..12).
    # q = [2, 0, 10, 10] (score 1): IoU 1 with i, 99 / 143 = 0.69 with c -> best is i -> ignored, and c is
    # not recalled by it. r = [0, 0, 10, 10] (score 0) recalls c.
    # Only the last threshold (0) admits r: P = 1 / 1, R = 1 -> AP = 1. Counting q as a false positive
    # would give P = 1 / 2 at the only point with recall, AP = 0.5.
    ground_truth = _ground_truth({"e/a": ([[0, 0, 10, 10], [2, 0, 10, 10]], {d: [True, False] for d in DIFFICULTIES})})
    result = evaluate_widerface({"e/a": _predictions([[2, 0, 10, 10, 1.0], [0, 0, 10, 10, 0.0]])}, ground_truth,
                                num_thresholds=4)
    assert result.as_dict() == {"ap_easy": 1.0, "ap_medium": 1.0, "ap_hard": 1.0}
    # Thresholds .75, .5, .25 admit only the ignored q: no proposal at all -> precision 0 / 0 = NaN, recall 0.
    assert np.isnan(result.precision["easy"][:3]).all()
    np.testing.assert_array_equal(result.recall["easy"], [0.0, 0.0, 0.0, 1.0])


@pytest.mark.parametrize(("counted_first", "expected_ap"), [(True, 1.0), (False, 0.0)])
def test_iou_tie_goes_to_the_first_face(counted_first: bool, expected_ap: float) -> None:
    # Two identical annotations of the same face, one counted, one not; the prediction has IoU 1 with both and
    # takes the first (argmax). Counted first: TP, P = R = 1 -> AP 1. Ignored first: no proposal, recall 0 -> AP 0.
    mask = [True, False] if counted_first else [False, True]
    ground_truth = _ground_truth({"e/a": ([[5, 5, 20, 20], [5, 5, 20, 20]], {d: mask for d in DIFFICULTIES})})
    result = evaluate_widerface({"e/a": _predictions([[5, 5, 20, 20, 0.9]])}, ground_truth)
    assert result.ap == {"easy": expected_ap, "medium": expected_ap, "hard": expected_ap}


def test_below_threshold_overlap_with_ignored_face_is_a_false_positive() -> None:
    # The prediction [0, 0, 4, 9] has IoU 50 / 110 = 0.4545 with the ignored face [0, 0, 10, 9]: below 0.5, so
    # it is an ordinary false positive. With the counted face recalled at score 0:
    # T = 4: thresholds .75, .5, .25 -> P 0 / 1, R 0; threshold 0 -> P 1 / 2, R 1 -> AP = 0.5.
    only_second = {difficulty: [False, True] for difficulty in DIFFICULTIES}
    ground_truth = _ground_truth({"e/a": ([[0, 0, 10, 9], [100, 100, 10, 10]], only_second)})
    predictions = {"e/a": _predictions([[0, 0, 4, 9, 1.0], [100, 100, 10, 10, 0.0]])}
    assert evaluate_widerface(predictions, ground_truth, num_thresholds=4).ap["hard"] == pytest.approx(0.5)
    # At exactly 0.5 (+1 convention: [0, 0, 4, 9] is 50 px inside the 100 px [0, 0, 9, 9]) it is ignored -> AP 1.
    ground_truth = _ground_truth({"e/a": ([[0, 0, 9, 9], [100, 100, 10, 10]], only_second)})
    assert evaluate_widerface(predictions, ground_truth, num_thresholds=4).ap["hard"] == pytest.approx(1.0)


def _several_images_case() -> tuple[WiderFaceGroundTruth, dict[str, np.ndarray]]:
    ground_truth = _ground_truth({
        "1--E/a": ([[0, 0, 10, 10]], {}),
        "1--E/b": ([[0, 0, 10, 10], [50, 50, 10, 10]], {}),
        "1--E/c": ([], {}),  # no face at all
        "2--F/d": ([[0, 0, 10, 10]], {}),  # gets no prediction
    })
    predictions = {
        "1--E/a": _predictions([[0, 0, 10, 10, 10.0]]),
        "1--E/b": _predictions([[200, 200, 10, 10, 2.0], [0, 0, 10, 10, 6.0]]),
        "1--E/c": _predictions([[0, 0, 10, 10, 30.0]]),
    }
    return ground_truth, predictions


def test_several_images_no_faces_no_predictions_and_global_normalisation(caplog: pytest.LogCaptureFixture) -> None:
    ground_truth, predictions = _several_images_case()
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        result = evaluate_widerface(predictions, ground_truth, num_thresholds=4)
    # Scores are normalised over all predictions, including image c's 30 (min 2, max 30):
    #   a: 8 / 28 = .286 (TP), b: 4 / 28 = .143 (TP) and 0 (FP), c: 1 (skipped: c has no face).
    # Faces counted: a 1 + b 2 + d 1 = 4 (d counts although it has no prediction).
    # Thresholds .75, .5: nothing evaluated -> P NaN, R 0; .25: {a} -> P 1, R 1/4;
    # 0: {a, b, b-FP} -> P 2/3, R 1/2.  AP = 1/4 * 1 + 1/4 * 2/3 = 5/12.
    # (Counting c's box as a FP would give 1/4; normalising without c's score would give 1/2.)
    for difficulty in DIFFICULTIES:
        assert result.ap[difficulty] == pytest.approx(5.0 / 12.0, abs=1e-12)
    np.testing.assert_allclose(result.recall["easy"], [0.0, 0.0, 0.25, 0.5])
    np.testing.assert_allclose(result.precision["easy"][2:], [1.0, 2.0 / 3.0])
    assert result.num_images_without_predictions == 1
    assert result.num_predictions == 4
    assert "no predictions for 1 of 4 ground-truth images" in caplog.text
    assert "2--F/d" in caplog.text
    # With 1000 thresholds, b's TP (.143) gets its own threshold before b's FP (0):
    # points (R 1/4, P 1), (R 1/2, P 1), (R 1/2, P 2/3) -> AP = 1/2.
    assert evaluate_widerface(predictions, ground_truth).ap["hard"] == pytest.approx(0.5, abs=1e-12)


def test_constant_scores_keep_all_predictions(caplog: pytest.LogCaptureFixture) -> None:
    # Ground truth as predictions, all scored 1, plus one false positive also scored 1: the official tools divide
    # by zero here; this implementation keeps every prediction at every threshold: P = 2 / 3, R = 1 -> AP 2/3.
    ground_truth = _ground_truth({"e/a": ([[0, 0, 10, 10], [30, 30, 10, 10]], {})})
    predictions = {"e/a": _predictions([[0, 0, 10, 10, 1], [30, 30, 10, 10, 1], [80, 80, 5, 5, 1]])}
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        result = evaluate_widerface(predictions, ground_truth)
    assert result.ap["easy"] == pytest.approx(2.0 / 3.0, abs=1e-12)
    assert "same score" in caplog.text


def test_no_predictions_gives_zero_ap(caplog: pytest.LogCaptureFixture) -> None:
    ground_truth, _ = _several_images_case()
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        result = evaluate_widerface({"1--E/a": np.zeros((0, 5))}, ground_truth)
    assert result.as_dict() == {"ap_easy": 0.0, "ap_medium": 0.0, "ap_hard": 0.0}
    assert result.num_images_without_predictions == 3
    np.testing.assert_array_equal(result.recall["hard"], np.zeros(1000))


def test_difficulty_without_counted_faces_gives_nan(caplog: pytest.LogCaptureFixture) -> None:
    ground_truth = _ground_truth({"e/a": ([[0, 0, 10, 10]], {"easy": [False]})})
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        result = evaluate_widerface({"e/a": _predictions([[0, 0, 10, 10, 0.5]])}, ground_truth)
    assert np.isnan(result.ap["easy"])
    assert result.ap["hard"] == 1.0
    assert "no face counts for WIDER FACE easy" in caplog.text


def test_bad_predictions_and_arguments_raise() -> None:
    ground_truth, predictions = _several_images_case()
    with pytest.raises(ValueError, match=r"1 image\(s\) not in the ground truth.*'1--E/a.jpg'"):
        evaluate_widerface({"1--E/a.jpg": _predictions([[0, 0, 1, 1, 1]])}, ground_truth)
    with pytest.raises(ValueError, match=r"image '1--E/a' must have shape \[N, 5\].*\(1, 4\)"):
        evaluate_widerface({"1--E/a": np.zeros((1, 4))}, ground_truth)
    with pytest.raises(ValueError, match=r"image '1--E/b' have a NaN or infinite value in row 1"):
        evaluate_widerface({"1--E/b": _predictions([[0, 0, 1, 1, 1], [0, 0, 1, 1, np.nan]])}, ground_truth)
    with pytest.raises(ValueError, match=r"iou_threshold must be in \(0, 1\], got 1.5"):
        evaluate_widerface(predictions, ground_truth, iou_threshold=1.5)
    with pytest.raises(ValueError, match="num_thresholds must be a positive integer, got 0"):
        evaluate_widerface(predictions, ground_truth, num_thresholds=0)


# --------------------------------------------------------------------------------------------------------------
# Agreement with a literal, loop-by-loop port of the official evaluation on random data
# --------------------------------------------------------------------------------------------------------------


def _official_iou(prediction: np.ndarray, face: np.ndarray) -> float:
    """One pair, x y w h -> x1 y1 x2 y2 then the +1 overlap, written as the official scalar loop."""
    px1, py1, px2, py2 = prediction[0], prediction[1], prediction[0] + prediction[2], prediction[1] + prediction[3]
    fx1, fy1, fx2, fy2 = face[0], face[1], face[0] + face[2], face[1] + face[3]
    width = min(px2, fx2) - max(px1, fx1) + 1
    if width <= 0:
        return 0.0
    height = min(py2, fy2) - max(py1, fy1) + 1
    if height <= 0:
        return 0.0
    union = (px2 - px1 + 1) * (py2 - py1 + 1) + (fx2 - fx1 + 1) * (fy2 - fy1 + 1) - width * height
    return width * height / union


def _official_loop_evaluation(predictions: dict[str, np.ndarray], ground_truth: WiderFaceGroundTruth, *,
                              num_thresholds: int) -> dict[str, tuple[float, np.ndarray, np.ndarray]]:
    """image_eval / img_pr_info / dataset_pr_info / voc_ap semantics, one prediction and threshold at a time."""
    all_scores = np.concatenate([boxes[:, 4] for boxes in predictions.values() if len(boxes)])
    low, high = all_scores.min(), all_scores.max()
    output = {}
    for difficulty in DIFFICULTIES:
        pr_curve = np.zeros((num_thresholds, 2))
        count_face = 0
        for image_id, faces, counted in zip(ground_truth.image_ids, ground_truth.boxes,
                                            ground_truth.counted[difficulty]):
            count_face += int(counted.sum())
            boxes = predictions.get(image_id, np.zeros((0, 5)))
            if len(faces) == 0 or len(boxes) == 0:
                continue
            boxes = boxes[np.argsort(-boxes[:, 4], kind="stable")].copy()
            boxes[:, 4] = (boxes[:, 4] - low) / (high - low)
            recall_list = np.zeros(len(faces))
            proposal_list = np.ones(len(boxes))
            pred_recall = np.zeros(len(boxes))
            for h in range(len(boxes)):
                overlaps = [_official_iou(boxes[h], face) for face in faces]
                best = int(np.argmax(overlaps))
                if overlaps[best] >= 0.5:
                    if not counted[best]:
                        recall_list[best] = -1
                        proposal_list[h] = -1
                    elif recall_list[best] == 0:
                        recall_list[best] = 1
                pred_recall[h] = np.sum(recall_list == 1)
            for t in range(num_thresholds):
                threshold = 1 - (t + 1) / num_thresholds
                above = np.flatnonzero(boxes[:, 4] >= threshold)
                if len(above):
                    pr_curve[t, 0] += np.sum(proposal_list[: above[-1] + 1] == 1)
                    pr_curve[t, 1] += pred_recall[above[-1]]
        with np.errstate(invalid="ignore"):
            precision = pr_curve[:, 1] / pr_curve[:, 0]
        recall = pr_curve[:, 1] / count_face
        padded_recall = np.concatenate(([0.0], recall, [1.0]))
        padded_precision = np.concatenate(([0.0], precision, [0.0]))
        for i in range(padded_precision.size - 1, 0, -1):  # np.maximum propagates NaN, as the Python port does
            padded_precision[i - 1] = np.maximum(padded_precision[i - 1], padded_precision[i])
        changes = np.where(padded_recall[1:] != padded_recall[:-1])[0]
        ap = np.sum((padded_recall[changes + 1] - padded_recall[changes]) * padded_precision[changes + 1])
        output[difficulty] = (float(ap), precision, recall)
    return output


def _random_case(seed: int) -> tuple[WiderFaceGroundTruth, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    images: dict[str, tuple[list[list[float]], dict[str, list[bool]]]] = {}
    predictions: dict[str, np.ndarray] = {}
    for index in range(12):
        num_faces = int(rng.integers(0, 7))
        faces = np.c_[rng.uniform(0, 200, (num_faces, 2)), rng.uniform(4, 40, (num_faces, 2))].round(1)
        if num_faces >= 2 and rng.random() < 0.5:
            faces[1] = faces[0]  # a duplicated annotation
        hard = rng.random(num_faces) < 0.9
        medium = hard & (rng.random(num_faces) < 0.7)
        easy = medium & (rng.random(num_faces) < 0.6)
        image_id = f"{index % 3}--Event/image_{index}"
        images[image_id] = (faces.tolist(), {"easy": easy.tolist(), "medium": medium.tolist(), "hard": hard.tolist()})
        if rng.random() < 0.15:
            continue  # no prediction file for this image
        detected = faces[rng.random(num_faces) < 0.8]
        jittered = detected + rng.normal(0, 0.12, detected.shape) * np.repeat(detected[:, 2:], 2, axis=1)
        repeats = jittered[: int(rng.integers(0, len(jittered) + 1))] + rng.normal(0, 1.0, (1, 4))
        num_false = int(rng.integers(0, 4))
        false_positives = np.c_[rng.uniform(0, 200, (num_false, 2)), rng.uniform(4, 40, (num_false, 2))]
        boxes = np.concatenate([jittered, repeats, false_positives])
        scores = rng.integers(0, 21, len(boxes)) / 20.0  # a coarse grid: many ties
        predictions[image_id] = np.c_[boxes, scores]
    return _ground_truth(images), predictions


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_matches_literal_port_of_official_loops(seed: int) -> None:
    ground_truth, predictions = _random_case(seed)
    result = evaluate_widerface(predictions, ground_truth, num_thresholds=50)
    expected = _official_loop_evaluation(predictions, ground_truth, num_thresholds=50)
    for difficulty in DIFFICULTIES:
        ap, precision, recall = expected[difficulty]
        assert result.ap[difficulty] == pytest.approx(ap, abs=1e-12), difficulty
        np.testing.assert_allclose(result.precision[difficulty], precision, rtol=0, atol=1e-12, equal_nan=True)
        np.testing.assert_allclose(result.recall[difficulty], recall, rtol=0, atol=1e-12)
    assert 0.0 < result.ap["hard"] < 1.0  # a non-trivial case


# --------------------------------------------------------------------------------------------------------------
# Ground truth: dataclass validation, .mat loader, real files
# --------------------------------------------------------------------------------------------------------------


def test_ground_truth_validation_errors() -> None:
    box = [np.zeros((1, 4))]
    all_true = {d: [np.array([True])] for d in DIFFICULTIES}
    with pytest.raises(ValueError, match=r"image id 'no_event' is malformed"):
        WiderFaceGroundTruth(image_ids=("no_event",), boxes=tuple(box), counted=all_true)
    with pytest.raises(ValueError, match=r"more than once: \['e/a'\]"):
        WiderFaceGroundTruth(image_ids=("e/a", "e/a"), boxes=tuple(box * 2),
                             counted={d: [np.array([True])] * 2 for d in DIFFICULTIES})
    with pytest.raises(ValueError, match=r"exactly the keys \['easy', 'medium', 'hard'\]"):
        WiderFaceGroundTruth(image_ids=("e/a",), boxes=tuple(box), counted={"easy": [np.array([True])]})
    with pytest.raises(ValueError, match=r"'counted\['hard'\]' of image 'e/a' must be a bool mask of shape \(1,\)"):
        WiderFaceGroundTruth(image_ids=("e/a",), boxes=tuple(box),
                             counted={**all_true, "hard": [np.array([1])]})
    with pytest.raises(ValueError, match=r"boxes of image 'e/a' must have shape \[G, 4\]"):
        WiderFaceGroundTruth(image_ids=("e/a",), boxes=(np.zeros((1, 5)),), counted=all_true)


def _cell(items: list[object]) -> np.ndarray:
    cell = np.empty((len(items), 1), dtype=object)
    for index, item in enumerate(items):
        cell[index, 0] = item
    return cell


def _write_mat_ground_truth(folder: Path, *, drop: tuple[str, str] | None = None,
                            hard_keep_b1: list[int] | None = None) -> None:
    """Tiny official-style files: event 0--A (a_1: 2 faces, a_2: dummy box), event 1--B (b_1: 3 faces)."""
    events = _cell(["0--A", "1--B"])
    files = _cell([_cell(["a_1", "a_2"]), _cell(["b_1"])])
    boxes = _cell([
        _cell([np.array([[10, 20, 30, 40], [50, 60, 7, 8]], dtype=np.int32), np.zeros((1, 4), dtype=np.int32)]),
        _cell([np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]], dtype=np.int32)]),
    ])
    keep = {
        "easy": [[1], [], [2]],
        "medium": [[1, 2], [], [2, 3]],
        "hard": [[1, 2], [], hard_keep_b1 if hard_keep_b1 is not None else [1, 2, 3]],
    }
    folder.mkdir(parents=True, exist_ok=True)
    main = {"event_list": events, "file_list": files, "face_bbx_list": boxes}
    contents = {"wider_face_val.mat": main}
    for difficulty, lists in keep.items():
        per_image = [np.asarray(indices, dtype=np.uint8).reshape(-1, 1) for indices in lists]
        gt_list = _cell([_cell(per_image[:2]), _cell(per_image[2:])])
        contents[f"wider_{difficulty}_val.mat"] = {**main, "gt_list": gt_list}
    for file_name, variables in contents.items():
        if drop is not None and drop[0] == file_name:
            variables = {key: value for key, value in variables.items() if key != drop[1]}
        scipy.io.savemat(str(folder / file_name), variables)


def test_load_mat_ground_truth(tmp_path: Path) -> None:
    _write_mat_ground_truth(tmp_path)
    ground_truth = load_widerface_ground_truth(tmp_path)
    assert ground_truth.image_ids == ("0--A/a_1", "0--A/a_2", "1--B/b_1")
    assert ground_truth.events == ("0--A", "1--B")
    np.testing.assert_array_equal(ground_truth.boxes[0], [[10, 20, 30, 40], [50, 60, 7, 8]])
    assert ground_truth.boxes[0].dtype == np.float64
    np.testing.assert_array_equal(ground_truth.boxes[1], [[0, 0, 0, 0]])  # the dummy box is kept as is
    np.testing.assert_array_equal(ground_truth.counted["easy"][0], [True, False])
    np.testing.assert_array_equal(ground_truth.counted["easy"][1], [False])
    np.testing.assert_array_equal(ground_truth.counted["medium"][2], [False, True, True])
    assert [ground_truth.num_faces(d) for d in DIFFICULTIES] == [2, 4, 5]
    assert ground_truth.num_faces() == 6


def test_load_mat_ground_truth_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="wider_face_val.mat not found"):
        load_widerface_ground_truth(tmp_path / "nowhere")
    _write_mat_ground_truth(tmp_path / "no_gt_list", drop=("wider_hard_val.mat", "gt_list"))
    with pytest.raises(WiderFaceFormatError, match=r"wider_hard_val.mat: missing key 'gt_list'"):
        load_widerface_ground_truth(tmp_path / "no_gt_list")
    _write_mat_ground_truth(tmp_path / "no_boxes", drop=("wider_face_val.mat", "face_bbx_list"))
    with pytest.raises(WiderFaceFormatError, match=r"wider_face_val.mat: missing key 'face_bbx_list'"):
        load_widerface_ground_truth(tmp_path / "no_boxes")
    _write_mat_ground_truth(tmp_path / "out_of_range", hard_keep_b1=[1, 4])
    with pytest.raises(WiderFaceFormatError,
                       match=r"wider_hard_val.mat: 'gt_list' of image '1--B/b_1' has index 4; expected .* 1..3"):
        load_widerface_ground_truth(tmp_path / "out_of_range")
    _write_mat_ground_truth(tmp_path / "repeated", hard_keep_b1=[2, 2])
    with pytest.raises(WiderFaceFormatError, match=r"'1--B/b_1' lists a face more than once"):
        load_widerface_ground_truth(tmp_path / "repeated")
    _write_mat_ground_truth(tmp_path / "corrupt")
    (tmp_path / "corrupt" / "wider_easy_val.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(WiderFaceFormatError, match=r"wider_easy_val.mat: not a readable MATLAB .mat file"):
        load_widerface_ground_truth(tmp_path / "corrupt")


@pytest.fixture(scope="module")
def real_ground_truth(fixtures_dir: Path) -> WiderFaceGroundTruth:
    return load_widerface_ground_truth(fixtures_dir / "widerface_gt")


def test_real_ground_truth_structure(real_ground_truth: WiderFaceGroundTruth) -> None:
    assert real_ground_truth.num_images == 3226
    assert len(real_ground_truth.events) == 61
    assert real_ground_truth.image_ids[0] == "0--Parade/0_Parade_marchingband_1_465"
    assert real_ground_truth.num_faces() == 39708
    assert [real_ground_truth.num_faces(d) for d in DIFFICULTIES] == [7211, 13319, 31958]


def test_real_ground_truth_as_predictions(real_ground_truth: WiderFaceGroundTruth) -> None:
    # Every annotation as a prediction with score 1 gives one operating point, so AP = precision * recall. It is
    # not exactly 1 because of two annotations (checked here first):
    # * face 8 of 39_Ice_Skating_iceskiing_39_583 has width -2: with the +1 convention its own IoU is 0, so its
    #   prediction is a false positive for every difficulty, and the face (counted only in hard) is never found.
    # * faces 65 and 104 of 21_Festival_Festival_21_604 are identical (counted only in hard): both predictions
    #   take the first (IoU tie); the second face is never found and the second prediction is a duplicate.
    # Uncounted faces' predictions match themselves and are ignored.
    # easy: P = 7211 / 7212, R = 1; medium: P = 13319 / 13320, R = 1; hard: P = R = 31956 / 31958.
    image_index = {image_id: index for index, image_id in enumerate(real_ground_truth.image_ids)}
    skating = image_index["39--Ice_Skating/39_Ice_Skating_iceskiing_39_583"]
    festival = image_index["21--Festival/21_Festival_Festival_21_604"]
    assert real_ground_truth.boxes[skating][7, 2] == -2
    np.testing.assert_array_equal(real_ground_truth.boxes[festival][64], real_ground_truth.boxes[festival][103])
    assert [bool(real_ground_truth.counted[d][skating][7]) for d in DIFFICULTIES] == [False, False, True]
    assert [bool(real_ground_truth.counted[d][festival][[64, 103]].all()) for d in DIFFICULTIES] == [False, False, True]
    assert sum(int(((boxes[:, 2:] + 1) <= 0).any(axis=1).sum()) for boxes in real_ground_truth.boxes) == 1

    predictions = {image_id: np.c_[boxes, np.ones(len(boxes))]
                   for image_id, boxes in zip(real_ground_truth.image_ids, real_ground_truth.boxes)}
    result = evaluate_widerface(predictions, real_ground_truth)
    assert result.ap["easy"] == pytest.approx(7211 / 7212, abs=1e-12)
    assert result.ap["medium"] == pytest.approx(13319 / 13320, abs=1e-12)
    assert result.ap["hard"] == pytest.approx((31956 / 31958) ** 2, abs=1e-12)


# --------------------------------------------------------------------------------------------------------------
# Prediction files
# --------------------------------------------------------------------------------------------------------------


def test_prediction_files_round_trip(tmp_path: Path) -> None:
    predictions = {
        "0--Parade/0_Parade_marchingband_1_465": _predictions([[1.5, 2.25, 30, 40, 0.987654321], [5, 6, 7, 8, 0.1]]),
        "0--Parade/0_Parade_Parade_0_628": np.zeros((0, 5)),
        "1--Handshaking/1_Handshaking_1_1": _predictions([[0, 0, 1e-7, 12345.678, 1]]),
    }
    written = write_widerface_predictions(tmp_path, predictions)
    assert written[0] == tmp_path / "0--Parade" / "0_Parade_marchingband_1_465.txt"
    assert written[0].read_text().splitlines() == [
        # numbers as given; whole numbers without ".0", as the reference writes them
        "0_Parade_marchingband_1_465", "2", "1.5 2.25 30 40 0.987654321", "5 6 7 8 0.1"]
    assert written[1].read_text() == "0_Parade_Parade_0_628\n0\n"
    loaded = read_widerface_predictions(tmp_path)
    assert list(loaded) == sorted(predictions)
    for image_id, boxes in predictions.items():
        np.testing.assert_array_equal(loaded[image_id], boxes)  # exact: repr round-trips
        assert loaded[image_id].shape == (len(boxes), 5)


def test_read_prediction_accepts_reference_style_files(tmp_path: Path) -> None:
    # The reference RetinaFace writes integer boxes with a trailing space, some tools the path with .jpg.
    (tmp_path / "0--Parade").mkdir()
    (tmp_path / "0--Parade" / "img_1.txt").write_text("0--Parade/img_1.jpg\n2\n1 2 3 4 0.9 \n5 6 7 8 0.5 \n\n")
    loaded = read_widerface_predictions(tmp_path)
    np.testing.assert_array_equal(loaded["0--Parade/img_1"], [[1, 2, 3, 4, 0.9], [5, 6, 7, 8, 0.5]])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("img_1\n", r"img_1.txt: expected the image name on line 1 and the box count on line 2, got 1 line"),
        ("other\n0\n", r"img_1.txt:1: image name 'other' does not match the file name 'img_1'"),
        ("img_1\ntwo\n", r"img_1.txt:2: expected the number of boxes \(an integer >= 0\), got 'two'"),
        ("img_1\n2\n1 2 3 4 0.5\n", r"img_1.txt:2: declares 2 boxes but the file has 1 box lines"),
        ("img_1\n1\n1 2 3 4\n", r"img_1.txt:3: expected 5 numbers 'x y w h score', got 4 field\(s\)"),
        ("img_1\n2\n1 2 3 4 0.5\n1 2 3 x 0.5\n", r"img_1.txt:4: not a number in '1 2 3 x 0.5'"),
        ("img_1\n1\n1 2 nan 4 0.5\n", r"img_1.txt:3: NaN or infinite value"),
    ],
)
def test_read_prediction_errors_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "0--Parade").mkdir()
    (tmp_path / "0--Parade" / "img_1.txt").write_text(content)
    with pytest.raises(WiderFaceFormatError, match=message):
        read_widerface_predictions(tmp_path)


def test_prediction_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="prediction folder .*missing not found"):
        read_widerface_predictions(tmp_path / "missing")
    (tmp_path / "stray.txt").write_text("x")
    with pytest.raises(WiderFaceFormatError, match=r"stray.txt: unexpected file in the prediction folder"):
        read_widerface_predictions(tmp_path)
    with pytest.raises(ValueError, match=r"image id 'no_event_folder' is malformed"):
        write_widerface_predictions(tmp_path / "out", {"no_event_folder": np.zeros((0, 5))})
    with pytest.raises(ValueError, match=r"predictions of image 'e/a' must have shape \[N, 5\]"):
        write_widerface_predictions(tmp_path / "out", {"e/a": np.zeros((2, 6))})


def test_evaluation_from_written_files_matches_in_memory(tmp_path: Path) -> None:
    ground_truth, predictions = _random_case(7)
    write_widerface_predictions(tmp_path, predictions)
    from_files = evaluate_widerface(read_widerface_predictions(tmp_path), ground_truth)
    assert from_files.as_dict() == evaluate_widerface(predictions, ground_truth).as_dict()


# --------------------------------------------------------------------------------------------------------------
# Landmark NME and the PR plot
# --------------------------------------------------------------------------------------------------------------


def test_landmark_nme_hand_computed() -> None:
    gt = np.zeros((3, 5, 2))
    pred = np.zeros((3, 5, 2))
    # Face 0, box 4 x 9 (normaliser sqrt(36) = 6): point errors 5 (a 3-4-5 offset), 0, 0, 0, 10 -> mean 3 -> 0.5.
    pred[0, 0] = [3, 4]
    pred[0, 4] = [6, 8]
    # Face 1, box 16 x 1 (normaliser sqrt(16) = 4): every point off by 1 -> mean 1 -> 0.25.
    pred[1] = [1, 0]
    # Face 2 has no landmarks (-1 in WIDER FACE); its huge error must not count.
    gt[2] = -1
    pred[2] = 1000
    boxes_xywh = np.array([[10, 10, 4, 9], [0, 0, 16, 1], [0, 0, 1, 1]], dtype=np.float64)
    valid = np.array([True, True, False])
    # NME = mean(0.5, 0.25) = 0.375
    assert landmark_nme(pred, gt, boxes_xywh, valid) == pytest.approx(0.375, abs=1e-15)
    boxes_xyxy = np.c_[boxes_xywh[:, :2], boxes_xywh[:, :2] + boxes_xywh[:, 2:]]
    flat = landmark_nme(pred.reshape(3, 10), gt.reshape(3, 10), boxes_xyxy, valid, box_format="xyxy")
    assert flat == pytest.approx(0.375, abs=1e-15)


def test_landmark_nme_errors() -> None:
    landmarks = np.zeros((2, 5, 2))
    boxes = np.array([[0, 0, 4, 4], [0, 0, 0, 4]], dtype=np.float64)
    with pytest.raises(ValueError, match="no face has landmarks"):
        landmark_nme(landmarks, landmarks, boxes, np.array([False, False]))
    with pytest.raises(ValueError, match=r"face 1 is valid but its box \[0.0, 0.0, 0.0, 4.0\] \(xywh\) has a non-pos"):
        landmark_nme(landmarks, landmarks, boxes, np.array([True, True]))
    with pytest.raises(ValueError, match=r"must have the same shape"):
        landmark_nme(landmarks, landmarks[:1], boxes, np.array([True, True]))
    with pytest.raises(ValueError, match=r"valid must be a bool mask of shape \(2,\)"):
        landmark_nme(landmarks, landmarks, boxes, np.array([1, 0]))
    with pytest.raises(ValueError, match=r"box_format must be 'xywh' or 'xyxy', got 'cxcywh'"):
        landmark_nme(landmarks, landmarks, boxes, np.array([True, False]), box_format="cxcywh")


def test_plot_pr_curves_writes_png_without_touching_the_backend(tmp_path: Path) -> None:
    ground_truth, predictions = _one_image_case()
    result = evaluate_widerface(predictions, ground_truth)
    backend = matplotlib.get_backend()
    path = plot_widerface_pr_curves(result, tmp_path / "plots" / "pr.png")
    assert matplotlib.get_backend() == backend
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # IHDR: 6 x 5 inches at 100 dpi
    assert (width, height) == (600, 500)


def test_wider_xywh_writes_boxes_as_the_reference():
    from visiontune.evaluation.widerface_predictions import wider_xywh

    boxes = np.array([[10.7, 10.2, 30.9, 29.6], [-0.6, 3.999, 5.0, 7.01]])
    reference = [[int(x1), int(y1), int(x2) - int(x1), int(y2) - int(y1)] for x1, y1, x2, y2 in boxes.tolist()]
    np.testing.assert_array_equal(wider_xywh(boxes), reference)
    np.testing.assert_allclose(wider_xywh(boxes, "decimal"), [[10.7, 10.2, 20.2, 19.4], [-0.6, 3.999, 5.6, 3.011]])
    with pytest.raises(ValueError, match=r"face.wider_boxes: expected one of int, decimal, got 'round'"):
        wider_xywh(boxes, "round")
