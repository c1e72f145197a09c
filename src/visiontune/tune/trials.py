"""One training run of the search: a trial (or a final seed) in its own run folder, with the pruning hook.

Every process of a ``torchrun`` launch runs every trial (DDP inside, as ``visiontune train``); rank 0 alone talks
to Optuna: it reports the per-epoch metric and broadcasts the decision to prune (:class:`TrialPruning`).
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from visiontune.config import Config, copy_config, parse_freeze
from visiontune.engine.hooks.base import HookBase, TrainingContext
from visiontune.engine.run_dir import new_run_dir
from visiontune.engine.stop import NonFiniteLossError
from visiontune.engine.trainer import Trainer, TrainResult
from visiontune.registry import UnknownNameError
from visiontune.utils import comm
from visiontune.utils.plots import format_metric

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

__all__ = ["TRIAL_ERRORS", "RunOutcome", "TrialPruning", "one_line", "run_training", "training_config"]

TRIAL_ERRORS: tuple[type[BaseException], ...] = (ValueError, FloatingPointError, NonFiniteLossError, RuntimeError,
                                                 UnknownNameError, FileNotFoundError)
"""What fails one trial (recorded with its reason; the search goes on): bad values, a non-finite loss, out of memory
(``torch.OutOfMemoryError`` is a ``RuntimeError``), unknown names, missing files. Anything else is a bug and ends
the search (the trial is recorded as failed first)."""

SHARED_CACHE = "feature_cache"
"""The folder of the tune folder that every trial's ``feature_cache`` links to."""


class TrialPruning(HookBase):
    """Reports the validation metric to the Optuna trial after each evaluation and stops the run (after this epoch,
    with its checkpoint: :meth:`~visiontune.engine.stop.StopController.propose`) when the pruner says so.

    Args:
        trial: The trial on rank 0; ``None`` on the other ranks (they receive rank 0's decision).
        metric_key: The metric reported (``val_top1``).
    """

    def __init__(self, trial: optuna.Trial | None, metric_key: str) -> None:
        self.trial = trial
        self.metric_key = metric_key
        self.pruned_at: int | None = None
        """The epoch after which the trial was pruned (``None``: not pruned)."""

    def after_epoch(self, trainer: TrainingContext, row: dict[str, Any]) -> None:
        metrics = trainer.storage.eval_metrics
        if metrics is None:
            return
        value, epoch = metrics.get(self.metric_key), int(row["epoch"])

        def decide() -> bool:
            if self.trial is None or value is None or not math.isfinite(value):
                return False
            self.trial.report(float(value), step=epoch)
            return self.trial.should_prune()

        if comm.main_process_result(decide):
            self.pruned_at = epoch
            trainer.stop.propose(f"pruned: {self.metric_key} {format_metric(value)} after epoch {epoch} (tune.pruner)")


@dataclass
class RunOutcome:
    """How one run of the search ended."""

    run_dir: Path | None
    """``None`` when the run never started (its values refused by the config)."""
    result: TrainResult | None = None
    """``None`` when training raised."""
    reason: str | None = None
    """The one-line error of a failed run."""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        """Epochs trained (0 when the run failed before its first epoch)."""
        history = self.result.history if self.result is not None else []
        return max((int(row.get("epoch", 0)) for row in history), default=0)


def training_config(config: Config, metric: str | None) -> Config:
    """The config every run of the search starts from: ``train.metric`` set to the searched metric (the runs'
    ``best.pt`` picks by it) and, when features may be cached, caches kept in a file that all runs share."""
    run = copy_config(config)
    if metric is not None:
        run.train.metric = metric
    if caches_features(run):
        run.finetune.cache_memory_limit_mb = 0.0  # a file: the first run computes it, every other one reads it
    run.resume = None
    return run


def caches_features(config: Config) -> bool:
    """Whether a run of ``config`` may train on cached features (a frozen backbone, caching not off)."""
    return config.finetune.cache_features is not False and parse_freeze(config.finetune.freeze)[0] == "backbone"


def _make_run_dir(tune_dir: Path, group: str, name: str, *, share_cache: bool) -> Path:
    """Rank 0: ``<tune>/<group>/<name>``, a run folder whose ``feature_cache`` links to the shared one
    (``share_cache``)."""
    run_dir = new_run_dir(tune_dir / group, name)
    if not share_cache:
        return run_dir
    shared = tune_dir / SHARED_CACHE
    shared.mkdir(exist_ok=True)
    try:
        (run_dir / SHARED_CACHE).symlink_to(Path("..") / ".." / SHARED_CACHE, target_is_directory=True)
    except OSError as error:  # no symbolic links here: each run caches its own features
        logger.warning("cannot link %s to the shared feature cache (%s): this run computes its own",
                       run_dir / SHARED_CACHE, error.strerror or error)
    return run_dir


def _fit(config: Config, hooks: Sequence[HookBase], run_dir: Path) -> TrainResult:
    """Train like :func:`visiontune.train` (with the run report when ``train.report``), in ``run_dir``."""
    final: list[HookBase] = []
    if config.train.report:
        from visiontune.report.hook import ReportWriter

        final.append(ReportWriter())
    return Trainer(config, hooks=list(hooks), final_hooks=final, run_dir=run_dir).fit()


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def run_training(config: Config, hooks: Sequence[HookBase], *, tune_dir: Path, group: str,
                 name: str) -> RunOutcome:
    """Train ``config`` in a new run folder ``<tune_dir>/<group>/<name>`` (every rank; rank 0 makes the folder).

    An error of :data:`TRIAL_ERRORS` is caught: the outcome carries its one-line reason. Other errors propagate.
    """
    share_cache = caches_features(config)
    run_dir = comm.main_process_result(lambda: _make_run_dir(tune_dir, group, name, share_cache=share_cache))
    started = time.perf_counter()
    outcome = RunOutcome(run_dir=run_dir)
    try:
        outcome.result = _fit(config, hooks, run_dir)
    except TRIAL_ERRORS as error:
        outcome.reason = one_line(error)
        logger.warning("%s failed: %s", run_dir.name, outcome.reason)
        logger.debug("the error of %s", run_dir.name, exc_info=True)
    finally:
        outcome.seconds = time.perf_counter() - started
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # an out-of-memory trial leaves cached blocks behind
    return outcome
