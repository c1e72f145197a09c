"""Evaluation hooks: the validation of each epoch, the baseline before training, the best checkpoint, the
per-image results kept for the intervals, the test split and the evaluation artifacts of the end."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

from visiontune.config import Config
from visiontune.engine import inference
from visiontune.engine.build import build_val_loader, unwrap
from visiontune.engine.checkpoint import (
    atomic_save,
    capture_rng_state,
    detached_copy,
    load_checkpoint,
    restore_rng_state,
)
from visiontune.engine.hooks.base import HookBase, TrainingContext
from visiontune.evaluation.bootstrap import evaluator_per_image, load_per_image, save_per_image
from visiontune.tasks.base import Evaluator, Task
from visiontune.utils.plots import format_metric

logger = logging.getLogger(__package__)  # one logger for the hooks: "visiontune.engine.hooks"

__all__ = ["BaselineEval", "BestCheckpointer", "EvalArtifacts", "EvalHook", "PerImageKeeper", "TestEvaluation",
           "evaluate_checkpoint", "selection_metric"]


def selection_metric(config: Config, task: Task) -> tuple[str, str]:
    """``(key, mode)`` of the metric that picks ``best.pt``: ``val_<train.metric>`` (the task's default metric when
    unset) and ``"max"`` / ``"min"`` (``train.metric_mode``, else the task's)."""
    return "val_" + (config.train.metric or task.default_metric), config.train.metric_mode or task.metric_mode


class EvalHook(HookBase):
    """Validates every ``train.eval_every`` epochs and after the last one: the ``val_*`` metrics go into the row and
    ``trainer.storage`` (:meth:`~visiontune.engine.events.EventStorage.put_eval`)."""

    def after_epoch(self, trainer: TrainingContext, row: dict[str, Any]) -> None:
        config = trainer.config
        if trainer.val_loader is None:
            return
        if row["epoch"] % config.train.eval_every != 0 and trainer.state.epoch < config.train.epochs:
            return
        with trainer.explain_out_of_memory("evaluation"):
            metrics = trainer.evaluate()
        trainer.storage.put_eval(metrics)
        row.update(metrics)


class BaselineEval(HookBase):
    """``train.eval_before``: evaluates the model before the first step (the pretrained baseline) as the epoch-0 row.

    The row (``epoch`` 0, ``step`` 0, ``val_*``) goes into ``trainer.storage.history`` and, through the loop, to the
    ``after_baseline`` hooks (best checkpoint, ``metrics.csv``, plots, console, trackers), so the baseline is the
    first candidate for ``best.pt``: a fine-tuned epoch must beat it, else ``best.pt`` stays the unchanged model.
    A resumed run that has trained, or has its epoch-0 row, is not evaluated again.
    """

    def before_train(self, trainer: TrainingContext) -> None:
        if not self.wanted(trainer):
            return
        rng = capture_rng_state()  # the evaluation must not change the random numbers of training
        with trainer.explain_out_of_memory("evaluation"):
            metrics = trainer.evaluate()
        restore_rng_state(rng)
        trainer.storage.history.insert(0, {"epoch": 0, "step": 0, **metrics})
        trainer.storage.put_eval(metrics)

    @staticmethod
    def wanted(trainer: TrainingContext) -> bool:
        """Whether this run evaluates its baseline now: asked for (or by default), a validation split, nothing
        trained yet and no epoch-0 row."""
        setting = trainer.config.train.eval_before
        if setting is False:
            return False
        if trainer.val_loader is None:
            if setting and trainer.is_main:
                logger.warning("train.eval_before=true, but data.val_split is not set: no baseline to measure")
            return False
        state = trainer.state
        started = state.step > 0 or state.epoch > 0 or state.batch_in_epoch > 0
        return not started and not any(row.get("epoch") == 0 for row in trainer.storage.history)


class BestCheckpointer(HookBase):
    """After an evaluation: keeps the best ``train.metric`` (its state: ``best_metric``, ``best_epoch``,
    ``evals_without_improvement``, shown in ``trainer.storage``) and writes ``best.pt``.

    Args:
        key: The metric that picks ``best.pt`` (``val_top1``; :func:`selection_metric`).
        mode: ``"max"`` or ``"min"``.
    """

    def __init__(self, key: str, mode: str) -> None:
        self.key, self.mode = key, mode
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.evals_without_improvement = 0

    def state_dict(self) -> dict[str, Any]:
        return {"best_metric": self.best_metric, "best_epoch": self.best_epoch,
                "evals_without_improvement": self.evals_without_improvement}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.best_metric, self.best_epoch = checkpoint.get("best_metric"), checkpoint.get("best_epoch")
        self.evals_without_improvement = checkpoint.get("evals_without_improvement", 0)

    def before_train(self, trainer: TrainingContext) -> None:
        self.publish(trainer)

    def is_better(self, value: float) -> bool:
        """Whether ``value`` beats the best so far."""
        if self.best_metric is None:
            return True
        return value > self.best_metric if self.mode == "max" else value < self.best_metric

    def after_epoch(self, trainer: TrainingContext, row: dict[str, Any]) -> None:
        metrics = trainer.storage.eval_metrics
        if metrics is None:
            return
        if self.key not in metrics:
            raise KeyError(f"train.metric: {self.key[4:]!r} is not among the validation metrics "
                           f"{sorted(k[4:] for k in metrics)}")
        if not self.is_better(metrics[self.key]):
            self.evals_without_improvement += 1
            self.publish(trainer)
            return
        self.best_metric, self.best_epoch, self.evals_without_improvement = metrics[self.key], row["epoch"], 0
        self.publish(trainer)
        if not trainer.is_main:
            return
        if trainer.config.train.checkpoint_interval_s > 0:  # written before the next last.pt
            trainer.storage.pending_best = detached_copy(trainer.checkpoint_dict())
        else:
            atomic_save(trainer.checkpoint_dict(), trainer.run_dir / "best.pt")

    after_baseline = after_epoch

    def publish(self, trainer: TrainingContext) -> None:
        storage = trainer.storage
        storage.best_metric, storage.best_epoch = self.best_metric, self.best_epoch
        storage.evals_without_improvement = self.evals_without_improvement


class PerImageKeeper(HookBase):
    """``eval.intervals`` (rank 0): keeps the per-image results of the baseline, best and last evaluations (for the
    intervals of ``summary.json``) in ``trainer.storage.per_image`` and in ``<run>/eval/per_image_<epoch>.npz`` (a
    resumed run reads them back: the weights that made them are gone); the files of other epochs are removed."""

    def before_train(self, trainer: TrainingContext) -> None:
        kept = trainer.storage.per_image
        kept.clear()
        if not trainer.is_main or not trainer.config.eval.intervals:
            return
        for path in sorted((trainer.run_dir / "eval").glob("per_image_*.npz")):
            try:
                kept[int(path.stem.removeprefix("per_image_"))] = load_per_image(path)
            except (ValueError, OSError) as error:
                logger.warning("ignoring %s: %s", path, error)

    def after_epoch(self, trainer: TrainingContext, row: dict[str, Any]) -> None:
        storage = trainer.storage
        results, storage.eval_per_image = storage.eval_per_image, None
        if storage.eval_metrics is None or results is None or not trainer.is_main:
            return
        epoch, folder = row["epoch"], trainer.run_dir / "eval"
        storage.per_image[epoch] = results
        save_per_image(results, folder / f"per_image_{epoch}.npz")
        for kept in [kept for kept in storage.per_image if kept not in (0, storage.best_epoch, epoch)]:
            del storage.per_image[kept]
            (folder / f"per_image_{kept}.npz").unlink(missing_ok=True)

    after_baseline = after_epoch


def evaluate_checkpoint(trainer: TrainingContext, checkpoint: Path, dataset: Dataset, loader: DataLoader, *,
                        description: str = "eval") -> tuple[Evaluator, dict[str, float]]:
    """Load the weights of ``checkpoint`` into ``trainer.model`` (it keeps them) and evaluate them on ``dataset``:
    the evaluator (for its artifacts and per-image results) and its metrics."""
    unwrap(trainer.model).load_state_dict(load_checkpoint(checkpoint)["model"])
    evaluator = trainer.task.build_evaluator(dataset)
    metrics = inference.run_evaluation(trainer.model, loader, evaluator, device=trainer.device,
                                       autocast_dtype=trainer.autocast_dtype, description=description)
    return evaluator, metrics


class EvalArtifacts(HookBase):
    """After a finished run (rank 0, one process): confusion matrix / PR curves of ``best.pt`` in ``<run>/eval``
    (under DDP they need the whole split in one process: ``visiontune eval`` writes them)."""

    def after_train(self, trainer: TrainingContext) -> None:
        if trainer.stop.reason is None or not trainer.is_main or trainer.dist.enabled:
            return
        if trainer.val_loader is None or trainer.val_dataset is None or not (trainer.run_dir / "best.pt").exists():
            return
        evaluator, _ = evaluate_checkpoint(trainer, trainer.run_dir / "best.pt", trainer.val_dataset,
                                           trainer.val_loader)
        try:
            evaluator.save_artifacts(trainer.run_dir / "eval")
        except Exception as error:  # noqa: BLE001 - artifacts are a convenience, never a failure
            logger.warning("could not write evaluation artifacts: %s", error)


class TestEvaluation(HookBase):
    """``data.test_split``, after a finished run: evaluates ``best.pt`` (``last.pt`` without it) once on the test
    split, into ``trainer.storage.test_metrics`` (``test_*``) and, with ``eval.intervals``,
    ``trainer.storage.per_image["test"]`` (rank 0). The model keeps those weights."""

    def after_train(self, trainer: TrainingContext) -> None:
        split = trainer.config.data.test_split
        if trainer.stop.reason is None or not split:
            return
        checkpoint = next((trainer.run_dir / name for name in ("best.pt", "last.pt")
                           if (trainer.run_dir / name).exists()), None)
        if checkpoint is None:
            return
        dataset = trainer.task.build_dataset(split, train=False)
        loader = build_val_loader(trainer.task, dataset, trainer.config, trainer.dist)
        with trainer.explain_out_of_memory("evaluation"):
            evaluator, metrics = evaluate_checkpoint(trainer, checkpoint, dataset, loader, description="test")
        storage = trainer.storage
        storage.test_metrics = {f"test_{key}": value for key, value in metrics.items()}
        storage.test_checkpoint = checkpoint.name
        if trainer.is_main and trainer.config.eval.intervals:
            storage.per_image["test"] = evaluator_per_image(evaluator)
        if trainer.is_main:
            logger.info("%s on the test split %s (evaluated once): %s", checkpoint.name, split,
                        ", ".join(f"{key} {format_metric(value)}" for key, value in storage.test_metrics.items()))
