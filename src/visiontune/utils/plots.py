"""PNG plots of training curves and confusion matrices.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), so nothing here
touches pyplot's global state or the process-wide backend, and no display is needed. matplotlib is imported
inside the functions, keeping ``import visiontune`` light.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

_X_COLUMNS = ("epoch", "step", "iteration")
_NON_METRIC_WORDS = ("time", "sec", "seconds", "throughput", "memory", "mem", "count", "samples", "images")
_MAX_ANNOTATED_CLASSES = 30  # confusion matrices up to this size get a number in each cell


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", bbox_inches="tight")
    return path


def plot_confusion_matrix(
    matrix: np.ndarray | Sequence[Sequence[float]],
    class_names: Sequence[str],
    path: str | Path,
    normalize: bool = True,
) -> Path:
    """Draw a confusion matrix as a heat map PNG.

    Args:
        matrix: ``[C, C]`` counts, rows are true classes and columns predicted classes.
        class_names: ``C`` names for the axes.
        path: Output PNG file (parent folders are created).
        normalize: Divide each row by its sum (the share of each true class predicted as each class, 0-1; rows
            without samples stay 0). Otherwise the raw counts are shown.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: ``matrix`` is not square or does not match ``class_names``.
    """
    values = np.asarray(matrix, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != values.shape[1] or values.shape[0] != len(class_names):
        raise ValueError(f"confusion matrix must be [C, C] with C = {len(class_names)} class names, "
                         f"got shape {values.shape}")
    if normalize:
        row_sums = values.sum(axis=1, keepdims=True)
        values = np.divide(values, row_sums, out=np.zeros_like(values), where=row_sums != 0)
    num_classes = len(class_names)
    side = min(4.0 + 0.45 * num_classes, 40.0)
    figure = _new_figure(side + 1.5, side)
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(values.max(), 1.0))
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    ticks = np.arange(num_classes)
    axes.set_xticks(ticks, labels=list(class_names), rotation=90 if num_classes > 6 else 0)
    axes.set_yticks(ticks, labels=list(class_names))
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title("confusion matrix" + (" (row-normalised)" if normalize else " (counts)"))
    if num_classes <= _MAX_ANNOTATED_CLASSES:
        threshold = 0.5 * (values.max() if values.size else 0.0)
        for row in range(num_classes):
            for column in range(num_classes):
                value = values[row, column]
                text = f"{value:.2f}" if normalize else f"{int(value)}"
                axes.text(column, row, text, ha="center", va="center", fontsize=8,
                          color="white" if value > threshold and value > 0 else "black")
    return _save(figure, Path(path))


def _to_float(value: Any) -> float:
    """Numeric value of a metrics.csv cell; NaN for empty, missing or non-numeric cells."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _is_lr(name: str) -> bool:
    return name == "lr" or name.startswith("lr_") or name.endswith("_lr")


def _is_loss(name: str) -> bool:
    return "loss" in name


def _is_metric(name: str) -> bool:
    words = name.lower().split("_")
    return not (name in _X_COLUMNS or _is_lr(name) or _is_loss(name) or any(w in _NON_METRIC_WORDS for w in words))


def _plot_columns(
    columns: dict[str, np.ndarray],
    x: np.ndarray,
    x_label: str,
    *,
    title: str,
    y_label: str,
    path: Path,
    log_scale: bool = False,
) -> Path:
    figure = _new_figure(7.0, 4.5)
    axes = figure.add_subplot()
    for name, values in columns.items():
        style = "--" if name.startswith("val") else "-"  # validation dashed, training solid
        axes.plot(x, values, linestyle=style, marker="o", markersize=3, linewidth=1.5, label=name)
    if log_scale:
        axes.set_yscale("log")
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    return _save(figure, path)


def plot_training_curves(rows: Sequence[Mapping[str, Any]], path_dir: str | Path) -> list[Path]:
    """Plot the per-epoch rows of ``metrics.csv``: ``loss.png``, ``lr.png`` and ``metrics.png``.

    Columns are grouped by name: names containing ``loss`` go to ``loss.png``; ``lr``, ``lr_*`` and ``*_lr`` to
    ``lr.png`` (log scale when the values span more than a factor 100); every other numeric column (``val_top1``,
    ``val_macro_f1``, ``val_ap50``, ...) to ``metrics.png``, except ``epoch``/``step`` and timing or count columns
    (names with a word such as ``time``, ``seconds``, ``images``). The x axis is ``epoch`` when present, else the row
    number (1-based). Cells may be numbers or strings (rows read with ``csv.DictReader``); missing, empty or
    non-numeric cells are NaN and leave gaps. A plot whose columns are all NaN is not written.

    Args:
        rows: One mapping per epoch, column name -> value.
        path_dir: Output folder (created).

    Returns:
        The PNG files written (possibly fewer than three, none for no rows).
    """
    path_dir = Path(path_dir)
    if not rows:
        return []
    names = list(dict.fromkeys(name for row in rows for name in row))
    columns = {name: np.array([_to_float(row.get(name)) for row in rows], dtype=np.float64) for name in names}
    columns = {name: values for name, values in columns.items() if np.isfinite(values).any()}

    x_name = next((name for name in _X_COLUMNS if name in columns), None)
    if x_name is not None:
        x, x_label = columns[x_name], x_name
    else:
        x, x_label = np.arange(1, len(rows) + 1, dtype=np.float64), "row"

    written: list[Path] = []
    losses = {name: values for name, values in columns.items() if _is_loss(name)}
    if losses:
        written.append(_plot_columns(losses, x, x_label, title="loss", y_label="loss", path=path_dir / "loss.png"))
    rates = {name: values for name, values in columns.items() if _is_lr(name)}
    if rates:
        finite = np.concatenate([values[np.isfinite(values)] for values in rates.values()])
        log_scale = bool(finite.size and finite.min() > 0 and finite.max() / finite.min() > 100)
        written.append(_plot_columns(rates, x, x_label, title="learning rate", y_label="learning rate",
                                     path=path_dir / "lr.png", log_scale=log_scale))
    metrics = {name: values for name, values in columns.items() if _is_metric(name)}
    if metrics:
        written.append(_plot_columns(metrics, x, x_label, title="metrics", y_label="value",
                                     path=path_dir / "metrics.png"))
    logger.debug("wrote %d plot(s) to %s", len(written), path_dir)
    return written
