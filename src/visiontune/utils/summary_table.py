"""The cells of a run's before -> after table, from ``summary.json``: one copy for the console and the HTML report.

``visiontune train`` prints them as a text table (``visiontune.api.format_summary``) and ``report.html`` as an
HTML table; both read the same strings from here, so the two never disagree on a value, an interval or a
"within noise".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from visiontune.utils.plots import format_metric, missing_metric_text

__all__ = ["WITHIN_NOISE", "SummaryTable", "interval_contains_zero", "interval_note", "summary_table",
           "value_with_interval"]

WITHIN_NOISE = "within noise"
"""Appended to a change whose interval contains 0."""


def _is_interval(interval: Any) -> bool:
    return isinstance(interval, (list, tuple)) and len(interval) == 2 and None not in interval


def value_with_interval(value: Any, interval: Any, sign: str = "", missing: str = "-") -> str:
    """``0.9400 [0.8900, 0.9800]`` (:func:`~visiontune.utils.plots.format_metric`, 4 significant digits; the value
    alone without a complete ``[lo, hi]`` interval); ``missing`` for None or NaN; ``sign="+"`` for changes."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    text = format_metric(value, sign)
    if not _is_interval(interval):
        return text
    return f"{text} [{format_metric(interval[0], sign)}, {format_metric(interval[1], sign)}]"


def interval_contains_zero(interval: Any) -> bool:
    """Whether a complete ``[lo, hi]`` interval contains 0 (a change within the noise of the evaluation set)."""
    return _is_interval(interval) and interval[0] <= 0 <= interval[1]


def interval_note(summary: Mapping[str, Any]) -> str | None:
    """What the ``[lo, hi]`` of the table are (level, resamples, paired change), or None without intervals."""
    intervals = summary.get("intervals") or {}
    if not any(isinstance(value, dict) for value in intervals.values()):
        return None
    return (f"[lo, hi]: {intervals.get('level', 0.95):.0%} bootstrap interval over {intervals.get('resamples')} "
            "resamples of the evaluated images; the change's is paired (the same resampled images for both), "
            f"\"{WITHIN_NOISE}\" when it contains 0")


@dataclass(frozen=True)
class SummaryTable:
    """The before -> after table of a run summary, as strings.

    Attributes:
        header: Column titles after the metric column: ``baseline (epoch 0)``, ``best (epoch N)``,
            ``last (epoch M)``, ``change (best - baseline)`` and, with a test split, ``test (best.pt)``.
        names: The ``val_*`` metrics, one per row, the main metric (``summary["metric"]``) first.
        rows: One list of cells per name, aligned with ``header``.
    """

    header: list[str]
    names: list[str]
    rows: list[list[str]]


def summary_table(summary: Mapping[str, Any]) -> SummaryTable:
    """The cells of the before -> after table of ``summary`` (``summary.json`` / ``TrainResult.summary``).

    Per validation metric: baseline ("not measured" without one), best, last, the change best - baseline (with
    " within noise" when its paired interval contains 0) and the test split's value; each with its interval where
    ``summary["intervals"]`` has one (``0.9400 [0.8900, 0.9800]``). A metric without a value reads "–", a COCO AP
    of an empty size range "no objects".
    """
    best, baseline, last = summary.get("best") or {}, summary.get("baseline"), summary.get("last") or {}
    metric, test = summary.get("metric"), summary.get("test")
    intervals, change = summary.get("intervals") or {}, summary.get("change") or {}
    names: list[str] = []
    for values in (best, last, baseline):
        names.extend(key for key in values or {} if key not in names)
    if metric in names:
        names.remove(metric)
        names.insert(0, metric)
    header = ["baseline (epoch 0)" if baseline else "baseline", f"best (epoch {summary.get('best_epoch')})",
              f"last (epoch {summary.get('last_epoch')})", "change (best - baseline)"]
    header += [f"test ({summary.get('test_checkpoint', 'best.pt')})"] if test is not None else []
    rows = []
    for name in names:
        spans = intervals.get(name) or {}
        missing = missing_metric_text(name)
        changed = "-"
        if name in change:
            changed = value_with_interval(change[name], spans.get("change"), "+", missing)
            if interval_contains_zero(spans.get("change")):
                changed += f" {WITHIN_NOISE}"
        test_name = "test_" + name.removeprefix("val_")
        tested = [value_with_interval(test.get(test_name), intervals.get(test_name))] if test is not None else []
        rows.append([value_with_interval(baseline.get(name), spans.get("baseline"), missing=missing) if baseline
                     else "not measured",
                     value_with_interval(best.get(name), spans.get("best"), missing=missing),
                     value_with_interval(last.get(name), spans.get("last"), missing=missing), changed, *tested])
    return SummaryTable(header=header, names=names, rows=rows)
