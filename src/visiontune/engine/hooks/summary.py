"""The run's summary: baseline, best and last validation metrics (``summary.json``), with their intervals."""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

from visiontune.engine.checkpoint import atomic_write_text
from visiontune.engine.events import EventStorage
from visiontune.engine.hooks.base import HookBase, TrainingContext
from visiontune.evaluation.bootstrap import bootstrap_intervals, summary_intervals

logger = logging.getLogger(__package__)  # one logger for the hooks: "visiontune.engine.hooks"

__all__ = ["RunSummary", "run_intervals", "summarize_history"]


class RunSummary(HookBase):
    """After a finished run: ``trainer.storage.summary`` (:func:`summarize_history`) and, on rank 0,
    ``<run>/summary.json``.

    Args:
        key: The metric that picks ``best.pt`` (``val_top1``).
        mode: ``"max"`` or ``"min"``.
    """

    def __init__(self, key: str, mode: str) -> None:
        self.key, self.mode = key, mode

    def after_train(self, trainer: TrainingContext) -> None:
        storage = trainer.storage
        if trainer.stop.reason is None:
            return
        summary = storage.summary = summarize_history(
            storage.history, metric=self.key, mode=self.mode, best_epoch=storage.best_epoch,
            stop_reason=trainer.stop.reason, wall_time_s=time.perf_counter() - trainer.fit_started,
            steps=trainer.state.step, run_dir=str(trainer.run_dir))
        if storage.test_metrics is not None:
            summary.update(test=storage.test_metrics, test_checkpoint=storage.test_checkpoint)
        if not trainer.is_main:
            return
        settings = trainer.config.eval
        if settings.intervals:
            summary["intervals"] = run_intervals(storage, summary, resamples=settings.resamples, seed=settings.seed)
        if summary["best"] and summary["metric"] in summary["best"]:
            before = (summary["baseline"] or {}).get(summary["metric"])
            logger.info("%s: baseline %s -> best %.4g (epoch %s, best.pt), last %.4g (epoch %s)",
                        summary["metric"], "not measured" if before is None else f"{before:.4g}",
                        summary["best"][summary["metric"]], summary["best_epoch"],
                        summary["last"][summary["metric"]], summary["last_epoch"])
        atomic_write_text(json.dumps(_finite_or_none(summary), indent=2) + "\n", trainer.run_dir / "summary.json")


def run_intervals(storage: EventStorage, summary: dict[str, Any], *, resamples: int, seed: int) -> dict[str, Any]:
    """The ``intervals`` of ``summary.json`` (:func:`~visiontune.evaluation.bootstrap.summary_intervals`): per
    ``val_*`` metric with per-image results (``storage.per_image``), the baseline, best and last evaluations and the
    paired change best - baseline; ``test_<metric>`` for the test split."""
    kept = storage.per_image
    roles = {"baseline": kept.get(0) if summary["baseline"] is not None else None,
             "best": kept.get(summary["best_epoch"]), "last": kept.get(summary["last_epoch"])}
    intervals = summary_intervals(roles, resamples=resamples, seed=seed)
    test = kept.get("test")
    if test is not None:
        for name, interval in bootstrap_intervals(test, resamples=resamples, seed=seed).items():
            intervals[f"test_{name}"] = [value if math.isfinite(value) else None for value in interval]
    return intervals


def summarize_history(history: list[dict[str, Any]], *, metric: str, mode: str, best_epoch: int | None,
                      stop_reason: str | None, wall_time_s: float | None = None, steps: int | None = None,
                      run_dir: str | None = None) -> dict[str, Any]:
    """The before -> after summary of a run from its ``metrics.csv`` rows (``history``).

    Returns a JSON-ready dict: ``baseline`` (the epoch-0 row's ``val_*`` metrics, ``None`` when not measured),
    ``best`` (those of ``best_epoch``, the epoch of ``best.pt``; 0 when no epoch beat the baseline), ``last`` (the
    last evaluated epoch, ``last_epoch``), ``change`` (best - baseline, per metric), ``metric`` / ``mode`` (what picks
    ``best.pt``), ``epochs`` (trained), ``steps``, ``stop_reason``, ``wall_time_s`` (this invocation from the start
    of the run: setup with data, model and feature caching, the baseline evaluation and training),
    ``train_time_s`` (the sum of the epoch times) and ``images_per_s`` (training images over ``train_time_s``).
    """

    def val(row: dict[str, Any] | None) -> dict[str, float] | None:
        return None if row is None else {k: v for k, v in row.items() if k.startswith("val_")}

    evaluated = [row for row in history if any(key.startswith("val_") for key in row)]
    baseline = next((row for row in evaluated if row.get("epoch") == 0), None)
    best = next((row for row in evaluated if row.get("epoch") == best_epoch), None) if best_epoch is not None else None
    last = evaluated[-1] if evaluated else None
    change = None
    if baseline is not None and best is not None:
        change = {key: value - baseline[key] for key, value in (val(best) or {}).items()
                  if isinstance(value, (int, float)) and isinstance(baseline.get(key), (int, float))}
    trained = [row for row in history if row.get("epoch", 0) > 0]
    train_time = sum((row.get("epoch_time_s", 0.0) for row in trained), 0.0)
    images = sum((row.get("images_per_s", 0.0) * row.get("epoch_time_s", 0.0) for row in trained), 0.0)
    return {
        "metric": metric, "mode": mode,
        "baseline": val(baseline), "best": val(best), "best_epoch": best["epoch"] if best is not None else None,
        "last": val(last), "last_epoch": last["epoch"] if last is not None else None, "change": change,
        "epochs": max((row.get("epoch", 0) for row in history), default=0), "steps": steps,
        "stop_reason": stop_reason, "wall_time_s": wall_time_s, "train_time_s": train_time,
        "images_per_s": images / train_time if train_time > 0 else None, "run_dir": run_dir,
    }


def _finite_or_none(value: Any) -> Any:
    """``value`` with NaN / Inf floats as ``None`` (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    return value
