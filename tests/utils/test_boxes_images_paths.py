"""The small shared helpers: NumPy box IoU, image tensors, prediction output names, inference timing."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
from PIL import Image

from visiontune.utils.boxes import box_iou, xywh_to_xyxy, xyxy_to_xywh
from visiontune.utils.image_tensors import rgb_to_tensor, tensor_to_rgb
from visiontune.utils.paths import output_names
from visiontune.utils.timing import InferenceTimer


def test_box_iou_hand_computed_and_empty_unions():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 5, 5]], dtype=np.float32)
    other = np.array([[25, 20, 35, 30], [0, 0, 10, 5], [5, 5, 5, 5]], dtype=np.float32)
    iou = box_iou(boxes, other)
    assert iou.dtype == np.float64 and iou.shape == (3, 3)
    np.testing.assert_allclose(iou, [[0.0, 0.5, 0.0], [50 / 150, 0.0, 0.0], [0.0, 0.0, 0.0]])  # 0 / 0 -> 0
    assert box_iou(np.zeros((0, 4)), other).shape == (0, 3)


def test_xyxy_to_xywh():
    np.testing.assert_array_equal(xyxy_to_xywh(np.array([[1, 2, 4, 8]], dtype=np.float32)), [[1.0, 2.0, 3.0, 6.0]])


def test_xywh_to_xyxy_inverts_xyxy_to_xywh():
    boxes = np.array([[1, 2, 4, 8], [0.5, 0.25, 3.5, 9.75]])
    np.testing.assert_array_equal(xywh_to_xyxy([[1, 2, 3, 6]]), [[1.0, 2.0, 4.0, 8.0]])
    np.testing.assert_array_equal(xywh_to_xyxy(xyxy_to_xywh(boxes)), boxes)
    assert xywh_to_xyxy(np.zeros((0, 4))).shape == (0, 4)
    assert xyxy_to_xywh(np.zeros((0, 4))).shape == (0, 4)


def test_image_tensors_round_trip():
    image = Image.new("RGB", (40, 20), (10, 20, 30))
    tensor = rgb_to_tensor(image)
    assert tensor.shape == (3, 20, 40) and tensor.dtype == torch.float32
    assert tensor[:, 0, 0].tolist() == pytest.approx([10 / 255, 20 / 255, 30 / 255])
    assert np.array_equal(np.asarray(tensor_to_rgb(tensor)), np.asarray(image))


def test_output_names_mirror_the_source_folder(tmp_path: Path):
    images = [tmp_path / "in" / "a.jpg", tmp_path / "in" / "sub" / "b.v2.png"]
    for image in images:
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(b"")
    assert output_names(images, tmp_path / "in") == [PurePosixPath("a.jpg"), PurePosixPath("sub/b.v2.png")]
    assert output_names(images[:1], tmp_path / "in" / "a.jpg") == [PurePosixPath("a.jpg")]
    assert output_names([tmp_path / "elsewhere" / "c.jpg"], tmp_path / "in") == [PurePosixPath("c.jpg")]
    with pytest.raises(ValueError, match=r"would both be written as a\.\*; predict them separately"):
        output_names([tmp_path / "in" / "a.jpg", tmp_path / "in" / "a.png"], tmp_path / "in")


class _TwoStage(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Conv2d(3, 2, 1)

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        features = self.net(images)
        return [{"scores": feature.flatten().sigmoid()} for feature in features]


def test_inference_timer_measures_eval_calls_only():
    model = _TwoStage()
    timer = InferenceTimer()
    handles = timer.attach(model, model.net)
    assert timer.summary() == "no image timed"
    model.eval()
    model(torch.zeros(2, 3, 4, 4))
    assert timer.images == 2 and timer.forward_seconds > 0 and timer.postprocess_seconds > 0
    model.train()
    model(torch.zeros(1, 3, 4, 4))
    assert timer.images == 2
    timer.add(forward_seconds=0.5, postprocess_seconds=0.25, images=3)
    assert timer.images == 5 and timer.summary().startswith("5 images: forward")
    for handle in handles:
        handle.remove()
    timer.reset()
    model.eval()
    model(torch.zeros(1, 3, 4, 4))
    assert timer.images == 0
