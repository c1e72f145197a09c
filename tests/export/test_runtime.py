"""ONNX Runtime helpers: providers, input checks, foreign files, decoded-output post-processing."""

from __future__ import annotations

import numpy as np
import onnx  # the dev install brings it: never skipped
import onnxruntime  # noqa: F401  # the dev install brings it: never skipped
import pytest
import torch

from visiontune.config import FaceConfig
from visiontune.export.runtime import (
    OnnxFaceDetector,
    OnnxModel,
    execution_providers,
    predict_onnx,
    select_face_detections,
)
from visiontune.models.retinaface import RetinaFacePostprocessConfig


def test_execution_providers():
    assert execution_providers("cpu", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert execution_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert execution_providers("cuda:1", available) == [("CUDAExecutionProvider", {"device_id": 1}),
                                                        "CPUExecutionProvider"]
    assert execution_providers("auto", available)[0] == ("CUDAExecutionProvider", {"device_id": 0})
    with pytest.raises(ValueError, match="has no CUDAExecutionProvider .*use device=cpu"):
        execution_providers("cuda", ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="expected cpu, cuda, cuda:N or auto, got 'tpu'"):
        execution_providers("tpu", available)


def test_a_plain_onnx_file_is_not_a_visiontune_export(tmp_path):
    helper = onnx.helper
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["logits"])], "plain",
                              [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 3])])
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    with pytest.raises(ValueError, match=r"plain\.onnx: not a visiontune ONNX export \(metadata lacks"):
        predict_onnx(path, tmp_path, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="ONNX model not found"):
        OnnxModel(tmp_path / "missing.onnx")


def test_run_checks_the_input_rank_and_chunks_a_fixed_batch(classification_static_onnx):
    model = OnnxModel(classification_static_onnx.path)
    assert model.input_shape == [1, 3, 32, 32] and model.task == "classification"
    images = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    (batched,) = model.run(images)  # three runs of the batch-1 graph
    singles = np.concatenate([model.run(images[index:index + 1])[0] for index in range(3)])
    assert batched.shape == (3, 3)
    np.testing.assert_array_equal(batched, singles)
    with pytest.raises(ValueError, match=r"expected an input of rank 4 .* got shape \[3, 32, 32\]"):
        model.run(images[0])
    with pytest.raises(ValueError, match=r"fixed input of \[1, 3, 32, 32\]; this input is \[1, 3, 32, 40\]"):
        model.run(np.zeros((1, 3, 32, 40), np.float32))


def test_select_face_detections_hand_computed():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [40, 40, 50, 50]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.01])
    landmarks = torch.arange(40, dtype=torch.float32).reshape(4, 10)
    config = RetinaFacePostprocessConfig(score_threshold=0.02, nms_iou_threshold=0.4)
    detections = select_face_detections(boxes, scores, landmarks, config=config)
    # box 1 overlaps box 0 with IoU 81/119 > 0.4 and is suppressed; box 3 is below the score threshold
    torch.testing.assert_close(detections["scores"], torch.tensor([0.9, 0.7]))
    torch.testing.assert_close(detections["boxes"], boxes[[0, 2]])
    torch.testing.assert_close(detections["landmarks"], landmarks[[0, 2]].reshape(2, 5, 2))
    assert detections["labels"].tolist() == [1, 1]
    kept_one = select_face_detections(boxes, scores, landmarks,
                                      config=RetinaFacePostprocessConfig(max_detections=1, pre_nms_top_k=2))
    assert kept_one["scores"].tolist() == pytest.approx([0.9])


def test_the_onnx_face_detector_refuses_a_graph_of_another_task(classification_onnx):
    model = OnnxModel(classification_onnx.path)
    with pytest.raises(ValueError, match=r"model\.onnx: output_kind 'logits' is not a RetinaFace graph"):
        OnnxFaceDetector(model, FaceConfig(), RetinaFacePostprocessConfig())
