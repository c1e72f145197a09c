"""Run report, data report and comparison from synthetic run folders (no training)."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from tests.report.conftest import CLASSES, make_classification_run, make_face_run, write_metrics
from visiontune.config import load_config
from visiontune.engine.inference import build_eval_loader, run_evaluation
from visiontune.report import (
    compare_runs,
    write_comparison,
    write_data_report,
    write_run_report,
)
from visiontune.report.run_files import default_metric, read_csv_dicts, read_run
from visiontune.tasks import create_task
from visiontune.utils.drawing import LANDMARK_COLORS, contrast_color, draw_labeled_boxes, draw_landmarks
from visiontune.utils.plots import metric_family

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
    assert "Precision-recall" in html and "Detections of the best checkpoint" in html
    assert ">Examples (best checkpoint)</h3>" in html
    assert "official easy / medium / hard curves: not computed" in html
    assert "not measured" in html and "<td>nme</td>" in html  # landmark NME in the before -> best -> last table
    assert html.count("(red) with their 5 landmarks") == 2 * 3  # alt text and caption of 3 images
    assert len(decoded_images(html)) >= 5


def test_face_examples_without_landmark_file(tmp_path: Path):
    html = write_run_report(make_face_run(tmp_path, landmarks=False)).read_text()
    assert "eval/detections.json is missing: landmarks not drawn" in html
    assert "with their 5 landmarks" not in html and html.count("detections ≥ 0.5 (red), ") == 2 * 3


def test_landmarks_are_drawn_in_their_colours():
    canvas = draw_landmarks(Image.new("RGB", (60, 60), (128, 128, 128)),
                            np.array([[[10, 10], [30, 10], [20, 25], [12, 40], [28, 40]]]), radius=2)
    for (x, y), colour in zip([(10, 10), (30, 10), (20, 25), (12, 40), (28, 40)], LANDMARK_COLORS):
        assert canvas.getpixel((x, y)) == colour


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
    samples = [{"path": p, "boxes": [[40, 60, 90, 120]] * (i + 1), "width": 320, "height": 240,
                "landmarks": [[[50, 80], [80, 80], [65, 95], [55, 110], [75, 110]]] * i + [None]}
               for i, p in enumerate(images)]
    html = write_data_report(run / "data_report.html", {"val": samples}, task="face_detection").read_text()
    assert "(1 boxes, 0 with landmarks)" in html and "(3 boxes, 2 with landmarks)" in html
    assert "box size (sqrt area, px)" not in re.sub(r'alt="[^"]*"', "", html)  # drawn inside the PNG (and named
    # in its alt text), not HTML text
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


def rewrite_config(run: Path, **sections: dict) -> None:
    config = yaml.safe_load((run / "config.yaml").read_text())
    for section, values in sections.items():
        config[section].update(values)
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def test_face_best_metric_follows_the_engine_rule(tmp_path: Path):
    run_dir = make_face_run(tmp_path)
    rows = [{"epoch": e, "step": 2 * e, "val_ap": (0.5, 0.4)[e - 1], "val_ap_easy": 0.6, "val_ap_medium": 0.5,
             "val_ap_hard": (0.2, 0.3)[e - 1], "val_nme": 0.1} for e in (1, 2)]
    write_metrics(run_dir / "metrics.csv", rows)
    rewrite_config(run_dir, train={"metric": None}, face={"gt_dir": None})
    best, key, mode = read_run(run_dir).best_row()
    assert (key, mode, best["epoch"]) == ("val_ap", "max", 1)  # no face.gt_dir: ap, whatever the columns
    rewrite_config(run_dir, face={"gt_dir": str(tmp_path / "ground_truth")})
    best, key, mode = read_run(run_dir).best_row()
    assert (key, mode, best["epoch"]) == ("val_ap_hard", "max", 2)  # FaceDetectionTask.default_metric
    rewrite_config(run_dir, train={"metric": "ap"})
    assert read_run(run_dir).best_row()[1] == "val_ap"  # train.metric wins


def test_best_metric_and_mode_recorded_in_summary_json_win(tmp_path: Path, shapes_dir: Path):
    run_dir = make_classification_run(tmp_path, shapes_dir)
    rewrite_config(run_dir, train={"metric": "macro_f1"})
    assert read_run(run_dir).best_row()[1:] == ("val_macro_f1", "max")  # no summary.json yet: the config
    assert default_metric("classification", {}) == "top1" and default_metric("instance_segmentation", {}) == "segm_AP"
    assert default_metric("face_detection", {}, ["val_ap", "val_ap_hard"]) == "ap_hard"  # no face section
    (run_dir / "summary.json").write_text(json.dumps({"metric": "val_top1", "mode": "min", "best_epoch": 1}))
    run = read_run(run_dir)
    best, key, mode = run.best_row()
    assert (key, mode, best["epoch"]) == ("val_top1", "min", 1)
    (run_dir / "summary.json").write_text(json.dumps({"best_epoch": 3}))  # older summary without metric
    assert read_run(run_dir).best_row()[1:] == ("val_macro_f1", "max")
    (run_dir / "summary.json").write_text("{broken")
    run = read_run(run_dir)
    assert run.best_row()[1] == "val_macro_f1" and any("summary.json unreadable" in p for p in run.problems)


def test_evaluation_artifacts_give_the_report_its_example_images(tmp_path: Path, shapes_dir: Path):
    """The classification task's evaluator writes eval/predictions.csv; the report then shows confused examples."""
    run_dir = make_classification_run(tmp_path, shapes_dir)
    for path in (run_dir / "eval").iterdir():
        path.unlink()
    config = load_config(None, ["task=classification", f"data.root={shapes_dir}", "model.name=test_resnet",
                                "model.pretrained=false", "data.image_size=32", "data.crop_pct=1.0",
                                "data.batch_size=3", "data.num_workers=0", "train.progress=false", "seed=0"])
    task = create_task(config)
    task.build_dataset(config.data.train_split, train=True)
    dataset = task.build_dataset(config.data.val_split, train=False)
    torch.manual_seed(0)
    model = task.build_model()
    evaluator = task.build_evaluator(dataset)
    run_evaluation(model, build_eval_loader(task, dataset, config), evaluator, device=torch.device("cpu"))
    written = evaluator.save_artifacts(run_dir / "eval")
    assert run_dir / "eval" / "predictions.csv" in written

    rows = read_csv_dicts(run_dir / "eval" / "predictions.csv")
    assert [row["path"] for row in rows] == [str(path) for path, _ in dataset.source.samples]
    run = read_run(run_dir)
    counts = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    for row in rows:
        counts[CLASSES.index(row["true"]), CLASSES.index(row["predicted"])] += 1
    np.testing.assert_array_equal(counts, np.asarray(run.confusion))
    wrong = [row for row in rows if row["true"] != row["predicted"]]
    assert wrong  # random weights confuse classes

    html = write_run_report(run_dir).read_text()
    assert ">Examples of the most confused pairs</h3>" in html
    assert f"{wrong[0]['path']}: true " in html or any(f"{row['path']}: true " in html for row in wrong)
