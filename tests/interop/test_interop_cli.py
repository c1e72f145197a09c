"""``visiontune convert`` in both directions, on the real MindSpore checkpoints of ``shared/fixtures/mindspore``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from visiontune.cli import main
from visiontune.cli.interop import ConvertError, export_mindspore_checkpoint
from visiontune.config.loader import config_to_dict
from visiontune.config.schema import Config, ModelConfig
from visiontune.interop.mindspore import (
    convert_mindspore_state_dict,
    read_mindspore_checkpoint,
    save_mindspore_checkpoint,
    to_mindspore_state_dict,
)
from visiontune.models.classification import ImageClassifier, load_classifier_weights
from visiontune.models.loading import read_weights
from visiontune.models.retinaface.factory import create_retinaface


@pytest.fixture(scope="module")
def mindspore_fixtures(fixtures_dir: Path) -> Path:
    return fixtures_dir / "mindspore"


def visiontune_checkpoint(path: Path, *, task: str, model_name: str, model: dict[str, torch.Tensor],
                          ema: dict[str, torch.Tensor] | None = None) -> Path:
    """A checkpoint laid out like the trainer's ``best.pt`` (the parts ``convert`` reads)."""
    config = Config(task=task, model=ModelConfig(name=model_name))
    torch.save({"version": "test", "task": task, "model": model, "ema": ema, "config": config_to_dict(config),
                "epoch": 1}, path)
    return path


def mindcv_classifier(num_classes: int) -> ImageClassifier:
    return ImageClassifier(timm.create_model("mobilenetv2_100", pretrained=False, num_classes=num_classes)).eval()


# --------------------------------------------------------------------------------------------------
# MindSpore -> PyTorch
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_convert_writes_weights_that_reproduce_mindspore_logits(mindspore_fixtures, tmp_path, capsys, suffix):
    source = mindspore_fixtures / "mobilenet_v2_100.ckpt"
    output = tmp_path / f"mobilenet_v2_100{suffix}"
    assert main(["convert", str(source), "--arch", "mobilenet_v2_100", "-o", str(output)]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "converted 262 tensors of mobilenet_v2_100 to timm mobilenetv2_100" in out
    assert (out + captured.err).count("converted 262 tensors") == 1  # said once
    assert "mapped 262:" in out and "  features.0.weight -> conv_stem.weight" in out and "skipped 0:" in out
    assert f"wrote {output}; fine-tune from it with model.name=mobilenetv2_100" in out
    assert [path.name for path in tmp_path.iterdir()] == [output.name]  # no temporary file left behind

    expected, _ = convert_mindspore_state_dict(read_mindspore_checkpoint(source), "mobilenet_v2_100")
    written = read_weights(output)
    assert sorted(written) == sorted(expected)  # safetensors stores the names sorted
    assert all(torch.equal(written[name], expected[name]) for name in expected)

    model = timm.create_model("mobilenetv2_100", pretrained=False, num_classes=1000).eval()
    model.load_state_dict(written, strict=True)
    with torch.no_grad():
        logits = model(torch.from_numpy(np.load(mindspore_fixtures / "mobilenet_v2_100.input.npy"))).numpy()
    reference = np.load(mindspore_fixtures / "mobilenet_v2_100.logits.npy")
    assert np.abs(logits - reference).max() / np.abs(reference).max() < 1e-4


def test_convert_lists_skipped_training_state_and_stripped_prefixes(mindspore_fixtures, tmp_path, capsys):
    tensors = read_mindspore_checkpoint(mindspore_fixtures / "retinaface_mobilenet025.ckpt")
    training = {f"network.{name}": array for name, array in tensors.items()}
    training["moments.network.classhead.0.conv1x1.weight"] = np.zeros_like(tensors["classhead.0.conv1x1.weight"])
    training["learning_rate"] = np.array(0.01, dtype=np.float32)
    training["global_step"] = np.array([7], dtype=np.int32)
    source = save_path = tmp_path / "RetinaFace-3_100.ckpt"
    save_mindspore_checkpoint(save_path, training)

    output = tmp_path / "retinaface.safetensors"
    assert main(["convert", str(source), "--arch", "retinaface_mobilenet0.25", "-o", str(output), "--list"]) == 0
    out = capsys.readouterr().out
    assert "  moments.network.classhead.0.conv1x1.weight: Momentum optimizer state" in out
    assert "  learning_rate: training state, not a model weight" in out
    assert "  global_step: training state, not a model weight" in out
    assert "  network.base.fc.weight: ImageNet classifier of the backbone; the detector does not use it" in out
    assert f"stripped training-wrapper prefixes ['network.'] from {len(tensors)} names" in out
    mapped = re.findall(r"^  (network\.\S+) -> (\S+)$", out, flags=re.MULTILINE)  # --list prints every mapping
    assert len(mapped) == len(tensors) - 2  # all but base.fc.weight / base.fc.bias

    model = create_retinaface("mobilenet0.25").eval()
    model.load_state_dict(read_weights(output), strict=True)


@pytest.mark.parametrize("arguments, message", [
    (["--arch", "resnet50", "-o", "out.pth"], r"262 of 262 parameter names do not fit architecture 'resnet50'.*"
                                               r"fit the rules of 'mobilenet_v2_100'"),
    (["-o", "out.pth"], r"needs --arch \(one of convnext_tiny, mobilenet_v2_100, "),
    (["--arch", "mobilenet_v2", "-o", "out.pth"], r"unknown MindSpore architecture 'mobilenet_v2'; did you mean"),
    (["--arch", "mobilenet_v2_100", "-o", "out.onnx"], r"-o out.onnx: converting to pytorch writes "
                                                       r"\.safetensors / \.pth / \.pt / \.bin files"),
    (["--arch", "mobilenet_v2_100", "-o", "out.pth", "--ema"], r"--ema applies to --to mindspore"),
    # options are checked like config keys

    (["out.pth", "arh=mobilenet_v2_100"], r"unknown convert option 'arh' \(did you mean 'arch'\?\)"),
    (["out.pth", "convert.arh=x"], r"unknown config key 'convert.arh'.*did you mean 'convert.arch'"),
    (["out.pth", "ema=maybe"], r"convert.ema: expected bool \(true/false\), got 'maybe'"),
    (["out.pth", "to=tensorflow"], r"convert.to: expected 'pytorch' \| 'mindspore' \| null, got 'tensorflow'"),
    (["out.pth", "family=mindcv"], r"unknown convert option 'family'"),
    (["out.pth", "optim.lr=0.1"], r"optim.lr: visiontune convert reads no other settings; only convert.\* apply"),
    (["out.pth", "arch=resnet50", "--arch", "resnet50"], r"convert option 'arch' is given twice"),
    (["out.pth", "-o", "other.pth", "arch=resnet50"], r"give the output once: out.pth or -o other.pth"),
    (["arch=mobilenet_v2_100"], r"give the output file: visiontune convert IN OUT \(or -o OUT\)"),
])
def test_convert_errors_name_the_problem(mindspore_fixtures, tmp_path, monkeypatch, capsys, arguments, message):
    monkeypatch.chdir(tmp_path)
    assert main(["convert", str(mindspore_fixtures / "mobilenet_v2_100.ckpt"), *arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith("visiontune convert: error: ")
    assert re.search(message, error), error
    assert list(tmp_path.iterdir()) == []


def test_convert_rejects_missing_and_non_mindspore_files(tmp_path, capsys):
    missing = tmp_path / "missing.ckpt"
    assert main(["convert", str(missing), "--arch", "resnet50", "-o", str(tmp_path / "out.pth")]) == 2
    assert f"error: checkpoint not found: {missing}" in capsys.readouterr().err

    pytorch_file = tmp_path / "weights.ckpt"
    torch.save({"weight": torch.zeros(2)}, pytorch_file)
    assert main(["convert", str(pytorch_file), "--arch", "resnet50", "-o", str(tmp_path / "out.pth")]) == 2
    assert "is a zip archive (PyTorch .pt/.pth files written by torch.save" in capsys.readouterr().err

    same = tmp_path / "same.pth"
    torch.save({"weight": torch.zeros(2)}, same)
    with pytest.raises(ConvertError, match=r"-o .*same.pth: converting to mindspore writes \.ckpt files"):
        export_mindspore_checkpoint(same, same)


# --------------------------------------------------------------------------------------------------
# model.checkpoint: a MindSpore .ckpt in classification fine-tuning
# --------------------------------------------------------------------------------------------------


def test_classifier_fine_tuning_loads_mindcv_checkpoint_with_new_head(mindspore_fixtures):
    source = mindspore_fixtures / "mobilenet_v2_100.ckpt"
    model = mindcv_classifier(num_classes=3)
    report = load_classifier_weights(model, str(source), arch="mobilenetv2_100")
    assert report.reinitialized == [("classifier.weight", (1000, 1280), (3, 1280)), ("classifier.bias", (1000,), (3,))]
    assert report.missing == [] and report.unexpected == []
    assert (report.backbone_loaded, report.backbone_total) == (260, 260)
    converted, _ = convert_mindspore_state_dict(read_mindspore_checkpoint(source), "mobilenet_v2_100")
    state = model.net.state_dict()
    assert all(torch.equal(state[name], converted[name]) for name in converted if not name.startswith("classifier."))


# --------------------------------------------------------------------------------------------------
# visiontune -> MindSpore
# --------------------------------------------------------------------------------------------------


def test_export_round_trips_a_mindcv_checkpoint_exactly(mindspore_fixtures, tmp_path, capsys):
    """MindSpore .ckpt -> visiontune checkpoint -> MindSpore .ckpt gives back the very same tensors."""
    source = mindspore_fixtures / "mobilenet_v2_100.ckpt"
    model = mindcv_classifier(num_classes=1000)
    load_classifier_weights(model, str(source), arch="mobilenet_v2_100")
    checkpoint = visiontune_checkpoint(tmp_path / "best.pt", task="classification", model_name="mobilenetv2_100",
                                       model=model.state_dict())
    output = tmp_path / "exported.ckpt"
    assert main(["convert", str(checkpoint), "-o", str(output)]) == 0  # direction and arch inferred
    out = capsys.readouterr().out
    assert "exported 262 tensors with the parameter names of MindCV mobilenet_v2_100" in out
    assert "dropped 52 BatchNorm num_batches_tracked counters" in out and "classifier:" not in out

    original = read_mindspore_checkpoint(source)
    exported = read_mindspore_checkpoint(output)
    assert sorted(exported) == sorted(original)
    for name, array in original.items():
        assert exported[name].dtype == array.dtype and np.array_equal(exported[name], array), name


def test_export_fine_tuned_classifier_keeps_mindcv_names(mindspore_fixtures, tmp_path, capsys):
    original = read_mindspore_checkpoint(mindspore_fixtures / "mobilenet_v2_100.ckpt")
    model = mindcv_classifier(num_classes=3)
    load_classifier_weights(model, str(mindspore_fixtures / "mobilenet_v2_100.ckpt"), arch="mobilenetv2_100")
    with torch.no_grad():  # stand-in for fine-tuning: every tensor changes
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    ema = {name: tensor + 1.0 if tensor.is_floating_point() else tensor for name, tensor in model.state_dict().items()}
    checkpoint = visiontune_checkpoint(tmp_path / "best.pt", task="classification", model_name="mobilenetv2_100",
                                       model=model.state_dict(), ema=ema)
    output = tmp_path / "fine_tuned.ckpt"
    assert main(["convert", str(checkpoint), "--to", "mindspore", "--arch", "mobilenet_v2_100",
                 "-o", str(output)]) == 0
    out = capsys.readouterr().out
    assert ("classifier: 3 classes (MindCV's ImageNet model has 1000): create the MindCV model with num_classes=3"
            in out)

    written = read_mindspore_checkpoint(output)
    assert list(written) == list(to_mindspore_state_dict(model.net.state_dict(), "mobilenet_v2_100"))
    assert set(written) == set(original)
    different_shapes = {name for name in original if written[name].shape != original[name].shape}
    assert {name: written[name].shape for name in different_shapes} == {"classifier.1.weight": (3, 1280),
                                                                          "classifier.1.bias": (3,)}

    # read back through model.checkpoint's reader into a fresh timm model: identical outputs
    fresh = timm.create_model("mobilenetv2_100", pretrained=False, num_classes=3).eval()
    fresh.load_state_dict(read_weights(output, arch="mobilenetv2_100"), strict=True)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(fresh(images), model.net(images))

    ema_output = tmp_path / "ema.ckpt"
    export = export_mindspore_checkpoint(checkpoint, ema_output, use_ema=True)
    assert export.weights == "ema" and export.num_classes == 3 and export.architecture == "mobilenet_v2_100"
    ema_tensors = read_mindspore_checkpoint(ema_output)
    assert np.array_equal(ema_tensors["features.0.weight"], written["features.0.weight"] + 1.0)


def test_export_retinaface_round_trip(mindspore_fixtures, tmp_path, capsys):
    source = mindspore_fixtures / "retinaface_mobilenet025.ckpt"
    original = read_mindspore_checkpoint(source)
    state_dict, _ = convert_mindspore_state_dict(original, "retinaface_mobilenet025")
    model = create_retinaface("mobilenet0.25").eval()
    model.load_state_dict(state_dict, strict=True)
    checkpoint = visiontune_checkpoint(tmp_path / "last.pt", task="face_detection",
                                       model_name="retinaface_mobilenet0.25", model=model.state_dict())
    output = tmp_path / "retinaface.ckpt"
    assert main(["convert", str(checkpoint), "-o", str(output)]) == 0
    out = capsys.readouterr().out
    assert "with the parameter names of MindFace RetinaFace (backbone mobilenet025)" in out
    assert "MindFace's backbone classifier is not part of the detector" in out

    exported = read_mindspore_checkpoint(output)
    assert set(exported) == {name for name in original if not name.startswith("base.fc.")}
    assert all(np.array_equal(exported[name], original[name]) for name in exported)

    fresh = create_retinaface("mobilenet0.25").eval()
    fresh.load_state_dict(read_weights(output, arch="retinaface_mobilenet0.25"), strict=True)
    images = torch.from_numpy(np.load(mindspore_fixtures / "retinaface_mobilenet025.input.npy"))
    with torch.no_grad():
        for ours, theirs in zip(fresh.forward_raw(images), model.forward_raw(images)):
            assert torch.equal(ours, theirs)


def test_export_errors(tmp_path, capsys):
    weights = tmp_path / "weights.pth"
    torch.save(mindcv_classifier(num_classes=2).net.state_dict(), weights)
    assert main(["convert", str(weights), "-o", str(tmp_path / "out.ckpt")]) == 2
    assert "holds plain weights without a config: give the architecture with --arch" in capsys.readouterr().err
    assert main(["convert", str(weights), "--arch", "retinaface_mobilenet025", "-o", str(tmp_path / "out.ckpt")]) == 2
    assert "parameter names do not fit architecture 'retinaface_mobilenet025'" in capsys.readouterr().err
    assert main(["convert", str(weights), "--arch", "mobilenet_v2_100", "--ema", "-o", str(tmp_path / "o.ckpt")]) == 2
    assert "--ema needs a visiontune checkpoint with EMA weights" in capsys.readouterr().err
    checkpoint = visiontune_checkpoint(tmp_path / "best.pt", task="classification", model_name="mobilenetv2_100",
                                       model={"net." + k: v for k, v in torch.load(weights).items()})
    assert main(["convert", str(checkpoint), "--ema", "-o", str(tmp_path / "out.ckpt")]) == 2
    assert "has no EMA weights (trained without train.ema=true); drop --ema" in capsys.readouterr().err
    segmentation = visiontune_checkpoint(tmp_path / "seg.pt", task="instance_segmentation",
                                         model_name="maskrcnn_resnet50_fpn", model={"x": torch.zeros(1)})
    assert main(["convert", str(segmentation), "--arch", "resnet50", "-o", str(tmp_path / "out.ckpt")]) == 2
    assert "is a instance_segmentation checkpoint; MindSpore export supports" in capsys.readouterr().err
    assert not (tmp_path / "out.ckpt").exists() and not (tmp_path / "o.ckpt").exists()
    assert main(["convert", str(weights), "--arch", "mobilenet_v2_100", "-o", str(tmp_path / "w2.ckpt")]) == 0
    assert "read " in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# The whole workflow: fine-tune from a MindCV .ckpt, export the result to MindSpore
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_from_mindspore_checkpoint_then_export(mindspore_fixtures, tmp_path, capsys):
    from tests.helpers import shapes
    from visiontune.engine.checkpoint import load_checkpoint

    data = shapes(tmp_path / "shapes", train_per_class=2, val_per_class=1, seed=3)
    source = mindspore_fixtures / "mobilenet_v2_100.ckpt"
    assert main(["train", "task=classification", "model.name=mobilenetv2_100", f"model.checkpoint={source}",
                 f"data.root={data}", f"project={tmp_path / 'runs'}", "name=mindspore", "data.image_size=32",
                 "data.crop_pct=1.0", "data.batch_size=6", "data.num_workers=0", "train.epochs=1",
                 "train.progress=false", "train.plots=false"]) == 0
    run = tmp_path / "runs" / "classification" / "mindspore"
    state = load_checkpoint(run / "best.pt")
    load_report = state["meta"]["load_report"]
    assert load_report["reinitialized"] == ["classifier.weight", "classifier.bias"]
    assert load_report["backbone_fraction"] == 1.0 and load_report["missing"] == []
    capsys.readouterr()

    output = tmp_path / "deploy.ckpt"
    assert main(["convert", str(run / "best.pt"), "--to", "mindspore", "-o", str(output)]) == 0
    assert "classifier: 3 classes" in capsys.readouterr().out
    net = timm.create_model("mobilenetv2_100", pretrained=False, num_classes=3).eval()
    net.load_state_dict({name[len("net."):]: tensor for name, tensor in state["model"].items()}, strict=True)
    fresh = timm.create_model("mobilenetv2_100", pretrained=False, num_classes=3).eval()
    fresh.load_state_dict(read_weights(output, arch="mobilenetv2_100"), strict=True)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(fresh(images), net(images))


def test_convert_takes_the_output_and_options_as_config_keys(mindspore_fixtures, tmp_path, capsys):
    source = mindspore_fixtures / "mobilenet_v2_100.ckpt"
    output = tmp_path / "keys.safetensors"
    assert main(["convert", str(source), str(output), "arch=mobilenet_v2_100", "convert.list_all=true"]) == 0
    out = capsys.readouterr().out
    assert "mapped 262:" in out and "more; --list prints all" not in out  # list_all=true: every tensor
    flags = tmp_path / "flags.safetensors"
    assert main(["convert", str(source), "--arch", "mobilenet_v2_100", "-o", str(flags)]) == 0
    assert read_weights(output).keys() == read_weights(flags).keys()


def test_import_config_options_are_config_keys(tmp_path, capsys):
    source = tmp_path / "mindcv.yaml"
    source.write_text("model: mobilenet_v2_100\n")
    assert main(["import-config", str(source), "famly=mindcv"]) == 2
    assert "unknown import-config option 'famly' (did you mean 'family'?)" in capsys.readouterr().err
    assert main(["import-config", str(source), "family=mindcv", "--family", "mindcv"]) == 2
    assert "import-config option 'family' is given twice" in capsys.readouterr().err
