"""The report's data charts (histograms, grouped bars) as PNG data URIs, on the shared figure helpers of
:mod:`visiontune.utils.plots` (which also draws the curve panels and the confusion heat map)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from visiontune.utils.plots import figure_uri, new_figure, style_axes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["DPI", "MAX_INTERVAL_PANELS", "MAX_X_TICKS", "bar_chart", "histogram", "histogram_figure", "interval_figure",
           "interval_points"]

DPI = 80
"""Resolution of the report's figures."""


MAX_INTERVAL_PANELS = 4
"""Most metrics (panels) of the interval figure: the main metric and the next ones of the summary's table."""
MAX_X_TICKS = 6
"""Most labelled ticks on a histogram's linear x axis: more overlap at the report's figure width."""


def histogram(title: str, values: Sequence[float], *, bins: int | Sequence[float] = 30, x_label: str = "",
              log_x: bool = False, groups: Mapping[str, Sequence[float]] | None = None) -> str:
    """A histogram (or several overlaid, ``groups``), PNG data URI (:func:`histogram_figure`)."""
    return figure_uri(histogram_figure(title, values, bins=bins, x_label=x_label, log_x=log_x, groups=groups))


def histogram_figure(title: str, values: Sequence[float], *, bins: int | Sequence[float] = 30, x_label: str = "",
                     log_x: bool = False, groups: Mapping[str, Sequence[float]] | None = None) -> Figure:
    """A histogram (or several overlaid, ``groups``) with at most :data:`MAX_X_TICKS` x tick labels on a linear
    axis, so they never run into each other."""
    from matplotlib.ticker import MaxNLocator

    figure = new_figure(3.6, 2.5, dpi=DPI)
    axes = figure.add_subplot()
    data = dict(groups) if groups else {"": list(values)}
    finite = [v for vs in data.values() for v in vs if v is not None and np.isfinite(v)]
    if finite:
        if log_x and min(finite) > 0:
            low, high = min(finite), max(finite)
            edges: Any = np.geomspace(low, max(high, low * 1.01), bins if isinstance(bins, int) else len(bins))
            axes.set_xscale("log")
            from matplotlib.ticker import NullFormatter

            axes.xaxis.set_minor_formatter(NullFormatter())
        else:
            edges = bins
        for name, vs in data.items():
            axes.hist([v for v in vs if np.isfinite(v)], bins=edges, alpha=0.6 if groups else 0.9,
                      label=name or None, color=None if groups else "#2b6ca3")
        if groups:
            axes.legend(fontsize=7)
    if axes.get_xscale() == "linear":
        axes.xaxis.set_major_locator(MaxNLocator(nbins=MAX_X_TICKS, steps=[1, 2, 2.5, 5, 10]))
    style_axes(axes, title, x_label=x_label, y_label="count")
    return figure


def bar_chart(title: str, labels: Sequence[str], groups: Mapping[str, Sequence[float]], *, y_label: str = "count"
              ) -> str:
    """Grouped vertical bars (one group per key of ``groups``, one bar position per label), PNG data URI."""
    n = len(labels)
    figure = new_figure(min(3.0 + 0.35 * n, 12.0), 2.8, dpi=DPI)
    axes = figure.add_subplot()
    positions = np.arange(n)
    width = 0.8 / max(1, len(groups))
    for index, (name, values) in enumerate(groups.items()):
        axes.bar(positions + index * width - 0.4 + width / 2, values, width=width, label=name)
    axes.set_xticks(positions, labels=[lab if len(lab) <= 14 else lab[:13] + "…" for lab in labels],
                    rotation=90 if n > 6 else 0, fontsize=7)
    style_axes(axes, title, y_label=y_label, grid="y")
    if len(groups) > 1:
        axes.legend(fontsize=7)
    return figure_uri(figure)


def interval_points(summary: Mapping[str, Any], name: str) -> list[tuple[str, float, tuple[float, float] | None]]:
    """The points of one ``val_*`` metric of ``summary.json``: ``(label, value, (lo, hi) or None)`` for baseline,
    best, last (labelled with their epochs) and the test split (``test_<metric>``) when present; evaluations
    without a finite value are left out, an interval only where ``summary["intervals"]`` has both bounds."""
    intervals = summary.get("intervals") or {}
    found = intervals.get(name)
    spans: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    test_name = "test_" + name.removeprefix("val_")
    sources = [("baseline", "baseline (epoch 0)", summary.get("baseline"), name, spans.get("baseline")),
               ("best", f"best (epoch {summary.get('best_epoch')})", summary.get("best"), name, spans.get("best")),
               ("last", f"last (epoch {summary.get('last_epoch')})", summary.get("last"), name, spans.get("last")),
               ("test", f"test ({summary.get('test_checkpoint', 'best.pt')})", summary.get("test"), test_name,
                intervals.get(test_name))]
    points = []
    for _role, label, values, key, span in sources:
        value = values.get(key) if isinstance(values, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            continue
        bounds = (float(span[0]), float(span[1])) if (isinstance(span, Sequence) and len(span) == 2
                                                      and None not in span) else None
        points.append((label, float(value), bounds))
    return points


def interval_figure(summary: Mapping[str, Any], names: Sequence[str]) -> Figure:
    """One small panel per metric of ``names`` (at most :data:`MAX_INTERVAL_PANELS`): its baseline, best, last
    (and test) values as points, each with its bootstrap interval as an error bar (:func:`interval_points`)."""
    chosen = list(names)[:MAX_INTERVAL_PANELS]
    figure = new_figure(2.9 * max(1, len(chosen)), 2.7, dpi=DPI)
    level = (summary.get("intervals") or {}).get("level", 0.95)
    for index, name in enumerate(chosen):
        axes = figure.add_subplot(1, max(1, len(chosen)), index + 1)
        points = interval_points(summary, name)
        for position, (_label, value, bounds) in enumerate(points):
            error = None if bounds is None else [[max(0.0, value - bounds[0])], [max(0.0, bounds[1] - value)]]
            axes.errorbar([position], [value], yerr=error, fmt="o", color="#2b6ca3", ecolor="#2b6ca3",
                          capsize=4, markersize=5, linewidth=1.4)
        axes.set_xticks(range(len(points)), labels=[label.replace(" (", "\n(") for label, _v, _b in points],
                        fontsize=7)
        axes.set_xlim(-0.5, max(len(points), 1) - 0.5)
        style_axes(axes, name.removeprefix("val_"), y_label=f"value, {level:.0%} interval" if index == 0 else "",
                   grid="y")
    figure.tight_layout()
    return figure
