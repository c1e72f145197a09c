"""Parity comparisons (hand-computed cases) and failing exports that must leave no file behind."""

from __future__ import annotations

import numpy as np
import pytest

from visiontune.export import ExportOptions, ParityError, export_checkpoint
from visiontune.export import exporter as exporter_module
from visiontune.export.parity import (
    DetectionOutputs,
    compare_masks,
    compare_output,
    compare_outputs,
    format_parity,
    match_detections,
    parity_failure_message,
)
from visiontune.utils.boxes import box_iou

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def test_compare_output_is_relative_to_the_output_scale():
    reference = np.array([[1.0, -4.0], [2.0, 0.5]], dtype=np.float32)
    actual = reference + np.array([[0.0, 0.003], [0.0, 0.0]], dtype=np.float32)
    passing = compare_output("loc", reference, actual, tolerance=1e-3)
    assert passing.max_abs_diff == pytest.approx(0.003, rel=1e-4)
    assert passing.scale == 4.0 and passing.allowed == pytest.approx(0.004)
    assert passing.ok
    failing = compare_output("loc", reference, actual, tolerance=5e-4)
    assert failing.allowed == pytest.approx(0.002) and not failing.ok


def test_integer_outputs_must_be_equal_and_shapes_must_match():
    labels = compare_output("labels", np.array([1, 2]), np.array([1, 3]), tolerance=1.0)
    assert labels.max_abs_diff == 1.0 and labels.allowed == 0.0 and not labels.ok
    shape = compare_output("boxes", np.zeros((3, 4), np.float32), np.zeros((2, 4), np.float32), tolerance=1e-3)
    assert not shape.ok and shape.problem == "shape [2, 4] differs from PyTorch's [3, 4]"
    nan = np.array([np.nan, 1.0], dtype=np.float32)
    assert compare_output("x", nan, nan.copy(), tolerance=0.0).ok
    nan_moved = compare_output("x", nan, np.array([0.0, 1.0], np.float32), tolerance=1e-3)
    assert not nan_moved.ok and nan_moved.problem == "NaN or infinite values differ from PyTorch's"


NAMES = ["boxes", "labels", "scores", "masks"]
DETECTIONS = DetectionOutputs(boxes="boxes", labels="labels", scores="scores", masks="masks", min_score=0.5)


def detection_set():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 8, 8], [40, 40, 60, 60]], dtype=np.float32)
    labels = np.array([1, 2, 1, 1])
    scores = np.array([0.9, 0.8, 0.6, 0.1], dtype=np.float32)
    masks = np.arange(4 * 4, dtype=np.float32).reshape(4, 1, 2, 2) / 16
    return [boxes, labels, scores, masks]


def test_box_iou_and_matching_hand_computed():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=np.float32)
    other = np.array([[25, 20, 35, 30], [0, 0, 10, 5]], dtype=np.float32)
    np.testing.assert_allclose(box_iou(boxes, other), [[0.0, 0.5], [50 / 150, 0.0]])
    assert [index.tolist() for index in match_detections(boxes, np.array([1, 1]), other, np.array([1, 1]))] == [
        [0], [1]]  # IoU 1/3 is below 0.5: only the first box finds a match
    assert [index.tolist() for index in match_detections(boxes, np.array([1, 1]), other, np.array([1, 1]),
                                                         min_iou=0.3)] == [[0, 1], [1, 0]]
    # a box only matches a box with its label
    assert [index.tolist() for index in match_detections(boxes, np.array([1, 1]), other, np.array([2, 1]),
                                                         min_iou=0.3)] == [[0], [1]]
    assert [index.tolist() for index in match_detections(boxes, np.array([1, 1]), other, np.array([2, 2]),
                                                         min_iou=0.3)] == [[], []]


def test_confident_detections_are_matched_and_compared_in_any_order():
    reference = detection_set()
    order = np.array([2, 0, 1])  # another order, and the low-scoring detection 3 is missing in ONNX Runtime
    actual = [output[order] for output in reference]
    actual[0] = actual[0] + 0.001
    check = compare_outputs(NAMES, reference, actual, tolerance=1e-3, input_shape=(3, 64, 64), detections=DETECTIONS)
    assert check.ok, format_parity([check])
    assert [output.max_abs_diff for output in check.outputs] == pytest.approx([0.001, 0.0, 0.0, 0.0], abs=1e-6)
    assert check.outputs[0].shape == (3, 4)  # the three detections scoring >= 0.5
    assert check.note == ("PyTorch 4, ONNX Runtime 3 detections; 3 scoring >= 0.5 compared pairwise (matched by "
                          "label and IoU >= 0.5), lower-scoring ones not compared")


def test_a_missing_or_different_confident_detection_fails():
    reference = detection_set()
    missing = compare_outputs(NAMES, reference, [output[[0, 2, 3]] for output in reference], tolerance=1e-3,
                              input_shape=(3, 64, 64), detections=DETECTIONS)
    assert missing.problems == ["1 detection(s) of PyTorch scoring >= 0.5 have no counterpart (scores 0.800)"]
    assert not missing.ok
    assert "FAIL 1 detection(s) of PyTorch" in format_parity([missing])
    shifted = [output.copy() for output in reference]
    shifted[2][1] = 0.7  # a confident detection's score changed
    different = compare_outputs(NAMES, reference, shifted, tolerance=1e-3, input_shape=(3, 64, 64),
                                detections=DETECTIONS)
    assert not different.ok and not different.problems
    assert different.outputs[2].max_abs_diff == pytest.approx(0.1)


def _disc_masks(size: int = 64) -> np.ndarray:
    """Mask probabilities of two instances: a 30x24 rectangle and a disc of radius 9, soft edges."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    rectangle = ((xx >= 10) & (xx < 34) & (yy >= 12) & (yy < 42)).astype(np.float32) * 0.9
    disc = np.clip(9.5 - np.hypot(xx - 46, yy - 20), 0, 1).astype(np.float32)
    return np.stack([rectangle, disc])[:, None]


def mask_detection_set():
    boxes = np.array([[10, 12, 34, 42], [37, 11, 55, 29]], dtype=np.float32)
    return [boxes, np.array([1, 2]), np.array([0.9, 0.8], dtype=np.float32), _disc_masks()]


def test_a_mask_pasted_one_pixel_shorter_passes():
    reference = mask_detection_set()
    actual = [output.copy() for output in reference]
    actual[3][0, 0, 41, :] = 0.0  # the rectangle pasted one row shorter (its box corner on a pixel edge)
    actual[3][1, 0, :, 55] = 0.0  # the disc one column narrower
    check = compare_outputs(NAMES, reference, actual, tolerance=1e-3, input_shape=(3, 64, 64), detections=DETECTIONS)
    masks = check.outputs[3]
    assert masks.max_abs_diff == pytest.approx(0.9)  # the old "max pixel difference <= 1e-2" check fails here
    assert check.ok, format_parity([check])
    assert masks.mask.ious[0] == pytest.approx(29 / 30)  # below 0.99, but only the edge row differs
    assert masks.mask.beyond_edge == [0, 0]
    assert masks.mask.differing[0] == pytest.approx(24 / 64 ** 2)
    table = format_parity([check])
    assert "mask IoU min 0.9667" in table and "differing pixels max 0.586%" in table
    assert masks.as_dict()["mask"]["ious"][1] == masks.mask.ious[1]
    # a large instance: a one-pixel-shorter paste keeps IoU >= 0.99 outright
    large = np.zeros((1, 1, 200, 200), np.float32)
    large[0, 0, 20:180, 20:180] = 1.0
    shorter = large.copy()
    shorter[0, 0, 179] = 0.0
    result = compare_masks("masks", large, shorter, threshold=0.5, min_iou=0.99, edge_pixels=0)
    assert result.ok and result.mask.ious[0] == pytest.approx(159 / 160)


def test_a_wrong_mask_fails_naming_the_instance_and_its_iou():
    reference = mask_detection_set()
    shifted = [output.copy() for output in reference]
    shifted[3][0] = np.roll(reference[3][0], 4, axis=2)  # the rectangle shifted by 4 pixels
    check = compare_outputs(NAMES, reference, shifted, tolerance=1e-3, input_shape=(3, 64, 64), detections=DETECTIONS)
    assert not check.ok
    assert check.outputs[3].mask.ious[0] == pytest.approx(20 / 28)
    message = parity_failure_message([check], tolerance=1e-3)
    assert ("output 'masks' on input 3x64x64: mask of detection 0 (label 1, score 0.900): IoU 0.7143 < 0.99 and "
            "174 differing pixel(s) more than 1 pixel(s) from the mask edge (5.859% of the pixels differ") in message
    assert "detection 1" not in message
    assert "FAIL" in format_parity([check])

    swapped = [output.copy() for output in reference]
    swapped[3] = reference[3][::-1].copy()  # each detection carries the other instance's mask
    check = compare_outputs(NAMES, reference, swapped, tolerance=1e-3, input_shape=(3, 64, 64), detections=DETECTIONS)
    assert not check.ok and check.outputs[3].mask.ious == [0.0, 0.0]
    message = parity_failure_message([check], tolerance=1e-3)
    assert "mask of detection 0 (label 1, score 0.900): IoU 0.0000" in message
    assert "mask of detection 1 (label 2, score 0.800): IoU 0.0000" in message


def test_masks_are_binarised_before_comparing():
    reference = mask_detection_set()
    actual = [output.copy() for output in reference]
    actual[3] = np.where(reference[3] > 0.5, reference[3] - 0.04, reference[3] * 0.9)  # no pixel crosses 0.5
    check = compare_outputs(NAMES, reference, actual, tolerance=1e-3, input_shape=(3, 64, 64), detections=DETECTIONS)
    assert check.ok and check.outputs[3].mask.ious == [1.0, 1.0] and check.outputs[3].mask.differing == [0.0, 0.0]
    assert check.outputs[3].max_abs_diff == pytest.approx(0.05, abs=1e-6)  # reported, not judged
    # an empty PyTorch mask has no edge: any pixel ONNX Runtime adds is a real difference
    empty = [output.copy() for output in reference]
    empty[3][1] = 0.0
    gained = [output.copy() for output in empty]
    gained[3][1, 0, 5, 5] = 0.9
    check = compare_outputs(NAMES, empty, gained, tolerance=1e-3, input_shape=(3, 64, 64), detections=DETECTIONS)
    assert not check.ok and check.outputs[3].mask.ious == [1.0, 0.0] and check.outputs[3].mask.beyond_edge[1] == 1


def test_half_export_with_zero_tolerance_fails_and_writes_nothing(classification_checkpoint, tmp_path):
    output = tmp_path / "out" / "model.onnx"
    with pytest.raises(ParityError, match=r"output 'logits' on input 1x3x32x32: max abs difference .* > allowed "
                                          r"0\.000e\+00 .*Nothing was written"):
        export_checkpoint(classification_checkpoint, output=output, options=ExportOptions(half=True, tolerance=0.0))
    assert not output.exists()
    assert not output.parent.exists() or not list(output.parent.iterdir())


class ShiftedSession:
    """An ONNX Runtime session whose first output is shifted by 0.01 (a graph that computes something else)."""

    def __init__(self, session):
        self.session = session

    def get_inputs(self):
        return self.session.get_inputs()

    def run(self, names, feeds):
        outputs = self.session.run(names, feeds)
        return [outputs[0] + 0.01, *outputs[1:]]


def test_a_wrong_graph_fails_the_default_tolerance(classification_checkpoint, tmp_path, monkeypatch):
    real_session = exporter_module.cpu_session
    monkeypatch.setattr(exporter_module, "cpu_session", lambda model: ShiftedSession(real_session(model)))
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"previous export")
    with pytest.raises(ParityError, match=r"output 'logits' on input 1x3x32x32: max abs difference 1\.000e-02"):
        export_checkpoint(classification_checkpoint, output=existing)
    assert existing.read_bytes() == b"previous export"  # an older file at the output path is left untouched
    assert [path.name for path in tmp_path.iterdir()] == ["model.onnx"]
