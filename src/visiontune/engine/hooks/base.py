"""The hook interface: :class:`HookBase` and :class:`TrainingContext`, what a hook may see of the training run.

Hooks depend on this narrow interface, not on the trainer class: :class:`~visiontune.engine.trainer.Trainer`
satisfies it. A hook reads and writes numbers through ``trainer.storage`` (:class:`~visiontune.engine.events.
EventStorage`), asks to stop through ``trainer.stop`` (:class:`~visiontune.engine.stop.StopController`), and keeps
its own state, which it saves in the checkpoint through :meth:`HookBase.state_dict`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from visiontune.config import Config
from visiontune.engine.events import EventStorage
from visiontune.engine.stop import StopController
from visiontune.models.parts import ModelParts
from visiontune.tasks.base import Task
from visiontune.utils.comm import DistInfo

__all__ = ["HookBase", "TrainState", "TrainingContext"]


class TrainState:
    """The loop's counters (the checkpoint's ``epoch``, ``step`` and ``batch_in_epoch``)."""

    def __init__(self, epoch: int = 0, step: int = 0, batch_in_epoch: int = 0) -> None:
        self.epoch = epoch
        """The epoch being trained (0-based); after a finished epoch ``e`` it is ``e + 1``."""
        self.step = step
        """Optimizer steps done."""
        self.batch_in_epoch = batch_in_epoch
        """Micro-batches of ``epoch`` already consumed (mid-epoch checkpoints)."""

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.epoch, self.step = checkpoint["epoch"], checkpoint["step"]
        self.batch_in_epoch = checkpoint.get("batch_in_epoch", 0)


@runtime_checkable
class TrainingContext(Protocol):
    """What hooks see of the training run (the trainer passes itself)."""

    config: Config
    state: TrainState
    storage: EventStorage
    stop: StopController
    task: Task
    model: nn.Module
    """The bare model (not the DDP / compiled wrapper)."""
    parts: ModelParts
    optimizer: torch.optim.Optimizer
    run_dir: Path
    is_main: bool
    """Rank 0."""
    dist: DistInfo
    device: torch.device
    autocast_dtype: torch.dtype | None
    val_loader: DataLoader | None
    val_dataset: Dataset | None
    batches_per_epoch: int
    last_saved_step: int | None
    """The step of the state in ``last.pt`` (``None``: not written by this invocation nor resumed from)."""
    fit_started: float
    """``time.perf_counter()`` when the run began (setup included)."""

    def evaluate(self) -> dict[str, float]:
        """Validation metrics of the model (``val_*``) and of its EMA (``val_ema_*``); per-image results into
        ``storage.eval_per_image`` (rank 0, ``eval.intervals``)."""
        ...

    def checkpoint_dict(self) -> dict[str, Any]:
        """The plain dict of ``last.pt`` / ``best.pt``."""
        ...

    def save_checkpoint(self, name: str) -> Path | None:
        """Write ``<run_dir>/<name>`` atomically on rank 0, then wait for every rank."""
        ...

    def explain_out_of_memory(self, phase: str) -> contextlib.AbstractContextManager[None]:
        """Re-raise ``torch.OutOfMemoryError`` with the batch size in use and what to change."""
        ...

    def rewrap_model(self) -> nn.Module:
        """Wrap :attr:`model` again for training (DDP, compile) after its trainable parameters changed."""
        ...


class HookBase:
    """Extension points of the training loop; override any of them. Exceptions propagate.

    Every method gets the trainer (a :class:`TrainingContext`): ``trainer.config``, ``trainer.state`` (``epoch``,
    ``step``), ``trainer.storage`` (the rows, losses and metrics), ``trainer.stop``, ``trainer.model``,
    ``trainer.optimizer``, ``trainer.run_dir``, ``trainer.is_main`` (rank 0) and ``trainer.dist``.
    """

    def before_train(self, trainer: TrainingContext) -> None:
        """Once, after setup (and a resume), before the first step."""

    def after_baseline(self, trainer: TrainingContext, row: dict[str, Any]) -> None:
        """The epoch-0 row of the baseline evaluation (``train.eval_before``), after ``before_train``: hooks that
        record evaluated rows (best checkpoint, ``metrics.csv``, plots, console, trackers) record it."""

    def before_epoch(self, trainer: TrainingContext) -> None:
        """Before each epoch's first step (also the rest of an epoch after a mid-epoch resume)."""

    def before_step(self, trainer: TrainingContext) -> None:
        """Before each optimizer step's forward passes (``trainer.state.step`` steps are done)."""

    def after_step(self, trainer: TrainingContext, losses: dict[str, float] | None) -> None:
        """After each optimizer step (``trainer.state.step`` counts it).

        ``losses`` is ``None`` except at a logging step: every ``train.log_every`` steps, the epoch's last step,
        a step of ``train.save_every_steps`` and ``train.max_steps``. There it holds the losses averaged over
        micro-batches, ranks and the applied (finite) steps since the previous logging step, plus their sum
        ``loss``. The loop reads the losses from the device only there: one host sync (and under DDP one
        collective) per ``train.log_every`` steps, not per step.
        """

    def after_epoch(self, trainer: TrainingContext, row: dict[str, Any]) -> None:
        """After each epoch, with its ``metrics.csv`` row (``epoch``, ``step``, ``train_*``, ``lr``, ``val_*``...)."""

    def after_train(self, trainer: TrainingContext) -> None:
        """Once at the end, also after an exception; ``trainer.stop.reason`` is ``None`` when training failed."""

    def state_dict(self) -> dict[str, Any]:
        """The hook's state, merged into the checkpoint (top-level keys; empty: nothing to keep)."""
        return {}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Restore the hook's state from a resumed checkpoint (the whole checkpoint dict)."""
