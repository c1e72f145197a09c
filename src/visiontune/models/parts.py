"""How fine-tuning sees a model: its head and its layer groups, input side first.

Tasks describe their models with :class:`ModelParts`; the engine's freezing and per-layer learning rates read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ModelParts:
    """Structure of a model as fine-tuning sees it.

    Attributes:
        head: Parameter-name prefixes of the task head (re-initialised on a class-count change, trained by a
            linear probe, scaled by ``head_lr_mult``).
        layer_groups: Parameter names grouped by depth, input side first (stem, stage 1, ...). Parameters in
            no group are treated as part of the last group.
    """

    head: list[str]
    layer_groups: list[list[str]] = field(default_factory=list)

    def is_head(self, name: str) -> bool:
        return any(name == prefix or name.startswith(prefix + ".") for prefix in self.head)
