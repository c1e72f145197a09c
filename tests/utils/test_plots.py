"""Tests for visiontune.utils.plots: training curves and confusion matrix PNGs."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from visiontune.utils.plots import (
    curve_figure,
    curve_panels,
    figure_uri,
    metric_family,
    plot_confusion_matrix,
    plot_training_curves,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_training_curves_write_three_plots(tmp_path: Path) -> None:
    rows = [
        {"epoch": epoch, "train_loss": 2.0 / epoch, "val_loss": 2.5 / epoch, "lr": 1e-3 * 0.5**epoch,
         "val_top1": 20.0 * epoch, "val_top5": 60.0 + 5 * epoch, "epoch_time": 12.5}
        for epoch in range(1, 6)
    ]
    paths = plot_training_curves(rows, tmp_path / "plots")
    assert paths == [tmp_path / "plots" / name for name in ("loss.png", "lr.png", "metrics.png")]
    for path in paths:
        assert_png(path)


def test_training_curves_one_row_missing_columns_and_nan(tmp_path: Path) -> None:
    rows = [{"epoch": 1, "train_loss": 1.5, "val_top1": math.nan}]
    assert plot_training_curves(rows, tmp_path) == [tmp_path / "loss.png"]  # all-NaN metric and no lr: skipped
    assert_png(tmp_path / "loss.png")

    rows = [{"train_loss": 1.0, "lr": 0.1}, {"train_loss": float("nan"), "val_macro_f1": 40.0}, {"lr": 0.01}]
    paths = plot_training_curves(rows, tmp_path / "sparse")  # no epoch column: x is the row number
    assert [path.name for path in paths] == ["loss.png", "lr.png", "metrics.png"]
    assert plot_training_curves([], tmp_path / "none") == []
    assert not (tmp_path / "none").exists()


def test_training_curves_from_metrics_csv_strings(tmp_path: Path) -> None:
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("epoch,train_loss,val_loss,lr,val_top1,note\n1,1.2,1.3,0.01,40.5,warmup\n2,0.9,,0.005,55.0,\n")
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    paths = plot_training_curves(rows, tmp_path / "plots")
    assert [path.name for path in paths] == ["loss.png", "lr.png", "metrics.png"]
    for path in paths:
        assert_png(path)


def test_confusion_matrix_png(tmp_path: Path) -> None:
    matrix = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])  # last class has no samples: its row stays 0
    path = plot_confusion_matrix(matrix, ["ant", "bee", "cat"], tmp_path / "sub" / "cm.png")
    assert path == tmp_path / "sub" / "cm.png"
    assert_png(path)
    assert_png(plot_confusion_matrix(matrix, ["ant", "bee", "cat"], tmp_path / "counts.png", normalize=False))
    large = np.random.default_rng(0).integers(0, 20, size=(40, 40))
    assert_png(plot_confusion_matrix(large, [f"class {i}" for i in range(40)], tmp_path / "large.png"))


def test_confusion_matrix_shape_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"must be \[C, C\] with C = 3 class names, got shape \(2, 2\)"):
        plot_confusion_matrix(np.eye(2), ["a", "b", "c"], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"got shape \(2, 3\)"):
        plot_confusion_matrix(np.ones((2, 3)), ["a", "b"], tmp_path / "x.png")


def test_plots_leave_pyplot_and_backend_alone() -> None:
    # dict.get reads the raw rcParams entry without triggering backend resolution (which imports pyplot)
    code = (
        "import sys, numpy, tempfile, pathlib\n"
        "import visiontune.utils.plots as plots\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported at module import'\n"
        "import matplotlib\n"
        "backend = dict.get(matplotlib.rcParams, 'backend')\n"
        "out = pathlib.Path(tempfile.mkdtemp())\n"
        "plots.plot_confusion_matrix(numpy.eye(2), ['a', 'b'], out / 'cm.png')\n"
        "plots.plot_training_curves([{'epoch': 1, 'train_loss': 1.0}], out)\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        "assert dict.get(matplotlib.rcParams, 'backend') is backend, 'backend changed'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_coinciding_series_stay_visible_and_epoch_ticks_are_integers() -> None:
    top1 = [0.2, 0.4, 0.6, 0.8]  # balanced classes: macro recall == top-1, drawn exactly on top of each other
    columns = {"epoch": [1, 2, 3, 4], "val_top1": top1, "val_macro_recall": top1, "val_macro_precision": top1}
    panels = curve_panels(columns)
    assert [(panel.title, list(panel.series)) for panel in panels] == [
        ("top-k accuracy", ["top1"]), ("macro averages", ["macro_recall", "macro_precision"])]
    assert all(panel.percent for panel in panels)  # fractions 0-1 drawn as percent
    panel = panels[1]
    panel.series["top1"] = panels[0].series["top1"]  # three identical series in one panel
    figure = curve_figure([panel])
    figure.canvas.draw()
    axes = figure.axes[0]
    lines = axes.get_lines()
    assert len(lines) == 3
    styles = {(line.get_linestyle(), line.get_marker()) for line in lines}
    assert len({style for style, _ in styles}) == 3 and len({marker for _, marker in styles}) == 3
    assert all(np.allclose(line.get_ydata(), [20, 40, 60, 80]) for line in lines)
    ticks = [tick for tick in axes.get_xticks() if 1 <= tick <= 4]  # matplotlib's default here: 1.0, 1.5, 2.0...
    assert len(ticks) >= 2 and all(float(tick).is_integer() for tick in ticks)
    assert axes.get_legend().get_texts()[0].get_text() == "macro_recall (80.00%)"
    assert figure_uri(figure).startswith("data:image/png;base64,iVBOR")


def test_curves_with_baseline_row_and_saturated_topk(tmp_path: Path) -> None:
    """metrics.csv with the epoch-0 evaluation before training: only val_* there, empty train columns."""
    header = "epoch,step,train_loss,train_loss_cls,train_loss_box,lr,epoch_time_s,images_per_s,val_loss,val_top1,"
    lines = [header + "val_top5", "0,0,,,,,,,2.1,0.2,1.0"]
    lines += [f"{e},{9 * e},{2 - 0.3 * e},{1 - 0.1 * e},{1 - 0.2 * e},{0.01 / e},3.0,90,{2 - 0.2 * e},{0.2 + 0.2 * e},"
              "1.0" for e in (1, 2, 3)]
    (tmp_path / "metrics.csv").write_text("\n".join(lines) + "\n")
    with (tmp_path / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    panels = {panel.title: panel for panel in curve_panels(columns, num_classes=5)}
    assert list(panels) == ["loss", "loss components", "learning rate", "top-k accuracy", "training speed"]
    assert panels["loss"].x.tolist() == [1, 2, 3] and list(panels["loss"].series) == ["train_loss", "val_loss"]
    assert list(panels["loss components"].series) == ["loss_cls", "loss_box"]
    assert panels["learning rate"].x.tolist() == [1, 2, 3] and panels["training speed"].x.tolist() == [1, 2, 3]
    assert panels["top-k accuracy"].x.tolist() == [0, 1, 2, 3]  # the baseline starts the metric curves
    assert list(panels["top-k accuracy"].series) == ["top1"]  # top-5 of 5 classes: always 100%, left out
    assert "top5" in curve_panels(columns, num_classes=10)[3].series

    paths = plot_training_curves(rows, tmp_path / "plots", num_classes=5)
    assert [path.name for path in paths] == ["loss.png", "lr.png", "metrics.png"]
    for path in paths:
        assert_png(path)


def test_metric_families_group_by_scale() -> None:
    assert metric_family("val_top1") == metric_family("val_top5") == metric_family("train_top1") == "top-k accuracy"
    assert metric_family("val_macro_f1") == metric_family("val_macro_recall") == "macro averages"
    assert metric_family("val_bbox_APs") == "bbox AP by size" and metric_family("val_nme") == "nme"
