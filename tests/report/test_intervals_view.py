"""report.html's before -> best -> last table reads summary.json: the console's cells (values with their bootstrap
intervals, "within noise" for a change whose interval contains 0) and an error-bar figure of them; a summary
without intervals (an older run) shows the values alone."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from tests.report.conftest import make_classification_run
from visiontune.api import format_summary
from visiontune.report.figures import interval_points
from visiontune.report.run_report import write_run_report

INTERVALS = {
    "level": 0.95, "resamples": 200, "unit": "image",
    "val_top1": {"baseline": [0.05, 0.4], "best": [0.62, 0.95], "last": [0.6, 0.93], "change": [0.31, 0.77]},
    "val_macro_f1": {"baseline": [0.0, 0.35], "best": [0.5, 0.9], "last": [0.48, 0.88], "change": [-0.02, 0.7]},
    "test_top1": [0.55, 0.91],
}


def summary_of(*, intervals: bool, test: bool = False) -> dict:
    """The summary.json of make_classification_run's metrics.csv (epochs 0-3, best = last = 3)."""
    baseline = {"val_top1": 0.2, "val_top5": 1.0, "val_macro_precision": 0.15, "val_macro_recall": 0.2,
                "val_macro_f1": 0.17}
    best = {"val_top1": 0.8, "val_top5": 1.0, "val_macro_precision": 0.75, "val_macro_recall": 0.8,
            "val_macro_f1": 0.77}
    summary = {"metric": "val_top1", "mode": "max", "baseline": baseline, "best": best, "best_epoch": 3,
               "last": dict(best), "last_epoch": 3, "change": {k: best[k] - baseline[k] for k in best},
               "epochs": 3, "steps": 27, "stop_reason": "completed", "wall_time_s": 9.0}
    if intervals:
        summary["intervals"] = INTERVALS
    if test:
        summary.update(test={"test_top1": 0.74}, test_checkpoint="best.pt")
    return summary


def finished_run(tmp_path: Path, shapes_dir: Path, summary: dict) -> Path:
    run = make_classification_run(tmp_path, shapes_dir)
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def console_rows(summary: dict) -> dict[str, list[str]]:
    """format_summary's table rows: metric name (without ``val_`` and the ``*``) -> its cells."""
    lines = format_summary(summary).splitlines()
    rows = {}
    for line in lines[2:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0].removesuffix(" *").removeprefix("val_")] = cells[1:]
    return rows


def html_rows(page: str) -> tuple[list[str], dict[str, list[str]]]:
    """The before -> best -> last table of the page: its header cells and metric -> value cells."""
    block = page.split("before → best → last</h3>")[1].split("</table>")[0]
    header = [html.unescape(cell) for cell in re.findall(r"<th>(.*?)</th>", block)]
    rows = {}
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", block)[1:]:
        cells = [html.unescape(cell) for cell in re.findall(r"<td>(.*?)</td>", row)]
        rows[cells[0]] = cells[1:]
    return header, rows


def error_bar_image(page: str) -> tuple[str, Image.Image] | None:
    match = re.search(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]*bootstrap intervals[^"]*)"', page)
    if match is None:
        return None
    image = Image.open(io.BytesIO(base64.b64decode(match.group(1))))
    image.load()
    return html.unescape(match.group(2)), image


def test_report_table_shows_the_console_cells_with_intervals(tmp_path, shapes_dir):
    summary = summary_of(intervals=True, test=True)
    page = write_run_report(finished_run(tmp_path, shapes_dir, summary)).read_text()
    header, rows = html_rows(page)
    console = console_rows(summary)
    assert header == ["metric", "baseline (epoch 0)", "best (epoch 3)", "last (epoch 3)", "change (best - baseline)",
                      "test (best.pt)"]
    assert rows == console and next(iter(rows)) == "top1"
    assert rows["top1"] == ["0.2000 [0.05000, 0.4000]", "0.8000 [0.6200, 0.9500]", "0.8000 [0.6000, 0.9300]",
                            "+0.6000 [+0.3100, +0.7700]", "0.7400 [0.5500, 0.9100]"]
    assert rows["macro_f1"][3] == "+0.6000 [-0.02000, +0.7000] within noise"  # its interval contains 0
    assert rows["macro_recall"][1] == "0.8000"  # no interval recorded for it: the value alone
    assert "95% bootstrap interval over 200 resamples" in page


def test_report_draws_the_intervals_as_error_bars(tmp_path, shapes_dir):
    summary = summary_of(intervals=True, test=True)
    page = write_run_report(finished_run(tmp_path, shapes_dir, summary)).read_text()
    found = error_bar_image(page)
    assert found is not None
    alt, image = found
    assert alt == ("95% bootstrap intervals as error bars of top1, macro_f1: baseline (epoch 0), best (epoch 3), "
                   "last (epoch 3), test (best.pt)")
    pixels = np.asarray(image.convert("L"))
    assert image.width > 2 * image.height and (pixels < 128).mean() > 0.005  # two panels with points drawn
    assert interval_points(summary, "val_top1") == [("baseline (epoch 0)", 0.2, (0.05, 0.4)),
                                                    ("best (epoch 3)", 0.8, (0.62, 0.95)),
                                                    ("last (epoch 3)", 0.8, (0.6, 0.93)),
                                                    ("test (best.pt)", 0.74, (0.55, 0.91))]


def test_summary_without_intervals_still_renders(tmp_path, shapes_dir):
    summary = summary_of(intervals=False)
    page = write_run_report(finished_run(tmp_path, shapes_dir, summary)).read_text()
    header, rows = html_rows(page)
    assert rows == console_rows(summary) and rows["top1"] == ["0.2000", "0.8000", "0.8000", "+0.6000"]
    assert "test (best.pt)" not in header and "within noise" not in page
    assert error_bar_image(page) is None
    assert "no intervals (eval.intervals was off, or the run predates them)" in page


def test_a_summary_older_than_metrics_csv_is_not_used(tmp_path, shapes_dir):
    summary = summary_of(intervals=True)
    summary.update(best_epoch=1, last_epoch=1, epochs=1)  # training went on to epoch 3 after this summary
    page = write_run_report(finished_run(tmp_path, shapes_dir, summary)).read_text()
    _header, rows = html_rows(page)
    assert rows["top1"] == ["20.00%", "80.00%", "80.00%"]  # metrics.csv's table, epoch 3 best
    assert error_bar_image(page) is None and "[0.6200, 0.9500]" not in page
