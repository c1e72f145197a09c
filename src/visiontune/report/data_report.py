"""``data_report.html`` for a dataset check, from plain data (so ``check-data`` can call it with what it scanned).

Input, per split, a list of samples (dicts):

* ``path``: the image file (str or Path);
* classification: ``label``, a class index into ``class_names`` or a class name;
* detection (``face_detection``, ``instance_segmentation``): ``boxes``, ``[[x1, y1, x2, y2], ...]`` in pixels,
  optional ``labels`` (one category index or name per box) and optional ``width`` / ``height`` (image size).

``flagged`` lists problems found by the check: dicts with ``path``, ``reason`` and optionally ``split``.
``duplicates`` lists duplicate image groups: ``kind`` (``exact`` / ``near``), ``files`` (relative to ``root``),
``splits`` and ``distance``; they are drawn side by side and written to ``data_check.json`` beside the page.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visiontune.report import figures
from visiontune.report.html import Page, esc, image_data_uri, img_tag, note, table
from visiontune.utils.drawing import caption_image, color_of, draw_labeled_boxes, draw_landmarks, load_thumbnail

__all__ = ["DETECTION_TASKS", "write_data_report"]

DETECTION_TASKS = ("face_detection", "instance_segmentation", "detection")
MAX_FLAGGED_ROWS = 500
MAX_DUPLICATE_GROUPS = 60  # groups drawn with thumbnails (all are in data_check.json)


def _name(label: Any, class_names: Sequence[str] | None) -> str:
    if isinstance(label, (int,)) and not isinstance(label, bool) and class_names and 0 <= label < len(class_names):
        return str(class_names[label])
    return str(label)


def _index(label: Any, class_names: Sequence[str] | None) -> int:
    if isinstance(label, int) and not isinstance(label, bool):
        return label
    if class_names and str(label) in class_names:
        return list(class_names).index(str(label))
    return abs(hash(str(label))) % 97


def _pick_samples(samples: Sequence[Mapping[str, Any]], count: int, key: str | None) -> list[Mapping[str, Any]]:
    """``count`` samples spread over the classes (round robin by ``key``) or evenly over the list."""
    if not samples or count <= 0:
        return []
    if key is None:
        step = max(1, len(samples) // count)
        return list(samples[::step][:count])
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for sample in samples:
        groups.setdefault(str(sample.get(key)), []).append(sample)
    picked: list[Mapping[str, Any]] = []
    index = 0
    while len(picked) < count and any(index < len(group) for group in groups.values()):
        for group in groups.values():
            if index < len(group) and len(picked) < count:
                picked.append(group[index])
        index += 1
    return picked


def _classification_sections(page: Page, splits: Mapping[str, Sequence[Mapping[str, Any]]],
                             class_names: Sequence[str] | None, samples_per_split: int) -> None:
    counts = {split: Counter(_name(s.get("label"), class_names) for s in samples) for split, samples in splits.items()}
    names = list(class_names) if class_names else sorted(set().union(*counts.values())) if counts else []
    rows = [[name, *(counts[split].get(name, 0) for split in splits)] for name in names]
    rows.append(["total", *(len(samples) for samples in splits.values())])
    body = table(["class", *splits], rows)
    empty = [f"{split}/{name}" for split in splits for name in names if counts[split].get(name, 0) == 0]
    if empty:
        body += note(f"classes without images: {', '.join(empty)}", "warn")
    if names:
        per_split = {split: [counts[split].get(n, 0) for n in names] for split in splits}
        chart = figures.bar_chart("images per class", names, per_split)
        body += f'<div class="grid"><figure>{img_tag(chart, "images per class")}</figure></div>'
    page.section("Counts", body)
    grid = []
    for split, samples in splits.items():
        for sample in _pick_samples(samples, samples_per_split, "label"):
            loaded = load_thumbnail(str(sample.get("path")), 160)
            if loaded is None:
                continue
            name = _name(sample.get("label"), class_names)
            thumb = caption_image(loaded[0], name, color_of(_index(sample.get("label"), class_names)))
            grid.append(f"<figure>{img_tag(image_data_uri(thumb, photo=True), f'{split}: {name}')}"
                        f"<figcaption>{esc(split)}: {esc(Path(str(sample.get('path'))).name)}</figcaption></figure>")
    page.section("Samples", f'<div class="grid">{"".join(grid)}</div>' if grid else note("no readable sample image."))


@dataclass
class _BoxStatistics:
    """What the detection counts section shows, per split (in split order).

    Attributes:
        rows: One row of the counts table per split.
        per_category: Boxes per category name (``"object"`` for a box without a label).
        sides: ``sqrt(width * height)`` of every non-empty box, pixels.
        aspects: ``width / height`` of every non-empty box.
        relative: ``sqrt(box area / image area)`` of every non-empty box of a sample with ``width`` and ``height``.
        per_image: Number of boxes of every sample.
    """

    rows: list[list[Any]] = field(default_factory=list)
    per_category: dict[str, Counter[str]] = field(default_factory=dict)
    sides: dict[str, list[float]] = field(default_factory=dict)
    aspects: dict[str, list[float]] = field(default_factory=dict)
    relative: dict[str, list[float]] = field(default_factory=dict)
    per_image: dict[str, list[int]] = field(default_factory=dict)


def _add_boxes(stats: _BoxStatistics, split: str, sample: Mapping[str, Any], class_names: Sequence[str] | None,
               category_counts: Counter[str]) -> None:
    """Count the boxes of one sample into ``stats`` (split ``split``) and ``category_counts``."""
    boxes = list(sample.get("boxes") or [])
    labels = list(sample.get("labels") or [])
    stats.per_image[split].append(len(boxes))
    for index, box in enumerate(boxes):
        x1, y1, x2, y2 = (float(v) for v in box[:4])
        w, h = max(0.0, x2 - x1), max(0.0, y2 - y1)
        category_counts[_name(labels[index], class_names) if index < len(labels) else "object"] += 1
        if w > 0 and h > 0:
            stats.sides[split].append(math.sqrt(w * h))
            stats.aspects[split].append(w / h)
            if sample.get("width") and sample.get("height"):
                stats.relative[split].append(math.sqrt(w * h / (float(sample["width"]) * float(sample["height"]))))


def _box_statistics(splits: Mapping[str, Sequence[Mapping[str, Any]]],
                    class_names: Sequence[str] | None) -> _BoxStatistics:
    """Box counts, sizes and aspects of every split."""
    stats = _BoxStatistics()
    for split, samples in splits.items():
        category_counts: Counter[str] = Counter()
        stats.sides[split], stats.aspects[split], stats.relative[split], stats.per_image[split] = [], [], [], []
        for sample in samples:
            _add_boxes(stats, split, sample, class_names, category_counts)
        stats.per_category[split] = category_counts
        boxes_total = sum(stats.per_image[split])
        empty = sum(1 for count in stats.per_image[split] if count == 0)
        stats.rows.append([split, len(samples), boxes_total, empty,
                           boxes_total / len(samples) if samples else math.nan, max(stats.per_image[split], default=0)])
    return stats


def _category_counts(splits: Sequence[str], per_category: Mapping[str, Counter[str]],
                     class_names: Sequence[str] | None) -> str:
    """The boxes-per-category table and chart, or ``""`` when every box is an unlabelled ``"object"``."""
    categories = sorted(set().union(*per_category.values())) if per_category else []
    if class_names:
        categories = [n for n in class_names if n in categories] + [n for n in categories if n not in class_names]
    if not (len(categories) > 1 or (categories and categories != ["object"])):
        return ""
    body = "<h3>Boxes per category</h3>" + table(
        ["category", *splits], [[c, *(per_category[s].get(c, 0) for s in splits)] for c in categories])
    chart = figures.bar_chart("boxes per category", categories,
                              {split: [per_category[split].get(c, 0) for c in categories] for split in splits})
    return body + f'<div class="grid"><figure>{img_tag(chart, "boxes per category")}</figure></div>'


def _box_histograms(stats: _BoxStatistics) -> str:
    """A grid of per-split histograms: box size, aspect, boxes per image and (when known) size relative to the image."""
    per_image = stats.per_image
    graphs = [("box size (sqrt area, px)", figures.histogram("box size (sqrt area, px)", [], groups=stats.sides,
                                                              log_x=True, x_label="pixels")),
              ("box aspect (width / height)", figures.histogram("box aspect (width / height)", [],
                                                                groups=stats.aspects, log_x=True, x_label="w / h")),
              ("boxes per image", figures.histogram("boxes per image", [], groups=per_image, x_label="boxes",
                                                    bins=list(range(max(max(v, default=0)
                                                                        for v in per_image.values()) + 2))))]
    if any(stats.relative.values()):
        graphs.append(("box size relative to the image (sqrt(box area / image area))",
                       figures.histogram("box size relative to the image", [], groups=stats.relative, log_x=True,
                                         x_label="sqrt(box area / image area)")))
    return '<div class="grid">' + "".join(f"<figure>{img_tag(uri, f'histogram of the {what} per split')}</figure>"
                                          for what, uri in graphs) + "</div>"


def _detection_figure(split: str, sample: Mapping[str, Any], class_names: Sequence[str] | None) -> str | None:
    """One sample drawn with its boxes (and face landmarks) as a ``<figure>``, or None when the image is unreadable."""
    loaded = load_thumbnail(str(sample.get("path")), 320)
    if loaded is None:
        return None
    image, scale = loaded
    boxes = [[float(v) * scale for v in box[:4]] for box in sample.get("boxes") or []]
    labels = list(sample.get("labels") or [])
    named = bool(labels) and (class_names is None or len(class_names) > 1)
    captions = [_name(labels[i], class_names) if named and i < len(labels) else "" for i in range(len(boxes))]
    colors = [color_of(_index(labels[i], class_names)) if i < len(labels) else color_of(0)
              for i in range(len(boxes))]
    drawn = draw_labeled_boxes(image, boxes, captions, colors, width=2, font_size=11)
    points = [face for face in sample.get("landmarks") or [] if face is not None]
    if points:  # five-point face landmarks, one colour per point: a swapped left / right shows at once
        draw_landmarks(drawn, np.asarray(points, dtype=float) * scale, radius=2)
    with_points = f", {len(points)} with landmarks" if "landmarks" in sample else ""
    return (f"<figure>{img_tag(image_data_uri(drawn, photo=True), str(sample.get('path')))}"
            f"<figcaption>{esc(split)}: {esc(Path(str(sample.get('path'))).name)} ({len(boxes)} boxes"
            f"{with_points})</figcaption></figure>")


def _detection_sections(page: Page, splits: Mapping[str, Sequence[Mapping[str, Any]]],
                        class_names: Sequence[str] | None, samples_per_split: int) -> None:
    """The "Counts" (boxes per split and category, box histograms) and "Samples" sections of a detection task."""
    stats = _box_statistics(splits, class_names)
    body = table(["split", "images", "boxes", "images without boxes", "boxes per image", "most per image"], stats.rows)
    body += _category_counts(list(splits), stats.per_category, class_names)
    body += _box_histograms(stats)
    page.section("Counts", body)
    grid = [figure for split, samples in splits.items() for sample in _pick_samples(samples, samples_per_split, None)
            if (figure := _detection_figure(split, sample, class_names)) is not None]
    page.section("Samples", f'<div class="grid">{"".join(grid)}</div>' if grid else note("no readable sample image."))


def _duplicate_section(page: Page, duplicates: Sequence[Mapping[str, Any]], root: str | Path | None) -> None:
    """Each duplicate group as a row of thumbnails (split, file and distance under each)."""
    if not duplicates:
        page.section("Duplicates", note("no duplicate images found (exact: same bytes; near: pHash distance)."))
        return
    rows = []
    for group in list(duplicates)[:MAX_DUPLICATE_GROUPS]:
        figures_html = []
        for name, split in zip(group["files"], group["splits"]):
            loaded = load_thumbnail(str(Path(root) / name if root is not None else name), 160)
            thumb = img_tag(image_data_uri(loaded[0], photo=True), name) if loaded else note("unreadable")
            figures_html.append(f"<figure>{thumb}<figcaption>{esc(split)}: {esc(name)}</figcaption></figure>")
        leak = " (across splits)" if len(set(group["splits"])) > 1 else ""
        rows.append(f"<h3>{esc(group['kind'])}, distance {int(group['distance'])}{leak}</h3>"
                    f'<div class="grid">{"".join(figures_html)}</div>')
    more = len(duplicates) - MAX_DUPLICATE_GROUPS
    page.section("Duplicates", "".join(rows) + (note(f"{more} more groups in data_check.json.") if more > 0 else ""))


def write_data_report(
    out: str | Path,
    splits: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    task: str,
    class_names: Sequence[str] | None = None,
    flagged: Sequence[Mapping[str, Any]] = (),
    title: str | None = None,
    samples_per_split: int = 24,
    notes: Sequence[str] = (),
    duplicates: Sequence[Mapping[str, Any]] | None = None,
    root: str | Path | None = None,
) -> Path:
    """Write ``data_report.html`` (path ``out``; a folder gets ``data_report.html`` inside) and return its path.

    Args:
        out: Output file, or a folder.
        splits: ``{split name: [sample dict, ...]}`` (see the module docstring).
        task: ``classification``, or a detection task (``face_detection``, ``instance_segmentation``).
        class_names: Class / category names; integer labels index into them.
        flagged: ``[{"path", "reason", "split"?}]`` images the check flagged (corrupt, duplicate, empty ...).
        title: Page title (default ``data report: <task>``).
        samples_per_split: Thumbnails per split in the sample grid.
        notes: Free lines shown under the title (e.g. the data root and the check's summary).
        duplicates: Duplicate groups (see the module docstring); when given (also empty) they get a section and
            ``data_check.json`` (``{"duplicates": [...]}``) is written beside the page.
        root: The folder the duplicate ``files`` are relative to (``data.root``).
    """
    started = time.perf_counter()
    page = Page(title or f"data report: {task}", f"{sum(len(s) for s in splits.values())} images in "
                f"{len(splits)} splits" + (f"; {len(flagged)} flagged" if flagged else ""))
    if notes:
        page.section("Dataset", "".join(f"<p>{esc(line)}</p>" for line in notes))
    if task in DETECTION_TASKS:
        _detection_sections(page, splits, class_names, samples_per_split)
    else:
        _classification_sections(page, splits, class_names, samples_per_split)
    if flagged:
        reasons = Counter(str(item.get("reason", "?")) for item in flagged)
        body = table(["reason", "images"], [[reason, count] for reason, count in reasons.most_common()])
        body += table(["split", "image", "reason"], [[item.get("split", ""), str(item.get("path", "")),
                                                      item.get("reason", "")] for item in flagged[:MAX_FLAGGED_ROWS]],
                      numeric=False)
        if len(flagged) > MAX_FLAGGED_ROWS:
            body += note(f"{len(flagged) - MAX_FLAGGED_ROWS} more not listed.")
    else:
        body = note("no image flagged.")
    page.section("Flagged images", body)
    if duplicates is not None:
        _duplicate_section(page, duplicates, root)
    path = Path(out)
    if path.is_dir() or not path.suffix:
        path = path / "data_report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    if duplicates is not None:
        (path.parent / "data_check.json").write_text(json.dumps({"duplicates": list(duplicates)}, indent=1) + "\n",
                                                     encoding="utf-8")
    path.write_text(page.render().replace("</main>", f"<p class='note'>generated in "
                                          f"{time.perf_counter() - started:.2f} s</p></main>"), encoding="utf-8")
    return path
