"""Shared building blocks of the MindSpore <-> PyTorch name rules.

Rules work on *module paths* (a parameter name without its last component). A family's rules map
every module path of one framework to a module path of the other; the last component (the leaf) is
translated by the fixed tables below, which hold for every MindSpore cell:

=============================  ==================================  =============================
MindSpore leaf                 PyTorch leaf                        cells
=============================  ==================================  =============================
``weight`` / ``bias``          ``weight`` / ``bias``               Conv2d, Dense (same layout)
``gamma`` / ``beta``           ``weight`` / ``bias``               BatchNorm, LayerNorm, GroupNorm
``moving_mean``                ``running_mean``                    BatchNorm
``moving_variance``            ``running_var``                     BatchNorm
``gamma_``                     ``gamma``                           layer scale (MindCV ConvNeXt)
(none)                         ``num_batches_tracked``             BatchNorm (added as 0 / dropped)
=============================  ==================================  =============================

MindSpore ``nn.Dense`` stores its weight as ``[out_features, in_features]`` like ``torch.nn.Linear``
and ``nn.Conv2d`` as ``[out, in / groups, kh, kw]`` like ``torch.nn.Conv2d``, so weights are copied
unchanged unless a rule asks for a :class:`Layout` change (a Dense layer that PyTorch models as a 1x1
convolution).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

Shape = tuple[int, ...]
Shapes = Mapping[str, Shape]

MINDSPORE_TO_TORCH_LEAF: Mapping[str, str] = {
    "weight": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
    "gamma_": "gamma",
}

NUM_BATCHES_TRACKED = "num_batches_tracked"


class Layout(enum.Enum):
    """How a weight's memory layout changes between the two frameworks."""

    SAME = "same"
    DENSE_TO_CONV1X1 = "dense_to_conv1x1"  # [out, in] -> [out, in, 1, 1]
    CONV1X1_TO_DENSE = "conv1x1_to_dense"  # [out, in, 1, 1] -> [out, in]


@dataclass(frozen=True)
class ModuleRename:
    """Target module path of one source module, and the layout change of its ``weight``."""

    target: str
    layout: Layout = Layout.SAME


@dataclass
class ModulePlan:
    """A family's answer for a set of module paths.

    Attributes:
        renames: source module path -> target module path.
        skipped: source module path -> reason it has no counterpart (e.g. an unused backbone classifier).
        unmatched: source module paths the rules do not recognise (a sign of a different architecture).
    """

    renames: dict[str, ModuleRename] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Rename:
    """Target parameter name of one source parameter and the layout change to apply to it."""

    target: str
    layout: Layout = Layout.SAME


@dataclass
class RenamePlan:
    """Parameter-level result of applying a family's rules to a state dict's names."""

    renames: dict[str, Rename] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)


class FamilyRules(Protocol):
    """Name rules of one model family, in both directions."""

    def modules_to_torch(self, shapes: Shapes) -> ModulePlan:
        """Map the MindSpore module paths of ``shapes`` (MindSpore parameter name -> shape)."""
        ...

    def modules_to_mindspore(self, shapes: Shapes) -> ModulePlan:
        """Map the PyTorch module paths of ``shapes`` (PyTorch parameter name -> shape)."""
        ...


def split_parameter_name(name: str) -> tuple[str, str]:
    """Split ``"a.b.weight"`` into ``("a.b", "weight")``; a name without a dot has module ``""``."""
    module, _, leaf = name.rpartition(".")
    return module, leaf


def join_name(module: str, leaf: str) -> str:
    """Inverse of :func:`split_parameter_name`."""
    return f"{module}.{leaf}" if module else leaf


def group_by_module(shapes: Shapes) -> dict[str, dict[str, Shape]]:
    """Group parameter shapes by module path: ``{module: {leaf: shape}}``, in first-seen order."""
    modules: dict[str, dict[str, Shape]] = {}
    for name, shape in shapes.items():
        module, leaf = split_parameter_name(name)
        modules.setdefault(module, {})[leaf] = tuple(shape)
    return modules


def is_mindspore_norm(leaves: Mapping[str, Shape]) -> bool:
    """A MindSpore normalisation cell has ``gamma``/``beta`` (and BatchNorm ``moving_*``)."""
    return bool({"gamma", "beta", "moving_mean", "moving_variance"} & leaves.keys())


def is_mindspore_conv(leaves: Mapping[str, Shape]) -> bool:
    """A MindSpore Conv2d has a 4-D ``weight``."""
    return len(leaves.get("weight", ())) == 4


def is_torch_norm(leaves: Mapping[str, Shape]) -> bool:
    """A PyTorch norm layer has ``running_mean`` (BatchNorm) or a 1-D ``weight`` (LayerNorm, GroupNorm)."""
    return "running_mean" in leaves or len(leaves.get("weight", ())) == 1


def torch_leaf_to_mindspore(leaf: str, module_leaves: Mapping[str, Shape]) -> str | None:
    """MindSpore leaf name of a PyTorch leaf; None for ``num_batches_tracked`` (MindSpore has none).

    Raises:
        KeyError: the leaf has no MindSpore counterpart.
    """
    if leaf == NUM_BATCHES_TRACKED:
        return None
    if leaf == "running_mean":
        return "moving_mean"
    if leaf == "running_var":
        return "moving_variance"
    if leaf == "gamma":
        return "gamma_"
    if leaf in ("weight", "bias"):
        if is_torch_norm(module_leaves):
            return "gamma" if leaf == "weight" else "beta"
        return leaf
    raise KeyError(leaf)


def plan_to_torch(shapes: Shapes, rules: FamilyRules) -> RenamePlan:
    """Apply ``rules`` and the leaf table to MindSpore names (``shapes``: name -> shape)."""
    module_plan = rules.modules_to_torch(shapes)
    unmatched_modules = set(module_plan.unmatched)
    plan = RenamePlan()
    for name in shapes:
        module, leaf = split_parameter_name(name)
        if module in module_plan.skipped:
            plan.skipped[name] = module_plan.skipped[module]
            continue
        rename = module_plan.renames.get(module)
        target_leaf = MINDSPORE_TO_TORCH_LEAF.get(leaf)
        if rename is None or target_leaf is None or module in unmatched_modules:
            plan.unmatched.append(name)
            continue
        layout = rename.layout if leaf == "weight" else Layout.SAME
        plan.renames[name] = Rename(join_name(rename.target, target_leaf), layout)
    return plan


def plan_to_mindspore(shapes: Shapes, rules: FamilyRules) -> RenamePlan:
    """Apply ``rules`` and the leaf table to PyTorch names (``shapes``: name -> shape)."""
    module_plan = rules.modules_to_mindspore(shapes)
    unmatched_modules = set(module_plan.unmatched)
    modules = group_by_module(shapes)
    plan = RenamePlan()
    for name in shapes:
        module, leaf = split_parameter_name(name)
        if module in module_plan.skipped:
            plan.skipped[name] = module_plan.skipped[module]
            continue
        try:
            target_leaf = torch_leaf_to_mindspore(leaf, modules[module])
        except KeyError:
            plan.unmatched.append(name)
            continue
        if target_leaf is None:
            plan.skipped[name] = "BatchNorm step counter; MindSpore BatchNorm has no such parameter"
            continue
        rename = module_plan.renames.get(module)
        if rename is None or module in unmatched_modules:
            plan.unmatched.append(name)
            continue
        layout = rename.layout if leaf == "weight" else Layout.SAME
        plan.renames[name] = Rename(join_name(rename.target, target_leaf), layout)
    return plan
