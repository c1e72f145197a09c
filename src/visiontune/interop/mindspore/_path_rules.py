"""Rules that map each module path on its own (regular expressions), as opposed to structural rules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from visiontune.interop.mindspore._rules import ModulePlan, ModuleRename, Shapes, group_by_module

BACKBONE_CLASSIFIER_REASON = "ImageNet classifier of the backbone; the detector does not use it"


@dataclass(frozen=True)
class Skip:
    """A module that exists on one side only and is dropped, with the reason shown in the report."""

    reason: str


PathResult = ModuleRename | Skip | None


class PathRules:
    """Base class for families whose module paths map one by one.

    Subclasses implement :meth:`module_to_torch` and :meth:`module_to_mindspore`, returning a
    :class:`ModuleRename`, a :class:`Skip`, or None for a path they do not recognise.
    """

    def module_to_torch(self, module: str) -> PathResult:
        """Map one MindSpore module path."""
        raise NotImplementedError

    def module_to_mindspore(self, module: str) -> PathResult:
        """Map one PyTorch module path."""
        raise NotImplementedError

    def modules_to_torch(self, shapes: Shapes) -> ModulePlan:
        """Map every MindSpore module path of ``shapes``."""
        return _collect(group_by_module(shapes), self.module_to_torch)

    def modules_to_mindspore(self, shapes: Shapes) -> ModulePlan:
        """Map every PyTorch module path of ``shapes``."""
        return _collect(group_by_module(shapes), self.module_to_mindspore)


def _collect(modules: dict[str, dict[str, tuple[int, ...]]], mapper: Callable[[str], PathResult]) -> ModulePlan:
    plan = ModulePlan()
    for module in modules:
        result = mapper(module)
        if isinstance(result, Skip):
            plan.skipped[module] = result.reason
        elif isinstance(result, ModuleRename):
            plan.renames[module] = result
        else:
            plan.unmatched.append(module)
    return plan
