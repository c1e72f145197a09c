"""Render generated reports in headless Chromium: the page is not blank, the sections exist, every image loads."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.report.conftest import make_classification_run, make_face_run
from visiontune.report import write_data_report, write_run_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--allow-file-access-from-files",
         "--run-all-compositor-stages-before-draw", "--virtual-time-budget=3000", "--window-size=1280,2000"]


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={cwd / 'profile'}", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


def render(page: Path, tmp_path: Path) -> tuple[Image.Image, str]:
    screenshot = tmp_path / "screenshot.png"
    shot = chromium(f"--screenshot={screenshot}", page.resolve().as_uri(), cwd=tmp_path)
    assert screenshot.is_file(), shot.stderr[-2000:]
    dom = chromium("--dump-dom", page.resolve().as_uri(), cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    return Image.open(screenshot).convert("RGB"), dom.stdout


def check_images(dom: str) -> int:
    sources = re.findall(r'<img [^>]*src="([^"]*)"', dom)
    assert sources
    for source in sources:
        assert source.startswith("data:image/"), source[:80]
        mime, payload = source[5:].split(";base64,", 1)
        data = base64.b64decode(payload)
        if mime == "image/svg+xml":
            assert b"<svg" in data
        else:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                assert image.width > 4 and image.height > 4
    return len(sources)


def test_run_report_renders(tmp_path: Path, shapes_dir: Path):
    report = write_run_report(make_classification_run(tmp_path, shapes_dir))
    screenshot, dom = render(report, tmp_path)
    colours = screenshot.getcolors(1 << 20)
    assert colours is not None and len(colours) > 200, "the page looks blank"
    assert screenshot.getpixel((10, 10)) != (255, 255, 255)  # the header band was painted
    for heading in ("Summary", "Curves", "Evaluation", "Config", "Environment", "Confusion matrix"):
        assert re.search(rf"<h[23]>{heading}</h[23]>", dom), heading
    assert check_images(dom) >= 6


def test_face_report_renders_the_examples_with_landmarks(tmp_path: Path):
    report = write_run_report(make_face_run(tmp_path))
    screenshot, dom = render(report, tmp_path)
    assert len(screenshot.getcolors(1 << 20) or []) > 200, "the page looks blank"
    for heading in ("Summary", "Curves", "Precision-recall", "Detections of the best checkpoint",
                    "Examples (best checkpoint)"):
        assert re.search(rf"<h[23]>{re.escape(heading)}</h[23]>", dom), heading
    assert dom.count("with their 5 landmarks") >= 3 and check_images(dom) >= 5


def test_data_report_renders(tmp_path: Path, shapes_dir: Path):
    splits = {"val": [{"path": p, "label": p.parent.name} for p in sorted((shapes_dir / "val").glob("*/*.png"))]}
    report = write_data_report(tmp_path / "data_report.html", splits, task="classification")
    screenshot, dom = render(report, tmp_path)
    assert len(screenshot.getcolors(1 << 20) or []) > 200
    assert "<h2>Samples</h2>" in dom and "<h2>Flagged images</h2>" in dom
    assert check_images(dom) >= 10


def glyph_distances(shown: Image.Image, expected: Image.Image, other: Image.Image) -> tuple[int, int]:
    """How far ``shown`` is from ``expected`` and from ``other`` on the pixels where those two differ."""
    import numpy as np

    image, first, second = (np.asarray(picture.convert("RGB"), dtype=int) for picture in (shown, expected, other))
    mask = np.abs(first - second).sum(axis=2) > 60
    assert mask.any()
    return int(np.abs(image - first)[mask].sum()), int(np.abs(image - second)[mask].sum())


def caption_pixels(path: str, text: str) -> Image.Image:
    """The report's confused-pair thumbnail of ``path`` with ``text`` as its caption."""
    from visiontune.report.task_views import PRED_COLOR, THUMB
    from visiontune.utils.drawing import caption_image, load_thumbnail

    loaded = load_thumbnail(path, THUMB)
    assert loaded is not None
    return caption_image(loaded[0], text, PRED_COLOR)


def test_confused_pair_captions_show_the_arrow(tmp_path: Path, shapes_dir: Path):
    """The report's confused-pair thumbnails, as the browser shows them: the caption band holds the arrow glyph,
    not the missing-glyph box."""
    report = write_run_report(make_classification_run(tmp_path, shapes_dir))
    _screenshot, dom = render(report, tmp_path)
    assert "Examples of the most confused pairs" in dom and check_images(dom) >= 6
    captions = re.findall(r'<img src="data:image/[a-z]+;base64,([^"]+)" alt="([^"]*): true star, predicted triangle',
                          dom)
    assert captions, "the confused-pair examples"
    payload, path = captions[0]
    shown = Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB")
    band = (0, 0, shown.width, shown.height // 3)
    with_arrow = caption_pixels(path, "star → triangle 0.61").crop(band)
    with_box = caption_pixels(path, "star \ue000 triangle 0.61").crop(band)
    to_arrow, to_box = glyph_distances(shown.crop(band), with_arrow, with_box)
    assert to_arrow < to_box / 2


def test_crowded_face_example_renders_with_labels_apart(tmp_path: Path):
    """A crowd of small faces drawn as the face report draws them, shown in the browser: the label rectangles the
    drawing returns never overlap, and the page shows the drawing."""
    from PIL import ImageDraw

    from visiontune.report.html import image_data_uri, img_tag
    from visiontune.utils.drawing import draw_box_labels

    canvas = Image.new("RGB", (320, 240), (120, 120, 120))
    boxes = [[10 + 12 * i, 50 + (i % 3) * 6, 30 + 12 * i, 74 + (i % 3) * 6] for i in range(15)]
    rects = draw_box_labels(ImageDraw.Draw(canvas), boxes, [f"0.{99 - i}" for i in range(15)], [(230, 25, 75)] * 15,
                            size=10, bounds=canvas.size, fit=True)
    assert rects and all(a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]
                         for index, a in enumerate(rects) for b in rects[index + 1:])
    page = tmp_path / "crowd.html"
    page.write_text(f"<html><body style='margin:0'>{img_tag(image_data_uri(canvas), 'crowd of faces')}</body></html>")
    screenshot, dom = render(page, tmp_path)
    assert check_images(dom) == 1
    label = screenshot.crop(tuple(round(v) for v in rects[0]))
    assert any(colour == (230, 25, 75) for _count, colour in label.getcolors(1 << 16) or [])
