"""Before -> after: the baseline evaluation (``train.eval_before``, the epoch-0 row) and the run's summary."""

import csv
import json

import pytest
import torch

from tests.helpers import train
from visiontune.api import evaluate, format_summary
from visiontune.engine.checkpoint import load_checkpoint
from visiontune.engine.hooks import HookBase
from visiontune.engine.trainer import Trainer


def rows_of(run):
    with (run / "metrics.csv").open(newline="") as stream:
        return list(csv.DictReader(stream))


def initial_weights(tiny_config, *overrides):
    """The model before any step: the same config and seed set up anew."""
    reference = Trainer(tiny_config(*overrides, "name=reference"))
    reference.setup()
    return {key: value.clone() for key, value in reference.model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def count_evaluations(monkeypatch):
    calls = []
    original = Trainer.evaluate

    def counting(self):
        calls.append(self.state.epoch)
        return original(self)

    monkeypatch.setattr(Trainer, "evaluate", counting)
    return calls


def test_zero_epochs_measures_the_baseline(tiny_config):
    result = train(tiny_config("train.epochs=0"))
    run = result.run_dir
    (row,) = rows_of(run)
    assert (row["epoch"], row["step"]) == ("0", "0") and "val_top1" in row and "train_loss" not in row
    start = initial_weights(tiny_config)
    assert_same_weights(load_checkpoint(run / "best.pt")["model"], start)
    assert_same_weights(load_checkpoint(run / "last.pt")["model"], start)
    summary = json.loads((run / "summary.json").read_text())
    assert summary == result.summary
    baseline = summary["baseline"]
    assert baseline["val_top1"] == float(row["val_top1"])  # full precision in the JSON
    assert summary["best"] == summary["last"] == baseline and summary["best_epoch"] == summary["last_epoch"] == 0
    assert summary["change"] == {key: 0.0 for key in baseline}
    assert (summary["epochs"], summary["steps"], summary["stop_reason"]) == (0, 0, "completed")
    assert (summary["metric"], summary["mode"]) == ("val_top1", "max")
    assert result.best_epoch == 0 and result.metrics == baseline
    # the baseline is what `visiontune eval` says of the released weights
    measured = evaluate(tiny_config(), checkpoint=run / "best.pt").metrics
    assert measured["val_top1"] == pytest.approx(baseline["val_top1"], abs=1e-9)


def test_short_run_has_baseline_best_and_last(tiny_config):
    result = train(tiny_config("train.epochs=2"))
    rows = rows_of(result.run_dir)
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    assert list(rows[0])[:2] == ["epoch", "step"] and list(rows[0])[-1].startswith("val_")  # val_* columns last
    summary = json.loads((result.run_dir / "summary.json").read_text())
    column = [float(row["val_top1"]) for row in rows]
    assert summary["best"]["val_top1"] == max(column)
    assert summary["best_epoch"] == column.index(max(column)) == result.best_epoch  # the first of equal values
    assert summary["baseline"]["val_top1"] == column[0] and summary["last"]["val_top1"] == column[-1]
    assert summary["last_epoch"] == 2 and summary["epochs"] == 2 and summary["steps"] == 8
    assert summary["change"]["val_top1"] == pytest.approx(max(column) - column[0])
    assert summary["images_per_s"] > 0 and summary["wall_time_s"] > 0 and summary["train_time_s"] > 0
    text = format_summary(summary)
    assert "baseline (epoch 0)" in text and f"best (epoch {summary['best_epoch']})" in text
    assert "last (epoch 2)" in text and "val_top1 *" in text
    assert f"{max(column):#.4g}" in text and "completed" in text


def test_best_is_the_baseline_when_no_epoch_beats_it(tiny_config, monkeypatch):
    values = iter([50.0, 40.0, 45.0])
    monkeypatch.setattr(Trainer, "evaluate", lambda self: {"val_top1": next(values)})
    result = train(tiny_config("train.epochs=2"))
    assert result.best_epoch == 0 and result.best_metric == 50.0
    assert_same_weights(load_checkpoint(result.run_dir / "best.pt")["model"], initial_weights(tiny_config))
    summary = result.summary
    assert summary["best"] == summary["baseline"] == {"val_top1": 50.0} and summary["last"] == {"val_top1": 45.0}
    assert summary["change"] == {"val_top1": 0.0}
    assert "no epoch beat the baseline: best.pt is the model before training" in format_summary(summary)


def test_a_better_epoch_replaces_the_baseline(tiny_config, monkeypatch):
    values = iter([0.123456, 0.654321, 0.5])
    monkeypatch.setattr(Trainer, "evaluate", lambda self: {"val_top1": next(values), "val_loss": 1.0})
    summary = train(tiny_config("train.epochs=2", "train.metric=top1")).summary
    assert (summary["best_epoch"], summary["best"]["val_top1"], summary["last"]["val_top1"]) == (1, 0.654321, 0.5)
    assert summary["change"]["val_top1"] == pytest.approx(0.530865)
    lines = format_summary(summary).splitlines()
    top1 = next(line for line in lines if line.startswith("val_top1 *")).split()
    assert top1[2:] == ["0.1235", "0.6543", "0.5000", "+0.5309"]  # 4 significant digits for people


class CrashAtStep(HookBase):
    def __init__(self, step):
        self.step = step

    def after_step(self, trainer, losses):
        if trainer.state.step == self.step:
            raise RuntimeError("simulated crash")


def test_resume_does_not_evaluate_the_baseline_again(tiny_config, monkeypatch):
    crashed = Trainer(tiny_config("train.epochs=2"), hooks=[CrashAtStep(2)])
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit()  # in epoch 1: last.pt is the one written after the baseline
    last = load_checkpoint(crashed.run_dir / "last.pt")
    assert (last["epoch"], last["step"], [row["epoch"] for row in last["history"]]) == (0, 0, [0])
    assert not (crashed.run_dir / "summary.json").exists()  # a failed run has no summary
    calls = count_evaluations(monkeypatch)
    resumed = train(tiny_config("train.epochs=2", f"resume={crashed.run_dir / 'last.pt'}"))
    assert calls == [1, 2]  # after each epoch, not before training
    assert [int(row["epoch"]) for row in rows_of(resumed.run_dir)] == [0, 1, 2]
    assert resumed.summary["baseline"] == {k: v for k, v in last["history"][0].items() if k.startswith("val_")}
    # a finished run continued with more epochs: no new baseline either
    calls.clear()
    more = train(tiny_config("train.epochs=3", f"resume={resumed.run_dir / 'last.pt'}"))
    assert calls == [3] and [row["epoch"] for row in more.history] == [0, 1, 2, 3]


def test_eval_before_false_and_no_validation(tiny_config):
    result = train(tiny_config("train.epochs=1", "train.eval_before=false"))
    assert [int(row["epoch"]) for row in rows_of(result.run_dir)] == [1]
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["baseline"] is None and summary["change"] is None and summary["best_epoch"] == 1
    assert "not measured" in format_summary(summary)
    no_val = train(tiny_config("train.epochs=1", "data.val_split=null", "name=noval"))
    assert [int(row["epoch"]) for row in rows_of(no_val.run_dir)] == [1]
    assert no_val.summary["baseline"] is None and no_val.summary["best"] is None
    assert "no validation metrics" in format_summary(no_val.summary)
