"""What a task must provide to the shared engine.

The engine (:mod:`visiontune.engine.trainer`) knows nothing about classification, faces or masks: a
:class:`Task` builds the datasets, the model (following the model contract), the evaluator and the
prediction writer, and describes the model's head and layers for fine-tuning.

Model contract: in train mode ``model(images, targets)`` returns ``dict[str, Tensor]`` of losses (the
engine sums them); in eval mode ``model(images)`` returns ``list[dict[str, Tensor]]``, one per image.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from visiontune.config import Config
from visiontune.models.parts import ModelParts


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

    def __init__(self, config: Config) -> None:
        self.config = config
        self.meta: dict[str, Any] = {}

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

    def train_group_ids(self, dataset: Dataset) -> list[int] | None:
        """Group id of every training sample, for batches drawn from one group only (``None``: no grouping).

        The engine then fills each training batch from a single group (e.g. Mask R-CNN's aspect-ratio bins, so
        that padding to the batch's largest image wastes little), keeping the number of batches per epoch.
        """
        return None

    def batch_size_of(self, images: Any) -> int:
        """Number of images in a batch (tensor batch or list of tensors)."""
        return len(images)

    def data_problems(self) -> tuple[str, bool]:
        """``visiontune check-data``: a report text and whether it found errors."""
        raise NotImplementedError(f"check-data is not implemented for task {self.name!r}")

    @abstractmethod
    def predict(self, model: nn.Module, source: str, output_dir: Path, *, device: torch.device) -> list[Path]:
        """Run ``model`` on ``source`` (image, folder or list) and write the task's outputs; return the files."""

    def state_for_checkpoint(self) -> dict[str, Any]:
        """Metadata saved in every checkpoint (``meta``)."""
        return dict(self.meta)

    def load_meta(self, meta: dict[str, Any]) -> None:
        """Restore metadata from a checkpoint (before building datasets and the model)."""
        self.meta = dict(meta)
