"""``visiontune export``: argument parsing, errors, the missing-dependency message, and an end-to-end export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from visiontune.cli import extra_commands, main
from visiontune.engine.checkpoint import load_checkpoint
from visiontune.export.cli import parse_bool, parse_export_arguments, parse_size
from visiontune.export.exporter import model_from_checkpoint

onnxruntime = pytest.importorskip("onnxruntime")


def test_export_is_registered_as_a_command():
    assert "export" in extra_commands()


def test_parse_export_arguments():
    checkpoint, output, options = parse_export_arguments(
        ["checkpoint=runs/best.pt", "output=m.onnx", "dynamic=false", "opset=18", "half=yes", "decode=TRUE",
         "tolerance=0.01", "input_size=360x640", "sample=photos", "format=onnx"])
    assert (checkpoint, output) == ("runs/best.pt", "m.onnx")
    assert options == {"dynamic": False, "opset": 18, "half": True, "decode": True, "tolerance": 0.01,
                       "input_size": (360, 640), "sample": "photos", "format": "onnx"}
    assert parse_size("input_size", "512") == (512, 512)
    assert parse_bool("half", "0") is False


@pytest.mark.parametrize("arguments, message", [
    (["output=m.onnx"], "give the checkpoint to export: visiontune export checkpoint="),
    (["checkpoint=a.pt", "dynamc=false"], "unknown export option 'dynamc' \\(did you mean 'dynamic'\\?\\)"),
    (["checkpoint=a.pt", "opset=seventeen"], "opset='seventeen': expected an integer"),
    (["checkpoint=a.pt", "half=maybe"], "half='maybe': expected true or false"),
    (["checkpoint=a.pt", "input_size=4x5x6"], "input_size='4x5x6': expected HEIGHTxWIDTH"),
    (["checkpoint=a.pt", "checkpoint=b.pt"], "export option 'checkpoint' is given twice"),
    (["checkpoint"], "'checkpoint': expected key=value"),
])
def test_parse_errors_name_the_argument(arguments, message):
    with pytest.raises(ValueError, match=message):
        parse_export_arguments(arguments)


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
    (["format=tflite"], "format: 'tflite' is not supported; use one of onnx"),
    (["opset=9"], "opset: expected an integer >= 11, got 9"),
    (["decode=true"], "decode=true applies to face_detection only"),
])
def test_cli_reports_bad_options(classification_checkpoint, tmp_path, capsys, arguments, message):
    assert main(["export", f"checkpoint={classification_checkpoint}", f"output={tmp_path / 'x.onnx'}",
                 *arguments]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_cli_reports_a_missing_checkpoint(tmp_path, capsys):
    assert main(["export", f"checkpoint={tmp_path / 'missing.pt'}"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
