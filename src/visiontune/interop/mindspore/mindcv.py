"""Name rules between MindCV (0.3) classification models and their timm counterparts.

MobileNetV2 / V3 (``features.*`` <-> ``conv_stem``/``blocks.S.B.*``/``conv_head``) are mapped
*structurally*: MindCV stores every block as a flat ``nn.SequentialCell`` of conv, norm, activation
(and SE) cells, so a block's sub-layer indices depend on whether it has an expansion conv and an SE
layer. The rules read the block's layout from its parameters instead of listing indices:

* a block with three convolutions is timm's ``InvertedResidual`` (``conv_pw``, ``conv_dw``,
  ``conv_pwl``; norms ``bn1``-``bn3``), one with two is ``DepthwiseSeparableConv`` (``conv_dw``,
  ``conv_pw``; ``bn1``-``bn2``); each conv is followed by its norm; an SE cell becomes ``se``;
* timm groups blocks into stages of equal output width, so consecutive MindCV blocks with the same
  number of output channels form one stage;
* the head: MindCV V2 has one Dense (``classifier.1``) after the last conv+norm, which timm calls
  ``conv_head``/``bn2``/``classifier``; MindCV V3 has two Dense layers (``classifier.0`` and
  ``classifier.3``) and timm puts the last conv+norm into an extra stage (``blocks.N.0.conv/bn1``)
  and models the first Dense as a 1x1 convolution with bias (``conv_head``; weight reshaped
  ``[out, in]`` <-> ``[out, in, 1, 1]``).

ResNet and ConvNeXt map path by path (regular expressions).

Known functional differences (names map exactly; outputs are not bit-identical):

* MindCV MobileNetV3 pads its stride-2 depthwise convolutions with ``pad_mode="same"``, which for even
  input sizes pads one pixel at the bottom/right only, while timm pads one (k=3) or two (k=5) pixels
  on every side. Stride-1 convolutions agree. The logits therefore differ from timm's
  ``mobilenetv3_*`` (see :func:`visiontune.interop.mindspore.adapt.match_mindspore_padding`).
* MindCV ResNet's stem max-pool uses ``pad_mode="same"`` (bottom/right padding) where timm pads one
  pixel on every side (read from the MindCV source; there is no logits fixture to measure it).
* MindCV ConvNeXt uses MindSpore's ``nn.GELU()``, whose default is the tanh approximation; timm uses
  the exact (erf) GELU.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import ClassVar

from visiontune.interop.mindspore._path_rules import BACKBONE_CLASSIFIER_REASON, PathResult, PathRules, Skip
from visiontune.interop.mindspore._rules import (
    Layout,
    ModulePlan,
    ModuleRename,
    Shape,
    Shapes,
    group_by_module,
    is_mindspore_conv,
    is_mindspore_norm,
)

__all__ = ["MindCvConvNextRules", "MindCvMobileNetRules", "ModelZooDetectionBackboneRules", "ResNetRules"]

# MindCV MobileNet: features = [stem conv, stem norm, stem activation, block, block, ..., conv, norm, act].
_MINDCV_STEM_LENGTH = 3
# MindCV MobileNetV3 classifier = [Dense, HSwish, Dropout, Dense]; V2 = [Dropout, Dense].
_MINDCV_V3_CLASSIFIER_INDICES = (0, 3)
_MINDCV_V2_CLASSIFIER_INDEX = 1

_TIMM_INVERTED_RESIDUAL_CONVS = ("conv_pw", "conv_dw", "conv_pwl")
_TIMM_DEPTHWISE_SEPARABLE_CONVS = ("conv_dw", "conv_pw")

_MS_FEATURE = re.compile(r"features\.(?P<index>\d+)")
_MS_BLOCK_LAYER = re.compile(r"features\.(?P<block>\d+)\.layers\.(?P<layer>\d+)(?:\.(?P<se>conv_reduce|conv_expand))?")
_MS_CLASSIFIER = re.compile(r"classifier\.(?P<index>\d+)")

_TIMM_BLOCK_PART = re.compile(
    r"blocks\.(?P<stage>\d+)\.(?P<block>\d+)\."
    r"(?P<part>conv_pw|conv_dw|conv_pwl|conv|bn[1-3]|se\.conv_reduce|se\.conv_expand)"
)


class MindCvMobileNetRules:
    """MindCV ``mobilenet_v2_*`` / ``mobilenet_v3_*`` <-> timm ``mobilenetv2_*`` / ``mobilenetv3_*``."""

    def modules_to_torch(self, shapes: Shapes) -> ModulePlan:
        """Map MindCV module paths (see the module docstring for the rules)."""
        modules = group_by_module(shapes)
        plan = ModulePlan()
        top_level: dict[int, tuple[str, str]] = {}  # feature index -> (kind, module path)
        block_layers: dict[int, dict[int, str | None]] = {}  # block index -> layer index -> kind
        block_paths: dict[int, list[str]] = {}
        dense_layers: dict[int, str] = {}
        for module, leaves in modules.items():
            kind = _mindspore_layer_kind(leaves)
            if (match := _MS_FEATURE.fullmatch(module)) and kind in ("conv", "norm"):
                top_level[int(match["index"])] = (kind, module)
            elif match := _MS_BLOCK_LAYER.fullmatch(module):
                block, layer = int(match["block"]), int(match["layer"])
                block_layers.setdefault(block, {})[layer] = "se" if match["se"] else kind
                block_paths.setdefault(block, []).append(module)
            elif (match := _MS_CLASSIFIER.fullmatch(module)) and len(leaves.get("weight", ())) == 2:
                dense_layers[int(match["index"])] = module
            else:
                plan.unmatched.append(module)

        stages = _group_blocks_into_stages(block_layers, modules)
        for block in block_layers.keys() - stages.keys():
            plan.unmatched.extend(block_paths[block])
        for block, (stage, position) in stages.items():
            components = _mindcv_block_components(block_layers[block])
            for module in block_paths[block]:
                match = _MS_BLOCK_LAYER.fullmatch(module)
                assert match is not None
                component = None if components is None else components.get(int(match["layer"]))
                if component is None:
                    plan.unmatched.append(module)
                    continue
                suffix = f".{match['se']}" if match["se"] else ""
                plan.renames[module] = ModuleRename(f"blocks.{stage}.{position}.{component}{suffix}")

        first_block = min(block_layers, default=0)
        last_block = max(block_layers, default=-1)
        before = [top_level[index] for index in sorted(top_level) if index < first_block]
        after = [top_level[index] for index in sorted(top_level) if index > last_block]
        between = [top_level[index][1] for index in sorted(top_level) if first_block <= index <= last_block]
        plan.unmatched.extend(between)
        num_stages = len(set(stage for stage, _ in stages.values()))
        is_v3 = len(dense_layers) == len(_MINDCV_V3_CLASSIFIER_INDICES)
        head_names = ("blocks.{}.0.conv", "blocks.{}.0.bn1") if is_v3 else ("conv_head", "bn2")
        _map_conv_norm_pair(before, ("conv_stem", "bn1"), plan)
        _map_conv_norm_pair(after, tuple(name.format(num_stages) for name in head_names), plan)

        dense_targets = ("conv_head", "classifier") if is_v3 else ("classifier",)
        if len(dense_layers) != len(dense_targets):
            plan.unmatched.extend(dense_layers.values())
        else:
            for (_, module), target in zip(sorted(dense_layers.items()), dense_targets):
                layout = Layout.DENSE_TO_CONV1X1 if target == "conv_head" else Layout.SAME
                plan.renames[module] = ModuleRename(target, layout)
        return plan

    def modules_to_mindspore(self, shapes: Shapes) -> ModulePlan:
        """Map timm module paths back to MindCV's (the inverse of :meth:`modules_to_torch`)."""
        modules = group_by_module(shapes)
        plan = ModulePlan()
        block_parts: dict[tuple[int, int], dict[str, str]] = {}  # (stage, block) -> part -> module
        for module in modules:
            if match := _TIMM_BLOCK_PART.fullmatch(module):
                key = (int(match["stage"]), int(match["block"]))
                block_parts.setdefault(key, {})[match["part"]] = module
            elif module not in ("conv_stem", "bn1", "conv_head", "bn2", "classifier"):
                plan.unmatched.append(module)

        ordered = sorted(block_parts)
        head_block = ordered[-1] if ordered and "conv" in block_parts[ordered[-1]] else None
        is_v3 = head_block is not None
        body_blocks = [key for key in ordered if key != head_block]
        for ordinal, key in enumerate(body_blocks):
            feature = _MINDCV_STEM_LENGTH + ordinal
            slots = _mindcv_block_slots(block_parts[key].keys())
            for part, module in block_parts[key].items():
                if slots is None or part.split(".")[0] not in slots:
                    plan.unmatched.append(module)
                    continue
                base, _, se_conv = part.partition(".")
                suffix = f".{se_conv}" if se_conv else ""
                plan.renames[module] = ModuleRename(f"features.{feature}.layers.{slots[base]}{suffix}")

        head_feature = _MINDCV_STEM_LENGTH + len(body_blocks)
        fixed = {"conv_stem": "features.0", "bn1": "features.1"}
        if is_v3:
            assert head_block is not None
            for part, module in block_parts[head_block].items():
                if part in ("conv", "bn1"):
                    offset = 0 if part == "conv" else 1
                    plan.renames[module] = ModuleRename(f"features.{head_feature + offset}")
                else:
                    plan.unmatched.append(module)
            first_dense, last_dense = _MINDCV_V3_CLASSIFIER_INDICES
            if "conv_head" in modules:
                plan.renames["conv_head"] = ModuleRename(f"classifier.{first_dense}", Layout.CONV1X1_TO_DENSE)
            fixed["classifier"] = f"classifier.{last_dense}"
            if "bn2" in modules:
                plan.unmatched.append("bn2")
        else:
            fixed.update(
                conv_head=f"features.{head_feature}",
                bn2=f"features.{head_feature + 1}",
                classifier=f"classifier.{_MINDCV_V2_CLASSIFIER_INDEX}",
            )
        for module, target in fixed.items():
            if module in modules:
                plan.renames[module] = ModuleRename(target)
        return plan


def _mindspore_layer_kind(leaves: dict[str, Shape]) -> str | None:
    if is_mindspore_norm(leaves):
        return "norm"
    if is_mindspore_conv(leaves):
        return "conv"
    return None


def _group_blocks_into_stages(
    block_layers: dict[int, dict[int, str | None]], modules: dict[str, dict[str, Shape]]
) -> dict[int, tuple[int, int]]:
    """Block index -> (timm stage, position in stage): consecutive blocks of equal width form a stage."""
    stages: dict[int, tuple[int, int]] = {}
    previous_width: int | None = None
    stage, position = -1, 0
    for block in sorted(block_layers):
        conv_layers = [layer for layer, kind in block_layers[block].items() if kind == "conv"]
        if not conv_layers:
            continue
        width = modules[f"features.{block}.layers.{max(conv_layers)}"]["weight"][0]
        if width != previous_width:
            stage, position = stage + 1, 0
        else:
            position += 1
        stages[block] = (stage, position)
        previous_width = width
    return stages


def _mindcv_block_components(layers: dict[int, str | None]) -> dict[int, str] | None:
    """Layer index -> timm part name for one MindCV block, or None if the layout is not a known one."""
    conv_layers = sorted(layer for layer, kind in layers.items() if kind == "conv")
    conv_names: tuple[str, ...]
    if len(conv_layers) == len(_TIMM_INVERTED_RESIDUAL_CONVS):
        conv_names = _TIMM_INVERTED_RESIDUAL_CONVS
    elif len(conv_layers) == len(_TIMM_DEPTHWISE_SEPARABLE_CONVS):
        conv_names = _TIMM_DEPTHWISE_SEPARABLE_CONVS
    else:
        return None
    components: dict[int, str] = {}
    for number, (layer, conv_name) in enumerate(zip(conv_layers, conv_names), start=1):
        if layers.get(layer + 1) != "norm":
            return None
        components[layer] = conv_name
        components[layer + 1] = f"bn{number}"
    components.update({layer: "se" for layer, kind in layers.items() if kind == "se"})
    return components if len(components) == len(layers) else None


def _mindcv_block_slots(parts: Iterable[str]) -> dict[str, int] | None:
    """timm part name ('conv_pw', 'bn1', 'se', ...) -> MindCV layer index, or None if unknown.

    MindCV lays a block out as ``conv, norm, act`` per convolution (the last one without activation),
    with the SE cell right after the depthwise convolution's activation.
    """
    names = {part.split(".")[0] for part in parts}
    conv_names: tuple[str, ...]
    if "conv_pwl" in names:
        conv_names = _TIMM_INVERTED_RESIDUAL_CONVS
    elif "conv_dw" in names:
        conv_names = _TIMM_DEPTHWISE_SEPARABLE_CONVS
    else:
        return None
    slots: dict[str, int] = {}
    layer = 0
    for number, conv_name in enumerate(conv_names, start=1):
        slots[conv_name] = layer
        slots[f"bn{number}"] = layer + 1
        layer += 2 if number == len(conv_names) else 3
        if conv_name == "conv_dw" and "se" in names:
            slots["se"] = layer
            layer += 1
    return slots if names <= slots.keys() else None


def _map_conv_norm_pair(layers: list[tuple[str, str]], targets: tuple[str, ...], plan: ModulePlan) -> None:
    """Map a ``[conv, norm]`` pair of top-level MindCV features; anything else is unmatched."""
    if [kind for kind, _ in layers] != ["conv", "norm"]:
        plan.unmatched.extend(module for _, module in layers)
        return
    for (_, module), target in zip(layers, targets):
        plan.renames[module] = ModuleRename(target)


class ResNetRules(PathRules):
    """MindSpore ResNet module paths <-> torchvision/timm ResNet paths.

    Args:
        downsample: MindSpore name of the shortcut projection cell (MindCV: ``down_sample``;
            MindSpore model zoo / MindFace: ``down_sample_layer``). PyTorch calls it ``downsample``.
        classifier: MindSpore name of the final Dense layer (MindCV ``classifier``, model zoo ``end_point``).
        classifier_target: PyTorch name of the classifier (``fc``), or None to drop it (a backbone).
        target_prefix: prefix of every PyTorch path (e.g. ``"body."`` inside RetinaFace).
    """

    _TORCH_PATH = re.compile(r"conv1|bn1|layer[1-4]\.\d+\.(?:conv[1-3]|bn[1-3]|downsample\.[01])")

    def __init__(
        self,
        *,
        downsample: str = "down_sample",
        classifier: str = "classifier",
        classifier_target: str | None = "fc",
    ) -> None:
        self._downsample = downsample
        self._classifier = classifier
        self._classifier_target = classifier_target
        self._mindspore_path = re.compile(
            rf"conv1|bn1|layer[1-4]\.\d+\.(?:conv[1-3]|bn[1-3]|{re.escape(downsample)}\.[01])"
        )

    def module_to_torch(self, module: str) -> PathResult:
        """Map one MindSpore ResNet module path."""
        if module == self._classifier:
            if self._classifier_target is None:
                return Skip(BACKBONE_CLASSIFIER_REASON)
            return ModuleRename(self._classifier_target)
        if self._mindspore_path.fullmatch(module):
            return ModuleRename(module.replace(f".{self._downsample}.", ".downsample."))
        return None

    def module_to_mindspore(self, module: str) -> PathResult:
        """Map one PyTorch ResNet module path."""
        if self._classifier_target is not None and module == self._classifier_target:
            return ModuleRename(self._classifier)
        if self._TORCH_PATH.fullmatch(module):
            return ModuleRename(module.replace(".downsample.", f".{self._downsample}."))
        return None


class ModelZooDetectionBackboneRules(PathRules):
    """The MindSpore model zoo's Mask R-CNN backbone file <-> torchvision/timm ResNet-50 paths.

    The model zoo's ``convert_checkpoint.py`` turns an ImageNet ResNet-50 checkpoint (``conv1``, ``bn1``,
    ``layerN.I.down_sample_layer.0/1``, ``end_point``) into the detector's backbone names: ``backbone.`` before the
    stem and the stages, ``down_sample_layer.0`` -> ``conv_down_sample`` and ``down_sample_layer.1`` ->
    ``bn_down_sample``; the classifier keeps its name ``end_point``.

    Args:
        classifier_target: PyTorch name of the classifier (``fc``), or None to drop it (a backbone).
    """

    _MINDSPORE_PATH = re.compile(
        r"backbone\.(?P<path>conv1|bn1|layer[1-4]\.\d+\.(?:conv[1-3]|bn[1-3]|conv_down_sample|bn_down_sample))")
    _TORCH_PATH = re.compile(r"conv1|bn1|layer[1-4]\.\d+\.(?:conv[1-3]|bn[1-3]|downsample\.[01])")
    _DOWNSAMPLE: ClassVar[dict[str, str]] = {"conv_down_sample": "downsample.0", "bn_down_sample": "downsample.1"}

    def __init__(self, *, classifier_target: str | None = "fc") -> None:
        self._classifier_target = classifier_target

    def module_to_torch(self, module: str) -> PathResult:
        """Map one model zoo Mask R-CNN backbone module path."""
        if module == "end_point":
            return Skip(BACKBONE_CLASSIFIER_REASON) if self._classifier_target is None else ModuleRename("fc")
        match = self._MINDSPORE_PATH.fullmatch(module)
        if match is None:
            return None
        path = match["path"]
        for mindspore_name, torch_name in self._DOWNSAMPLE.items():
            path = path.replace(mindspore_name, torch_name)
        return ModuleRename(path)

    def module_to_mindspore(self, module: str) -> PathResult:
        """Map one PyTorch ResNet module path."""
        if self._classifier_target is not None and module == self._classifier_target:
            return ModuleRename("end_point")
        if not self._TORCH_PATH.fullmatch(module):
            return None
        for mindspore_name, torch_name in self._DOWNSAMPLE.items():
            module = module.replace(torch_name, mindspore_name)
        return ModuleRename("backbone." + module)


class MindCvConvNextRules(PathRules):
    """MindCV ``convnext_*`` <-> timm ``convnext_*``.

    MindCV keeps stem, downsampling layers and stages in one ``feature`` sequence: ``feature.0`` is the
    stem, odd indices ``2k+1`` are stage ``k``'s blocks, even indices ``2k`` (k >= 1) are stage ``k``'s
    downsampling (norm, conv). Block parts: ``dwconv`` -> ``conv_dw``, ``pwconv1/2`` -> ``mlp.fc1/2``,
    layer scale ``gamma_`` -> ``gamma``; final ``norm``/``classifier`` -> ``head.norm``/``head.fc``.
    """

    _BLOCK_PARTS: ClassVar[dict[str, str]] = {
        "dwconv": "conv_dw", "norm": "norm", "pwconv1": "mlp.fc1", "pwconv2": "mlp.fc2"}
    _MS_STEM = re.compile(r"feature\.0\.(?P<layer>[01])")
    _MS_FEATURE = re.compile(r"feature\.(?P<index>\d+)\.(?P<item>\d+)(?:\.(?P<part>dwconv|norm|pwconv1|pwconv2))?")
    _TORCH_STEM = re.compile(r"stem\.(?P<layer>[01])")
    _TORCH_DOWNSAMPLE = re.compile(r"stages\.(?P<stage>\d+)\.downsample\.(?P<layer>[01])")
    _TORCH_BLOCK = re.compile(
        r"stages\.(?P<stage>\d+)\.blocks\.(?P<block>\d+)(?:\.(?P<part>conv_dw|norm|mlp\.fc1|mlp\.fc2))?"
    )
    _HEAD: ClassVar[dict[str, str]] = {"norm": "head.norm", "classifier": "head.fc"}

    def module_to_torch(self, module: str) -> PathResult:
        """Map one MindCV ConvNeXt module path."""
        if module in self._HEAD:
            return ModuleRename(self._HEAD[module])
        if match := self._MS_STEM.fullmatch(module):
            return ModuleRename(f"stem.{match['layer']}")
        match = self._MS_FEATURE.fullmatch(module)
        if match is None:
            return None
        index, item, part = int(match["index"]), int(match["item"]), match["part"]
        if index % 2 == 1:
            suffix = f".{self._BLOCK_PARTS[part]}" if part else ""
            return ModuleRename(f"stages.{index // 2}.blocks.{item}{suffix}")
        if part is None and item in (0, 1):
            return ModuleRename(f"stages.{index // 2}.downsample.{item}")
        return None

    def module_to_mindspore(self, module: str) -> PathResult:
        """Map one timm ConvNeXt module path."""
        for mindspore_name, torch_name in self._HEAD.items():
            if module == torch_name:
                return ModuleRename(mindspore_name)
        if match := self._TORCH_STEM.fullmatch(module):
            return ModuleRename(f"feature.0.{match['layer']}")
        if match := self._TORCH_DOWNSAMPLE.fullmatch(module):
            return ModuleRename(f"feature.{2 * int(match['stage'])}.{match['layer']}")
        if match := self._TORCH_BLOCK.fullmatch(module):
            parts = {torch_part: ms_part for ms_part, torch_part in self._BLOCK_PARTS.items()}
            suffix = f".{parts[match['part']]}" if match["part"] else ""
            return ModuleRename(f"feature.{2 * int(match['stage']) + 1}.{match['block']}{suffix}")
        return None
