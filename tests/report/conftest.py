"""Synthetic run folders and datasets for the report tests (no training: files written directly)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

from tests.helpers import shapes
from visiontune.config import Config, config_to_dict

CLASSES = ["circle", "cross", "square", "star", "triangle"]


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    return shapes(tmp_path_factory.mktemp("shapes") / "shapes", num_classes=5, val_per_class=4, image_size=64)


def write_metrics(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def make_classification_run(root: Path, shapes: Path, *, name: str = "demo", lr: float = 0.003,
                            with_log: bool = True, epochs: int = 3) -> Path:
    run = root / "classification" / name
    (run / "eval").mkdir(parents=True)
    config = config_to_dict(Config())
    config.update(task="classification", name=name)
    config["model"]["name"] = "resnet10t"
    config["data"]["root"] = str(shapes)
    config["optim"]["lr"] = lr
    config["train"]["epochs"] = epochs
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    rows = []
    for epoch in range(epochs + 1):
        top1 = 0.2 + 0.2 * epoch
        row = {"epoch": epoch, "step": 9 * epoch, "train_loss_cls": "" if epoch == 0 else 1.6 - 0.2 * epoch,
               "train_loss": "" if epoch == 0 else 1.6 - 0.2 * epoch, "lr": "" if epoch == 0 else lr / epoch,
               "epoch_time_s": "" if epoch == 0 else 3.0, "images_per_s": "" if epoch == 0 else 90.0 + epoch,
               "val_top1": top1, "val_top5": 1.0, "val_macro_precision": top1 - 0.05, "val_macro_recall": top1,
               "val_macro_f1": top1 - 0.03}
        rows.append(row)
    write_metrics(run / "metrics.csv", rows)
    matrix = np.array([[3, 0, 1, 0, 0], [0, 2, 1, 1, 0], [0, 0, 4, 0, 0], [0, 0, 0, 1, 3], [0, 0, 1, 0, 3]])
    with (run / "eval" / "confusion_matrix.csv").open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["true\\predicted", *CLASSES])
        for name_, row in zip(CLASSES, matrix):
            writer.writerow([name_, *row])
    with (run / "eval" / "per_class.csv").open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["class", "support", "accuracy", "precision", "recall", "f1"])
        for name_ in CLASSES:
            writer.writerow([name_, 4, "0.5000", "0.6000", "0.5000", "0.5455"])
    with (run / "eval" / "predictions.csv").open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "true", "predicted", "score"])
        for path in sorted((shapes / "val" / "star").glob("*.png"))[:3]:
            writer.writerow([str(path), "star", "triangle", "0.61"])
    if with_log:
        (run / "train.log").write_text(
            "=== visiontune run started 2025-01-01T10:00:00\nenvironment:\n"
            "  visiontune 0.1.0, python 3.11.2, torch 2.5.0, torchvision 0.20.0, timm 1.0.0\n"
            "  device cpu, world size 1, AMP off (loss scaling off)\nconfig:\n  task: classification\nlog:\n"
            "2025-01-01 10:00:01,000 INFO visiontune.engine.trainer: run directory: x\n"
            "2025-01-01 10:02:05,500 INFO visiontune.engine.trainer: epoch 3: top1=<b>0.8</b>\n")
    return run


def make_face_run(root: Path, *, landmarks: bool = True) -> Path:
    """A face-detection run folder with label.txt, images, predictions and a PR curve PNG."""
    data = root / "faces"
    images = data / "images" / "event"
    images.mkdir(parents=True)
    labels, rng = [], np.random.default_rng(0)
    detections: dict[str, list[dict]] = {}
    run = root / "face_detection" / "retina"
    predictions = run / "eval" / "widerface_predictions" / "event"
    predictions.mkdir(parents=True)
    for index in range(3):
        image = Image.fromarray(rng.integers(60, 200, (240, 320, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(image)
        boxes = [(40 + 90 * k, 60, 40 + 90 * k + 50, 60 + 60) for k in range(index + 1)]
        for box in boxes:
            draw.ellipse(box, fill=(230, 190, 160))
        image.save(images / f"img_{index}.jpg")
        labels.append(f"# event/img_{index}.jpg")
        labels += [f"{x1} {y1} {x2 - x1} {y2 - y1} 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1.0" for x1, y1, x2, y2 in boxes]
        lines = [f"img_{index}", str(len(boxes))] + [f"{x1 + 2} {y1 + 1} {x2 - x1} {y2 - y1} 0.{9 - k}"
                                                     for k, (x1, y1, x2, y2) in enumerate(boxes)]
        (predictions / f"img_{index}.txt").write_text("\n".join(lines) + "\n")
        detections[f"event/img_{index}"] = [
            {"box": [x1 + 2, y1 + 1, x2 + 2, y2 + 1], "score": 0.9 - 0.1 * k,
             "landmarks": [[x1 + 15, y1 + 20], [x1 + 35, y1 + 20], [x1 + 25, y1 + 32], [x1 + 17, y1 + 45],
                           [x1 + 33, y1 + 45]]} for k, (x1, y1, x2, y2) in enumerate(boxes)]
    (data / "label.txt").write_text("\n".join(labels) + "\n")
    if landmarks:
        (run / "eval" / "detections.json").write_text(json.dumps({"score_threshold": 0.5, "images": detections}))
    config = config_to_dict(Config())
    config.update(task="face_detection", name="retina")
    config["model"]["name"] = "retinaface_mobilenet0.25"
    config["data"].update(format="retinaface", root=str(data), train_split="label.txt", val_split="label.txt")
    config["train"]["metric"] = "ap"
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    write_metrics(run / "metrics.csv", [
        {"epoch": e, "step": 2 * e, "train_loss_box": 1.0 / e, "train_loss_cls": 2.0 / e, "train_loss_landmarks": 3.0,
         "train_loss": 4.0 + 2.0 / e, "lr": 0.001, "epoch_time_s": 3.0, "images_per_s": 1.3, "val_ap": 0.4 + 0.05 * e,
         "val_nme": 0.2 - 0.01 * e} for e in (1, 2)])
    Image.new("RGB", (300, 250), (255, 255, 255)).save(run / "eval" / "pr_curve.png")
    return run
