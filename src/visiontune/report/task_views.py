"""The task sections of a run report, built from the files in ``<run>/eval/`` alone.

Each view returns HTML and says in a note what is missing instead of failing.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from visiontune.data.widerface_annotations import read_annotations
from visiontune.report import figures
from visiontune.report.html import esc, fmt_number, image_data_uri, img_tag, note, table
from visiontune.report.run_files import RunFiles, read_csv_dicts
from visiontune.utils.boxes import xywh_to_xyxy, xyxy_to_xywh
from visiontune.utils.drawing import caption_image, draw_labeled_boxes, draw_landmarks, load_thumbnail
from visiontune.utils.plots import (
    confusion_figure,
    figure_uri,
    is_percent_metric,
    missing_metric_text,
    to_float,
)

__all__ = ["classification_view", "eval_folders_view", "face_detection_view", "instance_segmentation_view",
           "metric_text", "task_view"]

MAX_EXAMPLES = 8
THUMB = 224
PRED_COLOR = (230, 25, 75)
GT_COLOR = (60, 180, 75)


def _figure(uri: str, caption: str, width: int | None = None) -> str:
    return f"<figure>{img_tag(uri, caption, width=width)}<figcaption>{esc(caption)}</figcaption></figure>"


def _embed_png(path: Path, caption: str, max_side: int = 560) -> str:
    try:
        with Image.open(path) as image:
            return _figure(image_data_uri(image.convert("RGB"), max_side=max_side), caption)
    except (OSError, ValueError):
        return note(f"{path.name} could not be read")


def _resolve(path_text: str, run: RunFiles) -> Path | None:
    """A path from a run's files: absolute, or relative to the working directory, the run or its ancestors."""
    path = Path(path_text)
    if path.is_absolute():
        return path if path.exists() else None
    for base in (Path.cwd(), run.run_dir, *run.run_dir.resolve().parents):
        if (base / path).exists():
            return base / path
    return None


# ---------------------------------------------------------------------------------------------- classification
def classification_view(run: RunFiles) -> str:
    eval_dir = run.run_dir / "eval"
    parts: list[str] = []
    names = run.class_names
    if run.confusion is not None and names:
        counts = np.asarray(run.confusion, dtype=float)
        parts.append("<h3>Confusion matrix</h3>")
        heatmap = figure_uri(confusion_figure(counts, names, counts_in_cells=True, dpi=figures.DPI, max_side=16.0))
        caption = "rows: true class; colour: share of the row; numbers: images"
        parts.append(f'<div class="grid">{_figure(heatmap, caption)}</div>')
    else:
        parts.append(note("eval/confusion_matrix.csv is missing: no confusion matrix (written when the best "
                          "checkpoint is evaluated at the end of training)."))
    per_class = read_csv_dicts(eval_dir / "per_class.csv")
    if per_class:
        parts.append("<h3>Per class (best checkpoint)</h3>")
        rows, classes = [], []
        for row in per_class:
            values = [_num(row.get(key)) for key in ("precision", "recall", "f1")]
            rows.append([row.get("class", ""), _num(row.get("support")), *values])
            classes.append("warn" if values[2] is not None and values[2] < 0.5 else "")
        parts.append(table(["class", "support", "precision", "recall", "F1"], rows))
    else:
        parts.append(note("eval/per_class.csv is missing: no per-class table."))
    if run.confusion is not None and names:
        parts.append(_confused_pairs(run, np.asarray(run.confusion, dtype=float), names))
    return "".join(parts)


def _num(value: Any) -> float | int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() and "." not in str(value) else number


def _confused_pairs(run: RunFiles, counts: np.ndarray, names: list[str]) -> str:
    off = counts.copy()
    np.fill_diagonal(off, 0)
    totals = counts.sum(axis=1)
    order = np.dstack(np.unravel_index(np.argsort(-off, axis=None), off.shape))[0]
    pairs = [(int(r), int(c)) for r, c in order if off[r, c] > 0][:10]
    if not pairs:
        return "<h3>Most confused pairs</h3>" + note("no confusions on the validation split.")
    rows = [[names[r], names[c], int(off[r, c]), f"{100 * off[r, c] / totals[r]:.1f}%" if totals[r] else "–"]
            for r, c in pairs]
    html_parts = ["<h3>Most confused pairs</h3>",
                  table(["true class", "predicted as", "images", "share of the true class"], rows)]
    predictions = read_csv_dicts(run.run_dir / "eval" / "predictions.csv")
    if predictions is None:
        html_parts.append(note("no example images: eval/predictions.csv (columns path,true,predicted[,score]) is "
                               "missing (written with the confusion matrix at the end of training; older runs lack "
                               "it)."))
        return "".join(html_parts)
    figures_html = []
    for r, c in pairs[:3]:
        wrong = [row for row in predictions if row.get("true") == names[r] and row.get("predicted") == names[c]]
        for row in wrong[:4]:
            path = _resolve(row.get("path", ""), run)
            loaded = load_thumbnail(str(path), THUMB) if path else None
            if loaded is None:
                continue
            score = f" {float(row['score']):.2f}" if row.get("score") not in (None, "") else ""
            text = f"{names[r]} → {names[c]}{score}"
            figures_html.append(_figure(image_data_uri(caption_image(loaded[0], text, PRED_COLOR), photo=True),
                                        f"{row.get('path')}: true {names[r]}, predicted {names[c]}{score}"))
    if figures_html:
        html_parts.append("<h3>Examples of the most confused pairs</h3>")
        html_parts.append(f'<div class="grid">{"".join(figures_html)}</div>')
    else:
        html_parts.append(note("eval/predictions.csv lists no readable image of the most confused pairs."))
    return "".join(html_parts)


# ---------------------------------------------------------------------------------------------- face detection
def read_widerface_folder(folder: Path) -> dict[str, np.ndarray]:
    """``<event>/<image>.txt`` files (name, count, then ``x y w h score`` lines) -> ``{key: [N, 5]}``."""
    found: dict[str, np.ndarray] = {}
    for path in sorted(folder.rglob("*.txt")):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            values = [[float(v) for v in line.split()[:5]] for line in lines[2:] if line.strip()]
        except (OSError, ValueError):
            continue
        key = path.relative_to(folder).with_suffix("").as_posix()
        found[key] = np.asarray(values, dtype=float).reshape(-1, 5)
    return found


def read_retinaface_labels(path: Path) -> dict[str, np.ndarray]:
    """RetinaFace ``label.txt`` (``# <event>/<image>`` then ``x y w h ...`` per face) -> ``{key: [N, 4] xywh}``."""
    boxes: dict[str, list[list[float]]] = {}
    current: str | None = None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    for line in lines:
        if line.startswith("#"):
            current = str(Path(line[1:].strip()).with_suffix("").as_posix())
            boxes[current] = []
        elif current is not None and line.strip():
            try:
                boxes[current].append([float(v) for v in line.split()[:4]])
            except ValueError:
                continue
    return {key: np.asarray(value, dtype=float).reshape(-1, 4) for key, value in boxes.items()}


def face_detection_view(run: RunFiles) -> str:
    eval_dir = run.run_dir / "eval"
    parts: list[str] = []
    curves = [(eval_dir / name, caption) for name, caption in
              (("pr_curve.png", "precision / recall on the validation annotations"),
               ("pr_curves_widerface.png", "official WIDER FACE easy / medium / hard"))]
    shown = [_embed_png(path, caption) for path, caption in curves if path.is_file()]
    if shown:
        parts.append("<h3>Precision-recall</h3>" + f'<div class="grid">{"".join(shown)}</div>')
    else:
        parts.append(note("eval/ has no PR curve (pr_curve.png / pr_curves_widerface.png)."))
    if not (eval_dir / "pr_curves_widerface.png").is_file():
        parts.append(note("official easy / medium / hard curves: not computed (face.gt_dir unset)."))
    predictions_dir = eval_dir / "widerface_predictions"
    if not predictions_dir.is_dir():
        parts.append(note("eval/widerface_predictions/ is missing: no detection statistics or example images."))
        return "".join(parts)
    predictions = read_widerface_folder(predictions_dir)
    threshold = float(run.get("face.vis_thresh", 0.5) or 0.5)
    scores = np.concatenate([p[:, 4] for p in predictions.values()]) if predictions else np.zeros(0)
    kept = [int((p[:, 4] >= threshold).sum()) for p in predictions.values()]
    parts.append("<h3>Detections of the best checkpoint</h3>")
    parts.append(table(["images", "detections", f"detections with score ≥ {threshold:g}", "per image (mean)"],
                       [[len(predictions), int(scores.size), int(sum(kept)),
                         float(np.mean(kept)) if kept else math.nan]]))
    graphs = []
    if scores.size:
        graphs.append(_figure(figures.histogram("detection scores", scores.tolist(), bins=20, x_label="score"),
                              "scores of every written detection"))
    labels = _face_labels(run)
    if labels:
        sides = [float(np.sqrt(max(w, 0) * max(h, 0))) for boxes in labels.values() for (_x, _y, w, h) in boxes]
        graphs.append(_figure(figures.histogram("face size (sqrt area, px)", sides, log_x=True, x_label="pixels"),
                              "validation faces by size"))
    if graphs:
        parts.append(f'<div class="grid">{"".join(graphs)}</div>')
    parts.append(_face_examples(run, predictions, labels, threshold))
    return "".join(parts)


def _face_labels(run: RunFiles) -> dict[str, np.ndarray]:
    """The labelled faces of the validation split, ``{key: [N, 4] xywh}``: a RetinaFace ``label.txt``, or an
    official ``wider_face_val_bbx_gt.txt`` (``data.format=official``); empty when unreadable."""
    root, split = run.get("data.root"), run.get("data.val_split")
    if not root or not split:
        return {}
    path = _resolve(str(Path(str(root)) / str(split)), run)
    if path is None or not path.is_file():
        return {}
    if run.get("data.format") != "official":
        return read_retinaface_labels(path)
    try:
        records = read_annotations(path, "official").records
    except (OSError, ValueError):  # WiderFaceFormatError and unreadable text: the examples go without labels
        return {}
    return {str(Path(record.relative_path).with_suffix("").as_posix()): xyxy_to_xywh(record.boxes).astype(float)
            for record in records}


def _face_image(run: RunFiles, key: str) -> Path | None:
    root = run.get("data.root")
    if not root:
        return None
    images_dir = run.get("data.val_images_dir") or run.get("data.images_dir") or "images"
    extension = run.get("data.image_ext") or ".jpg"
    for suffix in dict.fromkeys((extension, ".jpg", ".jpeg", ".png")):
        path = _resolve(str(Path(str(root)) / str(images_dir) / f"{key}{suffix}"), run)
        if path is not None:
            return path
    return None


def read_face_detections(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float] | None:
    """``eval/detections.json`` (written by the face evaluator) -> ``({key: [N, 5] xyxy + score}, {key: [N, 5, 2]
    landmarks}, score threshold)`` in original pixels; None when absent or unreadable."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        images = loaded["images"]
        boxes = {key: np.asarray([[*face["box"], face["score"]] for face in faces], dtype=float).reshape(-1, 5)
                 for key, faces in images.items()}
        points = {key: np.asarray([face["landmarks"] for face in faces], dtype=float).reshape(-1, 5, 2)
                  for key, faces in images.items()}
        return boxes, points, float(loaded.get("score_threshold", 0.5))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _face_examples(run: RunFiles, predictions: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                   threshold: float) -> str:
    """Up to :data:`MAX_EXAMPLES` validation images with the labelled faces (green), the best checkpoint's detections
    with their scores (red) and, from ``eval/detections.json``, their five landmarks; else boxes from the WIDER
    prediction files."""
    with_landmarks = read_face_detections(run.run_dir / "eval" / "detections.json")
    if with_landmarks is not None:
        xyxy, landmarks, threshold = with_landmarks
    else:
        xyxy = {key: np.concatenate([xywh_to_xyxy(value[:, :4]), value[:, 4:5]], axis=1)
                for key, value in predictions.items()}
        landmarks = {}
    shown = []
    for key in sorted(xyxy)[:MAX_EXAMPLES]:
        path = _face_image(run, key)
        loaded = load_thumbnail(str(path), 320) if path else None
        if loaded is None:
            continue
        image, scale = loaded
        gt = labels.get(key, np.zeros((0, 4)))
        canvas = draw_labeled_boxes(image, (xywh_to_xyxy(gt) * scale).tolist(), None, [GT_COLOR] * len(gt), width=1)
        keep = xyxy[key][:, 4] >= threshold
        detections = xyxy[key][keep]
        order = np.argsort(-detections[:, 4], kind="stable")  # labels of the highest scores placed first
        canvas = draw_labeled_boxes(canvas, (detections[order, :4] * scale).tolist(),
                                    [f"{s:.2f}" for s in detections[order, 4]], [PRED_COLOR] * len(detections),
                                    width=2, font_size=10, fit=True)
        if key in landmarks:
            draw_landmarks(canvas, landmarks[key][keep] * scale, radius=2)
        drawn = " with their 5 landmarks" if key in landmarks else ""
        shown.append(_figure(image_data_uri(canvas, photo=True),
                             f"{key}: {len(detections)} detections ≥ {threshold:g} (red){drawn}, {len(gt)} labelled "
                             "(green)"))
    if not shown:
        return note("no example images: the validation images were not found from data.root in config.yaml.")
    legend = "" if with_landmarks else note("eval/detections.json is missing: landmarks not drawn.")
    return "<h3>Examples (best checkpoint)</h3>" + legend + f'<div class="grid">{"".join(shown)}</div>'


# --------------------------------------------------------------------------------------- instance segmentation
def instance_segmentation_view(run: RunFiles) -> str:
    eval_dir = run.run_dir / "eval"
    parts: list[str] = []
    best, _key, _mode = run.best_row()
    per_category: dict[str, dict[str, float]] = {}
    for column in run.columns:
        lower = column.lower()
        for kind in ("segm", "bbox"):
            prefix = f"val_{kind}_ap_"
            if lower.startswith(prefix) and column[len(prefix):] not in ("", "s", "m", "l") and best is not None:
                per_category.setdefault(column[len(prefix):], {})[kind] = best.get(column, math.nan)
    if per_category:
        parts.append("<h3>AP per category (best epoch)</h3>")
        parts.append(table(["category", "mask AP", "box AP"],
                           [[name, _percent(values.get("segm", math.nan)), _percent(values.get("bbox", math.nan))]
                            for name, values in sorted(per_category.items())], numeric=False))
    else:
        parts.append(note("metrics.csv has no per-category AP columns (val_segm_AP_<category>)."))
    results = eval_dir / "coco_results.json"
    if results.is_file():
        try:
            detections = json.loads(results.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            detections = None
        if isinstance(detections, list):
            threshold = float(run.get("segmentation.vis_thresh", 0.5) or 0.5)
            by_category = Counter(d.get("category_id") for d in detections if isinstance(d, dict))
            strong = Counter(d.get("category_id") for d in detections
                             if isinstance(d, dict) and float(d.get("score", 0)) >= threshold)
            images = len({d.get("image_id") for d in detections if isinstance(d, dict)})
            parts.append("<h3>Detections of the best checkpoint</h3>")
            parts.append(table(["category id", "detections", f"score ≥ {threshold:g}"],
                               [[str(k), v, strong.get(k, 0)] for k, v in sorted(by_category.items(),
                                                                                  key=lambda kv: str(kv[0]))]))
            parts.append(note(f"{len(detections)} detections on {images} images (eval/coco_results.json)."))
            scores = [float(d.get("score", 0)) for d in detections if isinstance(d, dict)]
            if scores:
                chart = figures.histogram("detection scores", scores, bins=20, x_label="score")
                parts.append(f'<div class="grid">{_figure(chart, "scores")}</div>')
        else:
            parts.append(note("eval/coco_results.json could not be read."))
    else:
        parts.append(note("eval/coco_results.json is missing: no detection statistics."))
    overlays = sorted((eval_dir / "overlays").glob("*.png"))[:MAX_EXAMPLES] if (eval_dir / "overlays").is_dir() else []
    shown = []
    for path in overlays:
        loaded = load_thumbnail(str(path), 320)
        if loaded:
            shown.append(_figure(image_data_uri(loaded[0], photo=True), path.name))
    if shown:
        parts.append("<h3>Overlays</h3>" + f'<div class="grid">{"".join(shown)}</div>')
    else:
        parts.append(note("eval/overlays/ has no images."))
    return "".join(parts)


def _percent(value: float) -> str:
    """An AP of the per-category table as the metrics table shows it: ``12.34%``; "no objects" when undefined."""
    return "no objects" if math.isnan(value) else f"{100 * value:.2f}%"


def metric_text(column: str, value: Any) -> str:
    """A validation metric as every table of the report shows it: fractions (``val_*`` accuracies, AP...) in percent
    with 2 decimals, others with 4 significant digits; "no objects" / "–" when there is no value
    (:func:`~visiontune.utils.plots.missing_metric_text`)."""
    number = to_float(value)
    if math.isnan(number):
        return missing_metric_text(column)
    if is_percent_metric(column) and column.startswith("val_"):
        return f"{100 * number:.2f}%"
    return fmt_number(value if isinstance(value, int) and not isinstance(value, bool) else number)


def eval_folders_view(run: RunFiles) -> str:
    """``eval*/metrics.json`` of later evaluations (``visiontune eval`` writes ``eval-<split>/``)."""
    rows = []
    for folder in sorted(run.run_dir.glob("eval*")):
        metrics_path = folder / "metrics.json"
        if not metrics_path.is_file():
            continue
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(metrics, dict):
            found = metrics.get("intervals")
            intervals: dict[str, Any] = found if isinstance(found, dict) else {}
            for key, value in metrics.items():
                if key == "intervals":
                    continue
                shown = metric_text(key, value) if isinstance(value, (int, float)) or value is None else str(value)
                span = intervals.get(key)
                if isinstance(span, list) and len(span) == 2 and all(isinstance(bound, (int, float)) for bound in span):
                    shown += f" [{metric_text(key, span[0])}, {metric_text(key, span[1])}]"  # 95% bootstrap interval
                rows.append([folder.name, key, shown])
    return table(["folder", "metric", "value"], rows, numeric=False) if rows else ""


def task_view(run: RunFiles) -> str:
    """The task's section body; a note for tasks without a view."""
    views = {"classification": classification_view, "face_detection": face_detection_view,
             "instance_segmentation": instance_segmentation_view}
    view = views.get(run.task)
    if not (run.run_dir / "eval").is_dir():
        return note("no eval/ folder yet: the best checkpoint is evaluated when training ends (an interrupted run "
                    "has none).")
    return view(run) if view else note(f"no task view for task {run.task!r}.")
