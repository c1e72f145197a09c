"""Read a run folder (``config.yaml``, ``metrics.csv``, ``summary.json``, ``train.log``, ``eval/``) into plain data.

Only the files are read, never a checkpoint, so finished and interrupted runs both work and reading is cheap.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from visiontune.utils.mappings import flatten
from visiontune.utils.plots import LOWER_IS_BETTER, is_saturated_topk, to_float

__all__ = ["RunFiles", "config_difference", "default_metric", "main_metric", "read_run"]

DEFAULT_METRICS = {"classification": "top1", "face_detection": "ap", "instance_segmentation": "segm_AP"}
"""The task's ``default_metric`` (``visiontune.tasks``), mirrored here to stay below the tasks layer; face detection
uses ``ap_hard`` instead when ``face.gt_dir`` is set (:func:`default_metric`)."""
METRIC_MODES = {"classification": "max", "face_detection": "max", "instance_segmentation": "max"}
"""The task's ``metric_mode`` (``visiontune.tasks``), the engine's mode when ``train.metric_mode`` is unset."""
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:,\d+)? ")
_SECTION = re.compile(r"^=== visiontune run started (\S+)")


@dataclass
class RunFiles:
    """What a run folder holds, as read by :func:`read_run`."""

    run_dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, float]] = field(default_factory=list)
    log_text: str | None = None
    environment: list[str] = field(default_factory=list)
    log_sections: int = 0
    wall_time_s: float | None = None
    class_names: list[str] | None = None
    confusion: list[list[int]] | None = None
    summary: dict[str, Any] | None = None
    """``summary.json`` of a finished run (the engine's ``metric`` / ``mode`` that picked ``best.pt``), or None."""
    info: dict[str, Any] | None = None
    """``run_info.json`` (versions, device, world size, precision, load reports of the initial weights), or None
    for runs written before it existed."""
    problems: list[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        return str(self.config.get("task") or "unknown")

    @property
    def name(self) -> str:
        return self.run_dir.name

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def column(self, name: str) -> list[float]:
        return [row.get(name, math.nan) for row in self.rows]

    @property
    def epochs(self) -> list[float]:
        return self.column("epoch") if "epoch" in self.columns else [float(i + 1) for i in range(len(self.rows))]

    @property
    def num_classes(self) -> int | None:
        if self.class_names:
            return len(self.class_names)
        value = self.get("model.num_classes")
        if isinstance(value, int) and value > 0:
            return value
        categories = self.get("data.categories")
        return len(categories) if isinstance(categories, list) and categories else None

    def val_metrics(self) -> list[str]:
        """The ``val_*`` columns worth showing: top-k with k >= the number of classes dropped (always 100%)."""
        return [column for column in self.columns if column.startswith("val_")
                and not is_saturated_topk(column, self.num_classes)
                and not all(math.isnan(v) for v in self.column(column))]

    def training_rows(self) -> list[dict[str, float]]:
        """Rows of trained epochs (epoch >= 1); the epoch-0 row is the evaluation before training."""
        return [row for row in self.rows if row.get("epoch") != 0]

    def before_row(self) -> dict[str, float] | None:
        return next((row for row in self.rows if row.get("epoch") == 0), None)

    def last_row(self) -> dict[str, float] | None:
        rows = self.training_rows()
        return rows[-1] if rows else None

    def best_row(self) -> tuple[dict[str, float] | None, str | None, str]:
        """The row of ``best.pt`` (the epoch with the best main metric), the metric column and its mode.

        The one answer every view gives (report, compare, the engine's console table): ``summary.json``'s
        ``best_epoch`` and ``best`` values when the run finished; otherwise (an older or running run) the engine's
        rule over metrics.csv: the baseline (epoch-0 row) counts as a candidate, a later epoch wins only by beating
        the best so far, so the first of equal values wins. Epoch 0 means no epoch beat the baseline.
        """
        key, mode = main_metric(self)
        recorded = self._recorded_best()
        if recorded is not None:
            return recorded, key, mode
        best: dict[str, float] | None = None
        for row in self.rows:
            value = row.get(key, math.nan) if key else math.nan
            if math.isnan(value):
                continue
            if best is None or (value > best[str(key)] if mode == "max" else value < best[str(key)]):
                best = row
        return best, key, mode

    def current_summary(self) -> dict[str, Any] | None:
        """``summary.json`` when it describes metrics.csv as it is (a finished run not trained further since, with
        a best or last evaluation), else None."""
        summary = self.summary or {}
        if not (summary.get("best") or summary.get("last")) or self._recorded_best() is None:
            return None
        return summary

    def _recorded_best(self) -> dict[str, float] | None:
        """The best row as ``summary.json`` records it (its metrics.csv row, with the summary's values), or None
        without a usable summary: absent, without a best epoch, or older than metrics.csv (training went on)."""
        summary = self.summary or {}
        epoch, values = summary.get("best_epoch"), summary.get("best")
        if isinstance(epoch, bool) or not isinstance(epoch, (int, float)):
            return None
        last = summary.get("last_epoch")
        evaluated = [row.get("epoch", math.nan) for row in self.rows
                     if any(not math.isnan(v) for k, v in row.items() if k.startswith("val_"))]
        if isinstance(last, (int, float)) and any(e > last for e in evaluated):
            return None
        row = dict(next((row for row in self.rows if row.get("epoch") == epoch), {}))
        row.update({str(k): to_float(v) for k, v in (values if isinstance(values, Mapping) else {}).items()})
        if not row:
            return None
        row["epoch"] = float(epoch)
        return row

    def images_per_s(self) -> float | None:
        values = [v for v in self.column("images_per_s") if not math.isnan(v)]
        return sum(values) / len(values) if values else None

    def train_time_s(self) -> float | None:
        values = [v for v in self.column("epoch_time_s") if not math.isnan(v)]
        return sum(values) if values else None


def default_metric(task: str, config: Mapping[str, Any], columns: Sequence[str] = ()) -> str | None:
    """The metric the engine picks ``best.pt`` by when ``train.metric`` is unset: the task's ``default_metric``.

    Mirrors the tasks without importing them: face detection's is ``ap_hard`` when the run's ``face.gt_dir`` is set
    (official WIDER FACE evaluation), else ``ap``. Only when the config has no ``face`` section (an unreadable or
    foreign config.yaml) does a ``val_ap_hard`` column in ``columns`` stand in for ``face.gt_dir``.
    """
    if task == "face_detection":
        face = config.get("face")
        if isinstance(face, Mapping):
            return "ap_hard" if face.get("gt_dir") else "ap"
        return "ap_hard" if "val_ap_hard" in columns else "ap"
    return DEFAULT_METRICS.get(task)


def main_metric(run: RunFiles) -> tuple[str | None, str]:
    """The metric column that picked ``best.pt`` as it appears in metrics.csv (case-insensitive), and its mode.

    A finished run's ``summary.json`` records both (``metric``, ``mode``). Otherwise they follow the engine's rule:
    ``val_<train.metric or the task's default>`` (:func:`default_metric`) and ``train.metric_mode`` or the task's
    mode (``max`` for every task); a run of an unknown task falls back to ``min`` for loss-like names.
    """
    summary = run.summary or {}
    recorded = summary.get("metric")
    name: str | None
    if isinstance(recorded, str) and recorded:
        name = recorded
    else:
        name = run.get("train.metric") or default_metric(run.task, run.config, run.columns)
    if not name:
        return None, "max"
    name = str(name)
    if not name.startswith("val_"):
        name = "val_" + name
    lookup = {column.lower(): column for column in run.columns}
    column = lookup.get(name.lower())
    mode = summary.get("mode") if summary.get("mode") in ("max", "min") else None
    mode = mode or run.get("train.metric_mode") or METRIC_MODES.get(run.task)
    if mode is None:
        mode = "min" if any(word in name.lower() for word in LOWER_IS_BETTER) else "max"
    return column or name, str(mode)


def config_difference(configs: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Any]]]:
    """Dotted keys whose values differ between ``configs`` (missing keys read as ``<absent>``), sorted."""
    flats = [flatten(config) for config in configs]
    keys = sorted(set().union(*flats)) if flats else []
    absent = "<absent>"
    rows = []
    for key in keys:
        values = [flat.get(key, absent) for flat in flats]
        if any(value != values[0] for value in values[1:]):
            rows.append((key, values))
    return rows


def _read_metrics(path: Path, run: RunFiles) -> None:
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            run.columns = list(reader.fieldnames or [])
            for raw in reader:
                run.rows.append({key: to_float(value) for key, value in raw.items() if key is not None})
    except (OSError, csv.Error, UnicodeDecodeError) as error:
        run.problems.append(f"metrics.csv unreadable: {error}")


def _parse_log(text: str, run: RunFiles) -> None:
    """Environment lines of the last section and the wall time: per section, last timestamp - start, summed."""
    total = 0.0
    started: datetime.datetime | None = None
    last: datetime.datetime | None = None
    in_environment = False
    environment: list[str] = []

    def close() -> float:
        return (last - started).total_seconds() if started and last and last >= started else 0.0

    for line in text.splitlines():
        section = _SECTION.match(line)
        if section:
            total += close()
            run.log_sections += 1
            try:
                started = datetime.datetime.fromisoformat(section.group(1))
            except ValueError:
                started = None
            last = started
            environment = []
            in_environment = False
            continue
        if line == "environment:":
            in_environment = True
            continue
        if in_environment:
            if line.startswith("  "):
                environment.append(line.strip())
                continue
            in_environment = False
        stamp = _LOG_TIME.match(line)
        if stamp:
            with contextlib.suppress(ValueError):  # a malformed time stamp keeps the previous one
                last = datetime.datetime.fromisoformat(stamp.group(1))
    total += close()
    run.environment = environment
    if run.log_sections and total > 0:
        run.wall_time_s = total


def _read_confusion(path: Path, run: RunFiles) -> None:
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            rows = list(csv.reader(stream))
        names = rows[0][1:]
        matrix = [[int(float(cell)) for cell in row[1:]] for row in rows[1:] if row]
        if len(matrix) != len(names) or any(len(row) != len(names) for row in matrix):
            raise ValueError("not square")
        run.class_names, run.confusion = names, matrix
    except (OSError, IndexError, ValueError, csv.Error) as error:
        run.problems.append(f"eval/confusion_matrix.csv unreadable: {error}")


def read_csv_dicts(path: Path) -> list[dict[str, str]] | None:
    """Rows of a CSV file with a header; None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            return list(csv.DictReader(stream))
    except (OSError, csv.Error, UnicodeDecodeError):
        return None


def read_run(run_dir: str | Path) -> RunFiles:
    """Read whatever the run folder holds; missing or broken files are listed in ``problems``."""
    run = RunFiles(run_dir=Path(run_dir))
    config_path = run.run_dir / "config.yaml"
    if config_path.is_file():
        try:
            loaded = yaml.safe_load(config_path.read_text(encoding="utf-8"))
            run.config = loaded if isinstance(loaded, dict) else {}
        except (OSError, yaml.YAMLError) as error:
            run.problems.append(f"config.yaml unreadable: {error}")
    else:
        run.problems.append("no config.yaml")
    metrics_path = run.run_dir / "metrics.csv"
    if metrics_path.is_file():
        _read_metrics(metrics_path, run)
    else:
        run.problems.append("no metrics.csv (no epoch finished yet)")
    run.summary = _read_json(run.run_dir / "summary.json", run)
    run.info = _read_json(run.run_dir / "run_info.json", run)
    log_path = run.run_dir / "train.log"
    if log_path.is_file():
        try:
            run.log_text = log_path.read_text(encoding="utf-8", errors="replace")
            _parse_log(run.log_text, run)
        except OSError as error:
            run.problems.append(f"train.log unreadable: {error}")
    confusion = run.run_dir / "eval" / "confusion_matrix.csv"
    if confusion.is_file():
        _read_confusion(confusion, run)
    if run.task == "unknown":
        run.config.setdefault("task", _guess_task(run))
    return run


def _read_json(path: Path, run: RunFiles) -> dict[str, Any] | None:
    """A JSON object file of the run folder; None when absent, or unreadable (then listed in ``run.problems``)."""
    if not path.is_file():
        return None
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        run.problems.append(f"{path.name} unreadable: {error}")
        return None
    return loaded if isinstance(loaded, dict) else None


def _guess_task(run: RunFiles) -> str:
    columns = set(run.columns)
    if "val_top1" in columns or run.confusion is not None:
        return "classification"
    if "val_ap" in columns or (run.run_dir / "eval" / "widerface_predictions").is_dir():
        return "face_detection"
    if any(c.lower().startswith("val_segm_ap") for c in columns):
        return "instance_segmentation"
    parent = run.run_dir.parent.name
    return parent if parent in DEFAULT_METRICS else "unknown"
