"""Small console items: one number format for eval, predict and the training log; counts as integers; pred.txt's
header; loader workers capped at the CPUs available, with one note."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from visiontune.api import format_summary, metrics_table
from visiontune.cli import run as cli_run
from visiontune.config import load_config
from visiontune.engine.hooks import EpochLogger
from visiontune.tasks.classification import ClassificationTask


def test_eval_and_train_print_numbers_alike(caplog):
    table = metrics_table({"val_top1": 0.916666, "val_loss": 1.0, "num_images": 100})
    values = {line.split()[0]: line.split()[1] for line in table.splitlines()[2:]}
    assert values == {"val_top1": "0.9167", "val_loss": "1.000", "num_images": "100"}
    caplog.set_level(logging.INFO, logger="visiontune.engine.hooks")
    EpochLogger().after_epoch(None, {"epoch": 1, "step": 9, "train_loss": 1.0, "val_top1": 0.916666})  # type: ignore[arg-type]
    assert "epoch 1: step=9, train_loss=1.000, val_top1=0.9167" in caplog.text
    summary = format_summary({"metric": "val_top1", "mode": "max", "baseline": {"val_top1": 1.0},
                              "best": {"val_top1": 0.916666}, "last": {"val_top1": 0.916666},
                              "change": {"val_top1": -0.083334}, "best_epoch": 1, "last_epoch": 1, "epochs": 1,
                              "steps": 9, "stop_reason": "finished"})
    row = next(line for line in summary.splitlines() if line.startswith("val_top1"))
    assert row.split()[2:] == ["1.000", "0.9167", "0.9167", "-0.08333"]


def test_predict_counts_images_as_an_integer_and_pred_txt_has_a_header(tiny_shapes: Path, tmp_path: Path, caplog):
    config = load_config(None, ["task=classification", "model.name=test_resnet", f"data.root={tiny_shapes}",
                                "data.image_size=32", "data.batch_size=9", "train.progress=false"])
    task = ClassificationTask(config)
    task.meta["class_names"] = sorted(path.name for path in (tiny_shapes / "train").iterdir())
    torch.manual_seed(0)
    model = task.build_model(load_weights=False).eval()
    caplog.set_level(logging.INFO, logger="visiontune.tasks.base")
    task.predict(model, str(tiny_shapes / "val"), tmp_path / "out", device=torch.device("cpu"))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["num_images"] == 9 and isinstance(metrics["num_images"], int)
    assert task.predict_metrics["num_images"] == 9 and isinstance(task.predict_metrics["num_images"], int)
    assert "num_images 9" in caplog.text and "num_images 9.0" not in caplog.text
    header, *lines = (tmp_path / "out" / "pred.txt").read_text().splitlines()
    assert header == "path\tpred\treal" and len(lines) == 9
    assert all(len(line.split("\t")) == 3 for line in lines)


def test_loader_workers_are_capped_at_the_cpus_available(monkeypatch, capsys):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    config = load_config(None, ["task=classification", "data.num_workers=4"])
    assert cli_run.cap_workers(config).data.num_workers == 2
    assert capsys.readouterr().out.splitlines() == [
        "note: data.num_workers=4 is more than the 2 CPU(s) available: using 2 loader worker(s)"]
    config = load_config(None, ["task=classification", "data.num_workers=1"])
    assert cli_run.cap_workers(config).data.num_workers == 1 and capsys.readouterr().out == ""


@pytest.mark.parametrize("command", ["train", "eval"])
def test_train_and_eval_cap_the_workers(command, monkeypatch, capsys, tmp_path):
    """The commands apply the cap before anything is built (the config they hand on has the capped value)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    seen = []

    def fake_run(config, *args, **kwargs):
        seen.append(config.data.num_workers)
        raise SystemExit(0)

    monkeypatch.setattr("visiontune.api.train", fake_run)
    monkeypatch.setattr("visiontune.api.evaluate", fake_run)
    weights = tmp_path / "w.pth"
    torch.save({}, weights)
    arguments = (["train", "task=classification", "data.num_workers=3"] if command == "train" else
                 ["eval", f"checkpoint={weights}", "task=classification", "model.name=test_resnet",
                  "data.num_workers=3"])
    from visiontune.cli import main

    with pytest.raises(SystemExit):
        main(arguments)
    assert seen == [1]
    assert "note: data.num_workers=3 is more than the 1 CPU(s) available" in capsys.readouterr().out
