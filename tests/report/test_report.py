"""Run report, data report and comparison from synthetic run folders (no training)."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

from PIL import Image

from tests.report.conftest import CLASSES, make_classification_run, make_face_run
from visiontune.report import (
    compare_runs,
    write_comparison,
    write_data_report,
    write_run_report,
)
from visiontune.report.drawing import contrast_color, draw_labeled_boxes
from visiontune.report.run_files import metric_family, read_run

IMG = re.compile(r'<img src="data:(image/[a-z+]+);base64,([^"]+)"')


def decoded_images(html: str) -> list[Image.Image]:
    images = []
    for mime, payload in IMG.findall(html):
        data = base64.b64decode(payload)
        if mime == "image/svg+xml":
            assert data.lstrip().startswith(b"<")
            continue
        image = Image.open(io.BytesIO(data))
        image.load()
        images.append(image)
    return images


def test_classification_run_report(tmp_path: Path, shapes_dir: Path):
    run = make_classification_run(tmp_path, shapes_dir)
    path = write_run_report(run)
    assert path == run / "report.html"
    html = path.read_text()
    for heading in ("Summary", "Curves", "Evaluation", "Config", "Environment", "Confusion matrix",
                    "Most confused pairs", "Examples of the most confused pairs"):
        assert f">{heading}</h" in html, heading
    assert "before (epoch 0)" in html and "best (epoch 3)" in html and "last (epoch 3)" in html
    assert "80.00%" in html and "20.00%" in html  # best and before top1
    assert "top5" not in html.split('id="curves"')[0]  # top-5 of 5 classes: always 100%, dropped
    assert "device cpu" in html and "2 min 05 s" in html  # from train.log
    assert "<b>0.8</b>" not in html and "&lt;b&gt;0.8&lt;/b&gt;" in html  # escaped
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert len(decoded_images(html)) >= 6
    assert path.stat().st_size < 3_000_000


def test_interrupted_run_without_eval(tmp_path: Path, shapes_dir: Path):
    run = make_classification_run(tmp_path, shapes_dir, with_log=False)
    for path in (run / "eval").iterdir():
        path.unlink()
    (run / "eval").rmdir()
    html = write_run_report(run).read_text()
    assert "no eval/ folder yet" in html and "no train.log" in html
    (run / "metrics.csv").unlink()
    html = write_run_report(run).read_text()
    assert "no metrics.csv" in html and "no epoch finished yet" in html


def test_face_detection_run_report(tmp_path: Path):
    run = make_face_run(tmp_path)
    html = write_run_report(run).read_text()
    assert "Precision-recall" in html and "Detections of the best checkpoint" in html and ">Examples</h3>" in html
    assert "official easy / medium / hard curves: not computed" in html
    assert "not measured" in html
    assert len(decoded_images(html)) >= 5


def test_metric_families():
    assert metric_family("val_top1") == metric_family("val_top5") != metric_family("val_macro_recall")
    assert metric_family("val_ap_easy") == metric_family("val_ap")
    assert metric_family("val_segm_AP") == metric_family("val_segm_AP50") != metric_family("val_segm_APs")
    assert metric_family("val_segm_AP_person") == "segm AP per category"


def test_best_row_respects_config_metric(tmp_path: Path, shapes_dir: Path):
    run = read_run(make_face_run(tmp_path))
    best, key, mode = run.best_row()
    assert key == "val_ap" and mode == "max" and best["epoch"] == 2


def test_compare_runs(tmp_path: Path, shapes_dir: Path):
    first = make_classification_run(tmp_path / "a", shapes_dir, name="lr3e-3")
    second = make_classification_run(tmp_path / "b", shapes_dir, name="lr1e-3", lr=0.001, with_log=False)
    console, html = compare_runs([first, second])
    assert "optim.lr" in console and "0.003" in console and "0.001" in console
    assert "lr3e-3" in console and "images/s" in console
    assert "Config differences" in html and "<script" not in html
    path, _ = write_comparison([first, second], tmp_path / "compare.html")
    assert path.is_file()


def test_data_report_classification(tmp_path: Path, shapes_dir: Path):
    splits = {split: [{"path": p, "label": p.parent.name} for p in sorted((shapes_dir / split).glob("*/*.png"))]
              for split in ("train", "val")}
    flagged = [{"path": "train/cross/broken.png", "split": "train", "reason": "corrupt <truncated>"}]
    path = write_data_report(tmp_path, splits, task="classification", class_names=CLASSES, flagged=flagged)
    html = path.read_text()
    assert path.name == "data_report.html"
    assert "Counts" in html and "Samples" in html and "Flagged images" in html
    assert "corrupt &lt;truncated&gt;" in html
    assert len(decoded_images(html)) >= 10


def test_data_report_detection(tmp_path: Path):
    run = make_face_run(tmp_path)
    images = sorted((tmp_path / "faces" / "images" / "event").glob("*.jpg"))
    samples = [{"path": p, "boxes": [[40, 60, 90, 120]] * (i + 1), "width": 320, "height": 240}
               for i, p in enumerate(images)]
    html = write_data_report(run / "data_report.html", {"val": samples}, task="face_detection").read_text()
    assert "box size (sqrt area, px)" not in html  # drawn inside the PNG, not HTML text
    assert "boxes per image" in html and "images without boxes" in html
    assert len(decoded_images(html)) >= 4 + len(images)


def test_labels_are_legible():
    assert contrast_color((255, 255, 0)) == (0, 0, 0) and contrast_color((20, 20, 120)) == (255, 255, 255)
    image = Image.new("RGB", (200, 200), (128, 128, 128))
    drawn = draw_labeled_boxes(image, [[50, 60, 150, 150]], ["face 0.93"], [(0, 0, 200)])
    assert image.getpixel((52, 50)) == (128, 128, 128)  # input untouched
    label = drawn.crop((50, 40, 120, 60))
    colours = {colour for _count, colour in label.getcolors(10000)}
    assert (0, 0, 200) in colours  # filled label background
    assert any(min(c) >= 220 for c in colours)  # white (anti-aliased) text on it
