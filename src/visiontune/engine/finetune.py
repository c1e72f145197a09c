"""Fine-tuning controls: freezing (with BatchNorm kept in eval mode) and per-layer learning rates.

A task describes its model with :class:`~visiontune.models.parts.ModelParts`: which parameters form the head, and
the ordered layer groups (input side first) used by ``freeze: {first_n: N}`` and by ``layer_decay``.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from visiontune.config import ConfigError
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
        ValueError: ``first_n`` larger than the number of layer groups.
        ConfigError: a regex that matches no parameter name (:func:`match_patterns`).
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
        selected = set().union(*match_patterns("finetune.freeze", argument, names).values())
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


def match_patterns(key: str, patterns: Iterable[str], names: Sequence[str], *,
                   first_wins: bool = False) -> dict[str, list[str]]:
    """The parameter names each regex of the config key ``key`` selects (``re.search``), in the order given.

    Every pattern must select something: a pattern that matches no name (e.g. MindCV's ``features\\.1[345]`` on a
    timm model) is an error, never a setting that silently does nothing. With ``first_wins`` (``finetune.lr_mults``:
    the first matching regex wins) a pattern whose every match is taken by earlier patterns is an error too.

    Args:
        key: The config key, named in the message (``finetune.freeze``, ``finetune.lr_mults``).
        patterns: Regular expressions.
        names: Parameter names of the model.
        first_wins: A name belongs to the first pattern that matches it.

    Raises:
        ConfigError: one line naming the key, the pattern, and the model's names it could have meant
            (:func:`name_hint`).
    """
    selected: dict[str, list[str]] = {}
    taken: set[str] = set()
    for pattern in patterns:
        matched = [name for name in names if re.search(pattern, name)]
        if not matched:
            raise ConfigError(f"{key}: pattern '{pattern}' matches no parameter name of the model"
                              f"{name_hint(pattern, names)}")
        if first_wins:
            free = [name for name in matched if name not in taken]
            if not free:
                earlier = next(other for other, names_of in selected.items() if set(names_of) & set(matched))
                raise ConfigError(f"{key}: pattern '{pattern}' only matches parameters that the earlier pattern "
                                  f"'{earlier}' already sets (the first matching pattern wins): remove or reorder it")
            taken.update(free)
            matched = free
        selected[pattern] = matched
    return selected


def name_hint(pattern: str, names: Sequence[str], *, limit: int = 3) -> str:
    """A ``"; did you mean ...?"`` suffix for a regex that matched none of the parameter ``names``.

    The pattern's literal text (escapes and character classes removed) is compared with every module name
    (the dotted prefixes of ``names``) with :mod:`difflib`; without a close one the suffix lists the model's
    top-level modules (``net.blocks.0-6``-style ranges for numbered children).
    """
    modules = sorted({name.rsplit(".", index)[0] for name in names for index in range(1, name.count(".") + 1)})
    literal = re.sub(r"\\[dDwWsSbB]|\[[^\]]*\]|[\^$()?*+{}|]", "", pattern)
    literal = re.sub(r"\\(.)", r"\1", literal).strip(".")
    close = difflib.get_close_matches(literal, modules, n=limit, cutoff=0.6)
    if close:
        return "; did you mean " + " or ".join(f"'{name}'" for name in close) + "?"
    return f"; the model's modules: {', '.join(_outline(names))}"


def _outline(names: Sequence[str], *, limit: int = 10) -> list[str]:
    """The first level at which parameter names branch (a single wrapper such as ``net.`` is skipped), numbered
    children of a container folded into one ``prefix.first-last`` entry."""
    depth = 1
    while len({".".join(name.split(".")[:depth]) for name in names}) == 1 and depth < 8:
        depth += 1
    outline: list[str] = []
    numbered: dict[str, list[int]] = {}
    for name in names:
        parts = name.split(".")
        head = ".".join(parts[:depth])
        if len(parts) > depth and parts[depth].isdigit():
            numbered.setdefault(head, [])
            if int(parts[depth]) not in numbered[head]:
                numbered[head].append(int(parts[depth]))
        if head not in outline:
            outline.append(head)
    shown = [f"{head}.{min(numbered[head])}-{max(numbered[head])}" if head in numbered else head for head in outline]
    return shown[:limit] + (["..."] if len(shown) > limit else [])


def warn_frozen_random_weights(model: nn.Module, frozen_names: Sequence[str], *, random_weights: bool) -> bool:
    """Warn (one line) when frozen parameters hold random initial values: they would never learn.

    Args:
        model: The model after freezing (``finetune.freeze`` and any freezing the task does itself, such as
            Mask R-CNN's ``finetune.trainable_backbone_layers``).
        frozen_names: The names ``finetune.freeze`` froze (:func:`freeze_parameters`).
        random_weights: No initial weights were loaded (no ``model.checkpoint``, ``model.pretrained=false``).

    Returns:
        Whether it warned.
    """
    frozen = [name for name, parameter in model.named_parameters() if not parameter.requires_grad]
    if not random_weights or not frozen:
        return False
    fix = "finetune.freeze=none" if frozen_names else "finetune.trainable_backbone_layers=5"
    logger.warning("%d frozen parameter tensors (e.g. %s) keep their random initial values and never learn: load "
                   "weights (model.pretrained=true or model.checkpoint=<file>) or train every layer (%s)",
                   len(frozen), frozen[0], fix)
    return True


def warn_unused_unfreeze(unfreeze_at_epoch: int | None, *, epochs: int, frozen_names: Sequence[str]) -> bool:
    """Warn (one line) when ``finetune.unfreeze_at_epoch`` would do nothing: ``finetune.freeze`` froze nothing, or
    the run ends before that epoch.

    Returns:
        Whether it warned.
    """
    if unfreeze_at_epoch is None:
        return False
    if not frozen_names:
        logger.warning("finetune.unfreeze_at_epoch=%d has no effect: finetune.freeze froze no layer (set "
                       "finetune.freeze, or remove the key)", unfreeze_at_epoch)
        return True
    if unfreeze_at_epoch >= epochs:
        logger.warning("finetune.unfreeze_at_epoch=%d has no effect: the run ends after epoch %d (train.epochs=%d), "
                       "so the frozen layers never train", unfreeze_at_epoch, epochs - 1, epochs)
        return True
    return False


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

    Raises:
        ConfigError: an ``lr_mults`` regex that sets no parameter (:func:`match_patterns`), or ``layer_decay``
            for a model without layer groups.
    """
    names = [name for name, _ in model.named_parameters()]
    owner = {name: pattern for pattern, matched in
             match_patterns("finetune.lr_mults", (lr_mults or {}), names, first_wins=True).items() for name in matched}
    if layer_decay is not None and not parts.layer_groups:
        raise ConfigError(f"finetune.layer_decay={layer_decay}: this model has no layer groups to decay over; "
                          "remove the key")
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
        if name in owner:
            multiplier = (lr_mults or {})[owner[name]]
        else:
            multiplier = head_lr_mult if parts.is_head(name) else 1.0
        if layer_decay is not None:
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
