"""Hooks that change the model or optimizer on a schedule: the learning rate per step, the EMA of the weights after
each applied step, and progressive unfreezing (``finetune.unfreeze_at_epoch``). They run before every other hook."""

from __future__ import annotations

import logging
from typing import Any

from visiontune.engine.finetune import unfreeze_all
from visiontune.engine.hooks.base import HookBase, TrainingContext
from visiontune.engine.scheduler import IterationScheduler

logger = logging.getLogger(__package__)  # one logger for the hooks: "visiontune.engine.hooks"

__all__ = ["EMAUpdate", "LRScheduler", "ProgressiveUnfreeze"]


class LRScheduler(HookBase):
    """Steps the per-iteration learning-rate schedule after every optimizer step (applied or skipped); its state is
    the checkpoint's ``scheduler``."""

    def __init__(self, scheduler: IterationScheduler) -> None:
        self.scheduler = scheduler

    def after_step(self, trainer: TrainingContext, losses: dict[str, float] | None) -> None:
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(checkpoint["scheduler"])


class EMAUpdate(HookBase):
    """``train.ema``: updates the exponential moving average of the weights after each applied step (not after a
    step skipped for a non-finite loss); its weights are the checkpoint's ``ema``.

    Args:
        ema: timm's ``ModelEmaV3`` of the model, or ``None`` (the checkpoint's ``ema`` is then ``None``).
    """

    def __init__(self, ema: Any) -> None:
        self.ema = ema

    def after_step(self, trainer: TrainingContext, losses: dict[str, float] | None) -> None:
        if self.ema is not None and trainer.storage.step_applied:
            self.ema.update(trainer.model, step=trainer.state.step - 1)

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema.module.state_dict() if self.ema is not None else None}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        if self.ema is not None and checkpoint.get("ema") is not None:
            self.ema.module.load_state_dict(checkpoint["ema"])


class ProgressiveUnfreeze(HookBase):
    """``finetune.unfreeze_at_epoch``: at the start of that epoch every frozen layer becomes trainable and the model
    is wrapped anew for training (DDP needs the final set of trainable parameters).

    Args:
        epoch: The epoch (0-based) that trains every layer.
        frozen_names: The parameters ``finetune.freeze`` froze (none: nothing to do).
    """

    def __init__(self, epoch: int, frozen_names: list[str]) -> None:
        self.epoch, self.frozen_names = epoch, list(frozen_names)

    def before_epoch(self, trainer: TrainingContext) -> None:
        if trainer.state.epoch != self.epoch or not self.frozen_names:
            return
        unfreeze_all(trainer.model)
        self.frozen_names = []
        trainer.rewrap_model()
        logger.info("epoch %d: unfroze every layer (finetune.unfreeze_at_epoch)", self.epoch)
