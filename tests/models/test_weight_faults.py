"""Weights that fit a model by name and shape but not by dtype or value: every task's loader refuses integer tensors
for floating-point weights and NaN / infinite values in one line naming the tensor, and reports the precision
conversions it does (float16 -> float32)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from tests.helpers import identity_onnx_model
from visiontune.engine.checkpoint import CheckpointError, atomic_save, load_checkpoint
from visiontune.interop.mindspore import read_mindspore_checkpoint, save_mindspore_checkpoint
from visiontune.models.classification import ImageClassifier, load_classifier_weights
from visiontune.models.loading import WeightLoadError, WeightValuesError, read_weights
from visiontune.models.maskrcnn import create_maskrcnn, load_backbone_weights, load_detector_weights
from visiontune.models.retinaface import create_retinaface, load_retinaface_state_dict

FIRST_CONV = "conv1.0.weight"  # of timm's test_resnet


def _classifier_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=3).state_dict()


def _classifier() -> ImageClassifier:
    return ImageClassifier(timm.create_model("test_resnet", num_classes=3))


def _with_nan(tensor: torch.Tensor, count: int) -> torch.Tensor:
    broken = tensor.clone()
    broken.view(-1)[:count] = float("nan")
    return broken


def test_int32_conv_weight_in_safetensors_is_refused_naming_tensor_and_dtypes(tmp_path: Path):
    weights = _classifier_weights()
    weights[FIRST_CONV] = (weights[FIRST_CONV] * 100).to(torch.int32)
    path = tmp_path / "int.safetensors"
    save_file(weights, str(path))
    model = _classifier()
    before = model.net.state_dict()[FIRST_CONV].clone()
    with pytest.raises(WeightValuesError) as caught:
        load_classifier_weights(model, str(path))
    assert str(caught.value) == (
        f"{path}: tensor '{FIRST_CONV}' is int32 in the file but float32 in the model: integer values cannot be "
        "floating-point weights (a wrongly converted file?); not converting them")
    assert torch.equal(model.net.state_dict()[FIRST_CONV], before)  # nothing copied


def test_several_integer_tensors_are_counted(tmp_path: Path):
    weights = _classifier_weights()
    for name in ("conv1.0.weight", "conv1.1.weight", "conv1.1.bias"):
        weights[name] = weights[name].to(torch.int64)
    path = tmp_path / "ints.pth"
    torch.save(weights, path)
    with pytest.raises(WeightValuesError, match=r"tensor 'conv1.0.weight' is int64 in the file but float32 in the "
                                                r"model \(2 more tensor\(s\) like it: conv1.1.weight, conv1.1.bias\)"):
        load_classifier_weights(_classifier(), str(path))


def test_float16_weights_load_converted_and_the_report_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    weights = _classifier_weights()
    weights[FIRST_CONV] = weights[FIRST_CONV].half()
    path = tmp_path / "half.safetensors"
    save_file(weights, str(path))
    model = _classifier()
    with caplog.at_level("INFO"):
        report = load_classifier_weights(model, str(path))
    assert report.converted == [f"{FIRST_CONV} float16->float32"]
    assert report.as_dict()["converted"] == [f"{FIRST_CONV} float16->float32"]
    assert f"converted           1   {FIRST_CONV} float16->float32   (stored dtype -> the model's)" in caplog.text
    assert model.net.state_dict()[FIRST_CONV].dtype == torch.float32
    assert torch.equal(model.net.state_dict()[FIRST_CONV], weights[FIRST_CONV].float())


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_nan_in_plain_weights_names_the_tensor_and_the_count(tmp_path: Path, suffix: str):
    weights = _classifier_weights()
    weights[FIRST_CONV] = _with_nan(weights[FIRST_CONV], 8)
    weights["fc.bias"] = torch.tensor([float("inf"), 0.0, float("-inf")])  # the head: same class count, loaded
    path = tmp_path / f"nan{suffix}"
    if suffix == ".pth":
        torch.save(weights, path)
    else:
        save_file(weights, str(path))
    with pytest.raises(WeightValuesError) as caught:
        load_classifier_weights(_classifier(), str(path))
    assert str(caught.value) == (
        f"{path}: 2 tensors hold NaN or infinite values: '{FIRST_CONV}' (8 NaN of {weights[FIRST_CONV].numel()} "
        "values), 'fc.bias' (2 inf of 3 values); these weights are broken (a diverged training run?): not loading "
        "them")


def test_nan_in_a_reinitialised_head_is_not_loaded_and_not_refused(tmp_path: Path):
    weights = _classifier_weights()
    weights["fc.weight"] = torch.full((7, weights["fc.weight"].shape[1]), float("nan"))  # another class count
    weights["fc.bias"] = torch.full((7,), float("nan"))
    path = tmp_path / "head.pth"
    torch.save(weights, path)
    report = load_classifier_weights(_classifier(), str(path))
    assert [name for name, _, _ in report.reinitialized] == ["fc.weight", "fc.bias"]


def test_visiontune_checkpoint_with_nan_is_refused_when_loaded(tmp_path: Path):
    model = _classifier()
    state = {f"net.{name}": value for name, value in _classifier_weights().items()}
    state["net.conv1.1.running_var"] = _with_nan(state["net.conv1.1.running_var"], 3)
    path = atomic_save({"model": state, "config": {"task": "classification"}, "version": "0"}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    count = state["net.conv1.1.running_var"].numel()
    assert str(caught.value) == (
        f"{path} (model): 1 tensor holds NaN or infinite values: 'net.conv1.1.running_var' (3 NaN of {count} values); "
        "these weights are broken (a diverged training run?): not loading them")
    with pytest.raises(WeightValuesError, match=r"'conv1.1.running_var' \(3 NaN of"):  # as model.checkpoint=
        load_classifier_weights(model, str(path))


def test_retinaface_mindspore_ckpt_with_an_int32_conv_is_refused(fixtures_dir: Path, tmp_path: Path):
    tensors = read_mindspore_checkpoint(fixtures_dir / "mindspore" / "retinaface_mobilenet025.ckpt")
    name = next(key for key, value in tensors.items() if value.ndim == 4)
    tensors[name] = (tensors[name] * 100).astype("int32")
    path = tmp_path / "int.ckpt"
    save_mindspore_checkpoint(path, tensors)
    converted = [key for key, value in read_weights(path, arch="retinaface_mobilenet025").items()
                 if value.dtype == torch.int32]
    assert len(converted) == 1
    model = create_retinaface("mobilenet0.25")
    with pytest.raises(WeightValuesError, match=rf"^{re.escape(str(path))}: tensor '{re.escape(converted[0])}' is "
                                                r"int32 in the file but float32 in the model: integer values cannot"):
        load_retinaface_state_dict(model, path)


def test_retinaface_mindspore_ckpt_with_nan_names_the_pytorch_tensor(fixtures_dir: Path, tmp_path: Path):
    tensors = read_mindspore_checkpoint(fixtures_dir / "mindspore" / "retinaface_mobilenet025.ckpt")
    name = next(key for key, value in tensors.items() if value.ndim == 4)
    tensors[name].reshape(-1)[:5] = float("nan")
    path = tmp_path / "nan.ckpt"
    save_mindspore_checkpoint(path, tensors)
    with pytest.raises(WeightValuesError, match=r"nan.ckpt: 1 tensor holds NaN or infinite values: '[\w.]+' "
                                                r"\(5 NaN of \d+ values\)"):
        load_retinaface_state_dict(create_retinaface("mobilenet0.25"), path)


def test_retinaface_float16_safetensors_loads_with_the_conversion_in_its_report(tmp_path: Path):
    torch.manual_seed(0)
    source = create_retinaface("mobilenet0.25").state_dict()
    path = tmp_path / "half.safetensors"
    save_file({name: value.half() if value.is_floating_point() else value for name, value in source.items()},
              str(path))
    report = load_retinaface_state_dict(create_retinaface("mobilenet0.25"), path)
    floats = [name for name, value in source.items() if value.is_floating_point()]
    assert sorted(report.converted) == sorted(f"{name} float16->float32" for name in floats)
    assert f"converted to the model's dtype {len(floats)} ['{report.converted[0]}', " in report.summary()


def test_retinaface_inf_in_a_state_dict_is_refused():
    torch.manual_seed(0)
    state = create_retinaface("mobilenet0.25").state_dict()
    key = next(name for name in state if name.endswith("running_var"))
    state[key] = state[key].clone()
    state[key][0] = float("inf")
    with pytest.raises(WeightValuesError, match=rf"<state dict>: 1 tensor holds NaN or infinite values: '{key}' "
                                                r"\(1 inf of \d+ values\)"):
        load_retinaface_state_dict(create_retinaface("mobilenet0.25"), state)


def test_maskrcnn_loaders_refuse_integer_and_nan_tensors():
    model = create_maskrcnn("v1", num_classes=3, init="none")
    state = model.state_dict()  # the tests replace entries, never change a tensor in place
    detector = dict(state)
    detector["roi_heads.box_head.fc6.weight"] = detector["roi_heads.box_head.fc6.weight"].to(torch.int16)
    with pytest.raises(WeightValuesError, match=r"^coco.pth: tensor 'roi_heads.box_head.fc6.weight' is int16 in the "
                                                r"file but float32 in the model"):
        load_detector_weights(model, detector, source="coco.pth")
    body = {name.removeprefix("backbone.body."): value for name, value in state.items()
            if name.startswith("backbone.body.")}
    body["layer1.0.conv1.weight"] = _with_nan(body["layer1.0.conv1.weight"], 2)
    with pytest.raises(WeightValuesError, match=r"^resnet50.pth: 1 tensor holds NaN or infinite values: "
                                                r"'layer1.0.conv1.weight' \(2 NaN of 4096 values\)"):
        load_backbone_weights(model, body, source="resnet50.pth")
    half = {name: value.half() if name == "rpn.head.conv.0.0.weight" else value for name, value in state.items()}
    report = load_detector_weights(model, half, source="half.pth")
    assert report.converted == ["rpn.head.conv.0.0.weight float16->float32"]
    assert "converted to the model's dtype 1 ['rpn.head.conv.0.0.weight float16->float32']" in report.summary()


@pytest.mark.parametrize("name", ["model.onnx", "model.pt"])
def test_an_onnx_model_is_named_never_with_weights_only_advice(tmp_path: Path, name: str):
    path = identity_onnx_model(tmp_path / name)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == (
        f"cannot read checkpoint {path}: it is an ONNX model, not a visiontune checkpoint (expected the last.pt / "
        "best.pt of a visiontune run); visiontune predict runs it: checkpoint=<model>.onnx")
    with pytest.raises(WeightLoadError) as caught_weights:
        read_weights(path)
    assert str(caught_weights.value) == (f"cannot read {path}: it is an ONNX model; expected weights: a PyTorch state "
                                         "dict (.pth/.pt), .safetensors or a MindSpore .ckpt")


def test_a_file_of_pickled_objects_is_named_never_with_weights_only_advice(tmp_path: Path):
    import argparse

    path = tmp_path / "old.pt"
    torch.save({"args": argparse.Namespace(lr=0.1), "model": {"w": torch.ones(1)}}, path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message == (f"cannot read checkpoint {path}: it is a PyTorch file holding pickled Python objects "
                       "(argparse.Namespace; not unpickled, as that can run code), not a visiontune checkpoint "
                       "(expected the last.pt / best.pt of a visiontune run)")
    with pytest.raises(WeightLoadError) as caught_weights:
        read_weights(path)
    assert "weights_only" not in message and "weights_only" not in str(caught_weights.value)


@pytest.mark.parametrize("content, what", [
    (b"hello, not weights", "not a PyTorch file (it starts with b'hello, n')"),
    ("safetensors", "a safetensors file"),
    ("mindspore", "a MindSpore checkpoint"),
])
def test_other_files_given_as_a_checkpoint_say_what_they_are(tmp_path: Path, fixtures_dir: Path, content, what):
    path = tmp_path / "last.pt"
    if content == "safetensors":
        save_file({"w": torch.ones(2)}, str(path))
    elif content == "mindspore":
        path.write_bytes((fixtures_dir / "mindspore" / "retinaface_mobilenet025.ckpt").read_bytes())
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == (f"cannot read checkpoint {path}: it is {what}, not a visiontune checkpoint "
                                 "(expected the last.pt / best.pt of a visiontune run)")


def test_a_truncated_checkpoint_is_damaged_not_foreign(tmp_path: Path):
    path = atomic_save({"model": {"w": torch.ones(64)}, "config": {}, "version": "0"}, tmp_path / "last.pt")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"^cannot read checkpoint .*last.pt: it is a damaged PyTorch file "
                                              r"\(RuntimeError: [^\n]+\)$") as caught:
        load_checkpoint(path)
    assert "not a visiontune checkpoint" not in str(caught.value) and "weights_only" not in str(caught.value)


def test_the_mindspore_reader_names_an_onnx_model(tmp_path: Path):
    from visiontune.interop.mindspore import NotAMindSporeCheckpointError

    path = identity_onnx_model(tmp_path / "model.ckpt")
    with pytest.raises(NotAMindSporeCheckpointError, match=r"model.ckpt is an ONNX model, not a MindSpore checkpoint"):
        read_mindspore_checkpoint(path)
