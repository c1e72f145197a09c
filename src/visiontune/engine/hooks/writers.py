"""Writer hooks (rank 0): ``metrics.csv``, the training curves, the progress bar and the console line per epoch."""

from __future__ import annotations

import csv
import io
import logging
from typing import Any

from visiontune.engine.checkpoint import atomic_write_text
from visiontune.engine.hooks.base import HookBase, TrainingContext
from visiontune.utils import plots
from visiontune.utils.plots import format_metric
from visiontune.utils.timing import TimeShare

logger = logging.getLogger(__package__)  # one logger for the hooks: "visiontune.engine.hooks"

__all__ = ["EpochLogger", "MetricsWriter", "PlotWriter", "ProgressBar"]


class MetricsWriter(HookBase):
    """``<run>/metrics.csv``: one row per epoch, rewritten whole (a new column may appear later); the ``val_*``
    columns last (the epoch-0 baseline row has only those)."""

    def after_epoch(self, trainer: TrainingContext, row: dict[str, Any]) -> None:
        history = trainer.storage.history
        columns: list[str] = []
        for entry in history:
            columns.extend(key for key in entry if key not in columns)
        columns.sort(key=lambda column: column.startswith("val_"))  # stable: the order of appearance otherwise
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(text.getvalue(), trainer.run_dir / "metrics.csv")  # a full disk keeps the old file

    after_baseline = after_epoch


class PlotWriter(HookBase):
    """``<run>/plots``: the training curves, redrawn after an epoch while drawing has taken at most ``share`` of the
    wall time (every epoch unless epochs take milliseconds, as on cached features) and when training ends; a
    failure is a warning."""

    def __init__(self, share: float = 0.05) -> None:
        self.budget = TimeShare(share)
        self.drawn_epoch: Any = None

    def before_train(self, trainer: TrainingContext) -> None:
        self.budget.start()

    def after_epoch(self, trainer: TrainingContext, row: dict[str, Any]) -> None:
        if self.budget.due():
            self.draw(trainer)

    after_baseline = after_epoch

    def after_train(self, trainer: TrainingContext) -> None:
        history = trainer.storage.history
        if history and history[-1].get("epoch") != self.drawn_epoch and getattr(trainer, "run_dir", None):
            self.draw(trainer)

    def draw(self, trainer: TrainingContext) -> None:
        history = trainer.storage.history
        with self.budget.spending():
            try:
                classes = len(trainer.task.meta.get("class_names") or ()) or None  # top-k, k >= classes: left out
                plots.plot_training_curves(history, trainer.run_dir / "plots", num_classes=classes)
                self.drawn_epoch = history[-1].get("epoch") if history else None
            except Exception as error:  # noqa: BLE001 - a plot must never kill a training run
                logger.warning("could not draw the training curves: %s", error)


class ProgressBar(HookBase):
    """A tqdm bar per epoch with the loss (averaged since the last logging step), learning rate and images per
    second, refreshed every ``train.log_every`` steps."""

    def __init__(self) -> None:
        self.bar: Any = None

    def before_step(self, trainer: TrainingContext) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=trainer.batches_per_epoch, initial=trainer.state.batch_in_epoch,
                            desc=f"epoch {trainer.state.epoch + 1}/{trainer.config.train.epochs}", dynamic_ncols=True,
                            leave=True)

    def after_step(self, trainer: TrainingContext, losses: dict[str, float] | None) -> None:
        self.bar.update(trainer.state.batch_in_epoch - self.bar.n)
        if losses is None:  # between logging steps: the count moves, the numbers wait (no host sync)
            return
        self.bar.set_postfix(loss=f"{losses['loss']:.4f}", lr=f"{trainer.optimizer.param_groups[-1]['lr']:.3g}",
                             img_s=f"{trainer.storage.images_per_s():.1f}")

    def after_epoch(self, trainer: TrainingContext, row: dict[str, Any]) -> None:
        self.close()

    def after_train(self, trainer: TrainingContext) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EpochLogger(HookBase):
    """One console line per epoch with its row."""

    def after_epoch(self, trainer: TrainingContext, row: dict[str, Any]) -> None:
        logger.info("epoch %d: %s", row["epoch"], ", ".join(
            f"{k}={format_metric(v)}" for k, v in row.items() if k != "epoch"))

    after_baseline = after_epoch
