"""Acceptance test: fine-tune RetinaFace from the command line, evaluate the checkpoint, predict.

A tiny WIDER-style set is built from four fixture photos downscaled to at most 320 px, labelled with the reference
detections of ``mobilenet0.25_Final.pth`` (score > 0.5) scaled to the new size.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from visiontune.cli import main
from visiontune.evaluation.widerface_predictions import read_widerface_predictions

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "configs" / "face_detection" / "retinaface_mobilenet025_finetune.yaml"
IMAGES = (
    "9_Press_Conference_Press_Conference_9_183.jpg",
    "12_Group_Group_12_Group_Group_12_478.jpg",
    "11_Meeting_Meeting_11_Meeting_Meeting_11_176.jpg",
    "mindface_0000.jpg",
)
MAX_SIDE = 320
EVENT = "fixtures"


def build_tiny_widerface(retinaface_dir: Path, root: Path) -> int:
    """Write ``root/images/fixtures/*.jpg`` and ``root/label.txt`` (RetinaFace layout); return the face count."""
    expected = json.loads((retinaface_dir / "expected_detections_mobilenet0.25.json").read_text())
    lines = []
    for name in IMAGES:
        with Image.open(retinaface_dir / "images" / name) as image:
            scale = MAX_SIDE / max(image.size)
            size = (round(image.width * scale), round(image.height * scale))
            target = root / "images" / EVENT / name
            target.parent.mkdir(parents=True, exist_ok=True)
            image.convert("RGB").resize(size, Image.Resampling.BILINEAR).save(target, quality=95)
        lines.append(f"# {EVENT}/{name}")
        for row in expected[name]:
            if row[4] <= 0.5:
                continue
            x1, y1, x2, y2 = (value * scale for value in row[:4])
            points = [value * scale for value in row[5:15]]
            values = [x1, y1, x2 - x1, y2 - y1]
            for index in range(5):
                values += [points[2 * index], points[2 * index + 1], 0.0]
            lines.append(" ".join(f"{value:.2f}" for value in values) + " 1.0")
    (root / "label.txt").write_text("\n".join(lines) + "\n")
    return sum(1 for line in lines if not line.startswith("#"))


def test_train_eval_predict(fixtures_dir: Path, tmp_path: Path, capsys):
    retinaface_dir = fixtures_dir / "retinaface"
    data_root = tmp_path / "faces"
    num_faces = build_tiny_widerface(retinaface_dir, data_root)
    assert num_faces == 31
    data_overrides = ["device=cpu", f"data.root={data_root}", "data.train_split=label.txt", "data.val_split=label.txt",
                      "data.images_dir=images", "data.val_images_dir=null", "data.num_workers=0"]

    assert main(["check-data", "-c", str(PRESET), *data_overrides, "train.progress=false"]) == 0
    report = capsys.readouterr().out
    assert "label.txt: 4 images" in report and "31 faces; 0 images without faces; 0 faces without landmarks" in report

    weights = retinaface_dir / "mobilenet0.25_Final.pth"
    assert main(["train", "-c", str(PRESET), f"model.checkpoint={weights}", *data_overrides,
                 "data.eval_batch_size=null", "train.epochs=1", "train.max_steps=3", "data.image_size=320",
                 "data.batch_size=2", f"project={tmp_path / 'runs'}", "train.progress=false",
                 "train.eval_before=false"]) == 0  # best.pt is the trained epoch, compared with eval below
    run_dir = tmp_path / "runs" / "face_detection" / "retinaface_mobilenet025_finetune"
    assert (run_dir / "best.pt").is_file() and (run_dir / "last.pt").is_file()
    with (run_dir / "metrics.csv").open(newline="") as stream:
        (row,) = list(csv.DictReader(stream))
    assert int(row["step"]) == 2  # 4 images, batch 2: one epoch
    train_metrics = {key: float(row[key]) for key in ("val_ap", "val_nme")}
    assert 0.0 < train_metrics["val_ap"] <= 1.0 and train_metrics["val_nme"] > 0.0
    # the best checkpoint's evaluation artifacts: official-layout predictions and the PR curve
    assert (run_dir / "eval" / "pr_curve.png").is_file()
    assert sorted(read_widerface_predictions(run_dir / "eval" / "widerface_predictions")) == sorted(
        f"{EVENT}/{Path(name).stem}" for name in IMAGES)

    capsys.readouterr()
    assert main(["eval", f"checkpoint={run_dir / 'best.pt'}", "train.progress=false"]) == 0
    eval_dir = run_dir / "eval-label"
    eval_metrics = json.loads((eval_dir / "metrics.json").read_text())
    low, high = eval_metrics.pop("intervals")["val_ap"]  # the 95% bootstrap interval over the 4 images
    assert eval_metrics == train_metrics  # one evaluation code path: identical numbers for the same weights
    printed = capsys.readouterr().out
    assert 0.0 <= low <= high <= 1.0 and re.search(r"^val_ap +[0-9.]+ \[[0-9.]+, [0-9.]+\]$", printed, re.MULTILINE)

    source = data_root / "images" / EVENT
    output = tmp_path / "predictions"
    assert main(["predict", f"checkpoint={run_dir / 'best.pt'}", f"source={source}", f"output={output}"]) == 0
    evaluated = read_widerface_predictions(eval_dir / "widerface_predictions")
    detected = 0
    for name in IMAGES:
        stem = Path(name).stem
        record = json.loads((output / f"{stem}.json").read_text())
        with Image.open(source / name) as image, Image.open(output / f"{stem}.jpg") as drawn:
            assert drawn.size == image.size == (record["width"], record["height"])
        scores = [face["score"] for face in record["faces"]]
        assert all(score >= 0.5 for score in scores) and scores == sorted(scores, reverse=True)
        # prediction and evaluation run the same detector: equal boxes above the visualisation threshold
        reference = evaluated[f"{EVENT}/{stem}"]
        reference = reference[reference[:, 4] >= 0.5]
        assert len(reference) == len(record["faces"])
        if len(reference):
            boxes = np.array([face["box"] for face in record["faces"]])  # decimal xyxy pixels
            # the WIDER file holds the reference's whole pixels (face.wider_boxes=int): int(x1), int(x2) - int(x1)
            whole = np.concatenate([reference[:, :2], reference[:, :2] + reference[:, 2:4]], axis=1)
            assert np.all((boxes >= whole - 0.02) & (boxes < whole + 1.02)), (boxes, whole)  # the same pixel cell
            assert all(len(face["landmarks"]) == 5 for face in record["faces"])
        detected += len(scores)
    assert detected >= 10

    capsys.readouterr()
    missing = tmp_path / "no_such_folder"
    assert main(["predict", f"checkpoint={run_dir / 'best.pt'}", f"source={missing}"]) == 2
    assert f"source not found: {missing}" in capsys.readouterr().err
