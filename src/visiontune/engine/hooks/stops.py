"""Stop conditions: ``train.max_steps``, early stopping (``train.patience``) and ``train.time_budget``. Each proposes a
reason to :class:`~visiontune.engine.stop.StopController` (``trainer.stop``), which ends training after the epoch."""

from __future__ import annotations

import time
from typing import Any

from visiontune.engine.hooks.base import HookBase, TrainingContext
from visiontune.engine.stop import MAX_STEPS
from visiontune.utils import comm

__all__ = ["EarlyStopping", "MaxStepsStop", "TimeBudget"]


class MaxStepsStop(HookBase):
    """``train.max_steps``: ends the epoch at that step (it still counts as an epoch), then training."""

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps

    def after_step(self, trainer: TrainingContext, losses: dict[str, float] | None) -> None:
        if trainer.state.step >= self.max_steps:
            trainer.stop.end_epoch_early()

    def after_epoch(self, trainer: TrainingContext, row: dict[str, Any]) -> None:
        if trainer.state.step >= self.max_steps:
            trainer.stop.propose(MAX_STEPS, announce=False)


class EarlyStopping(HookBase):
    """``train.patience``: stop after that many evaluations without a better ``train.metric`` (the count of the
    best-checkpoint hook, ``trainer.storage.evals_without_improvement``).

    Args:
        patience: Evaluations without improvement that end training.
        key: The metric's name in the stop reason (``val_top1``).
    """

    def __init__(self, patience: int, key: str) -> None:
        self.patience, self.key = patience, key

    def after_epoch(self, trainer: TrainingContext, row: dict[str, Any]) -> None:
        if trainer.storage.evals_without_improvement >= self.patience:
            trainer.stop.propose(f"early stopping: no improvement of {self.key} in {self.patience} evaluations")


class TimeBudget(HookBase):
    """``train.time_budget`` (minutes, from the start of training): stop after the epoch that exceeds it, on every
    rank once any rank is past it."""

    def __init__(self, minutes: float) -> None:
        self.minutes = minutes
        self.started = time.perf_counter()

    def before_train(self, trainer: TrainingContext) -> None:
        self.started = time.perf_counter()

    def after_epoch(self, trainer: TrainingContext, row: dict[str, Any]) -> None:
        if trainer.stop.proposed is not None:
            return  # an earlier condition already ends training (the same on every rank)
        elapsed_min = (time.perf_counter() - self.started) / 60
        if comm.any_rank([elapsed_min >= self.minutes], trainer.device)[0]:
            trainer.stop.propose(f"time budget of {self.minutes} min reached")
