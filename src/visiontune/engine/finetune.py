"""Fine-tuning controls: freezing (with BatchNorm kept in eval mode) and per-layer learning rates.

A task describes its model with :class:`~visiontune.models.parts.ModelParts`: which parameters form the head, and
the ordered layer groups (input side first) used by ``freeze: {first_n: N}`` and by ``layer_decay``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from visiontune.models.parts import ModelParts

logger = logging.getLogger(__name__)

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def freeze_parameters(model: nn.Module, mode: str, argument: Any, parts: ModelParts) -> list[str]:
    """Set ``requires_grad=False`` on the selected parameters and return their names.

    Args:
        model: The model (its parameter names are matched).
        mode: ``none`` | ``backbone`` (all but the head) | ``first_n`` (the first ``argument`` layer groups) |
            ``regex`` (``argument`` is a list of patterns searched in parameter names).
        argument: See ``mode``.
        parts: The task's description of the model.

    Raises:
        ValueError: ``first_n`` larger than the number of layer groups, or a regex that matches nothing.
    """
    names = [name for name, _ in model.named_parameters()]
    if mode == "none":
        selected: set[str] = set()
    elif mode == "backbone":
        selected = {name for name in names if not parts.is_head(name)}
    elif mode == "first_n":
        if argument > len(parts.layer_groups):
            raise ValueError(
                f"finetune.freeze.first_n={argument} but the model has only {len(parts.layer_groups)} layer groups"
            )
        selected = {name for group in parts.layer_groups[:argument] for name in group}
    elif mode == "regex":
        selected = set()
        for pattern in argument:
            matched = {name for name in names if re.search(pattern, name)}
            if not matched:
                raise ValueError(f"finetune.freeze: pattern {pattern!r} matches no parameter name "
                                 f"(e.g. {', '.join(names[:3])})")
            selected |= matched
    else:
        raise ValueError(f"finetune.freeze: unknown mode {mode!r}")
    for name, parameter in model.named_parameters():
        if name in selected:
            parameter.requires_grad_(False)
    if selected:
        total = sum(p.numel() for p in model.parameters())
        frozen = sum(p.numel() for n, p in model.named_parameters() if n in selected)
        logger.info("froze %d parameter tensors (%.1f%% of %d weights); %d BatchNorm layers kept in eval mode",
                    len(selected), 100.0 * frozen / max(1, total), total, len(frozen_batchnorm_names(model)))
    return sorted(selected)


def unfreeze_all(model: nn.Module) -> None:
    """Make every parameter trainable again (gradual unfreezing)."""
    for parameter in model.parameters():
        parameter.requires_grad_(True)


def is_frozen_batchnorm(module: nn.Module) -> bool:
    """A BatchNorm module with parameters, all of them frozen."""
    if not isinstance(module, nn.modules.batchnorm._BatchNorm):
        return False
    params = list(module.parameters(recurse=False))
    return bool(params) and not any(p.requires_grad for p in params)


def frozen_batchnorm_names(model: nn.Module) -> list[str]:
    """Names of BatchNorm modules whose parameters are all frozen."""
    return [name for name, module in model.named_modules() if is_frozen_batchnorm(module)]


def set_frozen_batchnorm_eval(model: nn.Module) -> int:
    """Put frozen BatchNorm layers in eval mode so their running statistics stay fixed.

    ``requires_grad=False`` alone does not stop a BatchNorm in train mode from updating ``running_mean``,
    ``running_var`` and ``num_batches_tracked``; call this after every ``model.train()``.

    Returns:
        The number of BatchNorm modules switched to eval mode.
    """
    frozen = [module for module in model.modules() if is_frozen_batchnorm(module)]  # one pass: every epoch start
    for module in frozen:
        module.eval()
    return len(frozen)


def _is_no_decay(name: str, parameter: torch.Tensor, norm_names: set[str]) -> bool:
    return parameter.ndim <= 1 or name.endswith(".bias") or name in norm_names


def build_param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    parts: ModelParts,
    head_lr_mult: float = 1.0,
    lr_mults: dict[str, float] | None = None,
    layer_decay: float | None = None,
    no_weight_decay_norm_bias: bool = True,
) -> list[dict[str, Any]]:
    """Split parameters into optimizer groups by (LR multiplier, weight decay).

    The multiplier of a parameter is the first matching ``lr_mults`` regex, else ``head_lr_mult`` for the
    head, else 1; ``layer_decay`` multiplies it by ``layer_decay ** (L - layer)`` where ``layer`` is the
    index of its layer group (head = ``L``). Norm weights and biases get no weight decay. Frozen
    parameters stay in the optimizer (they receive no gradient) so gradual unfreezing needs no rebuild.

    Returns:
        ``[{"params", "lr", "initial_lr", "weight_decay", "lr_mult", "names"}]`` sorted by multiplier.
    """
    lr_mults = lr_mults or {}
    norm_names = {
        f"{module_name}.{param_name}" if module_name else param_name
        for module_name, module in model.named_modules()
        if isinstance(module, _NORM_TYPES)
        for param_name, _ in module.named_parameters(recurse=False)
    }
    layer_of: dict[str, int] = {}
    for index, group in enumerate(parts.layer_groups):
        for name in group:
            layer_of[name] = index
    num_layers = len(parts.layer_groups)
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        multiplier = 1.0
        for pattern, value in lr_mults.items():
            if re.search(pattern, name):
                multiplier = value
                break
        else:
            if parts.is_head(name):
                multiplier = head_lr_mult
        if layer_decay is not None and num_layers:
            layer = num_layers if parts.is_head(name) else layer_of.get(name, num_layers - 1)
            multiplier *= layer_decay ** (num_layers - layer)
        decay = 0.0 if no_weight_decay_norm_bias and _is_no_decay(name, parameter, norm_names) else weight_decay
        key = (round(multiplier, 12), decay)
        entry = groups.setdefault(key, {"params": [], "names": [], "lr_mult": multiplier, "weight_decay": decay,
                                        "lr": lr * multiplier, "initial_lr": lr * multiplier})
        entry["params"].append(parameter)
        entry["names"].append(name)
    return sorted(groups.values(), key=lambda g: (g["lr_mult"], g["weight_decay"]))


def describe_param_groups(groups: Sequence[dict[str, Any]]) -> str:
    """A table of the optimizer's param groups (logged once at the start of training)."""
    lines = [f"{'group':>5} {'tensors':>7} {'weights':>10} {'trainable':>10} {'lr':>10} {'wd':>8}  examples"]
    for index, group in enumerate(groups):
        params = group["params"]
        trainable = sum(p.numel() for p in params if p.requires_grad)
        examples = ", ".join(group.get("names", [])[:2])
        lines.append(
            f"{index:>5} {len(params):>7} {sum(p.numel() for p in params):>10} {trainable:>10} "
            f"{group['lr']:>10.3g} {group['weight_decay']:>8.2g}  {examples}"
        )
    return "\n".join(lines)
