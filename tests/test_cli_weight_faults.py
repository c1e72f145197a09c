"""``eval`` / ``predict`` / ``train`` given weights that are wrong in a way names and shapes do not show: integer or
NaN tensors, a file that is no checkpoint (ONNX, pickled objects), a checkpoint of another task. Each is one line,
exit status 2, naming the file (and the tensor or the tasks); never torch's advice to load with weights_only=False."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from tests.conftest import REPO_ROOT
from tests.helpers import identity_onnx_model
from visiontune.cli import main
from visiontune.config import config_to_dict, load_config
from visiontune.engine.checkpoint import atomic_save
from visiontune.tasks import create_task

FACE_PRESET = REPO_ROOT / "configs" / "face_detection" / "retinaface_mobilenet025_finetune.yaml"
BUILD = ["task=classification", "model.name=test_resnet"]


def _settings(shapes: Path) -> list[str]:
    return ["device=cpu", f"data.root={shapes}", "data.image_size=32", "data.crop_pct=1.0", "data.num_workers=0",
            "data.batch_size=6", "train.progress=false"]


@pytest.fixture(scope="module")
def checkpoint_state(tiny_shapes: Path) -> dict:
    """A visiontune checkpoint dict of a ``test_resnet`` classifier for the tiny shapes classes (random weights)."""
    config = load_config(None, [*BUILD, *_settings(tiny_shapes)])
    task = create_task(config)
    task.build_dataset(config.data.train_split, train=True)  # the class names of the meta
    torch.manual_seed(0)
    model = task.build_model(load_weights=False)
    return {"model": model.state_dict(), "config": config_to_dict(config), "meta": task.state_for_checkpoint(),
            "epoch": 1, "version": "test"}


@pytest.fixture()
def best(checkpoint_state: dict, tmp_path: Path) -> Path:
    return atomic_save(checkpoint_state, tmp_path / "best.pt")


def _plain_weights(checkpoint_state: dict) -> dict[str, torch.Tensor]:
    return {name.removeprefix("net."): value.clone() for name, value in checkpoint_state["model"].items()}


def _error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "weights_only" not in err
    return err.splitlines()[-1]


def test_eval_refuses_an_int32_conv_weight_in_safetensors(checkpoint_state, tiny_shapes, tmp_path, capsys):
    weights = _plain_weights(checkpoint_state)
    weights["conv1.0.weight"] = (weights["conv1.0.weight"] * 100).to(torch.int32)
    path = tmp_path / "int.safetensors"
    save_file(weights, str(path))
    assert main(["eval", *BUILD, *_settings(tiny_shapes), f"checkpoint={path}", f"project={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "100.0%" not in err and "Traceback" not in err  # no load report of a "successful" load
    assert err.splitlines()[-1] == (
        f"visiontune eval: error: {path}: tensor 'conv1.0.weight' is int32 in the file but float32 in the model: "
        "integer values cannot be floating-point weights (a wrongly converted file?); not converting them")


def test_predict_faces_refuses_an_int32_tensor_in_a_mindspore_ckpt(fixtures_dir, tmp_path, capsys):
    from visiontune.interop.mindspore import read_mindspore_checkpoint, save_mindspore_checkpoint

    tensors = read_mindspore_checkpoint(fixtures_dir / "mindspore" / "retinaface_mobilenet025.ckpt")
    name = next(key for key, value in tensors.items() if value.ndim == 4)
    tensors[name] = tensors[name].astype("int32")
    path = tmp_path / "int.ckpt"
    save_mindspore_checkpoint(path, tensors)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(photo)
    assert main(["predict", "-c", str(FACE_PRESET), f"checkpoint={path}", f"source={photo}",
                 f"output={tmp_path / 'out'}", "train.progress=false"]) == 2
    line = _error(capsys)
    assert line.startswith(f"visiontune predict: error: {path}: tensor '")
    assert line.endswith("' is int32 in the file but float32 in the model: integer values cannot be floating-point "
                         "weights (a wrongly converted file?); not converting them")
    assert not (tmp_path / "out").exists()


def test_eval_names_the_nan_tensor_of_plain_weights(checkpoint_state, tiny_shapes, tmp_path, capsys):
    weights = _plain_weights(checkpoint_state)
    weights["conv1.0.weight"].view(-1)[:8] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save(weights, path)
    assert main(["eval", *BUILD, *_settings(tiny_shapes), f"checkpoint={path}", f"project={tmp_path}"]) == 2
    count = weights["conv1.0.weight"].numel()
    assert _error(capsys) == (
        f"visiontune eval: error: {path}: 1 tensor holds NaN or infinite values: 'conv1.0.weight' (8 NaN of {count} "
        "values); these weights are broken (a diverged training run?): not loading them")


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_a_visiontune_checkpoint_with_nan_is_refused(checkpoint_state, tmp_path, capsys, command):
    state = dict(checkpoint_state)
    state["model"] = dict(state["model"])
    state["model"]["net.fc.weight"] = state["model"]["net.fc.weight"].clone()
    state["model"]["net.fc.weight"][0, :3] = float("nan")
    path = atomic_save(state, tmp_path / "last.pt")
    args = ["train", "--resume", str(path)] if command == "resume" else ["eval", f"checkpoint={path}"]
    assert main([*args, f"project={tmp_path / 'runs'}"]) == 2
    count = state["model"]["net.fc.weight"].numel()
    assert _error(capsys) == (
        f"visiontune {args[0]}: error: {path} (model): 1 tensor holds NaN or infinite values: 'net.fc.weight' (3 NaN "
        f"of {count} values); these weights are broken (a diverged training run?): not loading them")
    assert not (tmp_path / "runs").exists()


def test_resume_and_eval_of_an_onnx_model_say_what_it_is(tiny_shapes, tmp_path, capsys):
    path = identity_onnx_model(tmp_path / "model.onnx")
    assert main(["train", "--resume", str(path)]) == 2
    assert _error(capsys) == (
        f"visiontune train: error: cannot read checkpoint {path}: it is an ONNX model, not a visiontune checkpoint "
        "(expected the last.pt / best.pt of a visiontune run); visiontune predict runs it: checkpoint=<model>.onnx")
    assert main(["eval", f"checkpoint={path}"]) == 2
    assert _error(capsys) == (
        f"visiontune eval: error: {path} is an ONNX model: expected a visiontune checkpoint (runs/.../best.pt) or "
        "plain weights (.pth/.pt, .safetensors, .ckpt); visiontune predict runs ONNX models")
    assert main(["train", *BUILD, *_settings(tiny_shapes), f"model.checkpoint={path}", f"project={tmp_path}"]) == 2
    assert _error(capsys) == (
        f"visiontune train: error: cannot read {path}: it is an ONNX model; expected weights: a PyTorch state dict "
        "(.pth/.pt), .safetensors or a MindSpore .ckpt")


def test_a_torch_file_of_pickled_objects_is_not_a_checkpoint(tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    torch.save({"args": argparse.Namespace(lr=0.1), "model": timm.create_model("test_resnet").state_dict()}, path)
    what = "a PyTorch file holding pickled Python objects (argparse.Namespace; not unpickled, as that can run code)"
    assert main(["train", "--resume", str(path)]) == 2
    assert _error(capsys) == (f"visiontune train: error: cannot read checkpoint {path}: it is {what}, not a "
                              "visiontune checkpoint (expected the last.pt / best.pt of a visiontune run)")
    assert main(["eval", f"checkpoint={path}"]) == 2  # not "holds plain weights": it holds no readable weights
    assert _error(capsys) == (f"visiontune eval: error: cannot read {path}: it is {what}; expected a visiontune "
                              "checkpoint (runs/.../best.pt) or plain weights (.pth/.pt, .safetensors, .ckpt)")
    assert main(["convert", str(path), str(tmp_path / "out.ckpt"), "--arch", "resnet50"]) == 2
    assert _error(capsys) == (f"visiontune convert: error: cannot read {path}: it is {what}; expected a visiontune "
                              "checkpoint or a PyTorch state dict")


def test_a_safetensors_file_named_pt_is_not_a_checkpoint_to_resume(tmp_path, capsys):
    path = tmp_path / "last.pt"
    save_file({"w": torch.ones(2)}, str(path))
    assert main(["train", "--resume", str(path)]) == 2
    assert _error(capsys) == (f"visiontune train: error: cannot read checkpoint {path}: it is a safetensors file, not "
                              "a visiontune checkpoint (expected the last.pt / best.pt of a visiontune run)")


def test_eval_with_another_task_is_a_task_mismatch(best, tmp_path, capsys):
    assert main(["eval", f"checkpoint={best}", "task=face_detection", f"output={tmp_path / 'out'}"]) == 2
    assert _error(capsys) == (
        f"visiontune eval: error: task mismatch: {best} holds a classification model, but task=face_detection was "
        "asked for; a checkpoint runs as the task it was trained for: leave out the task (or the config) of another "
        "task, or give a face_detection checkpoint")
    assert not (tmp_path / "out").exists()


def test_predict_with_the_config_of_another_task_is_a_task_mismatch(best, tmp_path, capsys):
    assert main(["predict", "-c", str(FACE_PRESET), f"checkpoint={best}", f"source={tmp_path}",
                 f"output={tmp_path / 'out'}"]) == 2
    assert _error(capsys) == (
        f"visiontune predict: error: task mismatch: {best} holds a classification model, but task=face_detection was "
        f"asked for (by -c {FACE_PRESET.resolve()} or task=); a checkpoint runs as the task it was trained for: "
        "leave out the task (or the config) of another task, or give a face_detection checkpoint")


def test_model_settings_that_the_checkpoint_overrides_are_named_in_one_warning(best, tmp_path, capsys):
    output = tmp_path / "out"
    assert main(["eval", f"checkpoint={best}", "model.name=resnet18", "model.drop_rate=0.5",
                 "model.min_loaded_fraction=0.9", f"output={output}"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("ignored ")]
    assert warnings == [f"ignored model.drop_rate=0.5 (the checkpoint's: 0.0), model.name='resnet18' (the "
                        f"checkpoint's: 'test_resnet'): {best} fixes the model section"]  # 0.9: the same, not named
    assert (output / "metrics.json").is_file()
    # the checkpoint given as model.checkpoint= is the weights, not an ignored setting; the same task is fine
    assert main(["eval", f"model.checkpoint={best}", "task=classification", f"output={tmp_path / 'again'}"]) == 0
    assert "ignored " not in capsys.readouterr().err
