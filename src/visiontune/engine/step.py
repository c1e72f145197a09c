"""One optimizer step, in the manner of detectron2's ``SimpleTrainer.run_step`` / ``AMPTrainer``.

:class:`TrainStep` owns what happens between ``before_step`` and ``after_step``: the forward and backward passes of
the step's micro-batches (``train.accumulate``; DDP's ``no_sync`` on all but the last), autocast and loss scaling
(``train.amp``), ``channels_last`` batches, gradient clipping (``train.clip_grad``), the optimizer step and the
non-finite loss policy (``train.nan_policy``). Its losses go to the :class:`~visiontune.engine.events.EventStorage`,
which reads them to the host only at logging steps.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Iterator
from typing import Any, cast

import torch
from torch import nn

from visiontune.config import Config
from visiontune.engine.events import EventStorage
from visiontune.engine.inference import to_device
from visiontune.engine.loaders import sample_seed, seed_everything
from visiontune.engine.stop import StopController
from visiontune.tasks.base import Task

logger = logging.getLogger(__name__)

__all__ = ["TrainStep", "loss_value"]


def loss_value(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sum of a train-mode model's losses (``dict[str, Tensor[]]``, one scalar each)."""
    if not isinstance(losses, dict) or not losses:
        raise TypeError(f"in train mode the model must return a non-empty dict of losses (got {type(losses).__name__})")
    return cast(torch.Tensor, sum(losses.values()))


class TrainStep:
    """Runs optimizer steps of ``model`` (called through ``train_model``: the DDP / compiled wrapper).

    Args:
        model: The bare model (its parameters are clipped, its buffers restored after a skipped step).
        train_model: The module the step calls (``model`` itself, or its DDP / ``torch.compile`` wrapper).
        optimizer: Steps the accumulated gradients.
        scaler: ``torch.amp.GradScaler`` (disabled unless float16 autocast).
        task: Prepares batches on the device (``prepare_train_batch``) and counts their images.
        config: ``train.accumulate``, ``train.clip_grad``, ``train.nan_policy`` and ``seed``.
        device: The training device.
        autocast_dtype: Autocast dtype, or ``None`` for float32.
        channels_last: Image batches in channels-last memory format.
        rank: This process's rank (part of the step's random seed).
    """

    def __init__(self, model: nn.Module, train_model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any,
                 task: Task, config: Config, *, device: torch.device, autocast_dtype: torch.dtype | None,
                 channels_last: bool, rank: int = 0) -> None:
        self.model, self.train_model, self.optimizer, self.scaler = model, train_model, optimizer, scaler
        self.task = task
        self.accumulate, self.clip_grad = config.train.accumulate, config.train.clip_grad
        self.nan_policy, self.seed = config.train.nan_policy, config.seed
        self.device, self.autocast_dtype, self.channels_last, self.rank = device, autocast_dtype, channels_last, rank
        self.skipped_steps = 0
        """Steps skipped for a non-finite loss (``nan_policy: skip``), over the whole run."""
        self._buffers_before: list[torch.Tensor] = []

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_steps}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_steps = checkpoint.get("skipped_steps", 0)

    def run(self, batches: Iterator[tuple[Any, Any]], count: int, storage: EventStorage, stop: StopController, *,
            epoch: int, step: int, log_step: bool) -> int:
        """Optimizer step ``step`` over the next ``count`` micro-batches of ``batches``; returns how many it took.

        ``nan_policy: error``: no host sync; the losses wait in ``storage`` until the logging step (``log_step``),
        which raises for the first non-finite one. ``nan_policy: skip``: whether to apply the step must be known
        before the optimizer step, so every step reduces its losses at once (one sync; under DDP one collective
        that also carries the stop vote) and a non-finite one is dropped with its buffer updates.
        """
        # dropout / mixup randomness depends only on (seed, step, rank): exact resumes
        seed_everything(sample_seed(self.seed, step, 1_000_000 + self.rank))
        if self.nan_policy == "skip":  # a skipped step must not leave NaN in BN statistics
            self._buffers_before = [buffer.detach().clone() for buffer in self.model.buffers()]
        step_losses = [self.forward_backward(images, targets, storage, sync_gradients=index == count - 1)
                       for index, (images, targets) in enumerate(itertools.islice(batches, count))]
        means = storage.step_means(step_losses, stop)
        if self.nan_policy == "skip":
            storage.flush(stop)  # nothing pending in practice: every step is reduced at once
            (values,) = storage.reduce([means], stop)
            storage.step_applied = math.isfinite(values["loss"])
            if storage.step_applied:
                self.apply_gradients()
                storage.count(values)
            else:
                self.skip(values, step)
                storage.skipped(values)
        else:
            self.apply_gradients()
            storage.step_applied = True
            storage.defer(means, epoch=epoch, step=step)
            if log_step:
                storage.flush(stop)
        return len(step_losses)

    def forward_backward(self, images: Any, targets: Any, storage: EventStorage, *,
                         sync_gradients: bool) -> dict[str, torch.Tensor]:
        """One micro-batch: forward under autocast, backward of its share of the step's loss; its losses."""
        images = to_device(images, self.device, non_blocking=True)
        targets = to_device(targets, self.device, non_blocking=True)
        if self.channels_last and isinstance(images, torch.Tensor) and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        images, targets = self.task.prepare_train_batch(images, targets)
        no_sync = not sync_gradients and isinstance(self.train_model, nn.parallel.DistributedDataParallel)
        with cast(Any, self.train_model).no_sync() if no_sync else contextlib.nullcontext():
            with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype or torch.float32,
                                enabled=self.autocast_dtype is not None):
                losses = self.train_model(images, targets)
                loss = loss_value(losses)
            self.scaler.scale(loss / self.accumulate).backward()
        storage.epoch_images += self.task.batch_size_of(images)
        return {key: value.detach() for key, value in losses.items()}

    def apply_gradients(self) -> None:
        """Clip (``train.clip_grad``), step the optimizer through the loss scaler, clear the gradients."""
        if self.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def skip(self, values: dict[str, float], step: int) -> None:
        """A non-finite loss under ``nan_policy: skip``: drop the gradients and restore the buffers."""
        self.skipped_steps += 1
        logger.warning("skipping step %d: non-finite loss %s (%d skipped so far)", step, values, self.skipped_steps)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buffer, saved in zip(self.model.buffers(), self._buffers_before, strict=False):
                buffer.copy_(saved)
