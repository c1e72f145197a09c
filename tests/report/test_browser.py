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
