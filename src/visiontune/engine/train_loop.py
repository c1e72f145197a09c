"""The training loop, in the manner of detectron2's ``TrainerBase``: epochs of optimizer steps, and hooks around them.

:class:`TrainerBase` knows nothing of tasks, files or settings beyond the loop's own: one optimizer step is the
:class:`~visiontune.engine.step.TrainStep`'s, the numbers go to the :class:`~visiontune.engine.events.EventStorage`,
every stop goes through the :class:`~visiontune.engine.stop.StopController`, and everything else (schedule,
evaluation, checkpoints, writers, stop conditions, summary) is a hook (:mod:`visiontune.engine.hooks`).
:class:`~visiontune.engine.trainer.Trainer` builds those parts from a config.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from visiontune.config import Config
from visiontune.engine.events import EventStorage
from visiontune.engine.finetune import set_frozen_batchnorm_eval
from visiontune.engine.hooks.base import HookBase, TrainState
from visiontune.engine.loaders import TrainSampler
from visiontune.engine.step import TrainStep
from visiontune.engine.stop import COMPLETED, StopController
from visiontune.utils.comm import DistInfo

logger = logging.getLogger(__name__)

__all__ = ["TrainerBase"]


class TrainerBase:
    """Epochs of optimizer steps with hooks around them.

    A subclass sets the parts (:meth:`~visiontune.engine.trainer.Trainer.setup`) and implements
    :meth:`epoch_batches`, :meth:`save_checkpoint` and :meth:`explain_out_of_memory`.
    """

    config: Config
    state: TrainState
    storage: EventStorage
    stop: StopController
    hooks: list[HookBase]
    train_step: TrainStep
    model: nn.Module
    optimizer: torch.optim.Optimizer
    train_dataset: Dataset
    train_sampler: TrainSampler
    batches_per_epoch: int
    dist: DistInfo
    device: torch.device
    is_main: bool
    run_dir: Path

    def train(self) -> None:
        """``before_train``, the baseline row, the epochs, then ``after_train``, which also runs when training raised
        (``stop.reason`` stays ``None`` then)."""
        self.stop.reason = None
        try:
            self.call_hooks("before_train")
            self.record_baseline()
            reason = None
            while reason is None and self.state.epoch < self.config.train.epochs:
                with self.explain_out_of_memory("training"):
                    train_stats = self.train_epoch()
                reason = self.end_epoch(train_stats)
            self.stop.reason = reason or COMPLETED
        finally:
            self.call_hooks("after_train")

    def train_epoch(self) -> dict[str, float]:
        """One pass over the training data (its rest after a mid-epoch resume): ``before_step``, one optimizer step
        (:meth:`run_step`), ``after_step``, until the data ends or a stop ends the epoch; the epoch's columns."""
        self.begin_epoch()
        batches = iter(self.epoch_batches())
        for first in batches:
            self.call_hooks("before_step")
            losses = self.run_step(itertools.chain([first], batches))
            self.call_hooks("after_step", losses)
            if not self.dist.enabled:
                self.stop.vote(self.device)  # one process: a local check, no collective and no host sync
            if self.stop.breaks_epoch():
                break
        self.storage.flush(self.stop)  # a stop between logging steps: the sums of every step (checkpoint, mean)
        return self.epoch_stats()

    def run_step(self, batches: Iterator[tuple[Any, Any]]) -> dict[str, float] | None:
        """One optimizer step over the next micro-batches of ``batches`` (``train.accumulate``, fewer at the end of
        the epoch); the losses averaged since the last logging step at a logging step (:meth:`is_log_step`), else
        ``None`` (no host sync)."""
        state = self.state
        count = max(1, min(self.config.train.accumulate, self.batches_per_epoch - state.batch_in_epoch))
        log_step = self.is_log_step(state.batch_in_epoch + count)
        state.batch_in_epoch += self.train_step.run(batches, count, self.storage, self.stop, epoch=state.epoch,
                                                    step=state.step, log_step=log_step)
        state.step += 1
        return self.storage.window_means() if log_step else None

    def call_hooks(self, point: str, *args: Any) -> None:
        """Call ``point`` (``before_train``, ``after_step``, ...) of every hook in order."""
        for hook in self.hooks:
            getattr(hook, point)(self, *args)

    def begin_epoch(self) -> None:
        """``before_epoch``, then train mode (frozen BatchNorm layers stay in eval), the sampler's epoch, counters."""
        self.stop.begin_epoch()
        self.call_hooks("before_epoch")
        self.train_step.train_model.train()
        set_frozen_batchnorm_eval(self.model)
        start_batch = self.state.batch_in_epoch
        self.train_sampler.set_epoch(self.state.epoch, start=start_batch * self.config.data.batch_size)
        self.storage.begin_epoch(resumed_mid_epoch=start_batch > 0)

    def is_log_step(self, batch_index: int) -> bool:
        """Whether the step that ends at micro-batch ``batch_index`` reduces the losses and gives them to
        ``after_step``: every ``train.log_every`` steps, the epoch's last step, a step checkpoint's step and
        ``train.max_steps``."""
        train, step = self.config.train, self.state.step + 1
        return (step % train.log_every == 0 or batch_index >= self.batches_per_epoch
                or (train.save_every_steps > 0 and step % train.save_every_steps == 0)
                or (train.max_steps is not None and step >= train.max_steps))

    def epoch_stats(self) -> dict[str, float]:
        """The epoch's ``metrics.csv`` columns: mean losses, ``lr``, time, throughput (and skipped images)."""
        result = self.storage.epoch_means(self.optimizer.param_groups[-1]["lr"])
        skipped = getattr(self.train_dataset, "num_skipped", 0)
        if skipped:
            logger.warning("%d corrupt training images were skipped so far (data.on_corrupt=skip)", skipped)
            result["skipped_images"] = skipped
        return result

    def end_epoch(self, train_stats: dict[str, float]) -> str | None:
        """Close the epoch: a stop in its middle writes ``last.pt`` (the resume continues at the next batch); a
        finished epoch's row goes through ``after_epoch``. Returns why training stops now, if it does."""
        if self.stop.agreed is not None and self.state.batch_in_epoch < self.batches_per_epoch:
            self.save_checkpoint("last.pt")
            self.log_stop()
            return self.stop.agreed
        self.state.epoch += 1
        self.state.batch_in_epoch = 0
        row: dict[str, Any] = {"epoch": self.state.epoch, "step": self.state.step, **train_stats}
        self.storage.history.append(row)  # the hooks complete the row in place (validation metrics)
        self.call_hooks("after_epoch", row)
        if self.stop.vote(self.device):
            self.log_stop()
            return self.stop.agreed
        if self.stop.proposed is not None and self.stop.announce:
            logger.info("%s", self.stop.proposed)
        return self.stop.proposed

    def record_baseline(self) -> None:
        """An evaluation before the first step (``BaselineEval``): its epoch-0 row through ``after_baseline``, then
        ``last.pt`` (with ``train.epochs=0`` the run ends there)."""
        if self.storage.eval_metrics is None:
            return
        self.call_hooks("after_baseline", self.storage.history[0])
        self.storage.eval_metrics = None
        self.save_checkpoint("last.pt")

    def log_stop(self) -> None:
        if self.is_main:
            logger.warning("%s: stopped after step %d; continue with resume=%s (or train.auto_resume=true)",
                           self.stop.agreed, self.state.step, self.run_dir / "last.pt")

    # ------------------------------------------------------------------ what a subclass provides
    def epoch_batches(self) -> Iterable[tuple[Any, Any]]:
        """The epoch's micro-batches ``(images, targets)``."""
        raise NotImplementedError

    def save_checkpoint(self, name: str) -> Path | None:
        """Write the checkpoint ``name`` (rank 0) and wait for every rank."""
        raise NotImplementedError

    def explain_out_of_memory(self, phase: str) -> contextlib.AbstractContextManager[None]:
        """A context that re-raises ``torch.OutOfMemoryError`` with advice."""
        return contextlib.nullcontext()
