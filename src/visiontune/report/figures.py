"""Small matplotlib figures (Agg canvas, no pyplot state) rendered straight to PNG data URIs."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from visiontune.report.html import data_uri

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["bar_chart", "confusion_heatmap", "curve_panel", "figure_uri", "histogram", "new_figure"]

_STYLES = (("o", "-"), ("s", "--"), ("^", "-."), ("D", ":"), ("v", "-"), ("P", "--"), ("X", "-."), ("*", ":"))
_DPI = 80


def new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(figure)
    return figure


def figure_uri(figure: Figure) -> str:
    """The figure as a PNG data URI."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", dpi=_DPI)
    return data_uri(buffer.getvalue(), "image/png")


def curve_panel(title: str, x: Sequence[float], series: Mapping[str, Sequence[float]], *, x_label: str = "epoch",
                percent: bool = False, log_y: bool = False, mark_x: float | None = None) -> str:
    """One small line chart; each series gets its own marker and dash so coinciding lines stay visible,
    and the legend shows each series' last value. Integer x ticks. Returns a PNG data URI."""
    from matplotlib.ticker import MaxNLocator

    figure = new_figure(3.6, 2.5)
    axes = figure.add_subplot()
    xs = np.asarray(x, dtype=float)
    for index, (name, values) in enumerate(series.items()):
        ys = np.asarray(values, dtype=float) * (100.0 if percent else 1.0)
        keep = ~np.isnan(ys)
        if not keep.any():
            continue
        marker, dash = _STYLES[index % len(_STYLES)]
        last = ys[keep][-1]
        label = f"{name} ({last:.2f}%)" if percent else f"{name} ({last:.3g})"
        axes.plot(xs[keep], ys[keep], linestyle=dash, marker=marker, markersize=max(3.0, 6.0 - index),
                  linewidth=1.6, label=label, alpha=0.9, markerfacecolor="none" if index % 2 else None)
    if mark_x is not None:
        axes.axvline(mark_x, color="#2e7d32", linewidth=1.0, linestyle=":", alpha=0.8)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if log_y:
        values = [v for vs in series.values() for v in vs if v is not None and not math.isnan(v) and v > 0]
        if values and max(values) / max(min(values), 1e-12) > 50:
            axes.set_yscale("log")
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(x_label, fontsize=8)
    if percent:
        axes.set_ylabel("%", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(True, alpha=0.3)
    if series:
        axes.legend(fontsize=6.5, loc="best", framealpha=0.7)
    return figure_uri(figure)


def confusion_heatmap(counts: np.ndarray, class_names: Sequence[str]) -> str:
    """Row-normalised confusion matrix heat map with the counts in the cells (up to 30 classes)."""
    counts = np.asarray(counts, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows != 0)
    n = len(class_names)
    side = min(3.0 + 0.4 * n, 16.0)
    figure = new_figure(side + 1.2, side)
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = np.arange(n)
    labels = [name if len(name) <= 18 else name[:17] + "…" for name in class_names]
    axes.set_xticks(ticks, labels=labels, rotation=90 if n > 5 else 0, fontsize=8)
    axes.set_yticks(ticks, labels=labels, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if n <= 30:
        for r in range(n):
            for c in range(n):
                if counts[r, c]:
                    axes.text(c, r, f"{int(counts[r, c])}", ha="center", va="center", fontsize=7,
                              color="white" if shares[r, c] > 0.5 else "black")
    return figure_uri(figure)


def histogram(title: str, values: Sequence[float], *, bins: int | Sequence[float] = 30, x_label: str = "",
              log_x: bool = False, groups: Mapping[str, Sequence[float]] | None = None) -> str:
    """A histogram (or several overlaid, ``groups``), PNG data URI."""
    figure = new_figure(3.6, 2.5)
    axes = figure.add_subplot()
    data = dict(groups) if groups else {"": list(values)}
    finite = [v for vs in data.values() for v in vs if v is not None and np.isfinite(v)]
    if finite:
        if log_x and min(finite) > 0:
            low, high = min(finite), max(finite)
            edges = np.geomspace(low, max(high, low * 1.01), bins if isinstance(bins, int) else len(bins))
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
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(x_label, fontsize=8)
    axes.set_ylabel("count", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(True, alpha=0.3)
    return figure_uri(figure)


def bar_chart(title: str, labels: Sequence[str], groups: Mapping[str, Sequence[float]], *, y_label: str = "count"
              ) -> str:
    """Grouped vertical bars (one group per key of ``groups``, one bar position per label), PNG data URI."""
    n = len(labels)
    figure = new_figure(min(3.0 + 0.35 * n, 12.0), 2.8)
    axes = figure.add_subplot()
    positions = np.arange(n)
    width = 0.8 / max(1, len(groups))
    for index, (name, values) in enumerate(groups.items()):
        axes.bar(positions + index * width - 0.4 + width / 2, values, width=width, label=name)
    axes.set_xticks(positions, labels=[lab if len(lab) <= 14 else lab[:13] + "…" for lab in labels],
                    rotation=90 if n > 6 else 0, fontsize=7)
    axes.set_title(title, fontsize=10)
    axes.set_ylabel(y_label, fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(True, axis="y", alpha=0.3)
    if len(groups) > 1:
        axes.legend(fontsize=7)
    return figure_uri(figure)
