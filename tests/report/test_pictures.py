"""The pictures people read: captions with every glyph and wrapped instead of cut, face labels sized to their face
and never on top of each other, figures whose alt text names them, one format for AP values, tick labels apart."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

from tests.report.conftest import make_classification_run, make_face_run, write_metrics
from visiontune.api import format_summary
from visiontune.config import Config, config_to_dict
from visiontune.report import write_data_report
from visiontune.report.figures import MAX_X_TICKS, histogram_figure
from visiontune.report.run_files import read_run
from visiontune.report.run_report import build_run_page, metric_cell
from visiontune.utils.drawing import (
    FITTED_WIDTH,
    LANDMARK_COLORS,
    MIN_FITTED_FONT,
    caption_image,
    draw_box_labels,
    draw_faces,
    font,
    font_path,
    wrap_text,
)

ARROW = "→"
MISSING = "\ue000"  # a private-use code point: no font has it, so it draws as the missing-glyph box


def glyph(text: str, size: int = 24) -> np.ndarray:
    image = Image.new("L", (2 * size, 2 * size), 0)
    ImageDraw.Draw(image).text((4, 4), text, fill=255, font=font(size))
    return np.asarray(image)


def test_the_caption_font_has_the_arrow():
    from matplotlib import ft2font

    path = font_path()
    assert path is not None and Path(path).name == "DejaVuSans.ttf"
    assert ord(ARROW) in ft2font.FT2Font(path).get_charmap()
    assert not np.array_equal(glyph(ARROW), glyph(MISSING))  # the arrow is drawn, not the missing-glyph box
    assert glyph(ARROW).any()


def test_long_captions_wrap_inside_the_thumbnail():
    text = f"a_very_long_class_name {ARROW} another_long_class_name 0.61"
    color = (230, 25, 75)
    drawn = np.asarray(caption_image(Image.new("RGB", (120, 120), (200, 200, 200)), text, color, font_size=12))
    band = np.all(drawn == color, axis=2)
    rows = np.flatnonzero(band.any(axis=1))
    assert rows.size and rows.max() > 3 * 12  # more than one line: the text went onto further lines
    lines = wrap_text(text, 12, 120 - 6).split("\n")
    assert len(lines) >= 3 and "".join(lines).replace(" ", "") == text.replace(" ", "")  # nothing cut
    assert all(font(12).getlength(line) <= 120 - 6 for line in lines)
    assert f"{ARROW} another_long_class_name" not in lines  # words go whole where they fit: the arrow starts a line
    assert any(line.startswith(ARROW) or line.endswith(ARROW) for line in lines)


def crowd() -> tuple[np.ndarray, np.ndarray]:
    """15 overlapping 20x24 faces in three staggered rows, and one large face."""
    boxes = [[10 + 12 * i, 50 + (i % 3) * 6, 30 + 12 * i, 74 + (i % 3) * 6] for i in range(15)]
    return np.asarray([*boxes, [200, 100, 290, 200]], dtype=float), np.linspace(0.99, 0.6, 16)


def overlapping(first: tuple, second: tuple) -> bool:
    return first[0] <= second[2] and second[0] <= first[2] and first[1] <= second[3] and second[1] <= first[3]


def test_crowded_face_labels_fit_their_faces_and_never_overlap():
    boxes, scores = crowd()
    canvas = Image.new("RGB", (320, 240), (120, 120, 120))
    rects = draw_box_labels(ImageDraw.Draw(canvas), boxes.tolist(), [f"{s:.2f}" for s in scores],
                            [(255, 0, 0)] * len(boxes), size=18, bounds=canvas.size, fit=True)
    assert len(rects) >= 6  # most faces keep their score
    assert not any(overlapping(a, b) for a, b in itertools.combinations(rects, 2))
    for rect in rects:
        box = next(b for b in boxes if abs(rect[0] - b[0]) < 1e-6)
        assert rect[2] - rect[0] + 1 <= FITTED_WIDTH * (box[2] - box[0])
    big = next(rect for rect in rects if rect[0] == 200.0)
    small = [rect[3] - rect[1] for rect in rects if rect is not big]
    assert big[3] - big[1] > max(small)  # a large face keeps a large label, the small faces get small ones
    assert min(small) >= MIN_FITTED_FONT - 1

    unfitted = draw_box_labels(ImageDraw.Draw(canvas.copy()), boxes.tolist(), [f"{s:.2f}" for s in scores],
                               [(255, 0, 0)] * len(boxes), size=18, bounds=canvas.size)
    assert any(overlapping(a, b) for a, b in itertools.combinations(unfitted, 2))  # what fitting prevents


def test_drawn_faces_keep_every_landmark():
    boxes, scores = crowd()
    landmarks = np.stack([np.stack([[b[0] + 4, b[1] + 8], [b[2] - 4, b[1] + 8], [(b[0] + b[2]) / 2, b[1] + 13],
                                    [b[0] + 5, b[3] - 5], [b[2] - 5, b[3] - 5]]) for b in boxes])
    drawn = draw_faces(Image.new("RGB", (320, 240), (120, 120, 120)), boxes, scores, landmarks)
    last = landmarks[-1]  # the large face: nothing drawn over its points
    for (x, y), color in zip(last, LANDMARK_COLORS):
        assert drawn.getpixel((round(x), round(y))) == color


def test_every_figure_names_what_it_shows(tmp_path: Path, shapes_dir: Path):
    html = build_run_page(read_run(make_classification_run(tmp_path, shapes_dir)))
    face = make_face_run(tmp_path / "face")
    samples = [{"path": p, "boxes": [[40, 60, 90, 120]], "width": 320, "height": 240}
               for p in sorted((tmp_path / "face" / "faces" / "images" / "event").glob("*.jpg"))]
    html += write_data_report(face / "data_report.html", {"val": samples}, task="face_detection").read_text()
    alts = re.findall(r'<img [^>]*alt="([^"]*)"', html)
    assert alts and all(alt.strip() and alt not in ("curve", "histogram", "figure", "image") for alt in alts)
    curves = [alt for alt in alts if " by epoch" in alt]
    assert len(curves) >= 4 and len(set(curves)) == len(curves)
    assert any(alt.startswith("loss") or "train_loss" in alt for alt in curves)
    assert "histogram of the box size (sqrt area, px) per split" in alts


def segmentation_run(tmp_path: Path) -> Path:
    run = tmp_path / "instance_segmentation" / "mask"
    (run / "eval").mkdir(parents=True)
    config = config_to_dict(Config())
    config.update(task="instance_segmentation", name="mask")
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    write_metrics(run / "metrics.csv", [
        {"epoch": e, "train_loss": "" if e == 0 else 1.0, "val_segm_AP": 0.1 * (e + 1), "val_segm_APs": "",
         "val_segm_APm": 0.2, "val_segm_AP_person": 0.000295, "val_segm_AP_dog": "", "val_bbox_AP_person": 0.5,
         "val_bbox_AP_dog": ""} for e in range(3)])
    scores = [{"image_id": i % 3, "category_id": 1, "score": 0.05 + 0.0002 * i, "bbox": [0, 0, 4, 4]}
              for i in range(60)]
    (run / "eval" / "coco_results.json").write_text(json.dumps(scores))
    return run


def test_segmentation_report_shows_ap_in_one_format(tmp_path: Path):
    html = build_run_page(read_run(segmentation_run(tmp_path)))
    per_category = html.split("AP per category (best epoch)")[1].split("</table>")[0]
    assert "<td>0.03%</td>" in per_category and "<td>50.00%</td>" in per_category
    assert "0.000295" not in per_category and "e-04" not in per_category
    assert per_category.count("no objects") == 2  # dog: no instance in the validation split
    assert metric_cell("val_segm_APs", {"val_segm_APs": math.nan}) == "no objects"  # an empty size range
    assert metric_cell("val_top1", {"val_top1": math.nan}) == "–"


def test_the_console_summary_says_no_objects_for_an_empty_size_range():
    nan = math.nan
    text = format_summary({"metric": "val_segm_AP", "mode": "max",
                           "baseline": {"val_segm_AP": 0.1, "val_segm_APs": nan},
                           "best": {"val_segm_AP": 0.2, "val_segm_APs": nan},
                           "last": {"val_segm_AP": 0.2, "val_segm_APs": nan},
                           "change": {"val_segm_AP": 0.1, "val_segm_APs": nan}, "best_epoch": 1, "last_epoch": 1,
                           "epochs": 1, "steps": 2, "stop_reason": "finished"})
    row = next(line for line in text.splitlines() if line.startswith("val_segm_APs"))
    assert "nan" not in row and row.split() == ["val_segm_APs", *["no", "objects"] * 4]


@pytest.mark.parametrize("scores", [np.linspace(0.050, 0.062, 60), np.linspace(0.5, 0.52, 50),
                                    np.random.default_rng(0).uniform(0.02, 1.0, 400)])
def test_histogram_tick_labels_stay_apart(scores):
    figure = histogram_figure("detection scores", scores.tolist(), bins=20, x_label="score")
    figure.canvas.draw()
    axes = figure.axes[0]
    low, high = axes.get_xlim()
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    shown = [label.get_window_extent(renderer) for label, tick in zip(axes.get_xticklabels(), axes.get_xticks())
             if label.get_text() and low <= tick <= high]
    assert 2 <= len(shown) <= MAX_X_TICKS + 1
    assert all(left.x1 < right.x0 for left, right in itertools.pairwise(shown))
