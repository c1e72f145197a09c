"""Hooks: everything around the training steps, in the manner of detectron2's ``HookBase`` / ``build_hooks``.

The loop (:class:`visiontune.engine.trainer.Trainer`) only trains; evaluation, checkpoints, the best checkpoint
and early stopping, ``metrics.csv``, plots, the console, the stop conditions and the experiment trackers
(:mod:`visiontune.engine.trackers`) are hooks called at five points::

    before_train                  # BaselineEval: the model before training, the epoch-0 row (train.eval_before)
    for each epoch:
        for each optimizer step:  before_step ... forward/backward/step ...  after_step(losses)
                                  # losses: a dict at logging steps (every train.log_every), else None
        after_epoch(row)          # row: the epoch's metrics.csv row, with the validation metrics once evaluated
    after_train                   # also when training raised (then trainer.stop_reason is None)

:func:`default_hooks` orders them: evaluation, best checkpoint and ``last.pt``, then the writers (an ``after_epoch``
user hook sees the validation metrics and a written checkpoint; an epoch whose checkpoint failed gets no row),
then the baseline evaluation, the user's hooks, then step checkpoints, console output, the stop conditions and the
run's ``summary.json``; the trainer adds its final hooks (the run report), then the trackers, which send the
complete rows and the files of the end. A hook may call ``trainer.request_stop(reason)`` (stop after the current
step with a checkpoint, agreed by every rank) or ``trainer.propose_stop(reason)`` (stop after this epoch; from
``after_epoch`` on every rank alike).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from visiontune.engine.checkpoint import (
    atomic_save,
    atomic_write_text,
    capture_rng_state,
    detached_copy,
    load_checkpoint,
    restore_rng_state,
)
from visiontune.utils import comm as dist_utils
from visiontune.utils.plots import format_metric
from visiontune.utils.timing import TimeShare

if TYPE_CHECKING:
    from visiontune.engine.trainer import Trainer

logger = logging.getLogger(__name__)

__all__ = [
    "BaselineEval", "BestCheckpointer", "EarlyStopping", "EpochCheckpointer", "EpochLogger", "EvalArtifacts",
    "EvalHook", "Hook", "HookBase", "MaxStepsStop", "MetricsWriter", "PerImageKeeper", "PlotWriter", "ProgressBar",
    "RunSummary", "StepCheckpointer", "TestEvaluation", "TimeBudget", "default_hooks", "run_intervals", "run_summary",
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

    def after_step(self, trainer: Trainer, losses: dict[str, float] | None) -> None:
        """After each optimizer step (``trainer.state.step`` counts it).

        ``losses`` is ``None`` except at a logging step: every ``train.log_every`` steps, the epoch's last step,
        a step of ``train.save_every_steps`` and ``train.max_steps``. There it holds the losses averaged over
        micro-batches, ranks and the applied (finite) steps since the previous logging step, plus their sum
        ``loss``. The loop reads the losses from the device only there: one host sync (and under DDP one
        collective) per ``train.log_every`` steps, not per step.
        """

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


class BaselineEval(HookBase):
    """``train.eval_before``: evaluates the model before the first step (the pretrained baseline), as the epoch-0 row.

    The row (``epoch`` 0, ``step`` 0, ``val_*``) goes through the built-in hooks that record evaluated rows (best
    checkpoint, ``metrics.csv``, plots, console, trackers), so the baseline is the first candidate for
    ``best.pt``: a fine-tuned epoch must beat it, else ``best.pt`` stays the unchanged model. ``last.pt`` is written
    too (with ``train.epochs=0`` the run ends there). A resumed run that has trained, or has its epoch-0 row, is not
    evaluated again. User hooks find the row in ``trainer.state.history``; ``after_epoch`` does not see it.
    """

    def before_train(self, trainer: Trainer) -> None:
        from visiontune.engine.trackers import Tracker

        if not self.wanted(trainer):
            return
        rng = capture_rng_state()  # the evaluation must not change the random numbers of training
        with trainer.explain_out_of_memory("evaluation"):
            metrics = trainer.evaluate()
        restore_rng_state(rng)
        row: dict[str, Any] = {"epoch": 0, "step": 0, **metrics}
        trainer.state.history.insert(0, row)
        trainer.epoch_metrics = trainer.last_metrics = metrics
        recorders = (BestCheckpointer, PerImageKeeper, MetricsWriter, PlotWriter, EpochLogger, Tracker)
        for hook in trainer.hooks:
            if isinstance(hook, recorders):
                hook.after_epoch(trainer, row)
        trainer.epoch_metrics = None
        trainer.save_checkpoint("last.pt")

    @staticmethod
    def wanted(trainer: Trainer) -> bool:
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
        return not started and not any(row.get("epoch") == 0 for row in state.history)


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
        if not trainer.is_main:
            return
        if trainer.config.train.checkpoint_interval_s > 0:
            trainer.pending_best = detached_copy(trainer.checkpoint_dict())  # written before the next last.pt
        else:
            atomic_save(trainer.checkpoint_dict(), trainer.run_dir / "best.pt")


class PerImageKeeper(HookBase):
    """``eval.intervals`` (rank 0): keeps the per-image results of the baseline, best and last evaluations (for the
    intervals of ``summary.json``) in ``trainer.per_image`` and in ``<run>/eval/per_image_<epoch>.npz`` (a resumed run
    reads them back: the weights that made them are gone); the files of other epochs are removed."""

    def before_train(self, trainer: Trainer) -> None:
        from visiontune.evaluation.bootstrap import load_per_image

        trainer.per_image = {}
        if not trainer.is_main or not trainer.config.eval.intervals:
            return
        for path in sorted((trainer.run_dir / "eval").glob("per_image_*.npz")):
            try:
                trainer.per_image[int(path.stem.removeprefix("per_image_"))] = load_per_image(path)
            except (ValueError, OSError) as error:
                logger.warning("ignoring %s: %s", path, error)

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        from visiontune.evaluation.bootstrap import save_per_image

        results, trainer.last_per_image = trainer.last_per_image, None
        if trainer.epoch_metrics is None or results is None or not trainer.is_main:
            return
        epoch = row["epoch"]
        folder = trainer.run_dir / "eval"
        trainer.per_image[epoch] = results
        save_per_image(results, folder / f"per_image_{epoch}.npz")
        for kept in [kept for kept in trainer.per_image if kept not in (0, trainer.state.best_epoch, epoch)]:
            del trainer.per_image[kept]
            (folder / f"per_image_{kept}.npz").unlink(missing_ok=True)


class HeadOnlyCheckpointer(HookBase):
    """``train.save_head_only`` (rank 0): the head's tensors alone in ``last_head.pt`` after every epoch and in
    ``best_head.pt`` whenever ``best.pt`` is written, with the backbone's source and digest (load them with
    ``model.checkpoint=best_head.pt``; :func:`visiontune.models.classification.load_head_checkpoint`)."""

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        state = trainer.model.state_dict()
        atomic_save(head_only_checkpoint(trainer, state, epoch=row["epoch"]), trainer.run_dir / "last_head.pt")
        if trainer.epoch_metrics is not None and trainer.state.best_epoch == row["epoch"]:
            atomic_save(head_only_checkpoint(trainer, state, epoch=row["epoch"]), trainer.run_dir / "best_head.pt")

    def after_train(self, trainer: Trainer) -> None:
        best, head = trainer.run_dir / "best.pt", trainer.run_dir / "best_head.pt"
        if best.exists() and (not head.exists() or head.stat().st_mtime < best.stat().st_mtime):
            # best.pt of the baseline evaluation (no epoch beat it), or written after its epoch (checkpoint interval)
            checkpoint = load_checkpoint(best)
            atomic_save(head_only_checkpoint(trainer, checkpoint["model"], epoch=checkpoint["epoch"]), head)


def head_only_checkpoint(trainer: Trainer, model_state: dict[str, Any], *, epoch: int) -> dict[str, Any]:
    """The head tensors of ``model_state`` (the task's :class:`~visiontune.models.parts.ModelParts` head) plus what
    loading them needs: the backbone's source and a digest of its tensors."""
    from pathlib import Path

    from visiontune.models.classification import tensors_sha256

    model = trainer.config.model
    head = {name: tensor for name, tensor in model_state.items() if trainer.parts.is_head(name)}
    backbone = {name: tensor for name, tensor in model_state.items() if not trainer.parts.is_head(name)}
    return {"head_only": True, "task": trainer.config.task, "arch": model.name, "epoch": epoch, "model": head,
            "meta": trainer.task.state_for_checkpoint(),
            "backbone_source": {"checkpoint": str(Path(model.checkpoint).resolve()) if model.checkpoint else None,
                                "pretrained": model.name if model.pretrained and not model.checkpoint else None},
            "backbone_sha256": tensors_sha256(backbone)}


class EvalArtifacts(HookBase):
    """After a finished run (rank 0): confusion matrix / PR curves of ``best.pt`` in ``<run>/eval``."""

    def after_train(self, trainer: Trainer) -> None:
        if trainer.stop_reason is None or not trainer.is_main or trainer.val_dataset is None:
            return
        if (trainer.run_dir / "best.pt").exists():
            trainer.save_eval_artifacts()


class TestEvaluation(HookBase):
    """``data.test_split``, after a finished run: evaluates ``best.pt`` (``last.pt`` without it) once on the test
    split, into ``trainer.test_metrics`` (``test_*``) and, with ``eval.intervals``, ``trainer.per_image["test"]``
    (rank 0). The model keeps those weights."""

    def after_train(self, trainer: Trainer) -> None:
        from visiontune.engine.build import build_val_loader, unwrap
        from visiontune.engine.inference import run_evaluation
        from visiontune.evaluation.bootstrap import evaluator_per_image

        split = trainer.config.data.test_split
        if trainer.stop_reason is None or not split:
            return
        checkpoint = next((trainer.run_dir / name for name in ("best.pt", "last.pt")
                           if (trainer.run_dir / name).exists()), None)
        if checkpoint is None:
            return
        dataset = trainer.task.build_dataset(split, train=False)
        loader = build_val_loader(trainer.task, dataset, trainer.config, trainer.dist)
        unwrap(trainer.model).load_state_dict(load_checkpoint(checkpoint)["model"])
        evaluator = trainer.task.build_evaluator(dataset)
        with trainer.explain_out_of_memory("evaluation"):
            metrics = run_evaluation(trainer.model, loader, evaluator, device=trainer.device,
                                     autocast_dtype=trainer.autocast_dtype, description="test")
        trainer.test_metrics = {f"test_{key}": value for key, value in metrics.items()}
        trainer.test_checkpoint = checkpoint.name
        if trainer.is_main and trainer.config.eval.intervals:
            trainer.per_image["test"] = evaluator_per_image(evaluator)
        if trainer.is_main:
            logger.info("%s on the test split %s (evaluated once): %s", checkpoint.name, split,
                        ", ".join(f"{key} {format_metric(value)}" for key, value in trainer.test_metrics.items()))


class RunSummary(HookBase):
    """After a finished run: ``trainer.summary`` (:func:`run_summary`) and, on rank 0, ``<run>/summary.json``."""

    def after_train(self, trainer: Trainer) -> None:
        if trainer.stop_reason is None:
            return
        state = trainer.state
        trainer.summary = run_summary(
            state.history, metric=trainer.metric_key, mode=trainer.metric_mode, best_epoch=state.best_epoch,
            stop_reason=trainer.stop_reason, wall_time_s=time.perf_counter() - trainer.fit_started, steps=state.step,
            run_dir=str(trainer.run_dir))
        if trainer.test_metrics is not None:
            trainer.summary.update(test=trainer.test_metrics, test_checkpoint=trainer.test_checkpoint)
        if trainer.is_main:
            summary = trainer.summary
            if trainer.config.eval.intervals:
                summary["intervals"] = run_intervals(trainer, summary)
            if summary["best"] and summary["metric"] in summary["best"]:
                before = (summary["baseline"] or {}).get(summary["metric"])
                logger.info("%s: baseline %s -> best %.4g (epoch %s, best.pt), last %.4g (epoch %s)",
                            summary["metric"], "not measured" if before is None else f"{before:.4g}",
                            summary["best"][summary["metric"]], summary["best_epoch"],
                            summary["last"][summary["metric"]], summary["last_epoch"])
            text = json.dumps(_finite_or_none(summary), indent=2) + "\n"
            atomic_write_text(text, trainer.run_dir / "summary.json")


def run_intervals(trainer: Trainer, summary: dict[str, Any]) -> dict[str, Any]:
    """The ``intervals`` of ``summary.json`` (:func:`~visiontune.evaluation.bootstrap.summary_intervals`): per
    ``val_*`` metric with per-image results, the baseline, best and last evaluations and the paired change best -
    baseline; ``test_<metric>`` for the test split."""
    from visiontune.evaluation.bootstrap import bootstrap_intervals, summary_intervals

    settings = trainer.config.eval
    kept = trainer.per_image
    roles = {"baseline": kept.get(0) if summary["baseline"] is not None else None,
             "best": kept.get(summary["best_epoch"]), "last": kept.get(summary["last_epoch"])}
    intervals = summary_intervals(roles, resamples=settings.resamples, seed=settings.seed)
    test = kept.get("test")
    if test is not None:
        for name, interval in bootstrap_intervals(test, resamples=settings.resamples, seed=settings.seed).items():
            intervals[f"test_{name}"] = [value if math.isfinite(value) else None for value in interval]
    return intervals


def run_summary(history: list[dict[str, Any]], *, metric: str, mode: str, best_epoch: int | None,
                stop_reason: str | None, wall_time_s: float | None = None, steps: int | None = None,
                run_dir: str | None = None) -> dict[str, Any]:
    """The before -> after summary of a run from its ``metrics.csv`` rows (``history``).

    Returns a JSON-ready dict: ``baseline`` (the epoch-0 row's ``val_*`` metrics, ``None`` when not measured),
    ``best`` (those of ``best_epoch``, the epoch of ``best.pt``; 0 when no epoch beat the baseline), ``last`` (the
    last evaluated epoch, ``last_epoch``), ``change`` (best - baseline, per metric), ``metric`` / ``mode`` (what picks
    ``best.pt``), ``epochs`` (trained), ``steps``, ``stop_reason``, ``wall_time_s`` (this invocation from the start
    of ``Trainer.fit``: setup with data, model and feature caching, the baseline evaluation and training),
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


# ------------------------------------------------------------------ checkpoints


class EpochCheckpointer(HookBase):
    """``last.pt`` after every epoch, or with ``train.checkpoint_interval_s`` after the first epoch that ends that
    long after the previous write, and when training ends or stops (every rank calls it: the save ends with a
    barrier, and rank 0's clock decides for all)."""

    def __init__(self) -> None:
        self.last_write = time.monotonic()

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        interval = trainer.config.train.checkpoint_interval_s
        if interval > 0 and not dist_utils.main_process_result(lambda: time.monotonic() - self.last_write >= interval):
            return
        self.write(trainer)

    def after_train(self, trainer: Trainer) -> None:
        # a run that ended (not raised) leaves its last epoch on disk; after an error the files stay as a crash
        # would leave them: the previous last.pt and the best.pt that agrees with it
        if trainer.stop_reason is not None and trainer.last_saved_step != trainer.state.step:
            self.write(trainer)

    def write(self, trainer: Trainer) -> None:
        trainer.save_checkpoint("last.pt")
        self.last_write = time.monotonic()


class StepCheckpointer(HookBase):
    """``step_<N>.pt`` every ``every`` steps (mid-epoch resumes), keeping the newest ``keep_last``."""

    def __init__(self, every: int, keep_last: int) -> None:
        self.every = every
        self.keep_last = keep_last

    def after_step(self, trainer: Trainer, losses: dict[str, float] | None) -> None:
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
    """``<run>/metrics.csv``: one row per epoch, rewritten whole (a new column may appear later); the ``val_*``
    columns last (the epoch-0 row of :class:`BaselineEval` has only those)."""

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        history = trainer.state.history
        columns: list[str] = []
        for entry in history:
            columns.extend(key for key in entry if key not in columns)
        columns.sort(key=lambda column: column.startswith("val_"))  # stable: the order of appearance otherwise
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(text.getvalue(), trainer.run_dir / "metrics.csv")  # a full disk keeps the old file


class PlotWriter(HookBase):
    """``<run>/plots``: the training curves, redrawn after an epoch while drawing has taken at most ``share`` of the
    wall time (every epoch unless epochs take milliseconds, as on cached features) and when training ends; a
    failure is a warning."""

    def __init__(self, share: float = 0.05) -> None:
        self.budget = TimeShare(share)
        self.drawn_epoch: Any = None

    def before_train(self, trainer: Trainer) -> None:
        self.budget.start()

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if self.budget.due():
            self.draw(trainer)

    def after_train(self, trainer: Trainer) -> None:
        history = trainer.state.history
        if history and history[-1].get("epoch") != self.drawn_epoch and getattr(trainer, "run_dir", None):
            self.draw(trainer)

    def draw(self, trainer: Trainer) -> None:
        from visiontune.utils.plots import plot_training_curves

        with self.budget.spending():
            try:
                classes = len(trainer.task.meta.get("class_names") or ()) or None  # top-k, k >= classes: left out
                plot_training_curves(trainer.state.history, trainer.run_dir / "plots", num_classes=classes)
                self.drawn_epoch = trainer.state.history[-1].get("epoch") if trainer.state.history else None
            except Exception as error:  # noqa: BLE001 - a plot must never kill a training run
                logger.warning("could not draw the training curves: %s", error)


class ProgressBar(HookBase):
    """A tqdm bar per epoch with the loss (averaged since the last logging step), learning rate and images per
    second, refreshed every ``train.log_every`` steps."""

    def __init__(self) -> None:
        self.bar: Any = None

    def before_step(self, trainer: Trainer) -> None:
        if self.bar is None:
            from tqdm import tqdm

            config = trainer.config
            self.bar = tqdm(total=trainer.batches_per_epoch, initial=trainer.state.batch_in_epoch,
                            desc=f"epoch {trainer.state.epoch + 1}/{config.train.epochs}", dynamic_ncols=True,
                            leave=True)

    def after_step(self, trainer: Trainer, losses: dict[str, float] | None) -> None:
        self.bar.update(trainer.state.batch_in_epoch - self.bar.n)
        if losses is None:  # between logging steps: the count moves, the numbers wait (no host sync)
            return
        elapsed = time.perf_counter() - trainer.epoch_started
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
            f"{k}={format_metric(v)}" for k, v in row.items() if k != "epoch"))


# ------------------------------------------------------------------ stop conditions


class MaxStepsStop(HookBase):
    """``train.max_steps``: ends the epoch at that step (it still counts as an epoch), then training."""

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps

    def after_step(self, trainer: Trainer, losses: dict[str, float] | None) -> None:
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
    # the checkpoints before the writers: an epoch whose checkpoint could not be written gets no metrics.csv row
    leading: list[HookBase] = [EvalHook(), BestCheckpointer(), PerImageKeeper(), EpochCheckpointer()]
    if trainer.is_main:
        leading.append(MetricsWriter())
        leading += [PlotWriter()] if train.plots else []
    leading.append(BaselineEval())  # its before_train feeds the hooks above and the trackers (they start on demand)
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
    trailing += [HeadOnlyCheckpointer()] if train.save_head_only and trainer.is_main else []
    trailing.append(EvalArtifacts())
    trailing.append(TestEvaluation())
    trailing.append(RunSummary())
    return [*leading, *user_hooks, *trailing]
