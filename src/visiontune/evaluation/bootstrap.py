"""Bootstrap confidence intervals of evaluation metrics, resampling the evaluated images.

An evaluation keeps a small per-image record of its results (:class:`PerImageResults`: labels and predictions,
matched detections per image, ...). A resample draws ``N`` of the ``N`` images with replacement; it is represented
by each image's multiplicity (``counts``, ``[N]``), and every task recomputes its metrics from the per-image records
weighted by those multiplicities, with the same arithmetic as its evaluator (the resample of all images once gives
the reported value exactly). The matching is never redone, so 1000 resamples cost seconds.

Intervals are percentile intervals (the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled
metric). A paired interval of a change resamples the same image sets for both evaluations and takes the quantiles
of the per-resample difference: an interval that contains 0 means the change is within the noise of the evaluation
set. Resamples are drawn from ``numpy.random.default_rng(seed)``, so the same seed and image count give the same
image sets, whichever evaluation they are applied to.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

__all__ = [
    "DEFAULT_LEVEL", "PerImageResults", "bootstrap_intervals", "bootstrap_samples", "evaluator_per_image",
    "full_sample_metrics",
    "load_per_image", "paired_change_intervals", "percentile_interval", "resample_counts", "save_per_image",
    "summary_intervals",
]

logger = logging.getLogger(__name__)

DEFAULT_LEVEL = 0.95
"""The confidence level of every interval visiontune reports."""
_CHUNK_ELEMENTS = 1_000_000
"""Resamples are drawn in chunks of at most this many ``(resample, image)`` multiplicities (memory bound)..."""
_CHUNK_ROWS = 100
"""... and at most this many resamples (the per-resample work of detection metrics stays in the caches)."""


class PerImageResults(Protocol):
    """The per-image record of one evaluation, from which the metrics of any resample of its images follow.

    Implementations: :class:`~visiontune.evaluation.classification.ClassificationPerImage`,
    :class:`~visiontune.evaluation.widerface.WiderFacePerImage`, :class:`~visiontune.evaluation.coco.CocoPerImage`.
    """

    kind: ClassVar[str]
    """The name under which :func:`save_per_image` stores it (``classification``, ``widerface``, ``coco``)."""

    @property
    def num_images(self) -> int:
        """``N``, the evaluated images (the unit of resampling)."""
        ...

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metrics :meth:`metrics_for_counts` computes (evaluator names, without ``val_``)."""
        ...

    def metrics_for_counts(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """Metric name -> ``float64 [B]``: each metric for ``B`` resamples given as image multiplicities
        ``counts`` (``[B, N]``, non-negative integers; a row of ones is the evaluated set itself)."""
        ...

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays that :meth:`from_arrays` turns back into an equal object (``.npz`` storage)."""
        ...

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> PerImageResults:
        """The inverse of :meth:`to_arrays`."""
        ...


def resample_counts(num_images: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Image multiplicities of ``resamples`` bootstrap resamples of ``num_images`` images, in chunks.

    Yields ``int64 [b, N]`` arrays (``b`` rows per chunk, ``resamples`` rows in all; each row sums to ``N``).
    The same ``(num_images, resamples, seed)`` always gives the same rows (paired comparisons rely on it).

    Raises:
        ValueError: ``num_images`` < 1 or ``resamples`` < 1.
    """
    if num_images < 1:
        raise ValueError(f"cannot resample an evaluation of {num_images} images")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, _CHUNK_ROWS, _CHUNK_ELEMENTS // num_images))
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        drawn = rng.integers(0, num_images, size=(rows, num_images))
        flat = (drawn + np.arange(rows)[:, None] * num_images).ravel()
        yield np.bincount(flat, minlength=rows * num_images).reshape(rows, num_images)


def bootstrap_samples(results: PerImageResults, *, resamples: int, seed: int) -> dict[str, np.ndarray]:
    """Metric name -> ``float64 [resamples]``: the metric on each resample (see :func:`resample_counts`)."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in results.metric_names}
    for counts in resample_counts(results.num_images, resamples, seed):
        for name, values in results.metrics_for_counts(counts).items():
            parts[name].append(np.asarray(values, dtype=np.float64))
    return {name: np.concatenate(values) for name, values in parts.items()}


def full_sample_metrics(results: PerImageResults) -> dict[str, float]:
    """The metrics of the evaluated images themselves (every multiplicity 1): the evaluator's values."""
    ones = np.ones((1, results.num_images), dtype=np.int64)
    return {name: float(values[0]) for name, values in results.metrics_for_counts(ones).items()}


def evaluator_per_image(evaluator: Any) -> PerImageResults | None:
    """The per-image results of an evaluator after its ``compute`` (its ``per_image_results()``), or ``None`` for an
    evaluator without them (or without the metrics they need, e.g. no AP)."""
    method = getattr(evaluator, "per_image_results", None)
    results: PerImageResults | None = method() if callable(method) else None
    return results


def percentile_interval(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The percentile interval ``[q((1 - level) / 2), q((1 + level) / 2)]`` of ``samples``.

    Resamples where the metric is undefined (NaN: e.g. no face counted in a resample) are left out; when all are,
    the interval is ``(nan, nan)``.

    Raises:
        ValueError: ``level`` is not in (0, 1).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    finite = samples[np.isfinite(samples)]
    if not finite.size:
        return math.nan, math.nan
    low, high = np.percentile(finite, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(low), float(high)


def bootstrap_intervals(results: PerImageResults, *, resamples: int, seed: int,
                        level: float = DEFAULT_LEVEL) -> dict[str, tuple[float, float]]:
    """Metric name -> its ``level`` percentile interval over ``resamples`` resamples of the images."""
    samples = bootstrap_samples(results, resamples=resamples, seed=seed)
    return {name: percentile_interval(values, level) for name, values in samples.items()}


def paired_change_intervals(before: PerImageResults, after: PerImageResults, *, resamples: int, seed: int,
                            level: float = DEFAULT_LEVEL) -> dict[str, tuple[float, float]]:
    """Metric name -> interval of ``after - before`` over the same resampled image sets (a paired bootstrap).

    Two evaluations of identical predictions give exactly ``(0.0, 0.0)``.

    Raises:
        ValueError: The two evaluations cover different numbers of images (not the same evaluation set).
    """
    if before.num_images != after.num_images:
        raise ValueError(f"a paired bootstrap needs the same images: {before.num_images} vs {after.num_images}")
    first = bootstrap_samples(before, resamples=resamples, seed=seed)
    second = bootstrap_samples(after, resamples=resamples, seed=seed)
    return {name: percentile_interval(second[name] - first[name], level) for name in second if name in first}


def _registry() -> dict[str, Any]:
    from visiontune.evaluation.classification import ClassificationPerImage
    from visiontune.evaluation.coco import CocoPerImage
    from visiontune.evaluation.widerface import WiderFacePerImage

    return {kind.kind: kind for kind in (ClassificationPerImage, WiderFacePerImage, CocoPerImage)}


def save_per_image(results: PerImageResults, path: str | Path) -> Path:
    """Write ``results`` as an ``.npz`` file (a few arrays; the kind recorded) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.npz")
    arrays: dict[str, Any] = {"__kind__": np.array(results.kind), **results.to_arrays()}
    np.savez_compressed(partial, **arrays)
    partial.replace(path)
    return path


def load_per_image(path: str | Path) -> PerImageResults:
    """Read a file written by :func:`save_per_image`.

    Raises:
        ValueError: The file is not such a file (names the path and what it holds).
    """
    with np.load(Path(path), allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    kind = str(arrays.pop("__kind__", ""))
    classes = _registry()
    if kind not in classes:
        raise ValueError(f"{path}: not a per-image evaluation file (kind {kind!r}; expected one of {sorted(classes)})")
    loaded: PerImageResults = classes[kind].from_arrays(arrays)
    return loaded


def _pair(interval: tuple[float, float]) -> list[float | None]:
    return [value if math.isfinite(value) else None for value in interval]


def summary_intervals(evaluations: Mapping[str, PerImageResults | None], *, resamples: int, seed: int,
                      level: float = DEFAULT_LEVEL, prefix: str = "val_",
                      change: tuple[str, str] | None = ("baseline", "best")) -> dict[str, Any]:
    """The ``intervals`` entry of a run's ``summary.json``.

    Args:
        evaluations: Role (``baseline``, ``best``, ``last``, ...) -> the per-image results of that evaluation of
            the same images (``None``: not evaluated, left out).
        resamples: Bootstrap resamples.
        seed: Seed of the resampled image sets (the same sets for every role).
        level: Confidence level.
        prefix: Put before each metric name (``val_top1``).
        change: ``(before, after)`` roles whose paired difference is the ``change`` interval; skipped when either
            is missing or they cover different images.

    Returns:
        ``{"level", "resamples", "unit": "image", "<prefix><metric>": {role: [lo, hi], ..., "change": [lo, hi]}}``
        (JSON-ready; an undefined bound is ``None``).
    """
    intervals: dict[str, Any] = {"level": level, "resamples": resamples, "unit": "image"}
    for role, results in evaluations.items():
        if results is None:
            continue
        for name, interval in bootstrap_intervals(results, resamples=resamples, seed=seed, level=level).items():
            intervals.setdefault(prefix + name, {})[role] = _pair(interval)
    if change is not None:
        before, after = (evaluations.get(role) for role in change)
        if before is not None and after is not None:
            if before.num_images != after.num_images:
                logger.warning("no interval of the change: the %s evaluation covers %d images and the %s one %d",
                               change[0], before.num_images, change[1], after.num_images)
            else:
                paired = paired_change_intervals(before, after, resamples=resamples, seed=seed, level=level)
                for name, interval in paired.items():
                    intervals.setdefault(prefix + name, {})["change"] = _pair(interval)
    return intervals
