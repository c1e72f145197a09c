"""Bootstrap intervals in a run's summary (``eval.intervals``), the paired change, ``visiontune eval``'s
``metrics.json`` and the test split evaluated once at the end."""

import json

import pytest

import visiontune.engine.inference as engine_inference
from tests.helpers import train
from visiontune.api import evaluate, format_summary
from visiontune.cli import main
from visiontune.report.run_files import read_run
from visiontune.report.task_views import eval_folders_view

FAST = "eval.resamples=200"


def test_summary_has_intervals_of_baseline_best_last_and_the_change(tiny_config):
    result = train(tiny_config("train.epochs=1", FAST))
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary == result.summary
    intervals = summary["intervals"]
    assert (intervals["level"], intervals["resamples"], intervals["unit"]) == (0.95, 200, "image")
    assert set(intervals) == {"level", "resamples", "unit", "val_top1", "val_macro_f1"}
    top1 = intervals["val_top1"]
    assert set(top1) == {"baseline", "best", "last", "change"}
    for role in ("baseline", "best", "last"):
        low, high = top1[role]
        assert low <= summary[role]["val_top1"] <= high
    low, high = top1["change"]
    assert low <= summary["change"]["val_top1"] <= high
    kept = sorted(path.name for path in (result.run_dir / "eval").glob("per_image_*.npz"))
    assert kept == sorted({"per_image_0.npz", f"per_image_{summary['best_epoch']}.npz", "per_image_1.npz"})
    line = next(line for line in format_summary(summary).splitlines() if line.startswith("val_top1 *"))
    best, (best_low, best_high) = summary["best"]["val_top1"], top1["best"]
    assert f"{best:#.4g} [{best_low:#.4g}, {best_high:#.4g}]" in line
    within = low <= 0 <= high
    assert ("within noise" in line) == within
    assert "best epoch selected on val" in format_summary(summary)


def test_identical_baseline_and_best_give_a_zero_change_within_noise(tiny_config):
    summary = train(tiny_config("train.epochs=0", FAST)).summary
    assert summary["intervals"]["val_top1"]["change"] == [0.0, 0.0]
    line = next(line for line in format_summary(summary).splitlines() if line.startswith("val_top1 *"))
    assert line.endswith("+0.000 [+0.000, +0.000] within noise")


def test_intervals_off_writes_none(tiny_config):
    result = train(tiny_config("train.epochs=0", "eval.intervals=false"))
    assert "intervals" not in result.summary
    assert not list((result.run_dir / "eval").glob("per_image_*.npz"))
    assert "[" not in format_summary(result.summary).splitlines()[2]


def test_a_resumed_run_keeps_the_baseline_interval(tiny_config):
    first = train(tiny_config("train.epochs=1", FAST))
    resumed = train(tiny_config("train.epochs=2", FAST, f"resume={first.run_dir / 'last.pt'}"))
    intervals = resumed.summary["intervals"]["val_top1"]
    assert set(intervals) == {"baseline", "best", "last", "change"}
    assert intervals["baseline"] == first.summary["intervals"]["val_top1"]["baseline"]


def test_eval_metrics_json_has_intervals(tiny_config, capsys):
    run = train(tiny_config("train.epochs=0", "eval.intervals=false")).run_dir
    result = evaluate(tiny_config(FAST), checkpoint=run / "best.pt")
    written = json.loads((result.output_dir / "metrics.json").read_text())
    assert written["intervals"] == result.intervals
    low, high = written["intervals"]["val_top1"]
    assert low <= written["val_top1"] <= high and set(written["intervals"]) == {"val_top1", "val_macro_f1"}
    view = eval_folders_view(read_run(run))  # the run report's "later evaluations" table
    assert f"<td>val_top1</td><td>{100 * written['val_top1']:.2f}% [{100 * low:.2f}%, {100 * high:.2f}%]</td>" in view
    assert "<td>intervals</td>" not in view


def test_test_split_is_evaluated_once_at_the_end(tiny_config, monkeypatch):
    """The test split here holds the validation images: best.pt on it gives the best epoch's value and, with the same
    resampled images, the same interval."""
    calls = []
    original = engine_inference.run_evaluation

    def counting(*args, **kwargs):
        calls.append(kwargs.get("description"))
        return original(*args, **kwargs)

    monkeypatch.setattr(engine_inference, "run_evaluation", counting)
    result = train(tiny_config("train.epochs=1", FAST, "data.test_split=val"))
    assert calls.count("test") == 1
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["test_checkpoint"] == "best.pt"
    assert summary["test"]["test_top1"] == pytest.approx(summary["best"]["val_top1"], abs=1e-9)
    assert summary["intervals"]["test_top1"] == summary["intervals"]["val_top1"]["best"]
    text = format_summary(summary)
    assert "test (best.pt)" in text.splitlines()[0]
    assert "test: best.pt evaluated once on data.test_split" in text


def test_cli_eval_prints_intervals(tiny_config, capsys):
    run = train(tiny_config("train.epochs=0", "eval.intervals=false")).run_dir
    config = tiny_config()
    overrides = [f"{key}={value}" for key, value in (("data.root", config.data.root), ("device", "cpu"),
                                                        ("data.num_workers", 0), ("train.progress", "false"))]
    assert main(["eval", f"checkpoint={run / 'best.pt'}", "eval.intervals=true", FAST, *overrides]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("val_top1"))
    value, low, high = (float(part.strip("[],")) for part in line.split()[1:4])
    assert low <= value <= high


def test_resamples_out_of_range_is_one_error_line(tiny_config, capsys):
    config = tiny_config()
    assert main(["train", f"data.root={config.data.root}", "device=cpu", "eval.resamples=5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("visiontune train: error:") and "eval.resamples" in err[0]
    assert "Traceback" not in err[0]


@pytest.mark.parametrize(("split", "train", "expected"), [
    ("train.txt", True, "images"), ("val.txt", False, "val_images"), ("test.txt", False, "test_images"),
    ("other.txt", False, "val_images")])
def test_each_split_reads_its_image_folder(tiny_config, split, train, expected):
    from visiontune.tasks.base import split_images_dir

    data = tiny_config("data.val_split=val.txt", "data.val_images_dir=val_images", "data.test_split=test.txt",
                       "data.test_images_dir=test_images").data
    assert split_images_dir(data, split, train=train) == expected
    data.test_images_dir = None
    assert split_images_dir(data, "test.txt", train=False) == "val_images"  # as every evaluated split before
