"""The classification workflow from the command line: check-data -> train -> eval -> predict."""

import csv
import json
import re
import shutil

import pytest

from visiontune.cli import main


@pytest.fixture(scope="module")
def shapes(tiny_shapes):
    return tiny_shapes


def common(shapes, tmp_path):
    return ["device=cpu", f"data.root={shapes}", f"project={tmp_path}", "model.name=test_resnet", "data.image_size=32",
            "data.crop_pct=1.0", "data.batch_size=6", "data.num_workers=0", "train.progress=false"]


def test_train_eval_predict(shapes, tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text("task: classification\nname: cli\noptim:\n  name: adamw\n  lr: 0.003\ntrain:\n  epochs: 2\n")
    assert main(["train", "-c", str(config), *common(shapes, tmp_path), "train.ema=true"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "classification" / "cli"
    assert f"run directory: {run}" in out and "val_top1" in out
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]  # the baseline (train.eval_before), then 2 epochs

    assert main(["eval", f"checkpoint={run / 'last.pt'}", *common(shapes, tmp_path)]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((run / "eval-val" / "metrics.json").read_text())
    assert metrics["val_top1"] == pytest.approx(float(rows[-1]["val_top1"]))  # same numbers as in training
    assert f"{metrics['val_top1']:.4f}" in out
    for name in ("confusion_matrix.csv", "confusion_matrix.png", "per_class.csv"):
        assert (run / "eval-val" / name).is_file()

    out_dir = tmp_path / "pred"
    assert main(["predict", f"checkpoint={run / 'best.pt'}", f"source={shapes / 'val'}", f"output={out_dir}"]) == 0
    predictions = list(csv.DictReader((out_dir / "predictions.csv").open()))
    assert len(predictions) == 9
    assert {p["label1"] for p in predictions} <= {p.name for p in (shapes / "train").iterdir()}
    assert 0.0 <= float(predictions[0]["prob1"]) <= 1.0
    assert len((out_dir / "pred.txt").read_text().splitlines()) == 1 + 9  # the header, then one line per image

    single = tmp_path / "single"
    image = next(next((shapes / "val").iterdir()).iterdir())
    assert main(["predict", f"checkpoint={run / 'best.pt'}", f"source={image}", f"output={single}"]) == 0
    assert not (single / "pred.txt").exists() and len((single / "predictions.csv").read_text().splitlines()) == 2


def test_check_data_reports_corrupt_image_and_exits_nonzero(shapes, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(shapes, data)
    assert main(["check-data", f"data.root={data}", "task=classification"]) == 0
    assert "circle" in capsys.readouterr().out
    bad = next((data / "train").iterdir()) / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert main(["check-data", f"data.root={data}", "task=classification"]) == 1
    assert "broken.png" in capsys.readouterr().out


def test_training_with_corrupt_image(shapes, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(shapes, data)
    for name in ("broken1.png", "broken2.png"):  # 18 + 2 images, batch 5: nothing dropped by drop_last
        (next((data / "train").iterdir()) / name).write_bytes(b"not an image")
    args = ["train", "task=classification", *common(data, tmp_path), "train.epochs=1", "data.batch_size=5"]
    assert main(args) == 2
    assert "broken" in capsys.readouterr().err
    assert main([*args, "data.on_corrupt=skip", "name=skip"]) == 0
    log = capsys.readouterr().err  # the CLI logs to stderr
    assert "skipping corrupt image" in log and "broken1.png" in log and "broken2.png" in log
    assert "2 corrupt training images were skipped" in log

    with pytest.raises(SystemExit):  # argparse: a missing command
        main([])


def test_batch_larger_than_split(shapes, tmp_path, capsys):
    assert main(["train", *common(shapes, tmp_path), "data.batch_size=64"]) == 2
    assert "fewer than data.batch_size=64" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["train", "optim.lrr=1"], r"unknown config key 'optim.lrr'.*did you mean 'optim.lr'"),
    (["train", "data.root=/definitely/missing"], r"data folder not found: /definitely/missing/train"),
    (["train", "model.name=resnet5O", "data.root=SHAPES"], r"unknown timm model 'resnet5O'.*did you mean"),
    (["eval", "checkpoint=/nope/best.pt"], r"checkpoint not found: /nope/best.pt"),
])
def test_bad_input_messages(args, message, capsys, shapes):
    args = [arg.replace("SHAPES", str(shapes)) for arg in args]
    assert main(args) == 2
    import re
    assert re.search(message, capsys.readouterr().err), message


def test_empty_class_folder_is_an_error(shapes, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(shapes, data)
    (data / "train" / "empty").mkdir()
    assert main(["train", *common(data, tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "empty class folder" in err and "empty" in err


def test_wrong_arch_checkpoint(shapes, tmp_path, capsys):
    import timm
    import torch

    path = tmp_path / "mnv2.pth"
    torch.save(timm.create_model("mobilenetv2_050", num_classes=3).state_dict(), path)
    assert main(["train", *common(shapes, tmp_path), f"model.checkpoint={path}", "train.epochs=1"]) == 2
    assert "different architecture" in capsys.readouterr().err


def test_pretrained_offline_message(shapes, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    assert main(["train", *common(shapes, tmp_path), "model.name=resnet10t", "model.pretrained=true"]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE is set and the pretrained weights of 'resnet10t' are not cached" in err
    assert "model.checkpoint=<file>" in err and "model.pretrained=false" in err


def test_resume_applies_the_keys_given_also_when_they_equal_the_defaults(shapes, tmp_path, capsys):
    """`train --resume last.pt train.epochs=10 optim.lr=0.01`: 10 and 0.01 are the schema defaults, and win."""
    import yaml

    assert main(["train", *common(shapes, tmp_path), "name=resume", "train.epochs=1", "optim.lr=0.002",
                 "train.plots=false", "train.report=false"]) == 0
    run = tmp_path / "classification" / "resume"
    # 18 images, batch 6: 3 steps an epoch; max_steps stops the resumed run after its second epoch
    assert main(["train", "--resume", str(run / "last.pt"), "train.epochs=10", "optim.lr=0.01",
                 "train.max_steps=6"]) == 0
    capsys.readouterr()
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert (resolved["train"]["epochs"], resolved["optim"]["lr"]) == (10, 0.01)
    assert resolved["train"]["plots"] is False  # not given again: the stored value


@pytest.mark.parametrize("args, message", [
    (["train.metric=bogus"], "visiontune train: error: train.metric: 'bogus' is not a metric of task "
                             "'classification'; metrics: top1, top5, macro_precision, macro_recall, macro_f1"),
    (["device=bogus"], "visiontune train: error: device: expected auto, cpu, cuda, cuda:N or mps, got 'bogus' "
                       "(override 'device=bogus')"),
    (["data.label_smoothing=2"], "visiontune train: error: data.label_smoothing: expected a number in [0, 1), got "
                                 "2.0 (override 'data.label_smoothing=2')"),
    (["data.image_size=100000000"], "visiontune train: error: data.image_size: expected an integer in [1, 8192], "
                                    "got 100000000 (override 'data.image_size=100000000')"),
])
def test_bad_settings_fail_before_training_in_one_line(args, message, shapes, tmp_path, capsys):
    assert main(["train", *common(shapes, tmp_path), "name=bad", *args]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == message and "Traceback" not in err
    assert not (tmp_path / "classification").exists()  # nothing written: it failed before the run folder


def test_non_finite_loss_is_one_line_exit_2(shapes, tmp_path, capsys, monkeypatch):
    from visiontune.tasks.classification import ClassificationTask

    monkeypatch.setattr(ClassificationTask, "prepare_train_batch",
                        lambda self, images, targets: (images * float("nan"), targets))
    assert main(["train", *common(shapes, tmp_path), "train.epochs=1", "train.nan_policy=error"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.fullmatch(r"visiontune train: error: non-finite loss at epoch 0, step 0: .* set train.nan_policy=skip "
                        r"to skip such steps", err.splitlines()[-1])


@pytest.mark.parametrize("args, message", [
    (["eval"], "visiontune eval: error: give the weights as checkpoint=path/to/best.pt or plain weights: "),
    (["predict"], "visiontune predict: error: give the weights as checkpoint=path/to/best.pt or plain weights: "),
    (["predict", "checkpoint=m.onnx"], "visiontune predict: error: give the images as source=path/to/image_or_folder"),
])
def test_missing_checkpoint_or_source_exits_2(args, message, capsys):
    assert main(args) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(message)
