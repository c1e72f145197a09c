"""The hook that keeps ``<run>/report.html`` current during training."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from visiontune.engine.hooks.base import HookBase, TrainingContext
from visiontune.report.run_report import write_run_report
from visiontune.utils.timing import TimeShare

logger = logging.getLogger(__name__)

__all__ = ["ReportWriter"]


class ReportWriter(HookBase):
    """Writes ``report.html`` at the end of training and refreshes it after evaluations (rank 0 only).

    A refresh costs a few seconds of plotting, so one after an evaluation is skipped while the time spent on
    reports would exceed ``budget`` of the run's wall time so far; the report at the end is always written. A
    failure to draw never stops training: it is logged as a warning.

    Args:
        budget: The largest share of the wall time that refreshes may take (0.05 = 5%).
    """

    def __init__(self, budget: float = 0.05) -> None:
        self.budget = TimeShare(budget)
        self.path: Path | None = None

    def before_train(self, trainer: TrainingContext) -> None:
        self.budget.start()

    def after_epoch(self, trainer: TrainingContext, row: dict[str, Any]) -> None:
        evaluated = any(key.startswith("val_") for key in row)
        if trainer.is_main and evaluated and self.budget.due():
            self._write(trainer)

    def after_train(self, trainer: TrainingContext) -> None:
        if trainer.is_main and getattr(trainer, "run_dir", None) is not None:
            self._write(trainer)
            if self.path is not None:
                logger.info("report: %s", self.path)

    def _write(self, trainer: TrainingContext) -> None:
        with self.budget.spending():
            try:
                self.path = write_run_report(trainer.run_dir)
            except Exception as error:  # noqa: BLE001 - a report must never end a training run
                logger.warning("could not write the run report: %s: %s", type(error).__name__, error)
