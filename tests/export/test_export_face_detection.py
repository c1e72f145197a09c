"""RetinaFace-MobileNet0.25 (reference weights): raw and decoded export, parity, ONNX prediction vs PyTorch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime  # the dev install brings it: never skipped
import pytest
import torch
from PIL import Image

from visiontune.api import config_for_checkpoint, predict
from visiontune.data.face_transforms import to_normalized_tensor
from visiontune.engine.checkpoint import load_checkpoint
from visiontune.export import ExportOptions, export_checkpoint, predict_onnx
from visiontune.export.exporter import model_from_checkpoint

PREDICTED_IMAGES = ("selfie.jpg", "mindface_0000.jpg")
RESCALE = {"face.origin_size": False, "face.target_size": 480, "face.max_size": 640}
"""Prediction settings: the photos rescaled to fit 640 pixels (faster than their original size, and the detections
must be mapped back to original pixels by both paths)."""


def photo_input(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """A real photo resized to ``(height, width)``, BGR minus the RetinaFace mean, ``[1, 3, H, W]``."""
    rgb = np.asarray(Image.open(path).convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return to_normalized_tensor(np.ascontiguousarray(rgb[:, :, ::-1]))[None]


def run(path: Path, images: torch.Tensor) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.numpy()})


def test_raw_export_matches_forward_raw(face_checkpoint, face_raw_onnx, face_images):
    result = face_raw_onnx
    assert result.metadata.output_names == ["loc", "conf", "landmarks"]
    assert result.metadata.class_names == ["face"]
    assert result.metadata.input_shape == ["batch", 3, "height", "width"]
    assert result.metadata.preprocessing["color"] == "BGR"
    assert result.metadata.preprocessing["subtract_mean"] == [104.0, 117.0, 123.0]
    assert [check.input_shape for check in result.parity] == [(1, 3, 240, 320), (2, 3, 185, 387)]
    for check in result.parity:
        assert all(output.max_abs_diff < 1e-4 * output.scale for output in check.outputs), check

    _, model = model_from_checkpoint(load_checkpoint(face_checkpoint))
    images = photo_input(face_images / "selfie.jpg", (301, 419))  # a third size, odd in both directions
    loc, conf, landmarks = run(result.path, images)
    with torch.no_grad():
        expected = [output.numpy() for output in model.forward_raw(images)]
    assert loc.shape == (1, model.priors((301, 419)).shape[0], 4)
    for actual, reference in zip((loc, conf, landmarks), expected):
        np.testing.assert_allclose(actual, reference, rtol=0, atol=1e-4 * np.abs(reference).max())
    assert conf[0, :, 1].max() > 0.9  # the photo has confident faces


def test_decoded_export_outputs_pixels(face_checkpoint, face_decoded_onnx, face_images):
    result = face_decoded_onnx
    assert result.metadata.output_names == ["boxes", "scores", "landmarks"]
    assert result.metadata.output_kind == "retinaface_decoded"
    _, model = model_from_checkpoint(load_checkpoint(face_checkpoint))
    height, width = 301, 419
    images = photo_input(face_images / "mindface_0000.jpg", (height, width))
    boxes, scores, landmarks = run(result.path, images)
    with torch.no_grad():
        box_deltas, class_scores, landmark_deltas = model.forward_raw(images)
    priors = model.priors((height, width))
    coder = model.loss.box_coder
    expected_boxes = coder.decode_boxes(box_deltas, priors) * torch.tensor([width, height, width, height])
    expected_landmarks = coder.decode_landmarks(landmark_deltas, priors) * torch.tensor([width, height])
    np.testing.assert_allclose(boxes, expected_boxes.numpy(), rtol=0, atol=2e-3)
    np.testing.assert_allclose(scores, class_scores[..., 1].numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(landmarks, expected_landmarks.flatten(start_dim=-2).numpy(), rtol=0, atol=2e-3)


@pytest.fixture(scope="module")
def prediction_source(face_images, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("face_source")
    for name in PREDICTED_IMAGES:
        shutil.copy(face_images / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def torch_predictions(face_checkpoint, prediction_source, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("face_torch")
    overrides = [f"output={output}", *(f"{key}={str(value).lower()}" for key, value in RESCALE.items())]
    config = config_for_checkpoint(load_checkpoint(face_checkpoint), None, overrides)
    predict(config, checkpoint=face_checkpoint, source=str(prediction_source))
    return output


@pytest.mark.parametrize("graph", ["face_raw_onnx", "face_decoded_onnx"])
def test_predict_onnx_finds_the_same_faces(graph, request, prediction_source, torch_predictions, tmp_path):
    onnx_path = request.getfixturevalue(graph).path
    files = predict_onnx(onnx_path, prediction_source, tmp_path, **RESCALE)
    assert sorted(path.name for path in files) == sorted(path.name for path in torch_predictions.iterdir())
    total = 0
    for name in PREDICTED_IMAGES:
        stem = Path(name).stem
        expected = json.loads((torch_predictions / f"{stem}.json").read_text())
        actual = json.loads((tmp_path / f"{stem}.json").read_text())
        assert actual.keys() == expected.keys()
        for key in ("image", "width", "height", "scale", "score_threshold"):
            assert actual[key] == expected[key]
        assert actual["scale"] == pytest.approx(0.625)  # 1024 pixels wide -> 640
        assert len(actual["faces"]) == len(expected["faces"])
        for face, reference in zip(actual["faces"], expected["faces"]):
            # JSON values are rounded to 1/100 pixel and 1e-5: one rounding step of slack
            assert face["box"] == pytest.approx(reference["box"], abs=0.011)
            assert face["score"] == pytest.approx(reference["score"], abs=2e-5)
            assert np.allclose(face["landmarks"], reference["landmarks"], atol=0.011)
        total += len(actual["faces"])
    assert total >= 20  # the photos hold many faces: the comparison is not vacuous


def test_static_export_rejects_other_sizes(face_checkpoint, prediction_source, tmp_path):
    result = export_checkpoint(face_checkpoint, output=tmp_path / "static.onnx",
                               options=ExportOptions(dynamic=False, input_size=(96, 128), decode=True))
    assert result.metadata.input_shape == [1, 3, 96, 128]
    assert [check.input_shape for check in result.parity] == [(1, 3, 96, 128)]
    with pytest.raises(ValueError, match=r"exported for a fixed input of \[1, 3, 96, 128\].*dynamic=true"):
        predict_onnx(result.path, prediction_source / "selfie.jpg", tmp_path / "out")


def test_face_options_that_do_not_apply_are_errors(face_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="softmax=true applies to classification only"):
        export_checkpoint(face_checkpoint, output=tmp_path / "x.onnx", options=ExportOptions(softmax=True))
    assert not (tmp_path / "x.onnx").exists()
