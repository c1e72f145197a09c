"""Compare runs side by side: main metrics (best and last), speed and the config keys that differ."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

from visiontune.report.html import Page, esc, fmt_number, note, table
from visiontune.report.run_files import (
    RunFiles,
    config_difference,
    read_run,
)
from visiontune.report.run_report import format_duration, main_metric_columns, metric_cell

__all__ = ["compare_runs", "write_comparison"]

IGNORED_KEYS = ("name",)


def _value(column: str | None, row: dict[str, float] | None) -> str:
    return "–" if row is None or column is None else metric_cell(column, row)


def _console_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(header, widths)).rstrip(),
             "  ".join("-" * width for width in widths)]
    lines += ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _short(value: object, limit: int = 40) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def compare_runs(run_dirs: Sequence[str | Path]) -> tuple[str, str]:
    """Read each run folder and return (console text, self-contained HTML page) comparing them.

    The table gives, per run, the main metric at the best and at the last epoch, the other validation metrics at
    the best epoch, images/s and wall time; below it, every config key whose value differs between the runs.
    """
    runs: list[RunFiles] = [read_run(path) for path in run_dirs]
    labels = _labels(runs)
    metric_columns: list[str] = []
    for run in runs:
        for column in main_metric_columns(run):
            if column not in metric_columns:
                metric_columns.append(column)
    header = ["run", "task", "model", "main metric", "best", "best epoch", "last", "epochs", "images/s", "wall time"]
    rows, scores = [], []
    for label, run in zip(labels, runs):
        best, key, mode = run.best_row()
        last = run.last_row()
        value = best.get(key, math.nan) if best and key else math.nan
        scores.append(value if mode == "max" else -value)
        wall = run.wall_time_s or run.train_time_s()
        rows.append([label, run.task, str(run.get("model.name", "?")),
                     f"{key[4:] if key and key.startswith('val_') else key} ({mode})", _value(key, best),
                     str(int(best["epoch"])) if best and "epoch" in best else "–", _value(key, last),
                     str(len(run.training_rows())),
                     fmt_number(run.images_per_s(), 1) if run.images_per_s() is not None else "–",
                     format_duration(wall) + ("" if run.wall_time_s else "*") if wall else "–"])
    groups = _metric_groups(runs)
    finite = [s for s in scores if not math.isnan(s)]
    winner = scores.index(max(finite)) if finite and len(groups) == 1 else None
    detail_header = ["metric at the best epoch", *labels]
    detail_rows = [[column.removeprefix("val_"),
                    *(_value(column, run.best_row()[0]) for run in runs)] for column in metric_columns]
    differences = config_difference([{k: v for k, v in run.config.items() if k not in IGNORED_KEYS}
                                     for run in runs])
    diff_rows = [[key, *(_short(v) for v in values)] for key, values in differences]

    console = ["runs:", _console_table(header, rows)]
    verdict = _verdict(groups, labels, winner) if len(runs) > 1 else ""
    if verdict:
        console.append(verdict)
    if detail_rows:
        console += ["", _console_table(detail_header, detail_rows)]
    console += ["", "config differences:" if diff_rows else "config: identical (apart from the name)"]
    if diff_rows:
        console.append(_console_table(["key", *labels], diff_rows))
    if any(not run.wall_time_s for run in runs):
        console.append("* sum of epoch times (no train.log)")

    page = Page(f"Comparison of {len(runs)} runs", ", ".join(labels))
    classes = ["best" if index == winner else "" for index in range(len(runs))]
    page.section("Runs", table(header, rows, numeric=False, row_classes=classes)
                 + note("best: the main metric's best epoch (train.metric or the task default; epoch 0: no epoch "
                        "beat the baseline); the green row has the best value; * wall time summed from epoch times "
                        "(no train.log).") + (note(verdict) if verdict else ""))
    if detail_rows:
        page.section("Metrics", table(detail_header, detail_rows, numeric=False))
    page.section("Config differences", table(["key", *labels], diff_rows, numeric=False) if diff_rows
                 else note("the configs are identical apart from the run name."))
    folders = "".join(f"<li>{esc(label)}: {esc(run.run_dir)}"
                      + (f" <span class='warn'>({esc('; '.join(run.problems))})</span>" if run.problems else "")
                      + "</li>" for label, run in zip(labels, runs))
    page.section("Folders", f"<ul>{folders}</ul>")
    return "\n".join(console) + "\n", page.render()


def _metric_groups(runs: Sequence[RunFiles]) -> dict[str, list[int]]:
    """Indices of the runs per main metric and mode (``ap_hard (max)``): only runs of one group can be ranked."""
    groups: dict[str, list[int]] = {}
    for index, run in enumerate(runs):
        _best, key, mode = run.best_row()
        name = (key or "none").lower().removeprefix("val_")
        groups.setdefault(f"{name} ({mode})", []).append(index)
    return groups


def _verdict(groups: dict[str, list[int]], labels: Sequence[str], winner: int | None) -> str:
    """The line naming the best run, or saying why none is named."""
    if len(groups) > 1:
        listed = "; ".join(f"{metric}: {', '.join(labels[i] for i in members)}" for metric, members in groups.items())
        return f"no best main metric: the runs are not comparable on one metric ({listed})"
    return f"best main metric: {labels[winner]}" if winner is not None else ""


def _labels(runs: Sequence[RunFiles]) -> list[str]:
    """Run folder names, with the parent folder added where names repeat."""
    names = [run.name for run in runs]
    labels = []
    for run, name in zip(runs, names):
        labels.append(f"{run.run_dir.parent.name}/{name}" if names.count(name) > 1 else name)
    return labels


def write_comparison(run_dirs: Sequence[str | Path], out: str | Path) -> tuple[Path, str]:
    """Write the comparison page to ``out``; returns the path and the console text."""
    started = time.perf_counter()
    console, page = compare_runs(run_dirs)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page.replace("</main>", f"<p class='note'>generated in {time.perf_counter() - started:.2f} s"
                                             "</p></main>"), encoding="utf-8")
    return path, console
