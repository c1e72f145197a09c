"""``<run>/report.html``: one self-contained page per run, built from the run folder's files alone."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

import yaml

from visiontune.report.figures import DPI, MAX_INTERVAL_PANELS, interval_figure, interval_points
from visiontune.report.html import (
    Page,
    details,
    esc,
    fmt_number,
    img_tag,
    key_value_table,
    note,
    pre,
    table,
)
from visiontune.report.run_files import RunFiles, config_difference, read_run
from visiontune.report.task_views import eval_folders_view, metric_text, task_view
from visiontune.utils.files import atomic_write_text
from visiontune.utils.mappings import flatten
from visiontune.utils.plots import CurvePanel, curve_figure, curve_panels, figure_uri, metric_family
from visiontune.utils.summary_table import interval_note, summary_table

__all__ = ["default_config", "format_duration", "main_metric_columns", "metric_cell", "run_summary", "write_run_report"]

PRESET_KEYS = ("preset", "config_file", "base_config")
"""Top-level config.yaml keys read as the preset a run came from (path to its YAML), when recorded."""
LOG_TAIL_LINES = 300


def format_duration(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "not recorded"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else (f"{minutes} min {secs:02d} s" if minutes else f"{secs} s")


def default_config(task: str | None = None) -> dict[str, Any]:
    """The schema defaults (``visiontune.config.Config()``) as a dict; empty if the schema cannot be built."""
    try:
        from visiontune.config import Config, config_to_dict

        values = config_to_dict(Config())
    except Exception:  # noqa: BLE001 - the report degrades, the schema is someone else's
        return {}
    if task:
        values["task"] = task
    return values


def main_metric_columns(run: RunFiles) -> list[str]:
    """Rows of the before / best / last table: the main metric first, other validation metrics, train_loss."""
    key, _mode = run.best_row()[1:]
    columns = [c for c in run.val_metrics() if metric_family(c) != f"{c[4:].split('_')[0]} AP per category"
               and "AP per category" not in metric_family(c)]
    if key in columns:
        columns.remove(key)
        columns.insert(0, key)
    if "train_loss" in run.columns:
        columns.append("train_loss")
    return columns


def _environment_value(run: RunFiles, pattern: str) -> str | None:
    for line in run.environment:
        match = re.search(pattern, line)
        if match:
            return match.group(1)
    return None


def describe_load_report(report: dict[str, Any]) -> str:
    """One line of a recorded load report (``run_info.json`` ``weights``): source and what happened to the tensors."""
    counts = [f"{int(report.get('loaded', 0))} tensors loaded"]
    for key, label in (("reinitialized", "re-initialised"), ("missing", "missing"), ("unexpected", "unexpected")):
        names = report.get(key) or []
        if names:
            shown = ", ".join(str(name) for name in names[:3]) + (", ..." if len(names) > 3 else "")
            counts.append(f"{len(names)} {label} ({shown})")
        else:
            counts.append(f"0 {label}")
    fraction = report.get("backbone_fraction")
    if isinstance(fraction, (int, float)) and fraction < 1:
        counts.append(f"backbone {100 * fraction:.1f}% loaded")
    return f"{report.get('source', '?')}: " + ", ".join(counts)


def _weights(run: RunFiles) -> str:
    """The initial weights: the load reports of ``run_info.json``, else what config.yaml asked for."""
    parts = []
    recorded = (run.info or {}).get("weights")
    if isinstance(recorded, dict):
        parts += [f"{role}: {describe_load_report(report)}" for role, report in recorded.items()
                  if isinstance(report, dict)]
        if not parts:
            parts.append("random initialisation (no weights loaded)")
    else:
        for key in ("model.checkpoint", "model.backbone_checkpoint"):
            value = run.get(key)
            if value:
                parts.append(f"{key.split('.')[-1]}: {value} (no load report: run_info.json missing)")
        if run.get("model.pretrained"):
            parts.append("pretrained (timm / torchvision weights)")
    if run.get("resume"):
        parts.append(f"resumed from {run.get('resume')}")
    return "; ".join(parts) if parts else "none recorded"


def _run_facts(run: RunFiles) -> tuple[str, str, str]:
    """Device, world size and precision: from ``run_info.json``, else from train.log's environment lines."""
    info = run.info or {}
    if info:
        name = info.get("device_name")
        device = f"{info.get('device', '?')}" + (f" ({name})" if name else "")
        amp = str(info.get("amp", "?"))
        scaling = " with loss scaling" if info.get("loss_scaling") else ""
        extras = [word for word, on in (("channels_last", info.get("channels_last")),
                                        ("torch.compile", info.get("compile"))) if on]
        precision = ("fp32" if amp == "off" else f"AMP {amp}{scaling}") + "".join(f", {e}" for e in extras)
        return device, str(info.get("world_size", "?")), precision
    logged = _environment_value(run, r"^device ([^,\s]+(?:, CUDA [^,]+)?)")
    world = _environment_value(run, r"world size (\d+)") or "not recorded"
    logged_amp = _environment_value(run, r"AMP (\S+)")
    precision = (f"AMP {logged_amp}" if logged_amp
                 else f"train.amp={run.get('train.amp', '?')} (resolved value not recorded)")
    return logged or f"{run.get('device', '?')} (configured)", world, precision


def run_summary(run: RunFiles) -> dict[str, Any]:
    """The header facts of a run, strings and numbers only (also used by :func:`compare_runs`)."""
    best, key, mode = run.best_row()
    done = len(run.training_rows())
    planned = run.get("train.epochs")
    device, world, precision = _run_facts(run)
    wall = run.wall_time_s
    return {
        "task": run.task,
        "run folder": str(run.run_dir),
        "model": run.get("model.name", "?"),
        "data": f"{run.get('data.root', '?')} ({run.get('data.format', '?')}; train {run.get('data.train_split', '?')}"
                f", val {run.get('data.val_split', '?')})",
        "weights": _weights(run),
        "device": device,
        "world size": world,
        "precision": precision,
        "epochs": f"{done} of {planned}"
                  + ("" if planned is None or done >= int(planned) else " (unfinished or stopped)"),
        "wall time": format_duration(wall) if wall else
        f"{format_duration(run.train_time_s())} (sum of epoch times; no train.log)",
        "images/s": run.images_per_s(),
        "main metric": f"{key} ({mode})" if key else "none",
        "best epoch": int(best["epoch"]) if best and not math.isnan(best.get("epoch", math.nan)) else "–",
    }


def metric_cell(column: str, row: dict[str, float] | None) -> str:
    """A metric of a metrics.csv row for a table: validation fractions as percent, "–" when missing."""
    if row is None:
        return "not measured"
    return metric_text(column, row.get(column, math.nan))


def _summary_table(summary: dict[str, Any]) -> str:
    """The before -> after table of ``summary.json``: the very cells the console prints (``format_summary``, from
    :func:`~visiontune.utils.summary_table.summary_table`) with their intervals, then their error-bar figure."""
    cells = summary_table(summary)
    metric = summary.get("metric")
    rows = [[name.removeprefix("val_"), *row] for name, row in zip(cells.names, cells.rows)]
    text = table(["metric", *cells.header], rows, numeric=False,
                 row_classes=["best" if name == metric else "" for name in cells.names])
    if summary.get("baseline") is None:
        text += note("baseline: not measured (train.eval_before=false, or a resumed run that started without it).")
    elif summary.get("best_epoch") == 0 and summary.get("epochs"):
        text += note("no epoch beat the baseline: best.pt is the model before training (epoch 0).")
    explained = interval_note(summary)
    if explained is None:
        return text + note("values as summary.json records them; no intervals (eval.intervals was off, or the run "
                           "predates them).")
    return text + note(explained) + _interval_figure(summary, cells.names)


def _interval_figure(summary: dict[str, Any], names: list[str]) -> str:
    """The error-bar figure of the metrics with intervals (:func:`~visiontune.report.figures.interval_figure`)."""
    intervals = summary.get("intervals") or {}
    shown = [name for name in names if isinstance(intervals.get(name), dict)][:MAX_INTERVAL_PANELS]
    if not shown:
        return ""
    labels = list(dict.fromkeys(label for name in shown for label, _value, _bounds in interval_points(summary, name)))
    alt = (f"{intervals.get('level', 0.95):.0%} bootstrap intervals as error bars of "
           f"{', '.join(name.removeprefix('val_') for name in shown)}: {', '.join(labels)}")
    return f"<figure>{img_tag(figure_uri(interval_figure(summary, shown)), alt)}</figure>"


def _metrics_table(run: RunFiles) -> str:
    summary = run.current_summary()
    if summary is not None:
        return _summary_table(summary)
    before, last = run.before_row(), run.last_row()
    best, key, _mode = run.best_row()
    columns = main_metric_columns(run)
    if not columns:
        return note("no metrics yet.")

    def epoch(row: dict[str, float] | None) -> str:
        return f" (epoch {int(row['epoch'])})" if row and "epoch" in row and not math.isnan(row["epoch"]) else ""

    header = ["metric", "before" + (epoch(before) if before else ""), "best" + epoch(best), "last" + epoch(last)]
    rows = [[column.removeprefix("val_"), metric_cell(column, before),
             metric_cell(column, best), metric_cell(column, last)] for column in columns]
    classes = ["best" if column == key else "" for column in columns]
    text = table(header, rows, numeric=False, row_classes=classes)
    if before is None:
        text += note("before: not measured (metrics.csv has no epoch-0 row).")
    elif best is not None and best.get("epoch") == 0 and run.training_rows():
        text += note("no epoch beat the baseline: best.pt is the model before training (epoch 0).")
    return text


def _curves(run: RunFiles) -> str:
    if not run.rows:
        return note("no epoch finished yet: no curves.")
    best, _key, _mode = run.best_row()
    mark = best.get("epoch") if best else None
    panels = [(panel, figure_uri(curve_figure([panel], mark_x=None if panel.kind == "lr" else mark, dpi=DPI)))
              for panel in curve_panels({c: run.column(c) for c in run.columns}, num_classes=run.num_classes)]
    body = "".join(f"<figure>{img_tag(uri, _curve_alt(panel))}</figure>" for panel, uri in panels)
    return (f'<div class="grid">{body}</div>'
            + note("one panel per metric family; each line has its own marker and dash, the legend gives the last "
                   "value; the dotted green line marks the best epoch."))


def _curve_alt(panel: CurvePanel) -> str:
    """What a curve panel shows, for its ``alt`` text: the title, the lines and the x axis."""
    names = ", ".join(str(name) for name in panel.series)
    return f"{panel.title}: {names} by {panel.x_label or 'epoch'}" if names else panel.title


def _preset_difference(run: RunFiles) -> str:
    kept = run.run_dir / "preset.yaml"  # the copy of the -c file that train keeps in the run folder
    if kept.is_file():
        try:
            preset_values = flatten(yaml.safe_load(kept.read_text(encoding="utf-8")) or {})
        except (OSError, yaml.YAMLError):
            return note("preset.yaml in the run folder could not be read.")
        resolved = flatten(run.config)
        rows = [[key, str(value), str(resolved.get(key, "<absent>"))] for key, value in preset_values.items()
                if resolved.get(key, "<absent>") != value]
        head = "<h3>Changed from the preset (preset.yaml)</h3>"
        return head + (table(["key", "preset", "this run"], rows, numeric=False) if rows
                       else note("the run used the preset unchanged."))
    for key in PRESET_KEYS:
        preset = run.config.get(key)
        if not preset:
            continue
        path = Path(str(preset))
        candidates = [path] if path.is_absolute() else [Path.cwd() / path, run.run_dir / path,
                                                        *(parent / path for parent in run.run_dir.resolve().parents)]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            return note(f"config.yaml names the preset {preset}, which was not found here.")
        try:
            values = yaml.safe_load(found.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            return note(f"the preset {found} could not be read.")
        resolved = flatten(run.config)
        rows = [[k, v, resolved.get(k, "<absent>")] for k, v in flatten(values).items()
                if resolved.get(k, "<absent>") != v and k not in PRESET_KEYS]
        head = f"<h3>Changed from the preset {esc(preset)}</h3>"
        return head + (table(["key", "preset", "this run"], rows, numeric=False) if rows
                       else note("the run used the preset unchanged."))
    return note("config.yaml does not record the preset it came from (a top-level preset: key would enable a "
                "preset comparison).")


def _config_section(run: RunFiles) -> str:
    if not run.config:
        return note("no config.yaml.")
    parts = [_preset_difference(run)]
    defaults = default_config(run.task)
    if defaults:
        rows = [[key, values[0], values[1]] for key, values in config_difference([defaults, run.config])
                if key not in ("name", "project") and not key.startswith(PRESET_KEYS)]
        parts.append("<h3>Differences from the schema defaults</h3>")
        parts.append(table(["key", "default", "this run"], rows, numeric=False) if rows else note("none"))
    parts.append(details("resolved config (config.yaml)", pre(yaml.safe_dump(run.config, sort_keys=False))))
    return "".join(parts)


def _environment_section(run: RunFiles) -> str:
    parts = []
    versions = (run.info or {}).get("versions")
    if isinstance(versions, dict):
        parts.append(key_value_table({str(k): str(v) for k, v in versions.items()}))
    elif run.environment:
        parts.append(key_value_table({f"line {i + 1}": line for i, line in enumerate(run.environment)}))
    else:
        parts.append(note("versions not recorded (no run_info.json, no environment block in train.log)."))
    if run.log_text is None:
        parts.append(note("no train.log."))
        return "".join(parts)
    if run.log_sections > 1:
        parts.append(note(f"train.log holds {run.log_sections} sections (the run was resumed)."))
    lines = run.log_text.splitlines()
    tail = lines[-LOG_TAIL_LINES:]
    parts.append(details(f"train.log (last {len(tail)} of {len(lines)} lines)", pre("\n".join(tail))))
    return "".join(parts)


def build_run_page(run: RunFiles) -> str:
    summary = run_summary(run)
    best, key, _mode = run.best_row()
    headline = (f"{key[4:] if key and key.startswith('val_') else key} "
                f"{metric_cell(key, best)}" if best and key else "no validation metric yet")
    page = Page(f"{run.name}: {run.task}", f"{summary['model']} · best {headline} · {summary['epochs']} epochs")
    facts = dict(summary)
    facts["images/s"] = fmt_number(summary["images/s"], 1) if summary["images/s"] is not None else "not recorded"
    page.section("Summary", key_value_table(facts) + "<h3>Metrics: before → best → last</h3>" + _metrics_table(run))
    page.section("Curves", _curves(run))
    extra = eval_folders_view(run)
    page.section("Evaluation", task_view(run) + ("<h3>Later evaluations (eval*/metrics.json)</h3>" + extra
                                                 if extra else ""))
    page.section("Config", _config_section(run))
    page.section("Environment", _environment_section(run))
    if run.problems:
        page.section("Missing files", "".join(note(problem, "warn") for problem in run.problems))
    return page.render()


def write_run_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``<run_dir>/report.html`` (or ``out``) from the run folder's files; returns the path.

    Works on finished and interrupted runs (whatever files exist); cheap enough to call after every evaluation.
    The file is written atomically (:func:`visiontune.utils.files.atomic_write_text`) so a browser never sees half
    a page.

    Raises:
        FileWriteError: the page cannot be written (one line naming it); a previous page is kept.
    """
    started = time.perf_counter()
    run = read_run(run_dir)
    text = build_run_page(run)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    return atomic_write_text(text.replace("</main>", f"<p class='note'>generated in "
                                          f"{time.perf_counter() - started:.2f} s</p></main>"), path)
