"""Parity comparisons (hand-computed cases) and failing exports that must leave no file behind."""

from __future__ import annotations

import numpy as np
import onnx  # noqa: F401  # the dev install brings it: never skipped
import onnxruntime  # noqa: F401  # the dev install brings it: never skipped
import pytest

from visiontune.export import ExportOptions, ParityError, export_checkpoint
from visiontune.export import exporter as exporter_module
from visiontune.export.parity import (
    DetectionOutputs,
    ParityCheck,
    compare_output,
    compare_outputs,
    format_parity,
    match_detections,
    parity_failure_message,
    tolerance_text,
)
from visiontune.utils.boxes import box_iou


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


NAMES = ["boxes", "labels", "scores", "mask_probabilities"]
DETECTIONS = DetectionOutputs(boxes="boxes", labels="labels", scores="scores", masks="mask_probabilities",
                              min_score=0.5)


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


def test_mask_probabilities_are_compared_with_an_absolute_tolerance():
    reference = detection_set()
    actual = [output.copy() for output in reference]
    actual[3][0, 0, 1, 1] += 5e-4  # one probability of a confident detection
    tolerances = {"boxes": 1e-3, "labels": 1e-3, "scores": 1e-3, "mask_probabilities": 1e-4}
    check = compare_outputs(NAMES, reference, actual, tolerance=tolerances, input_shape=(3, 64, 64),
                            detections=DETECTIONS)
    masks = check.outputs[3]
    assert masks.scale == 1.0 and masks.allowed == pytest.approx(1e-4)  # not relative to the largest value (0.69)
    assert masks.max_abs_diff == pytest.approx(5e-4, rel=1e-3) and not check.ok
    assert [output.ok for output in check.outputs] == [True, True, True, False]
    assert check.outputs[1].tolerance is None and check.outputs[0].tolerance == 1e-3
    passing = compare_outputs(NAMES, reference, actual, tolerance=1e-3, input_shape=(3, 64, 64),
                              detections=DETECTIONS)
    assert passing.ok and passing.outputs[3].allowed == pytest.approx(1e-3)
    assert passing.outputs[3].as_dict()["tolerance"] == 1e-3
    with pytest.raises(KeyError):
        compare_outputs(NAMES, reference, actual, tolerance={"boxes": 1e-3}, input_shape=(3, 64, 64),
                        detections=DETECTIONS)


def test_values_at_the_graphs_detections_replace_the_reference_rows():
    reference = detection_set()
    order = np.array([2, 0, 1, 3])
    actual = [output[order] for output in reference]
    actual[3] = actual[3] + 0.05  # the graph's masks differ from PyTorch's at PyTorch's boxes ...
    at_graph = {"mask_probabilities": actual[3] + 2e-5}  # ... but not from PyTorch's mask head at the graph's boxes
    check = compare_outputs(NAMES, reference, actual, tolerance=1e-4, input_shape=(3, 64, 64),
                            detections=DETECTIONS, at_graph_detections=at_graph)
    assert check.ok and check.outputs[3].max_abs_diff == pytest.approx(2e-5, rel=1e-2)
    assert check.outputs[3].shape == (3, 1, 2, 2)  # the confident detections, in the graph's rows
    without = compare_outputs(NAMES, reference, actual, tolerance=1e-4, input_shape=(3, 64, 64),
                              detections=DETECTIONS)
    assert not without.ok and without.outputs[3].max_abs_diff == pytest.approx(0.05)
    at_graph["mask_probabilities"][0] += 0.01  # the first graph row (PyTorch's detection 2) is off
    wrong = compare_outputs(NAMES, reference, actual, tolerance=1e-4, input_shape=(3, 64, 64),
                            detections=DETECTIONS, at_graph_detections=at_graph)
    assert not wrong.ok and wrong.outputs[3].max_abs_diff == pytest.approx(0.01, rel=1e-2)


def test_the_failure_message_names_the_tolerance_that_accepts_the_differences():
    reference = detection_set()
    actual = [output.copy() for output in reference]
    actual[3][1] += 3.14e-4
    actual[0][0] += 0.02  # boxes: 0.02 / scale 30 = 6.7e-4 relative
    tolerances = {"boxes": 1e-4, "labels": 1e-4, "scores": 1e-4, "mask_probabilities": 1e-4}
    check = compare_outputs(NAMES, reference, actual, tolerance=tolerances, input_shape=(3, 64, 64),
                            detections=DETECTIONS)
    message = parity_failure_message([check])
    assert ("output 'mask_probabilities' on input 3x64x64: max abs difference 3.140e-04 > allowed 1.000e-04 "
            "(tolerance 0.0001 x scale 1)") in message
    assert "output 'boxes' on input 3x64x64: max abs difference 2.000e-02 > allowed 3.000e-03" in message
    assert message.endswith("Nothing was written. tolerance=0.00067 accepts these numeric differences (it applies "
                            "to every compared output); raise it only if they are acceptable.")
    assert compare_outputs(NAMES, reference, actual, tolerance=6.7e-4, input_shape=(3, 64, 64),
                           detections=DETECTIONS).ok
    assert not compare_outputs(NAMES, reference, actual, tolerance=6.6e-4, input_shape=(3, 64, 64),
                               detections=DETECTIONS).ok
    # no tolerance brings back a missing detection: the message offers none for it
    missing = compare_outputs(NAMES, reference, [output[[0, 2, 3]] for output in reference], tolerance=1.0,
                              input_shape=(3, 64, 64), detections=DETECTIONS)
    message = parity_failure_message([missing])
    assert "tolerance=" not in message
    assert message.endswith("Nothing was written. no tolerance changes the failures of detections.")
    shape = compare_output("logits", np.zeros((1, 3), np.float32), np.zeros((1, 4), np.float32), tolerance=1.0)
    assert "tolerance=" not in parity_failure_message([ParityCheck((1, 3, 32, 32), outputs=[shape])])


@pytest.mark.parametrize("needed, text", [(3.14e-4, "0.00032"), (6.0e-4, "0.0006"), (9.96e-3, "0.01"),
                                          (2.0, "2"), (123.4, "1.3e+02"), (0.0, "0")])
def test_tolerance_text_rounds_up_to_two_digits(needed, text):
    assert tolerance_text(needed) == text and float(text) >= needed


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
