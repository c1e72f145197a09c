"""Parity comparisons (hand-computed cases) and failing exports that must leave no file behind."""

from __future__ import annotations

import numpy as np
import pytest

from visiontune.export import ExportOptions, ParityError, export_checkpoint
from visiontune.export import exporter as exporter_module
from visiontune.export.parity import align_detections, compare_output, compare_outputs, format_parity

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


def test_detections_in_another_order_are_aligned_before_comparing():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 8, 8]], dtype=np.float32)
    labels = np.array([1, 2, 1])
    order = np.array([2, 0, 1])  # ONNX Runtime returns the rows permuted (equal scores)
    assert align_detections(boxes, labels, boxes[order], labels[order]).tolist() == [1, 2, 0]
    masks = np.arange(3 * 4, dtype=np.float32).reshape(3, 1, 2, 2)
    check = compare_outputs(["boxes", "labels", "masks"], [boxes, labels, masks],
                            [boxes[order] + 0.001, labels[order], masks[order]], tolerance=1e-3, input_shape=(3, 8, 8),
                            detection_keys={"boxes": "boxes", "labels": "labels"})
    assert check.ok, format_parity([check])
    assert [output.max_abs_diff for output in check.outputs] == pytest.approx([0.001, 0.0, 0.0], abs=1e-6)
    assert check.note == "3 detections, 3 in another order than PyTorch's (aligned by matching)"
    # a box may only match a box of its own label
    swapped_labels = labels[order].copy()
    swapped_labels[[1, 2]] = swapped_labels[[2, 1]]
    mislabelled = compare_outputs(["boxes", "labels"], [boxes, labels], [boxes[order], swapped_labels],
                                  tolerance=1e-3, input_shape=(3, 8, 8), detection_keys={"boxes": "boxes",
                                                                                         "labels": "labels"})
    assert not mislabelled.ok


def test_a_different_number_of_detections_fails():
    boxes = np.zeros((2, 4), np.float32)
    check = compare_outputs(["boxes", "labels"], [boxes, np.ones(2, np.int64)], [boxes[:1], np.ones(1, np.int64)],
                            tolerance=1e-3, input_shape=(3, 8, 8), detection_keys={"boxes": "boxes", "labels": "labels"})
    assert not check.ok and check.note == "PyTorch found 2 detections, ONNX Runtime 1"


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
