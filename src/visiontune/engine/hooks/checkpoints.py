"""Checkpoint hooks: ``last.pt`` after epochs, ``step_<N>.pt`` every N steps, and the head-only checkpoints."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from visiontune.engine.checkpoint import atomic_save, load_checkpoint
from visiontune.engine.hooks.base import HookBase, TrainingContext
from visiontune.models.classification import tensors_sha256
from visiontune.utils import comm

__all__ = ["EpochCheckpointer", "HeadOnlyCheckpointer", "StepCheckpointer", "head_only_checkpoint"]


class EpochCheckpointer(HookBase):
    """``last.pt`` after every epoch, or with ``train.checkpoint_interval_s`` after the first epoch that ends that
    long after the previous write, and when training ends or stops (every rank calls it: the save ends with a
    barrier, and rank 0's clock decides for all)."""

    def __init__(self) -> None:
        self.last_write = time.monotonic()

    def after_epoch(self, trainer: TrainingContext, row: dict[str, Any]) -> None:
        interval = trainer.config.train.checkpoint_interval_s
        if interval > 0 and not comm.main_process_result(lambda: time.monotonic() - self.last_write >= interval):
            return
        self.write(trainer)

    def after_train(self, trainer: TrainingContext) -> None:
        # a run that ended (not raised) leaves its last epoch on disk; after an error the files stay as a crash
        # would leave them: the previous last.pt and the best.pt that agrees with it
        if trainer.stop.reason is not None and trainer.last_saved_step != trainer.state.step:
            self.write(trainer)

    def write(self, trainer: TrainingContext) -> None:
        trainer.save_checkpoint("last.pt")
        self.last_write = time.monotonic()


class StepCheckpointer(HookBase):
    """``step_<N>.pt`` every ``every`` steps (mid-epoch resumes), keeping the newest ``keep_last``."""

    def __init__(self, every: int, keep_last: int) -> None:
        self.every = every
        self.keep_last = keep_last

    def after_step(self, trainer: TrainingContext, losses: dict[str, float] | None) -> None:
        if trainer.state.step % self.every != 0:
            return
        trainer.save_checkpoint(f"step_{trainer.state.step}.pt")
        if trainer.is_main:
            self.prune(trainer.run_dir)

    def prune(self, run_dir: Path) -> None:
        step_files = sorted(run_dir.glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        for old in step_files[: max(0, len(step_files) - self.keep_last)]:
            old.unlink(missing_ok=True)


class HeadOnlyCheckpointer(HookBase):
    """``train.save_head_only`` (rank 0): the head's tensors alone in ``last_head.pt`` after every epoch and in
    ``best_head.pt`` whenever ``best.pt`` is written, with the backbone's source and digest (load them with
    ``model.checkpoint=best_head.pt``; :func:`visiontune.models.classification.load_head_checkpoint`)."""

    def after_epoch(self, trainer: TrainingContext, row: dict[str, Any]) -> None:
        state = trainer.model.state_dict()
        atomic_save(head_only_checkpoint(trainer, state, epoch=row["epoch"]), trainer.run_dir / "last_head.pt")
        if trainer.storage.eval_metrics is not None and trainer.storage.best_epoch == row["epoch"]:
            atomic_save(head_only_checkpoint(trainer, state, epoch=row["epoch"]), trainer.run_dir / "best_head.pt")

    def after_train(self, trainer: TrainingContext) -> None:
        best, head = trainer.run_dir / "best.pt", trainer.run_dir / "best_head.pt"
        if best.exists() and (not head.exists() or head.stat().st_mtime < best.stat().st_mtime):
            # best.pt of the baseline evaluation (no epoch beat it), or written after its epoch (checkpoint interval)
            checkpoint = load_checkpoint(best)
            atomic_save(head_only_checkpoint(trainer, checkpoint["model"], epoch=checkpoint["epoch"]), head)


def head_only_checkpoint(trainer: TrainingContext, model_state: dict[str, Any], *, epoch: int) -> dict[str, Any]:
    """The head tensors of ``model_state`` (the task's :class:`~visiontune.models.parts.ModelParts` head) plus what
    loading them needs: the backbone's source and a digest of its tensors."""
    model = trainer.config.model
    head = {name: tensor for name, tensor in model_state.items() if trainer.parts.is_head(name)}
    backbone = {name: tensor for name, tensor in model_state.items() if not trainer.parts.is_head(name)}
    return {"head_only": True, "task": trainer.config.task, "arch": model.name, "epoch": epoch, "model": head,
            "meta": trainer.task.state_for_checkpoint(),
            "backbone_source": {"checkpoint": str(Path(model.checkpoint).resolve()) if model.checkpoint else None,
                                "pretrained": model.name if model.pretrained and not model.checkpoint else None},
            "backbone_sha256": tensors_sha256(backbone)}
