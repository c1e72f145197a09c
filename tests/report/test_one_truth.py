"""Every view of a run names the same best epoch and value: summary.json (the engine), its console table, report.html
and ``compare``; a run without summary.json follows the engine's rule (the baseline is a candidate, the first of
equal values wins). Runs whose main metrics differ are not ranked against each other."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.helpers import script_metric, train
from tests.report.conftest import make_face_run, write_metrics
from visiontune.api import format_summary
from visiontune.config import Config, config_to_dict, load_config
from visiontune.engine.hooks import summarize_history
from visiontune.report import compare_runs
from visiontune.report.run_files import read_run
from visiontune.report.run_report import build_run_page
from visiontune.tasks.classification import ClassificationTask

SCENARIOS = {
    "baseline wins": ((0.8, 0.7, 0.8), 0),  # epoch 2 only equals the baseline: the first of equal values wins
    "last epoch wins": ((0.5, 0.6, 0.9), 2),
    "middle epoch wins": ((0.5, 0.9, 0.9), 1),
}


def compare_best_epoch(console: str, label: str) -> str:
    """The "best epoch" cell of ``label``'s row in compare's console table."""
    lines = console.splitlines()
    header = next(line for line in lines if line.startswith("run "))
    start = header.index("best epoch")
    row = next(line for line in lines if line.startswith(label + " "))
    return row[start:].split()[0]


def assert_views_agree(run_dir: Path, epoch: int, value: float, metric: str) -> None:
    """report.html, compare and the fallback without summary.json all name ``epoch`` with ``value``."""
    run = read_run(run_dir)
    best, key, _mode = run.best_row()
    assert key == f"val_{metric}" and best is not None
    assert (best["epoch"], best[key]) == (epoch, pytest.approx(value))
    html = build_run_page(run)
    assert f"best (epoch {epoch})" in html
    assert f"best {metric} {100 * value:.2f}%" in html  # the page's subtitle
    assert re.search(rf"<td>best epoch</td><td[^>]*>{epoch}</td>", html), "summary facts"
    beaten = "no epoch beat the baseline: best.pt is the model before training" in html
    assert beaten == (epoch == 0)
    assert compare_best_epoch(compare_runs([run_dir])[0], run_dir.name) == str(epoch)
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").rename(run_dir / "summary.json.bak")
    try:
        fallback, _key, _mode = read_run(run_dir).best_row()
        assert fallback is not None and fallback["epoch"] == epoch == summary["best_epoch"]
    finally:
        (run_dir / "summary.json.bak").rename(run_dir / "summary.json")


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_classification_views_agree_with_the_engine(scenario, tiny_shapes, tmp_path, monkeypatch):
    values, epoch = SCENARIOS[scenario]
    script_metric(monkeypatch, ClassificationTask, "top1", values)
    config = load_config(None, [
        "task=classification", "device=cpu", f"data.root={tiny_shapes}", f"project={tmp_path / 'runs'}", "name=t",
        "model.name=test_resnet", "data.image_size=32", "data.batch_size=9", "data.num_workers=0", "optim.lr=0.01",
        "train.epochs=2", "train.progress=false", "train.plots=false", "seed=0"])
    result = train(config)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert result.best_epoch == summary["best_epoch"] == epoch
    assert summary["best"]["val_top1"] == pytest.approx(values[epoch])
    console = format_summary(summary)
    assert f"best (epoch {epoch})" in console
    assert ("no epoch beat the baseline" in console) == (epoch == 0)
    assert_views_agree(result.run_dir, epoch, values[epoch], "top1")


def fabricate(run_dir: Path, config: dict, rows: list[dict], *, metric: str, best_epoch: int) -> Path:
    """A finished run folder: config.yaml, metrics.csv and the summary.json the engine writes for them."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    write_metrics(run_dir / "metrics.csv", rows)
    summary = summarize_history([{k: v for k, v in row.items() if v != ""} for row in rows], metric=f"val_{metric}",
                          mode="max", best_epoch=best_epoch, stop_reason="finished")
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def epoch_rows(values: tuple[float, ...], columns: dict[str, float]) -> list[dict]:
    return [{"epoch": e, "step": 2 * e, "train_loss": "" if e == 0 else 1.0 / e, "epoch_time_s": "" if e == 0 else 2.0,
             "images_per_s": "" if e == 0 else 10.0, **{k: v for k, v in columns.items()}, "val_main": value}
            for e, value in enumerate(values)]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_face_detection_views_agree(scenario, tmp_path):
    values, epoch = SCENARIOS[scenario]
    run_dir = make_face_run(tmp_path)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["train"]["metric"] = None
    config["face"]["gt_dir"] = str(tmp_path / "ground_truth")  # official evaluation: ap_hard picks best.pt
    rows = [{**{("val_ap_hard" if k == "val_main" else k): v for k, v in row.items()}, "val_ap": 0.9}
            for row in epoch_rows(values, {"val_ap_easy": 0.9, "val_ap_medium": 0.85})]
    fabricate(run_dir, config, rows, metric="ap_hard", best_epoch=epoch)
    assert_views_agree(run_dir, epoch, values[epoch], "ap_hard")


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_instance_segmentation_views_agree(scenario, tmp_path):
    values, epoch = SCENARIOS[scenario]
    config = config_to_dict(Config())
    config.update(task="instance_segmentation", name="mask")
    rows = [{**{("val_segm_AP" if k == "val_main" else k): v for k, v in row.items()}}
            for row in epoch_rows(values, {"val_bbox_AP": 0.5, "val_segm_AP50": 0.7})]
    run_dir = fabricate(tmp_path / "instance_segmentation" / "mask", config, rows, metric="segm_AP", best_epoch=epoch)
    assert_views_agree(run_dir, epoch, values[epoch], "segm_AP")


def test_a_stale_summary_gives_way_to_the_newer_metrics(tmp_path):
    """A run trained further after its summary.json (resumed with more epochs): metrics.csv decides."""
    config = config_to_dict(Config())
    config.update(task="instance_segmentation", name="mask")
    rows = [{**{("val_segm_AP" if k == "val_main" else k): v for k, v in row.items()}}
            for row in epoch_rows((0.5, 0.6, 0.7, 0.9), {})]
    run_dir = fabricate(tmp_path / "mask", config, rows[:3], metric="segm_AP", best_epoch=2)
    write_metrics(run_dir / "metrics.csv", rows)
    best, _key, _mode = read_run(run_dir).best_row()
    assert best is not None and best["epoch"] == 3


def test_compare_ranks_only_runs_of_one_metric(tmp_path):
    values = (0.5, 0.6, 0.7, 0.8)
    face_config = yaml.safe_load((make_face_run(tmp_path).joinpath("config.yaml")).read_text())
    face_config["train"]["metric"] = None
    official = dict(face_config, face={**face_config["face"], "gt_dir": str(tmp_path / "gt")})
    rows = [{**{("val_ap_hard" if k == "val_main" else k): v for k, v in row.items()}, "val_ap": 0.9}
            for row in epoch_rows(values, {})]
    hard = fabricate(tmp_path / "runs" / "face_hard", official, rows, metric="ap_hard", best_epoch=3)
    plain = fabricate(tmp_path / "runs" / "face_ap", face_config, rows, metric="ap", best_epoch=1)
    console, html = compare_runs([hard, plain])
    assert "best main metric: face" not in console and "best main metric" not in html.split("Metrics")[0].replace(
        "no best main metric", "")
    assert ("no best main metric: the runs are not comparable on one metric "
            "(ap_hard (max): face_hard; ap (max): face_ap)") in console
    assert "class='best'" not in html and 'class="best"' not in html
    other = fabricate(tmp_path / "runs" / "face_hard2", official, [dict(row, val_ap_hard=row["val_ap_hard"] + 0.05)
                                                                   for row in rows], metric="ap_hard", best_epoch=3)
    console, _html = compare_runs([hard, other])
    assert "best main metric: face_hard2" in console


def test_later_evaluations_read_like_the_metrics_table(tmp_path):
    """eval-<split>/metrics.json of best.pt (``visiontune eval``) shows its values as the before/best/last table."""
    values, epoch = SCENARIOS["baseline wins"]
    config = config_to_dict(Config())
    config.update(task="instance_segmentation", name="mask")
    rows = [{**{("val_segm_AP" if k == "val_main" else k): v for k, v in row.items()}}
            for row in epoch_rows(values, {"val_bbox_AP": 0.5})]
    run_dir = fabricate(tmp_path / "mask", config, rows, metric="segm_AP", best_epoch=epoch)
    evaluated = run_dir / "eval-val"
    evaluated.mkdir()
    (evaluated / "metrics.json").write_text(json.dumps({"val_segm_AP": values[epoch], "val_segm_APs": None,
                                                        "num_images": 12}))
    html = build_run_page(read_run(run_dir))
    later = html.split("Later evaluations")[1].split("</table>")[0]
    best_cell = f"{100 * values[epoch]:.2f}%"
    assert f"<td>val_segm_AP</td><td>{best_cell}</td>" in later and f"best (epoch {epoch})" in html
    assert "<td>val_segm_APs</td><td>no objects</td>" in later and "<td>num_images</td><td>12</td>" in later
