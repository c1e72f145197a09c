"""``visiontune export``: argument parsing, errors, the missing-dependency message, and an end-to-end export."""

from __future__ import annotations

import numpy as np
import onnxruntime  # the dev install brings it: never skipped
import pytest
import torch
from PIL import Image

from visiontune.cli import COMMANDS, main
from visiontune.cli.export import load_export_config
from visiontune.config import parse_image_size
from visiontune.engine.checkpoint import load_checkpoint
from visiontune.export.exporter import model_from_checkpoint
from visiontune.export.options import ExportOptions


def test_export_is_registered_as_a_command():
    assert "export" in COMMANDS


def test_export_options_come_from_the_config():
    config = load_export_config(None, [
        "checkpoint=runs/best.pt", "output=m.onnx", "dynamic=false", "opset=18", "half=yes", "decode=TRUE",
        "tolerance=0.01", "input_size=360x640", "sample=photos", "format=onnx"])
    assert (config.checkpoint, config.output) == ("runs/best.pt", "m.onnx")
    assert ExportOptions.from_config(config.export) == ExportOptions(
        dynamic=False, opset=18, half=True, decode=True, tolerance=0.01, input_size=(360, 640), sample="photos",
        format="onnx")
    assert parse_image_size("input_size", "512") == (512, 512)
    assert load_export_config(None, ["checkpoint=a.pt", "half=0"]).export.half is False
    # the export.* spelling is the same key, and a YAML file's export section applies too
    assert load_export_config(None, ["checkpoint=a.pt", "export.half=true"]).export.half is True


def test_export_options_from_a_config_file(tmp_path):
    path = tmp_path / "export.yaml"
    path.write_text("checkpoint: runs/best.pt\nexport:\n  half: true\n  input_size: [360, 640]\n")
    config = load_export_config(path, ["opset=18"])
    assert ExportOptions.from_config(config.export) == ExportOptions(half=True, input_size=(360, 640), opset=18)


@pytest.mark.parametrize("arguments, message", [
    (["output=m.onnx"], "give the checkpoint to export: visiontune export checkpoint="),
    (["checkpoint=a.pt", "dynamc=false"], "unknown export option 'dynamc' \\(did you mean 'dynamic'\\?\\)"),
    (["checkpoint=a.pt", "export.dynamc=false"],
     "unknown config key 'export.dynamc' .*\\(did you mean 'export.dynamic'"),
    (["checkpoint=a.pt", "opset=seventeen"], "export.opset: expected int, got 'seventeen'"),
    (["checkpoint=a.pt", "half=maybe"], "export.half: expected bool \\(true/false\\), got 'maybe'"),
    (["checkpoint=a.pt", "input_size=4x5x6"], "input_size='4x5x6': expected HEIGHTxWIDTH"),
    (["checkpoint=a.pt", "checkpoint=b.pt"], "export option 'checkpoint' is given twice"),
    (["checkpoint=a.pt", "half=true", "export.half=false"], "export option 'half' is given twice"),
    (["checkpoint"], "'checkpoint': expected key=value"),
    (["checkpoint=a.pt", "data.image_size=64"], "data.image_size: visiontune export reads the task, model and data "
                                                "settings from the checkpoint"),
])
def test_parse_errors_name_the_argument(arguments, message):
    with pytest.raises(ValueError, match=message):
        load_export_config(None, arguments)


def test_cli_exports_half_precision_and_prints_the_parity_table(classification_checkpoint, shapes_dir, tmp_path,
                                                                 capsys):
    output = tmp_path / "cli.onnx"
    assert main(["export", f"checkpoint={classification_checkpoint}", f"output={output}", "softmax=true",
                 "dynamic=false", "half=true"]) == 0
    printed = capsys.readouterr().out
    assert "max abs diff" in printed and "1x3x32x32" in printed and "probabilities" in printed
    assert f"to {output}" in printed

    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert graph_input.type == "tensor(float16)" and graph_input.shape == [1, 3, 32, 32]
    task, model = model_from_checkpoint(load_checkpoint(classification_checkpoint))
    image = task.build_transform(train=False)(Image.open(next((shapes_dir / "val").rglob("*.png"))).convert("RGB"))
    (probabilities,) = session.run(None, {"images": image[None].numpy().astype(np.float16)})
    with torch.no_grad():
        expected = model.net(image[None]).softmax(dim=1).numpy()
    assert probabilities.dtype == np.float32  # float16 inside, float32 out
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(probabilities, expected, atol=5e-3)


@pytest.mark.parametrize("arguments, message", [
    (["format=tflite"], "export.format: expected one of 'onnx', got 'tflite'"),
    (["opset=9"], "export.opset: expected an integer >= 11, got 9"),
    (["input_size=16x16"], "export.input_size: expected a list of integers >= 32, got [16, 16]"),
    (["decode=true"], "decode=true applies to face_detection only"),
])
def test_cli_reports_bad_options(classification_checkpoint, tmp_path, capsys, arguments, message):
    assert main(["export", f"checkpoint={classification_checkpoint}", f"output={tmp_path / 'x.onnx'}",
                 *arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith("visiontune export: error: ") and error.count("\n") == 1 and message in error
    assert not (tmp_path / "x.onnx").exists()


def test_cli_reports_a_missing_checkpoint(tmp_path, capsys):
    assert main(["export", f"checkpoint={tmp_path / 'missing.pt'}"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_cli_predicts_with_an_onnx_model(classification_onnx, shapes_dir, tmp_path, capsys):
    image = sorted((shapes_dir / "val" / "circle").iterdir())[0]
    output = tmp_path / "onnx"
    assert main(["predict", f"checkpoint={classification_onnx.path}", f"source={image}", f"output={output}",
                 "topk=2", "device=cpu"]) == 0
    assert str(output / "predictions.csv") in capsys.readouterr().out
    assert (output / "predictions.csv").read_text().splitlines()[0] == "path,label1,prob1,label2,prob2"
    # the former spelling model=exported.onnx still works
    assert main(["predict", f"model={classification_onnx.path}", f"source={image}", f"output={output}",
                 "topk=1"]) == 0
    assert (output / "predictions.csv").read_text().splitlines()[0] == "path,label1,prob1"


@pytest.mark.parametrize("arguments, message", [
    (["topk=two"], r"topk: expected int, got 'two'"),
    (["face.vis_thres=0.3"], r"unknown config key 'face.vis_thres'.*did you mean 'face.vis_thresh'"),
    (["model.name=resnet18"], r"model.name: fixed by the exported graph"),
    (["source=MISSING"], r"source not found: .*missing"),
])
def test_cli_predict_onnx_checks_keys_like_every_command(classification_onnx, tmp_path, capsys, shapes_dir,
                                                         arguments, message):
    import re

    arguments = [item.replace("MISSING", str(tmp_path / "missing")) for item in arguments]
    if not any(item.startswith("source=") for item in arguments):
        arguments.append(f"source={shapes_dir / 'val'}")
    assert main(["predict", f"checkpoint={classification_onnx.path}", f"output={tmp_path / 'out'}",
                 *arguments]) == 2
    assert re.search(message, capsys.readouterr().err), message
