"""Hooks: everything around the training steps, in the manner of detectron2's ``HookBase`` / ``build_hooks``.

The loop (:class:`visiontune.engine.trainer.Trainer`) only trains; evaluation, checkpoints, the best checkpoint
and early stopping, ``metrics.csv``, plots, TensorBoard, the console and the stop conditions are hooks called at
five points::

    before_train
    for each epoch:
        for each optimizer step:  before_step ... forward/backward/step ...  after_step(losses)
        after_epoch(row)          # row: the epoch's metrics.csv row, with the validation metrics once evaluated
    after_train                   # also when training raised (then trainer.stop_reason is None)

:func:`default_hooks` orders them: evaluation, best checkpoint, writers and ``last.pt`` first (an ``after_epoch``
user hook sees the validation metrics and a written checkpoint), then the user's hooks, then step checkpoints,
console output and the stop conditions. A hook may call ``trainer.request_stop(reason)`` (stop after the current
step with a checkpoint, agreed by every rank) or ``trainer.propose_stop(reason)`` (stop after this epoch; from
``after_epoch`` on every rank alike).
"""

from __future__ import annotations

import csv
import logging
import time
from typing import TYPE_CHECKING, Any

from visiontune.engine.checkpoint import atomic_save
from visiontune.utils import comm as dist_utils

if TYPE_CHECKING:
    from visiontune.engine.trainer import Trainer

logger = logging.getLogger(__name__)

__all__ = [
    "BestCheckpointer", "EarlyStopping", "EpochCheckpointer", "EpochLogger", "EvalArtifacts", "EvalHook", "Hook",
    "HookBase", "MaxStepsStop", "MetricsWriter", "PlotWriter", "ProgressBar", "StepCheckpointer", "TensorBoardWriter",
    "TimeBudget", "default_hooks",
]


class HookBase:
    """Extension points of the training loop; override any of the five methods. Exceptions propagate.

    Every method gets the :class:`~visiontune.engine.trainer.Trainer`: ``trainer.config``, ``trainer.state``
    (``epoch``, ``step``, ``best_metric``, ``history``...), ``trainer.model``, ``trainer.optimizer``,
    ``trainer.run_dir``, ``trainer.is_main`` (rank 0) and ``trainer.dist`` (rank, world size).
    """

    def before_train(self, trainer: Trainer) -> None:
        """Once, after setup (and a resume), before the first step."""

    def before_step(self, trainer: Trainer) -> None:
        """Before each optimizer step's forward passes (``trainer.state.step`` steps are done)."""

    def after_step(self, trainer: Trainer, losses: dict[str, float]) -> None:
        """After each optimizer step, with the step's losses averaged over micro-batches and ranks."""

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        """After each epoch, with its ``metrics.csv`` row (``epoch``, ``step``, ``train_*``, ``lr``, ``val_*``...)."""

    def after_train(self, trainer: Trainer) -> None:
        """Once at the end, also after an exception; ``trainer.stop_reason`` is ``None`` when training failed."""


Hook = HookBase
"""The earlier name of :class:`HookBase`."""


# ------------------------------------------------------------------ evaluation and the best checkpoint


class EvalHook(HookBase):
    """Validates every ``train.eval_every`` epochs and after the last one; adds the ``val_*`` metrics to the row."""

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        config = trainer.config
        if trainer.val_loader is None:
            return
        if row["epoch"] % config.train.eval_every != 0 and trainer.state.epoch < config.train.epochs:
            return
        with trainer.explain_out_of_memory("evaluation"):
            metrics = trainer.evaluate()
        trainer.epoch_metrics = trainer.last_metrics = metrics
        row.update(metrics)


class BestCheckpointer(HookBase):
    """After an evaluation: tracks the best ``train.metric`` (``trainer.state``) and writes ``best.pt``."""

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        metrics = trainer.epoch_metrics
        if metrics is None:
            return
        key = trainer.metric_key
        if key not in metrics:
            raise KeyError(f"train.metric: {key[4:]!r} is not among the validation metrics "
                           f"{sorted(k[4:] for k in metrics)}")
        state = trainer.state
        if not trainer.is_better(metrics[key]):
            state.evals_without_improvement += 1
            return
        state.best_metric, state.best_epoch = metrics[key], row["epoch"]
        state.evals_without_improvement = 0
        if trainer.is_main:
            atomic_save(trainer.checkpoint_dict(), trainer.run_dir / "best.pt")


class EvalArtifacts(HookBase):
    """After a finished run (rank 0): confusion matrix / PR curves of ``best.pt`` in ``<run>/eval``."""

    def after_train(self, trainer: Trainer) -> None:
        if trainer.stop_reason is None or not trainer.is_main or trainer.val_dataset is None:
            return
        if (trainer.run_dir / "best.pt").exists():
            trainer.save_eval_artifacts()


# ------------------------------------------------------------------ checkpoints


class EpochCheckpointer(HookBase):
    """``last.pt`` after every epoch (every rank calls it: the save ends with a barrier)."""

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        trainer.save_checkpoint("last.pt")


class StepCheckpointer(HookBase):
    """``step_<N>.pt`` every ``every`` steps (mid-epoch resumes), keeping the newest ``keep_last``."""

    def __init__(self, every: int, keep_last: int) -> None:
        self.every = every
        self.keep_last = keep_last

    def after_step(self, trainer: Trainer, losses: dict[str, float]) -> None:
        if trainer.state.step % self.every != 0:
            return
        trainer.save_checkpoint(f"step_{trainer.state.step}.pt")
        if trainer.is_main:
            self.prune(trainer)

    def prune(self, trainer: Trainer) -> None:
        step_files = sorted(trainer.run_dir.glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        for old in step_files[: max(0, len(step_files) - self.keep_last)]:
            old.unlink(missing_ok=True)


# ------------------------------------------------------------------ writers (rank 0)


class MetricsWriter(HookBase):
    """``<run>/metrics.csv``: one row per epoch, rewritten whole (a new column may appear later)."""

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        history = trainer.state.history
        columns: list[str] = []
        for entry in history:
            columns.extend(key for key in entry if key not in columns)
        with (trainer.run_dir / "metrics.csv").open("w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=columns)
            writer.writeheader()
            writer.writerows(history)


class PlotWriter(HookBase):
    """``<run>/plots``: the training curves, redrawn after every epoch; a failure is a warning."""

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        from visiontune.utils.plots import plot_training_curves

        try:
            plot_training_curves(trainer.state.history, trainer.run_dir / "plots")
        except Exception as error:  # noqa: BLE001 - a plot must never kill a training run
            logger.warning("could not draw the training curves: %s", error)


class TensorBoardWriter(HookBase):
    """``<run>/tensorboard``: every numeric value of each epoch's row, by epoch."""

    def __init__(self) -> None:
        self.writer: Any = None

    def before_train(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(trainer.run_dir / "tensorboard"))

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        for key, value in row.items():
            if isinstance(value, (int, float)) and key != "epoch":
                self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()

    def after_train(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class ProgressBar(HookBase):
    """A tqdm bar per epoch with the step's loss, learning rate and images per second."""

    def __init__(self) -> None:
        self.bar: Any = None

    def before_step(self, trainer: Trainer) -> None:
        if self.bar is None:
            from tqdm import tqdm

            config = trainer.config
            self.bar = tqdm(total=trainer.batches_per_epoch, initial=trainer.state.batch_in_epoch,
                            desc=f"epoch {trainer.state.epoch + 1}/{config.train.epochs}", dynamic_ncols=True,
                            leave=True)

    def after_step(self, trainer: Trainer, losses: dict[str, float]) -> None:
        elapsed = time.perf_counter() - trainer.epoch_started
        self.bar.update(trainer.state.batch_in_epoch - self.bar.n)
        self.bar.set_postfix(loss=f"{losses['loss']:.4f}", lr=f"{trainer.optimizer.param_groups[-1]['lr']:.3g}",
                             img_s=f"{trainer.epoch_images * trainer.dist.world_size / max(elapsed, 1e-9):.1f}")

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self.after_train(trainer)

    def after_train(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EpochLogger(HookBase):
    """One console line per epoch with its row."""

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        logger.info("epoch %d: %s", row["epoch"], ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "epoch"))


# ------------------------------------------------------------------ stop conditions


class MaxStepsStop(HookBase):
    """``train.max_steps``: ends the epoch at that step (it still counts as an epoch), then training."""

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps

    def after_step(self, trainer: Trainer, losses: dict[str, float]) -> None:
        if trainer.state.step >= self.max_steps:
            trainer.end_epoch_early()

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if trainer.state.step >= self.max_steps:
            trainer.propose_stop("max_steps", announce=False)


class EarlyStopping(HookBase):
    """``train.patience``: stop after that many evaluations without a better ``train.metric``."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if trainer.state.evals_without_improvement >= self.patience:
            trainer.propose_stop(f"early stopping: no improvement of {trainer.metric_key} in {self.patience} "
                                 "evaluations")


class TimeBudget(HookBase):
    """``train.time_budget`` (minutes, from the start of training): stop after the epoch that exceeds it, on every
    rank once any rank is past it."""

    def __init__(self, minutes: float) -> None:
        self.minutes = minutes
        self.started = time.perf_counter()

    def before_train(self, trainer: Trainer) -> None:
        self.started = time.perf_counter()

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if trainer.proposed_stop is not None:
            return  # an earlier condition already ends training (the same on every rank)
        elapsed_min = (time.perf_counter() - self.started) / 60
        if dist_utils.any_rank([elapsed_min >= self.minutes], trainer.device)[0]:
            trainer.propose_stop(f"time budget of {self.minutes} min reached")


def default_hooks(trainer: Trainer, user_hooks: list[HookBase]) -> list[HookBase]:
    """The built-in hooks for ``trainer.config`` with ``user_hooks`` in their place (see the module docstring)."""
    train = trainer.config.train
    leading: list[HookBase] = [EvalHook(), BestCheckpointer()]
    if trainer.is_main:
        leading.append(MetricsWriter())
        leading += [PlotWriter()] if train.plots else []
        leading += [TensorBoardWriter()] if train.tensorboard else []
    leading.append(EpochCheckpointer())
    trailing: list[HookBase] = []
    if train.save_every_steps:
        trailing.append(StepCheckpointer(train.save_every_steps, train.keep_last))
    if trainer.is_main:
        trailing += [ProgressBar()] if train.progress else []
        trailing.append(EpochLogger())
    if train.max_steps is not None:
        trailing.append(MaxStepsStop(train.max_steps))
    if train.patience is not None:
        trailing.append(EarlyStopping(train.patience))
    if train.time_budget is not None:
        trailing.append(TimeBudget(train.time_budget))
    trailing.append(EvalArtifacts())
    return [*leading, *user_hooks, *trailing]
