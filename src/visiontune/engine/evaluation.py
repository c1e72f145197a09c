"""One evaluation routine for validation during training and for ``visiontune eval``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from visiontune.config import Config
from visiontune.engine.build import build_val_loader
from visiontune.tasks.base import Evaluator, Task


def to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move tensors inside nested lists/tuples/dicts to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, dict):
        return {key: to_device(value, device, non_blocking) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(value, device, non_blocking) for value in obj)
    return obj


@torch.no_grad()
def run_evaluation(model: nn.Module, loader: DataLoader, evaluator: Evaluator, *, device: torch.device,
                   autocast_dtype: torch.dtype | None = None, progress: bool = False,
                   description: str = "eval") -> dict[str, float]:
    """Evaluate ``model`` on every batch of ``loader`` and return the synchronised metrics.

    This single function serves validation during training and ``visiontune eval``, so both report the
    same numbers for the same weights.
    """
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    evaluator.reset()
    iterator = tqdm(loader, desc=description, leave=False, disable=not progress, dynamic_ncols=True)
    for images, targets in iterator:
        images = to_device(images, device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):
            outputs = model(images)
        evaluator.update(to_device(outputs, torch.device("cpu")), targets)
    evaluator.synchronize()
    metrics = evaluator.compute()
    model.train(was_training)
    return metrics


def build_eval_loader(task: Task, dataset: Dataset, config: Config) -> DataLoader:
    """The validation loader used by ``visiontune eval`` (same batching as during training)."""
    return build_val_loader(task, dataset, config, persistent_workers=False)
