"""One evaluation routine for validation during training and for ``visiontune eval``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from visiontune.config import Config
from visiontune.engine.build import build_val_loader
from visiontune.evaluation.bootstrap import evaluator_per_image
from visiontune.evaluation.widerface_predictions import NonFinitePredictionError
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


def outputs_to_host(outputs: Any, *, pack_cpu: bool = False) -> Any:
    """The eval-mode model output on the CPU with one device-to-host copy per batch.

    Classification's per-image ``[{"logits": Tensor[C]}, ...]`` becomes one ``Tensor[B, C]`` (what
    :class:`~visiontune.evaluation.classification.ClassificationEvaluator` takes: no per-row dicts). Other
    per-image ``list[dict]`` outputs (detection, masks) keep their structure: their tensors are packed by dtype into
    one flat buffer on the device, copied once and split into CPU views. Outputs already on the CPU pass through
    (``pack_cpu``: packed as if on a device; tests).
    """
    if isinstance(outputs, torch.Tensor):
        return outputs.cpu()
    if isinstance(outputs, list) and outputs and all(
            isinstance(item, dict) and set(item) == {"logits"} and isinstance(item["logits"], torch.Tensor)
            for item in outputs):
        return torch.stack([item["logits"] for item in outputs]).cpu()
    leaves: list[torch.Tensor] = []
    _collect_tensors(outputs, leaves)
    on_device = [tensor for tensor in leaves if pack_cpu or tensor.device.type != "cpu"]
    if not on_device:
        return outputs
    host: dict[int, torch.Tensor] = {}
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for tensor in on_device:
        by_dtype.setdefault(tensor.dtype, []).append(tensor)
    for group in by_dtype.values():
        flat = torch.cat([tensor.reshape(-1) for tensor in group]).cpu()
        for tensor, part in zip(group, flat.split([tensor.numel() for tensor in group]), strict=True):
            host[id(tensor)] = part.view(tensor.shape)
    return _replace_tensors(outputs, host)


def _collect_tensors(obj: Any, found: list[torch.Tensor]) -> None:
    if isinstance(obj, torch.Tensor):
        found.append(obj)
    elif isinstance(obj, dict):
        for value in obj.values():
            _collect_tensors(value, found)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _collect_tensors(value, found)


def _replace_tensors(obj: Any, host: dict[int, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        return host.get(id(obj), obj)
    if isinstance(obj, dict):
        return {key: _replace_tensors(value, host) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_replace_tensors(value, host) for value in obj)
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
        evaluator.update(outputs_to_host(outputs), targets)
    evaluator.synchronize()
    metrics = evaluator.compute()
    model.train(was_training)
    return metrics


def build_eval_loader(task: Task, dataset: Dataset, config: Config) -> DataLoader:
    """The validation loader used by ``visiontune eval`` (same batching as during training)."""
    return build_val_loader(task, dataset, config, persistent_workers=False)


def validate(model: nn.Module, ema_model: nn.Module | None, loader: DataLoader, dataset: Dataset, task: Task, *,
             device: torch.device, autocast_dtype: torch.dtype | None, progress: bool, per_image: bool,
             context: str, skipped_steps: int = 0) -> tuple[dict[str, float], Any]:
    """Validation during training: ``val_*`` metrics of ``model`` and ``val_ema_*`` of ``ema_model``, and the
    per-image results of ``model`` (``per_image``; else ``None``).

    Raises:
        NonFinitePredictionError: an image's predictions hold NaN or infinite values; the message starts with
            ``context`` (``epoch 3``) and says what to change.
    """
    try:
        evaluator = task.build_evaluator(dataset)
        metrics = {f"val_{key}": value for key, value in run_evaluation(
            model, loader, evaluator, device=device, autocast_dtype=autocast_dtype, progress=progress,
            description="val").items()}
        results = evaluator_per_image(evaluator) if per_image else None
        if ema_model is not None:
            metrics.update({f"val_ema_{key}": value for key, value in run_evaluation(
                ema_model, loader, task.build_evaluator(dataset), device=device,
                autocast_dtype=autocast_dtype).items()})
    except NonFinitePredictionError as error:
        loss = (f"{skipped_steps} training steps had a non-finite loss and were skipped (train.nan_policy=skip)"
                if skipped_steps else "the training loss was finite")
        amp = ", or evaluate in float32 (train.amp=off)" if autocast_dtype is not None else ""
        raise NonFinitePredictionError(
            f"{context}: {error}; {loss}, the NaN appeared in evaluation: lower optim.lr or set train.clip_grad "
            f"(e.g. 1.0){amp}", image=error.image) from None
    return metrics, results
