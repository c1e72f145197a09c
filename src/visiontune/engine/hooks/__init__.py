"""Hooks: everything around the training steps, in the manner of detectron2's ``HookBase`` / ``build_hooks``.

The loop (:class:`visiontune.engine.train_loop.TrainerBase`) only trains; the schedule (learning rate, EMA,
unfreezing), evaluation, checkpoints, the best checkpoint and early stopping, ``metrics.csv``, plots, the console,
the stop conditions and the experiment trackers (:mod:`visiontune.engine.trackers`) are hooks called at these
points::

    before_train                  # BaselineEval: the model before training (train.eval_before)
    after_baseline(row)           # its epoch-0 row: the best checkpoint, metrics.csv, plots, console, trackers
    for each epoch:
        before_epoch              # ProgressiveUnfreeze
        for each optimizer step:  before_step ... forward/backward/step ...  after_step(losses)
                                  # losses: a dict at logging steps (every train.log_every), else None
        after_epoch(row)          # row: the epoch's metrics.csv row, with the validation metrics once evaluated
    after_train                   # also when training raised (then trainer.stop.reason is None)

:func:`default_hooks` orders them. A hook keeps its own state (``state_dict`` / ``load_state_dict``: saved in the
checkpoint), reads and writes numbers in ``trainer.storage`` and never calls another hook. It may call
``trainer.stop.request(reason)`` (stop after the current step with a checkpoint, agreed by every rank) or
``trainer.stop.propose(reason)`` (stop after this epoch; from ``after_epoch`` on every rank alike).
"""

from visiontune.engine.hooks.base import HookBase, TrainingContext, TrainState
from visiontune.engine.hooks.checkpoints import EpochCheckpointer, HeadOnlyCheckpointer, StepCheckpointer
from visiontune.engine.hooks.defaults import default_hooks
from visiontune.engine.hooks.evaluation import (
    BaselineEval,
    BestCheckpointer,
    EvalArtifacts,
    EvalHook,
    PerImageKeeper,
    TestEvaluation,
    selection_metric,
)
from visiontune.engine.hooks.schedule import EMAUpdate, LRScheduler, ProgressiveUnfreeze
from visiontune.engine.hooks.stops import EarlyStopping, MaxStepsStop, TimeBudget
from visiontune.engine.hooks.summary import RunSummary, run_intervals, summarize_history
from visiontune.engine.hooks.writers import EpochLogger, MetricsWriter, PlotWriter, ProgressBar

__all__ = [
    "BaselineEval", "BestCheckpointer", "EMAUpdate", "EarlyStopping", "EpochCheckpointer", "EpochLogger",
    "EvalArtifacts", "EvalHook", "HeadOnlyCheckpointer", "HookBase", "LRScheduler", "MaxStepsStop", "MetricsWriter",
    "PerImageKeeper", "PlotWriter", "ProgressBar", "ProgressiveUnfreeze", "RunSummary", "StepCheckpointer",
    "TestEvaluation", "TimeBudget", "TrainState", "TrainingContext", "default_hooks", "run_intervals",
    "selection_metric", "summarize_history",
]
