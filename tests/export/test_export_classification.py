"""Classification: export, parity, metadata and ONNX prediction against the PyTorch path."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx  # the dev install brings it: never skipped
import onnxruntime  # the dev install brings it: never skipped
import pytest
import timm
import torch
from PIL import Image

import visiontune
from visiontune.api import config_for_checkpoint, predict
from visiontune.engine.checkpoint import load_checkpoint
from visiontune.export import ExportOptions, export_checkpoint, predict_onnx
from visiontune.export.exporter import model_from_checkpoint


def shapes_batch(task, shapes_dir: Path) -> torch.Tensor:
    """The validation images through the checkpoint's eval transform."""
    transform = task.build_transform(train=False)
    paths = sorted((shapes_dir / "val").rglob("*.png"))
    return torch.stack([transform(Image.open(path).convert("RGB")) for path in paths])


def test_export_matches_pytorch_on_other_batch_sizes(classification_checkpoint, classification_onnx, shapes_dir):
    result = classification_onnx
    assert result.path.is_file()
    assert [check.input_shape for check in result.parity] == [(1, 3, 32, 32), (2, 3, 32, 32)]
    assert all(output.max_abs_diff < 1e-4 * output.scale for check in result.parity for output in check.outputs)

    task, model = model_from_checkpoint(load_checkpoint(classification_checkpoint))
    images = shapes_batch(task, shapes_dir)  # 9 images: a batch size the parity check did not use
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = model.net(images).numpy()
    assert logits.shape == (9, 3)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    assert np.abs(expected).max() > 0.05  # the comparison is not between near-zero outputs


def test_metadata_describes_the_checkpoint(classification_checkpoint, classification_onnx):
    graph = onnx.load(str(classification_onnx.path))
    props = {entry.key: entry.value for entry in graph.metadata_props}
    stored_config = torch.load(classification_checkpoint, weights_only=True)["config"]
    canonical = json.dumps(stored_config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    assert props["task"] == "classification"
    assert json.loads(props["class_names"]) == ["circle", "square", "triangle"]
    assert props["config_sha256"] == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert json.loads(props["config"]) == stored_config
    assert props["visiontune_version"] == visiontune.__version__
    assert json.loads(props["input_shape"]) == ["batch", 3, 32, 32]
    assert json.loads(props["input_size"]) == [32, 32]
    assert props["input_dtype"] == "float32"
    assert json.loads(props["output_names"]) == ["logits"]
    assert props["output_kind"] == "logits"
    assert props["opset"] == "17"
    preprocessing = json.loads(props["preprocessing"])
    pretrained = timm.models.get_pretrained_cfg("test_resnet")
    assert preprocessing["mean"] == pytest.approx(list(pretrained.mean))
    assert preprocessing["std"] == pytest.approx(list(pretrained.std))
    parity = json.loads(props["parity"])
    assert [entry["input_shape"] for entry in parity] == [[1, 3, 32, 32], [2, 3, 32, 32]]
    assert [graph_input.name for graph_input in graph.graph.input] == ["images"]
    assert [output.name for output in graph.graph.output] == ["logits"]


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.reader(stream))


@pytest.mark.parametrize("graph", ["classification_onnx", "classification_static_onnx"])
def test_predict_onnx_writes_what_pytorch_predict_writes(graph, request, classification_checkpoint, shapes_dir,
                                                         tmp_path):
    onnx_path = request.getfixturevalue(graph).path  # dynamic logits; fixed batch of 1 with probabilities
    config = config_for_checkpoint(load_checkpoint(classification_checkpoint), None, [f"output={tmp_path / 'torch'}"])
    torch_files = predict(config, checkpoint=classification_checkpoint, source=str(shapes_dir / "val"))
    onnx_files = predict_onnx(onnx_path, shapes_dir / "val", tmp_path / "onnx")

    assert [path.name for path in onnx_files] == [path.name for path in torch_files] == [
        "predictions.csv", "pred.txt", "metrics.json"]  # the source folder carries labels: top-1 of the predictions
    assert json.loads((tmp_path / "onnx" / "metrics.json").read_text()) == pytest.approx(
        json.loads((tmp_path / "torch" / "metrics.json").read_text()))
    expected = read_rows(tmp_path / "torch" / "predictions.csv")
    actual = read_rows(tmp_path / "onnx" / "predictions.csv")
    assert actual[0] == expected[0] == ["path", "label1", "prob1", "label2", "prob2", "label3", "prob3", "true_label"]
    assert len(actual) == len(expected) == 10
    for row, reference in zip(actual[1:], expected[1:]):
        assert row[0] == reference[0] and row[-1] == reference[-1]  # path, true label
        assert row[1] == reference[1]  # same top-1
        probabilities = [float(value) for value in row[2:7:2]]
        reference_probabilities = [float(value) for value in reference[2:7:2]]
        assert probabilities == pytest.approx(reference_probabilities, abs=1e-4)
    assert (tmp_path / "onnx" / "pred.txt").read_text() == (tmp_path / "torch" / "pred.txt").read_text()


def test_predict_onnx_applies_config_overrides(classification_onnx, shapes_dir, tmp_path):
    image = sorted((shapes_dir / "val" / "circle").iterdir())[0]
    (csv_path,) = predict_onnx(classification_onnx.path, image, tmp_path, topk=2)
    assert read_rows(csv_path)[0] == ["path", "label1", "prob1", "label2", "prob2"]
    (csv_path,) = predict_onnx(classification_onnx.path, image, tmp_path, topk="1")  # as given on a command line
    assert read_rows(csv_path)[0] == ["path", "label1", "prob1"]
    with pytest.raises(ValueError, match=r"model.name: fixed by the exported graph .*model\.onnx"):
        predict_onnx(classification_onnx.path, image, tmp_path, **{"model.name": "resnet18"})
    with pytest.raises(ValueError, match="data.image_size: fixed by the exported graph"):
        predict_onnx(classification_onnx.path, image, tmp_path, **{"data.image_size": 64})


def test_export_options_that_do_not_apply_are_errors(classification_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="decode=true applies to face_detection only"):
        export_checkpoint(classification_checkpoint, output=tmp_path / "x.onnx", options=ExportOptions(decode=True))
    with pytest.raises(ValueError, match=r"input_size=64x64: classification exports at the checkpoint's "
                                         r"data.image_size \(32x32\)"):
        export_checkpoint(classification_checkpoint, output=tmp_path / "x.onnx",
                          options=ExportOptions(input_size=(64, 64)))
    assert not list(tmp_path.iterdir())


def test_plain_weights_are_refused_with_the_way_to_export_them(tmp_path):
    weights = tmp_path / "plain.pth"
    torch.save(timm.create_model("test_resnet", num_classes=3).state_dict(), weights)
    with pytest.raises(ValueError, match=r"plain.pth is not a visiontune checkpoint .*export takes the checkpoint of "
                                         r"a visiontune run .*model.checkpoint=<weights> train.epochs=0"):
        export_checkpoint(weights, output=tmp_path / "out.onnx")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["plain.pth"]
