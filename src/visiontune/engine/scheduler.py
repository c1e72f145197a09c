"""Learning-rate schedules stepped every optimizer step: linear warmup, then cosine/step/multistep/constant.

Every param group keeps its own ``initial_lr`` (base LR times its multiplier); at step ``s`` its LR is
``initial_lr * lr_factor(s)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule in optimizer steps.

    Attributes:
        name: ``cosine`` | ``step`` | ``multistep`` | ``constant``.
        total_steps: Optimizer steps of the whole run.
        steps_per_epoch: Optimizer steps per epoch (to convert epoch-valued settings).
        warmup_steps: Linear warmup length; the factor rises from ``warmup_factor`` to 1.
        warmup_factor: Factor at step 0.
        min_factor: ``cosine``: final factor (``min_lr / lr``).
        step_size_steps: ``step``: decay every this many steps.
        gamma: Decay factor for ``step``/``multistep``.
        milestones_steps: ``multistep``: steps at which the factor is multiplied by ``gamma``.
    """

    name: str
    total_steps: int
    steps_per_epoch: int
    warmup_steps: int = 0
    warmup_factor: float = 0.1
    min_factor: float = 0.0
    step_size_steps: int = 1
    gamma: float = 0.1
    milestones_steps: tuple[int, ...] = ()


def lr_factor(spec: ScheduleSpec, step: int) -> float:
    """Multiplier of every group's initial LR at optimizer step ``step`` (0-based).

    Warmup: ``warmup_factor + (1 - warmup_factor) * step / warmup_steps`` for ``step < warmup_steps``.
    Cosine: ``min + (1 - min) * (1 + cos(pi * t)) / 2`` with ``t = (step - warmup) / (total - warmup)``.
    Step: ``gamma ** (step // step_size)``. Multistep: ``gamma ** (number of milestones <= step)``.
    """
    if spec.warmup_steps > 0 and step < spec.warmup_steps:
        return spec.warmup_factor + (1.0 - spec.warmup_factor) * step / spec.warmup_steps
    if spec.name == "constant":
        return 1.0
    if spec.name == "cosine":
        span = max(1, spec.total_steps - spec.warmup_steps)
        progress = min(1.0, (step - spec.warmup_steps) / span)
        return spec.min_factor + (1.0 - spec.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if spec.name == "step":
        return spec.gamma ** (step // max(1, spec.step_size_steps))
    if spec.name == "multistep":
        return spec.gamma ** sum(1 for milestone in spec.milestones_steps if step >= milestone)
    raise ValueError(f"sched.name: unknown schedule {spec.name!r}; valid: constant, cosine, multistep, step")


class IterationScheduler:
    """Sets ``group['lr'] = group['initial_lr'] * lr_factor(step)`` for every param group.

    Call :meth:`step` after every optimizer step. The state dict is just the step counter, so a resumed
    run continues the exact curve.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, spec: ScheduleSpec) -> None:
        self.optimizer = optimizer
        self.spec = spec
        self.last_step = 0
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self._apply()

    def _apply(self) -> None:
        factor = lr_factor(self.spec, self.last_step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = int(state["last_step"])
        self._apply()


def build_schedule_spec(sched_config: Any, *, epochs: int, steps_per_epoch: int,
                        base_lr: float = 1.0) -> ScheduleSpec:
    """Convert the epoch-valued ``sched`` config section into a step-valued :class:`ScheduleSpec`.

    The schedule always spans ``epochs``; ``train.max_steps`` only stops a run early, like an interruption,
    so a run stopped by it and resumed follows the same curve as an uninterrupted one.
    """
    total = epochs * steps_per_epoch
    return ScheduleSpec(
        name=sched_config.name,
        total_steps=max(1, total),
        steps_per_epoch=steps_per_epoch,
        warmup_steps=round(sched_config.warmup_epochs * steps_per_epoch),
        warmup_factor=sched_config.warmup_factor,
        min_factor=sched_config.min_lr / base_lr if base_lr > 0 else 0.0,
        step_size_steps=max(1, round(sched_config.step_size * steps_per_epoch)),
        gamma=sched_config.gamma,
        milestones_steps=tuple(round(m * steps_per_epoch) for m in sched_config.milestones),
    )
