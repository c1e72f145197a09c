"""Class imbalance: how uneven the classes are, and the draws and loss weights that compensate for it.

* :func:`imbalance_summary`: the ratio largest / smallest class count that ``check-data`` prints, with a warning
  above :data:`IMBALANCE_WARNING_RATIO` (10:1).
* :func:`balanced_weights` and :func:`balanced_draw` (``data.sampler=balanced``, classification): every sample drawn
  with probability inversely proportional to its class frequency, so each class is drawn equally often on average.
* :func:`repeat_factors` and :func:`repeat_factor_draw` (``data.sampler=repeat_factor``, detection and
  segmentation): LVIS repeat-factor sampling (Gupta et al. 2019), ``r(c) = max(1, sqrt(t / f(c)))`` per category,
  an image repeats ``max`` over its categories, rounded stochastically per epoch as detectron2's
  ``RepeatFactorTrainingSampler``.
* :func:`class_loss_weights` (``loss.class_weights``): inverse frequency or the effective number of samples
  (Cui et al. 2019), normalised to average 1.

The draws are pure functions of a seed: the engine's samplers (:mod:`visiontune.engine.loaders`) seed them with the run
seed and the epoch, and every rank takes its share of the same global draw.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["IMBALANCE_WARNING_RATIO", "balanced_draw", "balanced_weights", "class_loss_weights", "imbalance_summary",
           "repeat_factor_draw", "repeat_factors"]

IMBALANCE_WARNING_RATIO = 10.0
"""``check-data`` warns when the largest class has more than this many times the images of the smallest."""


def imbalance_summary(counts: Mapping[str, int], *, what: str = "images") -> tuple[str, str | None]:
    """The imbalance line of ``counts`` and a warning above :data:`IMBALANCE_WARNING_RATIO`.

    Args:
        counts: Class name -> count (classes with 0 are left out of the ratio: they are reported as empty).
        what: What is counted (``"images"``, ``"instances"``), named in the lines.

    Returns:
        ``("class imbalance (images): largest / smallest = 25.0:1 (cat 500, dog 20)", warning or None)``.
    """
    present = {name: count for name, count in counts.items() if count > 0}
    if len(present) < 2:
        return f"class imbalance ({what}): fewer than 2 classes with {what}", None
    largest = max(present, key=lambda name: present[name])
    smallest = min(present, key=lambda name: present[name])
    ratio = present[largest] / present[smallest]
    extremes = (f"every class {present[largest]}" if ratio == 1 else
                f"{largest} {present[largest]}, {smallest} {present[smallest]}")
    line = f"class imbalance ({what}): largest / smallest = {ratio:.1f}:1 ({extremes})"
    if ratio <= IMBALANCE_WARNING_RATIO:
        return line, None
    return line, (f"classes are imbalanced: {largest!r} has {ratio:.1f}x the {what} of {smallest!r} (above "
                  f"{IMBALANCE_WARNING_RATIO:.0f}:1); consider data.sampler=balanced / repeat_factor or "
                  "loss.class_weights=inverse / effective")


def balanced_weights(labels: Sequence[int]) -> np.ndarray:
    """Per-sample draw probabilities inversely proportional to the sample's class frequency.

    Args:
        labels: Class index of every sample.

    Returns:
        ``(len(labels),)`` float64 probabilities summing to 1; every class present gets the same total mass.
    """
    if not labels:
        raise ValueError("balanced sampling needs at least one sample")
    frequency = Counter(int(label) for label in labels)
    weights = np.array([1.0 / frequency[int(label)] for label in labels], dtype=np.float64)
    return weights / weights.sum()


def balanced_draw(weights: np.ndarray, length: int, seed: int) -> list[int]:
    """``length`` sample indices drawn with replacement with probabilities ``weights`` (seeded)."""
    generator = np.random.default_rng(seed)
    return generator.choice(len(weights), size=length, replace=True, p=weights).tolist()


def repeat_factors(image_categories: Sequence[Sequence[int]], threshold: float) -> np.ndarray:
    """LVIS repeat factor of every image (Gupta et al. 2019; detectron2's ``repeat_factors_from_category_frequency``).

    ``f(c)`` is the fraction of images holding category ``c``; ``r(c) = max(1, sqrt(threshold / f(c)))``; an image
    repeats ``max(r(c))`` over its categories (1 for an image without any).

    Args:
        image_categories: The categories (labels) of every image; repeats inside one image count once.
        threshold: ``t``: categories in fewer than this fraction of the images are repeated.

    Returns:
        ``(len(image_categories),)`` float64 factors, each at least 1.
    """
    if not image_categories:
        raise ValueError("repeat-factor sampling needs at least one image")
    if not 0 < threshold <= 1:
        raise ValueError(f"data.repeat_thresh must be in (0, 1], got {threshold}")
    count = len(image_categories)
    images_with = Counter(category for categories in image_categories for category in set(categories))
    category_repeat = {category: max(1.0, math.sqrt(threshold / (images / count)))
                       for category, images in images_with.items()}
    return np.array([max((category_repeat[c] for c in set(categories)), default=1.0)
                     for categories in image_categories], dtype=np.float64)


def repeat_factor_draw(factors: np.ndarray, length: int, seed: int) -> list[int]:
    """One epoch of repeat-factor sampling: ``length`` image indices (seeded).

    Each image ``i`` appears ``floor(r_i)`` times plus once more with probability ``r_i - floor(r_i)`` (stochastic
    rounding, as detectron2), in a random order; the list is then cut, or cycled, to ``length`` so every epoch has the
    same number of steps (``length`` is normally ``round(sum(r_i))``, the expected size).
    """
    generator = np.random.default_rng(seed)
    whole = np.floor(factors)
    repeats = (whole + (generator.random(len(factors)) < factors - whole)).astype(np.int64)
    indices = np.repeat(np.arange(len(factors)), repeats)
    generator.shuffle(indices)
    if len(indices) == 0:
        raise ValueError("repeat-factor sampling drew no image")
    return np.resize(indices, length).tolist()


def class_loss_weights(counts: Sequence[int], mode: str, *, beta: float = 0.999) -> list[float]:
    """Per-class weights of the classification loss, averaging 1 over the classes.

    Args:
        counts: Training images per class, in class-index order.
        mode: ``"inverse"`` (``1 / n_c``) or ``"effective"`` (``(1 - beta) / (1 - beta ** n_c)``, the inverse
            effective number of samples of Cui et al. 2019).
        beta: ``effective``: in ``[0, 1)``.

    Returns:
        One weight per class (a class without images gets the largest weight of the others: it never appears in
        the training loss anyway).

    Raises:
        ValueError: an unknown mode, or no class with images.
    """
    if mode not in ("inverse", "effective"):
        raise ValueError(f"loss.class_weights: expected 'none', 'inverse' or 'effective', got {mode!r}")
    present = [count for count in counts if count > 0]
    if not present:
        raise ValueError("loss.class_weights: no class has a training image")
    if mode == "inverse":
        raw = [1.0 / count if count > 0 else math.nan for count in counts]
    else:
        raw = [(1.0 - beta) / (1.0 - beta ** count) if count > 0 else math.nan for count in counts]
    largest = max(value for value in raw if not math.isnan(value))
    raw = [largest if math.isnan(value) else value for value in raw]
    mean = sum(raw) / len(raw)
    return [value / mean for value in raw]
