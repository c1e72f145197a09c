"""The built-in hooks of a config, in calling order (:func:`default_hooks`)."""

from __future__ import annotations

from typing import Any

from visiontune.config import Config
from visiontune.engine.hooks.base import HookBase
from visiontune.engine.hooks.checkpoints import EpochCheckpointer, HeadOnlyCheckpointer, StepCheckpointer
from visiontune.engine.hooks.evaluation import (
    BaselineEval,
    BestCheckpointer,
    EvalArtifacts,
    EvalHook,
    PerImageKeeper,
    TestEvaluation,
)
from visiontune.engine.hooks.schedule import EMAUpdate, LRScheduler, ProgressiveUnfreeze
from visiontune.engine.hooks.stops import EarlyStopping, MaxStepsStop, TimeBudget
from visiontune.engine.hooks.summary import RunSummary
from visiontune.engine.hooks.writers import EpochLogger, MetricsWriter, PlotWriter, ProgressBar
from visiontune.engine.scheduler import IterationScheduler

__all__ = ["default_hooks"]


def default_hooks(config: Config, user_hooks: list[HookBase], *, is_main: bool, selection: tuple[str, str],
                  scheduler: IterationScheduler, ema: Any, frozen_names: list[str]) -> list[HookBase]:
    """The built-in hooks for ``config`` with ``user_hooks`` in their place.

    First the schedule (learning rate, EMA, unfreezing: the state every other hook sees is the stepped one), then
    evaluation, best checkpoint and ``last.pt``, then the writers (an ``after_epoch`` user hook sees the validation
    metrics and a written checkpoint; an epoch whose checkpoint failed gets no row), then the baseline evaluation,
    the user's hooks, then step checkpoints, console output, the stop conditions, the end-of-run evaluations and the
    run's ``summary.json``.

    Args:
        selection: ``(key, mode)`` of the metric that picks ``best.pt``
            (:func:`~visiontune.engine.hooks.evaluation.selection_metric`).
        scheduler: The learning-rate schedule the :class:`LRScheduler` hook steps.
        ema: The EMA model (``None``: ``train.ema`` off).
        frozen_names: The parameters ``finetune.freeze`` froze (progressive unfreezing).
    """
    train, unfreeze_at = config.train, config.finetune.unfreeze_at_epoch
    schedule: list[HookBase] = [LRScheduler(scheduler), EMAUpdate(ema)]
    schedule += [ProgressiveUnfreeze(unfreeze_at, frozen_names)] if unfreeze_at is not None else []
    # the checkpoints before the writers: an epoch whose checkpoint could not be written gets no metrics.csv row
    leading: list[HookBase] = [EvalHook(), BestCheckpointer(*selection), PerImageKeeper(), EpochCheckpointer()]
    if is_main:
        leading += [MetricsWriter(), *([PlotWriter()] if train.plots else [])]
    leading.append(BaselineEval())
    trailing: list[HookBase] = []
    if train.save_every_steps:
        trailing.append(StepCheckpointer(train.save_every_steps, train.keep_last))
    if is_main:
        trailing += [*([ProgressBar()] if train.progress else []), EpochLogger()]
    trailing += [MaxStepsStop(train.max_steps)] if train.max_steps is not None else []
    trailing += [EarlyStopping(train.patience, selection[0])] if train.patience is not None else []
    trailing += [TimeBudget(train.time_budget)] if train.time_budget is not None else []
    trailing += [HeadOnlyCheckpointer()] if train.save_head_only and is_main else []
    trailing += [EvalArtifacts(), TestEvaluation(), RunSummary(*selection)]
    return [*schedule, *leading, *user_hooks, *trailing]
