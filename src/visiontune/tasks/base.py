"""What a task must provide to the shared engine.

The engine (:mod:`visiontune.engine.trainer`) knows nothing about classification, faces or masks: a
:class:`Task` builds the datasets, the model (following the model contract), the evaluator and the
prediction writer, and describes the model's head and layers for fine-tuning.

Model contract: in train mode ``model(images, targets)`` returns ``dict[str, Tensor]`` of losses (the
engine sums them); in eval mode ``model(images)`` returns ``list[dict[str, Tensor]]``, one per image.
"""

from __future__ import annotations

import json
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from visiontune.config import Config
from visiontune.models.parts import ModelParts
from visiontune.registry import suggest
from visiontune.utils.plots import format_metric

logger = logging.getLogger(__name__)


def lookup_model_name(name: str, models: Mapping[str, str], what: str) -> str:
    """``models[name]`` (the task's model name -> its variant or backbone).

    Raises:
        ValueError: an unknown name, naming ``model.name``, the nearest valid names and all of them.
    """
    if name not in models:
        raise ValueError(f"model.name: {name!r} is not {what}{suggest(name, list(models))}; valid: {', '.join(models)}")
    return models[name]


def split_images_dir(data: Any, split: str | None, *, train: bool) -> str:
    """The image folder (relative to ``data.root``) of ``split``: ``data.images_dir`` for training,
    ``data.test_images_dir`` for ``data.test_split`` and ``data.val_images_dir`` for other evaluated splits when
    they are set."""
    if train:
        return str(data.images_dir)
    if split is not None and split == data.test_split and data.test_images_dir:
        return str(data.test_images_dir)
    return str(data.val_images_dir or data.images_dir)


@dataclass
class DataCheck:
    """What ``visiontune check-data`` found.

    Attributes:
        text: The report for the console.
        has_errors: Whether the data has errors (the command then exits 1).
        samples: Per split, one dict per image for the data report: ``path``, and ``label`` (classification) or
            ``boxes`` (``[[x1, y1, x2, y2], ...]`` pixels) with optional ``labels`` (detection).
        class_names: Class or category names (labels index them; detection labels start at 1 for the first name).
        flagged: ``{"path", "reason", "split"}`` of every image the check flagged.
        duplicates: Duplicate image groups (:meth:`visiontune.data.duplicates.DuplicateGroup.to_json`: ``kind``,
            ``files`` relative to ``data.root``, ``splits``, ``distance``), for ``data_check.json`` and the report.
    """

    text: str
    has_errors: bool
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    class_names: list[str] | None = None
    flagged: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)


class Evaluator(Protocol):
    """Accumulates predictions over a split and computes the task's metrics.

    ``synchronize`` merges the state of all ranks (no-op in one process) so that ``compute`` on any rank
    gives the numbers of a single-process evaluation of the whole split.
    """

    def reset(self) -> None: ...

    def update(self, outputs: Any, targets: Any) -> None: ...

    def synchronize(self) -> None: ...

    def compute(self) -> dict[str, float]: ...

    def save_artifacts(self, out_dir: Path) -> list[Path]: ...


class Task(ABC):
    """Base class of the three tasks. One instance per run; it holds the run's metadata (class names).

    Args:
        config: The resolved configuration.
    """

    name: ClassVar[str]
    default_metric: ClassVar[str]
    metric_mode: ClassVar[str] = "max"
    metric_names: ClassVar[tuple[str, ...]] = ()
    """Shell-style patterns (:mod:`fnmatch`) of the metric names the task's evaluator computes (``top1``,
    ``segm_AP*``): ``train.metric`` must match one (``ema_`` before it under ``train.ema``), checked by
    :meth:`check_metric` before training starts. Empty: not checked."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.meta: dict[str, Any] = {}
        self.predict_metrics: dict[str, float] = {}
        """Metrics of the last :meth:`predict` on an annotated source (empty otherwise)."""

    def available_metrics(self) -> tuple[str, ...]:
        """The metric names (patterns) the validation can report now: :attr:`metric_names`, narrowed by what the
        built datasets tell (e.g. no ``top5`` with 5 classes or fewer)."""
        return self.metric_names

    def check_metric(self, name: str | None) -> None:
        """Check ``train.metric`` against :meth:`available_metrics` (the trainer calls it once the task is created
        and again once the datasets are built, both before the run folder exists, so that a misspelt or unavailable
        metric does not fail after the first epoch).

        Raises:
            ConfigError: ``name`` is no metric of the task; the message lists them, with the nearest.
        """
        available = self.available_metrics()
        if name is None or not available:
            return
        import fnmatch

        from visiontune.config import ConfigError
        from visiontune.registry import suggest

        bare = name.removeprefix("ema_") if self.config.train.ema else name
        if any(fnmatch.fnmatchcase(bare, pattern) for pattern in available):
            return
        names = list(available)
        if self.config.train.ema:
            names += [f"ema_{pattern}" for pattern in available]
        raise ConfigError(f"train.metric: {name!r} is not a metric of task {self.name!r}{suggest(name, names)}; "
                          f"metrics: {', '.join(names)}")

    @abstractmethod
    def build_dataset(self, split: str, *, train: bool) -> Dataset:
        """Dataset of ``split`` (``data.train_split``/``data.val_split`` value); ``train`` selects augmentation.

        Building the training split sets ``self.meta`` (e.g. ``class_names``); later splits are checked against it.
        """

    def collate_fn(self, *, train: bool) -> Callable | None:
        """Batch collation (``None``: PyTorch's default)."""
        return None

    @abstractmethod
    def build_model(self, *, load_weights: bool = True) -> nn.Module:
        """The model for ``self.meta`` (class count), with initial weights loaded when ``load_weights``."""

    @abstractmethod
    def model_parts(self, model: nn.Module) -> ModelParts:
        """Head and layer groups of ``model`` for freezing and per-layer learning rates."""

    @abstractmethod
    def build_evaluator(self, dataset: Dataset) -> Evaluator:
        """A fresh evaluator for ``dataset``."""

    def prepare_train_batch(self, images: Any, targets: Any) -> tuple[Any, Any]:
        """Last chance to transform a training batch on the device (mixup/cutmix for classification)."""
        return images, targets

    def prepare_training(self, model: nn.Module, train_dataset: Dataset, val_dataset: Dataset | None, *,
                         device: torch.device, autocast_dtype: torch.dtype | None,
                         run_dir: Path) -> tuple[Dataset, Dataset | None]:
        """Called once by the trainer when the model's weights are final (loaded, or restored by a resume) and the
        run folder is chosen: the datasets that training and validation read. The default returns them unchanged;
        classification swaps in the frozen backbone's cached features (``finetune.cache_features``), with the same
        length and order, so samplers, resumes and distributed shards are unchanged."""
        return train_dataset, val_dataset

    def train_group_ids(self, dataset: Dataset) -> list[int] | None:
        """Group id of every training sample, for batches drawn from one group only (``None``: no grouping).

        The engine then fills each training batch from a single group (e.g. Mask R-CNN's aspect-ratio bins, so
        that padding to the batch's largest image wastes little), keeping the number of batches per epoch.
        """
        return None

    def batch_size_of(self, images: Any) -> int:
        """Number of images in a batch (tensor batch or list of tensors)."""
        return len(images)

    def check_data(self) -> DataCheck:
        """``visiontune check-data``: scan the configured splits (the report text, whether it found errors, and the
        samples and flagged images that ``check-data --report`` draws)."""
        raise NotImplementedError(f"check-data is not implemented for task {self.name!r}")

    def check_duplicates(self, check: DataCheck) -> tuple[str, list[str]] | None:
        """Exact and near duplicate images within and across the splits of ``check.samples`` (training split first),
        when ``data.duplicates`` is on: fills ``check.duplicates`` and returns the summary line and the warnings
        (:func:`~visiontune.data.duplicates.duplicate_summary`); None when off. Hashes are cached in
        ``<project>/.cache/image_hashes.json``."""
        from visiontune.data.duplicates import HashCache, duplicate_summary, find_duplicates, hash_cache_path

        if not self.config.data.duplicates:
            return None
        splits = {split: [Path(sample["path"]) for sample in samples] for split, samples in check.samples.items()}
        groups = find_duplicates(splits, cache=HashCache(hash_cache_path(self.config.project)),
                                 num_workers=max(1, self.config.data.num_workers))
        check.duplicates = [group.to_json(self.config.data.root) for group in groups]
        return duplicate_summary(groups, list(splits))

    def data_problems(self) -> tuple[str, bool]:
        """The report text of :meth:`check_data` and whether it found errors."""
        check = self.check_data()
        return check.text, check.has_errors

    @abstractmethod
    def predict(self, model: nn.Module, source: str, output_dir: Path, *, device: torch.device) -> list[Path]:
        """Run ``model`` on ``source`` (image, folder or list) and write the task's outputs; return the files."""

    def save_predict_metrics(self, metrics: Mapping[str, float], output_dir: Path, source: str | Path,
                             **extra: Any) -> Path:
        """Keep the metrics of :meth:`predict` on an annotated source in ``self.predict_metrics``, log them and write
        ``output_dir/metrics.json`` (``source``, then ``extra`` settings, then the metrics; NaN as ``null``).

        Returns:
            The ``metrics.json`` path.
        """
        self.predict_metrics = {key: value if isinstance(value, int) and not isinstance(value, bool) else float(value)
                                for key, value in metrics.items()}  # counts stay integers
        logger.info("metrics of the predictions on %s: %s", source,
                    ", ".join(f"{key} {format_metric(value)}" for key, value in self.predict_metrics.items()))
        values = {key: value if math.isfinite(value) else None for key, value in self.predict_metrics.items()}
        path = Path(output_dir) / "metrics.json"
        path.write_text(json.dumps({"source": str(source), **extra, **values}, indent=1), encoding="utf-8")
        return path

    def state_for_checkpoint(self) -> dict[str, Any]:
        """Metadata saved in every checkpoint (``meta``)."""
        return dict(self.meta)

    def load_meta(self, meta: dict[str, Any]) -> None:
        """Restore metadata from a checkpoint (before building datasets and the model)."""
        self.meta = dict(meta)
