"""Figures for runs: training curves and confusion matrices, as PNG files or PNG data URIs.

One copy for the whole package: the engine's ``plots/`` PNGs (:func:`plot_training_curves`,
:func:`plot_confusion_matrix`) and the HTML reports (``visiontune.report``) build their figures here, and group
``metrics.csv`` columns into panels the same way (:func:`curve_panels`, :func:`metric_family`).

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), so nothing here
touches pyplot's global state or the process-wide backend, and no display is needed. matplotlib is imported
inside the functions, keeping ``import visiontune`` light.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "LOWER_IS_BETTER",
    "CurvePanel",
    "confusion_figure",
    "curve_figure",
    "curve_panels",
    "draw_curves",
    "figure_png",
    "figure_uri",
    "format_metric",
    "is_percent_metric",
    "is_saturated_topk",
    "metric_family",
    "missing_metric_text",
    "new_figure",
    "plot_confusion_matrix",
    "plot_training_curves",
    "save_figure",
    "style_axes",
    "to_float",
]

logger = logging.getLogger(__name__)

LOWER_IS_BETTER = ("loss", "nme", "error", "fpr")
"""Words of metric names where lower is better (not fractions shown as percent)."""
_X_COLUMNS = ("epoch", "step", "iteration")
_NON_METRIC_WORDS = ("time", "sec", "seconds", "throughput", "memory", "mem", "count", "samples", "images")
_TOPK = re.compile(r"^top(\d+)$")
_COCO_METRIC = re.compile(r"^(segm|bbox)_A[PR]")
_MAX_ANNOTATED_CLASSES = 30  # confusion matrices up to this size get a number in each cell
_MAX_SERIES = 8  # series per curve panel, one style each
_STYLES = (("o", "-"), ("s", "--"), ("^", "-."), ("D", ":"), ("v", (0, (5, 1))), ("P", (0, (3, 1, 1, 1, 1, 1))),
           ("X", (0, (1, 3))), ("*", (0, (8, 2, 2, 2))))
"""(marker, dash) of the i-th series of a panel: every series of a panel looks different, so a line drawn exactly
on top of another (top-1 and macro recall on balanced classes) still shows."""
_LOG_SPAN = 100.0  # a log_y panel uses a log scale when its positive values span more than this factor


# --------------------------------------------------------------------------------------------- figures


def new_figure(width: float, height: float, dpi: float = 100) -> Figure:
    """An empty figure on its own Agg canvas (no pyplot), ``width`` x ``height`` inches."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure: Figure, dpi: float | None = None) -> bytes:
    """The figure as PNG bytes (tight bounding box), at ``dpi`` or the figure's own."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", dpi=dpi or figure.dpi)
    return buffer.getvalue()


def save_figure(figure: Figure, path: str | Path, dpi: float | None = None) -> Path:
    """Write the figure as a PNG file (parent folders are created); returns ``path`` as a Path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(figure_png(figure, dpi))
    return path


def figure_uri(figure: Figure, dpi: float | None = None) -> str:
    """The figure as a PNG data URI (``data:image/png;base64,...``) for an HTML page."""
    return "data:image/png;base64," + base64.b64encode(figure_png(figure, dpi)).decode("ascii")


def style_axes(axes: Axes, title: str, *, x_label: str = "", y_label: str = "",
               grid: Literal["both", "x", "y"] = "both") -> None:
    """The common look of a small panel: title, axis labels, small tick labels and a light grid on ``grid``."""
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(x_label, fontsize=8)
    axes.set_ylabel(y_label, fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(True, axis=grid, alpha=0.3)


# --------------------------------------------------------------------------------------------- metric names


def metric_family(column: str) -> str:
    """The curve panel of a metric: metrics that share a scale and are compared together.

    ``top1``/``top5`` -> ``top-k accuracy``; ``macro_*`` -> ``macro averages``; ``ap``/``ap_easy``... -> ``AP``;
    ``segm_AP``/``AP50``/``AP75`` -> ``segm AP``; ``segm_APs/m/l`` -> ``segm AP by size``; ``segm_AP_<category>``
    -> ``segm AP per category``; anything else is its own family. A ``val_`` or ``train_`` prefix is ignored.
    """
    name = column.removeprefix("val_").removeprefix("train_")
    if _TOPK.match(name):
        return "top-k accuracy"
    if name.startswith("macro_"):
        return "macro averages"
    if name == "ap" or name.startswith("ap_"):
        return "AP"
    match = re.match(r"^(segm|bbox|keypoints)_(.+)$", name)
    if match:
        kind, rest = match.groups()
        if rest in ("AP", "AP50", "AP75"):
            return f"{kind} AP"
        if rest in ("APs", "APm", "APl"):
            return f"{kind} AP by size"
        if rest.startswith("AP_"):
            return f"{kind} AP per category"
        return f"{kind} {rest}"
    return name


def is_percent_metric(column: str) -> bool:
    """Fractions 0-1 shown as percent: accuracies, precisions, recalls, F1, AP; not losses or NME."""
    name = column.lower()
    return not any(word in name for word in LOWER_IS_BETTER)


def format_metric(value: Any, sign: str = "") -> str:
    """A metric value for people, the one format of every console table and log line: 4 significant digits
    (``0.9167``, ``91.67``, ``1.000``), counts (ints) as integers, ``-`` for None; ``sign="+"`` for changes."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return "-" if value is None else str(value)
    if isinstance(value, (int, np.integer)):
        return format(int(value), f"{sign}d")
    return format(float(value), f"{sign}#.4g")


def missing_metric_text(column: str) -> str:
    """How a table shows a metric without a value (NaN or not recorded): "no objects" for a COCO AP / AR
    (``segm_APs``, ``bbox_AP_<category>``...), undefined where the split has no object of that size range or
    category; "–" for the others."""
    return "no objects" if _COCO_METRIC.match(column.removeprefix("val_").removeprefix("test_")) else "–"


def is_saturated_topk(column: str, num_classes: int | None) -> bool:
    """``top<k>`` with ``k > 1`` and ``k >= num_classes``: always 100%, not worth reporting."""
    match = _TOPK.match(column.removeprefix("val_").removeprefix("train_"))
    return bool(match and num_classes is not None and int(match.group(1)) > 1 and int(match.group(1)) >= num_classes)


def _is_lr(name: str) -> bool:
    return name == "lr" or name.startswith("lr_") or name.endswith("_lr")


def _is_metric(name: str) -> bool:
    words = name.lower().split("_")
    return not (name in _X_COLUMNS or _is_lr(name) or "loss" in name or any(w in _NON_METRIC_WORDS for w in words))


def to_float(value: Any) -> float:
    """Numeric value of a metrics.csv cell; NaN for empty, missing or non-numeric cells."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# --------------------------------------------------------------------------------------------- curves


@dataclass
class CurvePanel:
    """One small line chart of :func:`curve_panels`: ``series`` (label -> values) over ``x``.

    ``kind`` is ``loss``, ``lr``, ``metrics`` or ``speed`` (the ``plots/`` file it goes to; speed only in the
    report); ``percent``: fractions drawn as percent; ``log_y``: a log scale when the values span > 100x.
    """

    title: str
    kind: str
    x: np.ndarray
    series: dict[str, np.ndarray] = field(default_factory=dict)
    x_label: str = "epoch"
    percent: bool = False
    log_y: bool = False


def curve_panels(columns: Mapping[str, Sequence[Any]], *, num_classes: int | None = None) -> list[CurvePanel]:
    """Group the columns of ``metrics.csv`` (name -> one value per row) into curve panels.

    * ``loss``: ``train_loss`` and the ``val_*`` losses; ``loss components``: the other losses (log scale);
    * ``learning rate``: ``lr``, ``lr_*``, ``*_lr`` (log scale);
    * one panel per :func:`metric_family` of the other numeric columns (``val_top1`` and ``val_top5`` share one,
      the ``macro_*`` averages another), at most 8 series each; ``top<k>`` with ``k >= num_classes`` is left out;
    * ``training speed``: ``images_per_s``.

    Timing and count columns (a word such as ``time``, ``seconds``, ``images``) are no metrics. Cells may be numbers
    or strings; empty or non-numeric ones are NaN, and all-NaN columns are left out. The x axis is ``epoch`` when
    present (else ``step``, ``iteration`` or the 1-based row number). The epoch-0 row (the evaluation before
    training) only counts for the metrics: losses, learning rate and speed start at epoch 1.
    """
    values = {name: np.array([to_float(v) for v in column], dtype=np.float64) for name, column in columns.items()}
    values = {name: column for name, column in values.items() if np.isfinite(column).any()}
    rows = max((len(column) for column in values.values()), default=0)
    x_name = next((name for name in _X_COLUMNS if name in values), None)
    x = values[x_name] if x_name else np.arange(1, rows + 1, dtype=np.float64)
    x_label = x_name or "row"
    trained = ~(values["epoch"] == 0) if "epoch" in values else np.ones(rows, dtype=bool)

    def panel(title: str, kind: str, names: Sequence[str], *, log_y: bool = False, labels: Any = None,
              keep: np.ndarray | None = None) -> CurvePanel:
        keep = np.ones(rows, dtype=bool) if keep is None else keep
        series = {(labels(name) if labels else name): values[name][keep] for name in names[:_MAX_SERIES]}
        percent = kind == "metrics" and all(is_percent_metric(name) for name in names) and all(
            ((v >= 0) & (v <= 1))[np.isfinite(v)].all() for v in series.values())
        return CurvePanel(title, kind, x[keep], series, x_label=x_label, percent=percent, log_y=log_y)

    panels: list[CurvePanel] = []
    losses = [name for name in values if "loss" in name]
    totals = [name for name in losses if name == "train_loss" or name.startswith("val_")]
    total = values.get("train_loss")
    components = [name for name in losses if name not in totals
                  and (total is None or not np.array_equal(values[name], total, equal_nan=True))]
    if totals:
        panels.append(panel("loss", "loss", totals, keep=trained))
    if components:
        panels.append(panel("loss components" if totals else "loss", "loss", components, log_y=bool(totals),
                            labels=lambda name: name.removeprefix("train_") if totals else name, keep=trained))
    rates = [name for name in values if _is_lr(name)]
    if rates:
        panels.append(panel("learning rate", "lr", rates, log_y=True, keep=trained))
    families: dict[str, list[str]] = {}
    for name in values:
        if _is_metric(name) and not is_saturated_topk(name, num_classes):
            families.setdefault(metric_family(name), []).append(name)
    for family, names in families.items():
        panels.append(panel(family, "metrics", names, labels=lambda name: name.removeprefix("val_")))
    if "images_per_s" in values:
        panels.append(panel("training speed", "speed", ["images_per_s"], labels=lambda _name: "images/s",
                            keep=trained))
    return panels


def draw_curves(axes: Axes, panel: CurvePanel, *, mark_x: float | None = None) -> None:
    """Draw ``panel`` on ``axes``: each series with its own marker and dash, the legend with each series' last
    value, integer ticks on an epoch axis; ``mark_x`` (the best epoch) as a dotted green line."""
    from matplotlib.ticker import MaxNLocator

    scale = 100.0 if panel.percent else 1.0
    points = len(panel.x)
    step = max(1, points // 15)  # markers on at most ~15 points, staggered between series
    drawn: list[np.ndarray] = []
    for index, (name, values) in enumerate(panel.series.items()):
        ys = np.asarray(values, dtype=np.float64) * scale
        keep = np.isfinite(ys)
        if not keep.any():
            continue
        marker, dash = _STYLES[index % len(_STYLES)]
        last = ys[keep][-1]
        label = f"{name} ({last:.2f}%)" if panel.percent else f"{name} ({last:.3g})"
        axes.plot(panel.x[keep], ys[keep], linestyle=dash, marker=marker, markersize=max(3.0, 7.0 - index),
                  markevery=(index % step, step), linewidth=1.6, alpha=0.9, label=label,
                  markerfacecolor="none" if index % 2 else None, markeredgewidth=1.2)
        drawn.append(ys[keep])
    if mark_x is not None and math.isfinite(mark_x):
        axes.axvline(mark_x, color="#2e7d32", linewidth=1.0, linestyle=":", alpha=0.8)
    if panel.x_label in _X_COLUMNS or panel.x_label == "row":
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    finite = np.concatenate(drawn) if drawn else np.zeros(0)
    positive = finite[finite > 0]
    if panel.log_y and positive.size and positive.max() / positive.min() > _LOG_SPAN:
        axes.set_yscale("log")
    style_axes(axes, panel.title, x_label=panel.x_label, y_label="%" if panel.percent else "")
    if drawn:
        axes.legend(fontsize=6.5, loc="best", framealpha=0.7)


def curve_figure(panels: Sequence[CurvePanel], *, mark_x: float | None = None, columns: int = 3,
                 dpi: float = 100) -> Figure:
    """A figure with one small panel per :class:`CurvePanel` (:func:`draw_curves`), ``columns`` per row."""
    across = max(1, min(columns, len(panels)))
    down = max(1, math.ceil(len(panels) / across))
    figure = new_figure(3.6 * across, 2.6 * down, dpi=dpi)
    for index, panel in enumerate(panels):
        draw_curves(figure.add_subplot(down, across, index + 1), panel, mark_x=mark_x)
    if len(panels) > 1:
        figure.tight_layout()
    return figure


def plot_training_curves(rows: Sequence[Mapping[str, Any]], path_dir: str | Path, *,
                         num_classes: int | None = None) -> list[Path]:
    """Plot the per-epoch rows of ``metrics.csv``: ``loss.png``, ``lr.png`` and ``metrics.png``.

    The panels are those of :func:`curve_panels` (the same as the HTML report's): ``loss.png`` holds the loss
    (and loss components) panels, ``lr.png`` the learning rate, ``metrics.png`` one small panel per metric family;
    every series has its own marker and dash, epoch ticks are integers, and ``top<k>`` with
    ``k >= num_classes`` is left out. An epoch-0 row (the evaluation before training) starts the metric curves;
    losses and learning rate start at epoch 1. A file without any finite value to draw is not written.

    Args:
        rows: One mapping per epoch, column name -> value (numbers or ``csv.DictReader`` strings).
        path_dir: Output folder (created when something is written).
        num_classes: The number of classes, when known.

    Returns:
        The PNG files written (possibly fewer than three, none for no rows).
    """
    path_dir = Path(path_dir)
    names = list(dict.fromkeys(name for row in rows for name in row))
    panels = curve_panels({name: [row.get(name) for row in rows] for name in names}, num_classes=num_classes)
    written = []
    for kind in ("loss", "lr", "metrics"):
        chosen = [panel for panel in panels if panel.kind == kind]
        if chosen:
            written.append(save_figure(curve_figure(chosen), path_dir / f"{kind}.png"))
    logger.debug("wrote %d plot(s) to %s", len(written), path_dir)
    return written


# --------------------------------------------------------------------------------------------- confusion matrix


def confusion_figure(matrix: np.ndarray | Sequence[Sequence[float]], class_names: Sequence[str], *,
                     normalize: bool = True, counts_in_cells: bool = False, title: str | None = None,
                     dpi: float = 100, max_side: float = 40.0) -> Figure:
    """A confusion matrix heat map: rows are true classes, columns predicted classes.

    Args:
        matrix: ``[C, C]`` counts.
        class_names: ``C`` names for the axes (cut to 18 characters).
        normalize: Colour by the share of each true class predicted as each class (0-1; rows without samples stay
            0). Otherwise by the raw counts.
        counts_in_cells: Write the counts in the cells (empty cells blank); otherwise the coloured value. Cells
            are written up to 30 classes.
        title: Axes title, if any.
        dpi: Figure resolution.
        max_side: Largest figure side in inches.

    Raises:
        ValueError: ``matrix`` is not square or does not match ``class_names``.
    """
    counts = np.asarray(matrix, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(class_names):
        raise ValueError(f"confusion matrix must be [C, C] with C = {len(class_names)} class names, "
                         f"got shape {counts.shape}")
    values = counts
    if normalize:
        row_sums = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, row_sums, out=np.zeros_like(counts), where=row_sums != 0)
    num_classes = len(class_names)
    side = min(3.5 + 0.42 * num_classes, max_side)
    figure = new_figure(side + 1.3, side, dpi=dpi)
    axes = figure.add_subplot()
    vmax = 1.0 if normalize else max(float(values.max(initial=0.0)), 1.0)
    image = axes.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04,
                    label="share of the true class" if normalize else "count")
    ticks = np.arange(num_classes)
    labels = [name if len(name) <= 18 else name[:17] + "…" for name in class_names]
    axes.set_xticks(ticks, labels=labels, rotation=90 if num_classes > 5 else 0, fontsize=8)
    axes.set_yticks(ticks, labels=labels, fontsize=8)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if title:
        axes.set_title(title)
    if num_classes <= _MAX_ANNOTATED_CLASSES:
        for row in range(num_classes):
            for column in range(num_classes):
                value = values[row, column]
                if counts_in_cells and not counts[row, column]:
                    continue
                text = f"{int(counts[row, column])}" if counts_in_cells or not normalize else f"{value:.2f}"
                axes.text(column, row, text, ha="center", va="center", fontsize=7,
                          color="white" if value > 0.5 * vmax else "black")
    return figure


def plot_confusion_matrix(
    matrix: np.ndarray | Sequence[Sequence[float]],
    class_names: Sequence[str],
    path: str | Path,
    normalize: bool = True,
) -> Path:
    """Draw a confusion matrix as a heat map PNG (:func:`confusion_figure`).

    Args:
        matrix: ``[C, C]`` counts, rows are true classes and columns predicted classes.
        class_names: ``C`` names for the axes.
        path: Output PNG file (parent folders are created).
        normalize: Show each row divided by its sum (the share of each true class predicted as each class, 0-1;
            rows without samples stay 0). Otherwise the raw counts are shown.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: ``matrix`` is not square or does not match ``class_names``.
    """
    title = "confusion matrix" + (" (row-normalised)" if normalize else " (counts)")
    return save_figure(confusion_figure(matrix, class_names, normalize=normalize, title=title), path)
