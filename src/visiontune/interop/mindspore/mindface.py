"""Name rules between MindFace RetinaFace and visiontune's RetinaFace.

visiontune's RetinaFace uses exactly the state-dict keys of the public reference PyTorch
implementation (``mobilenet0.25_Final.pth``), so these rules also convert to and from that file
(MindFace -> visiontune):

* ``base.<backbone path>`` -> ``body.<backbone path>`` (see the backbone rules below);
  ``base.fc`` / ``base.end_point`` (the backbone's ImageNet classifier) are dropped;
* ``fpn.{output1,output2,output3,merge1,merge2}.{0,1}`` -> unchanged;
* ``sshN.conv3x3``, ``conv5x5_1``, ``conv5x5_2``, ``conv7x7_2`` -> ``sshN.conv3X3``, ``conv5X5_1``,
  ``conv5X5_2``, ``conv7X7_2``, but ``conv7x7_3`` stays lower-case (sic, the reference's spelling);
* ``classhead.I.conv1x1`` / ``bboxhead.I.conv1x1`` / ``landmarkhead.I.conv1x1`` ->
  ``ClassHead.I.conv1x1`` / ``BboxHead.I.conv1x1`` / ``LandmarkHead.I.conv1x1``.

Backbones: MindFace's MobileNetV1-0.25 (``stage1``-``stage3``, each a sequence of conv/norm/act
cells) has the same indices as the reference's; MindFace's ResNet-50 is the MindSpore model-zoo
ResNet (``down_sample_layer``, ``end_point``) and maps to torchvision's ResNet names (``downsample``).

Known functional difference: MindFace's ResNet-50 pads the stem max-pool input with one row and one
column of zeros at the top/left (and none at the bottom/right) instead of torchvision's one pixel on
every side. The input is non-negative (after ReLU), so both agree whenever the stem output has even
height and width (input sizes divisible by 4); otherwise the maps differ in size by one pixel.
"""

from __future__ import annotations

import re
from typing import ClassVar

from visiontune.interop.mindspore._path_rules import BACKBONE_CLASSIFIER_REASON, PathResult, PathRules, Skip
from visiontune.interop.mindspore._rules import ModuleRename
from visiontune.interop.mindspore.mindcv import ResNetRules

__all__ = ["MindFaceMobileNetV1Rules", "MindFaceRetinaFaceRules", "mindface_resnet50_rules"]


class MindFaceMobileNetV1Rules(PathRules):
    """MindFace ``mobilenet025`` backbone <-> the reference ``MobileNetV1`` (identical stage indices)."""

    _STAGE_PATH = re.compile(r"stage[1-3]\.\d+\.\d+")

    def module_to_torch(self, module: str) -> PathResult:
        """Map one MindFace MobileNetV1 module path."""
        if module == "fc":
            return Skip(BACKBONE_CLASSIFIER_REASON)
        return ModuleRename(module) if self._STAGE_PATH.fullmatch(module) else None

    def module_to_mindspore(self, module: str) -> PathResult:
        """Map one reference MobileNetV1 module path."""
        return ModuleRename(module) if self._STAGE_PATH.fullmatch(module) else None


def mindface_resnet50_rules() -> ResNetRules:
    """Rules for MindFace's ResNet-50 backbone (MindSpore model-zoo names) <-> torchvision ResNet-50."""
    return ResNetRules(downsample="down_sample_layer", classifier="end_point", classifier_target=None)


class MindFaceRetinaFaceRules(PathRules):
    """MindFace ``RetinaFace`` <-> visiontune / reference PyTorch ``RetinaFace``.

    Args:
        backbone: rules for the backbone's module paths (without the ``base.`` / ``body.`` prefix).
    """

    _MINDSPORE_BACKBONE_PREFIX = "base."
    _TORCH_BACKBONE_PREFIX = "body."
    _SSH_CONVS: ClassVar[dict[str, str]] = {
        "conv3x3": "conv3X3",
        "conv5x5_1": "conv5X5_1",
        "conv5x5_2": "conv5X5_2",
        "conv7x7_2": "conv7X7_2",
        "conv7x7_3": "conv7x7_3",
    }
    _HEADS: ClassVar[dict[str, str]] = {
        "classhead": "ClassHead", "bboxhead": "BboxHead", "landmarkhead": "LandmarkHead"}
    _FPN = re.compile(r"fpn\.(?:output[1-3]|merge[12])\.[01]")
    _SSH = re.compile(r"(?P<ssh>ssh[1-3])\.(?P<conv>\w+)\.(?P<layer>[01])")
    _HEAD = re.compile(r"(?P<head>\w+)\.(?P<level>\d+)\.conv1x1")

    def __init__(self, backbone: PathRules) -> None:
        self._backbone = backbone

    def module_to_torch(self, module: str) -> PathResult:
        """Map one MindFace RetinaFace module path."""
        if module.startswith(self._MINDSPORE_BACKBONE_PREFIX):
            result = self._backbone.module_to_torch(module.removeprefix(self._MINDSPORE_BACKBONE_PREFIX))
            return _prefixed(result, self._TORCH_BACKBONE_PREFIX)
        return self._map_detector_module(module, self._SSH_CONVS, self._HEADS)

    def module_to_mindspore(self, module: str) -> PathResult:
        """Map one visiontune / reference RetinaFace module path."""
        if module.startswith(self._TORCH_BACKBONE_PREFIX):
            result = self._backbone.module_to_mindspore(module.removeprefix(self._TORCH_BACKBONE_PREFIX))
            return _prefixed(result, self._MINDSPORE_BACKBONE_PREFIX)
        ssh_convs = {torch_name: ms_name for ms_name, torch_name in self._SSH_CONVS.items()}
        heads = {torch_name: ms_name for ms_name, torch_name in self._HEADS.items()}
        return self._map_detector_module(module, ssh_convs, heads)

    def _map_detector_module(self, module: str, ssh_convs: dict[str, str], heads: dict[str, str]) -> PathResult:
        """Map FPN / SSH / head paths using the given name tables (one direction)."""
        if self._FPN.fullmatch(module):
            return ModuleRename(module)
        if (match := self._SSH.fullmatch(module)) and match["conv"] in ssh_convs:
            return ModuleRename(f"{match['ssh']}.{ssh_convs[match['conv']]}.{match['layer']}")
        if (match := self._HEAD.fullmatch(module)) and match["head"] in heads:
            return ModuleRename(f"{heads[match['head']]}.{match['level']}.conv1x1")
        return None


def _prefixed(result: PathResult, prefix: str) -> PathResult:
    if isinstance(result, ModuleRename):
        return ModuleRename(prefix + result.target, result.layout)
    return result
