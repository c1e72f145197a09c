"""RetinaFace backbones ("bodies"): MobileNetV1 x0.25 and torchvision ResNet-50.

A body maps ``images: Tensor[B, 3, H, W]`` to three feature maps at strides 8, 16 and 32 and exposes
``feature_channels: tuple[int, int, int]``, the channel count of each map. Submodule names follow the reference
implementation (which wraps the backbone in torchvision's ``IntermediateLayerGetter``) so checkpoint keys such as
``body.stage1.0.0.weight`` or ``body.layer2.0.conv1.weight`` load unchanged.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models import ResNet, resnet50

from visiontune.models.retinaface.blocks import ConvBnAct, DepthwiseSeparableConv


class MobileNetV1(nn.Module):
    """MobileNetV1 feature extractor split into three stages (strides 8, 16, 32).

    With ``width_multiplier=0.25`` the stages output 64, 128 and 256 channels, as in RetinaFace-MobileNet0.25. The
    ImageNet classifier (``fc``) of the pretraining checkpoint is not part of this module.

    Args:
        width_multiplier: scales MobileNetV1's base widths (32, 64, ..., 1024).
        negative_slope: LeakyReLU slope used after every convolution (0.1 in the reference).
    """

    def __init__(self, *, width_multiplier: float = 0.25, negative_slope: float = 0.1) -> None:
        super().__init__()
        if width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be > 0, got {width_multiplier}")
        base_widths = (32, 64, 128, 256, 512, 1024)
        c32, c64, c128, c256, c512, c1024 = (max(1, int(width * width_multiplier)) for width in base_widths)
        slope = negative_slope
        self.stage1 = nn.Sequential(
            ConvBnAct(3, c32, stride=2, negative_slope=slope),
            DepthwiseSeparableConv(c32, c64, stride=1, negative_slope=slope),
            DepthwiseSeparableConv(c64, c128, stride=2, negative_slope=slope),
            DepthwiseSeparableConv(c128, c128, stride=1, negative_slope=slope),
            DepthwiseSeparableConv(c128, c256, stride=2, negative_slope=slope),
            DepthwiseSeparableConv(c256, c256, stride=1, negative_slope=slope),
        )
        self.stage2 = nn.Sequential(
            DepthwiseSeparableConv(c256, c512, stride=2, negative_slope=slope),
            *(DepthwiseSeparableConv(c512, c512, stride=1, negative_slope=slope) for _ in range(5)),
        )
        self.stage3 = nn.Sequential(
            DepthwiseSeparableConv(c512, c1024, stride=2, negative_slope=slope),
            DepthwiseSeparableConv(c1024, c1024, stride=1, negative_slope=slope),
        )
        self.feature_channels: tuple[int, int, int] = (c256, c512, c1024)

    def forward(self, images: Tensor) -> list[Tensor]:
        """Compute the three feature maps.

        Args:
            images: ``Tensor[B, 3, H, W]`` float32.

        Returns:
            ``[Tensor[B, C1, ceil(H/8), ceil(W/8)], Tensor[B, C2, ceil(H/16), ...], Tensor[B, C3, ceil(H/32), ...]]``.
        """
        stride8 = self.stage1(images)
        stride16 = self.stage2(stride8)
        stride32 = self.stage3(stride16)
        return [stride8, stride16, stride32]


class ResNetBody(nn.Module):
    """Stride-8/16/32 features (``layer2``, ``layer3``, ``layer4``) of a torchvision ResNet.

    Holds the ResNet's stem and four stages under their torchvision names (``conv1``, ``bn1``, ``layer1`` ...
    ``layer4``); the average pool and ``fc`` classifier are dropped.

    Args:
        resnet: a torchvision ``ResNet`` (its modules are reused, not copied).
    """

    def __init__(self, resnet: ResNet) -> None:
        super().__init__()
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4
        self.feature_channels: tuple[int, int, int] = tuple(  # type: ignore[assignment]
            _stage_out_channels(stage) for stage in (self.layer2, self.layer3, self.layer4)
        )

    def forward(self, images: Tensor) -> list[Tensor]:
        """Compute the ``layer2``, ``layer3`` and ``layer4`` outputs.

        Args:
            images: ``Tensor[B, 3, H, W]`` float32.

        Returns:
            Three feature maps at strides 8, 16, 32 (512, 1024, 2048 channels for ResNet-50).
        """
        features = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        stride4 = self.layer1(features)
        stride8 = self.layer2(stride4)
        stride16 = self.layer3(stride8)
        stride32 = self.layer4(stride16)
        return [stride8, stride16, stride32]


def _stage_out_channels(stage: nn.Module) -> int:
    """Output channels of a ResNet stage: those of its last BatchNorm."""
    batch_norms = [module for module in stage.modules() if isinstance(module, nn.BatchNorm2d)]
    return batch_norms[-1].num_features


def mobilenet_v1_x025_body() -> MobileNetV1:
    """MobileNetV1 x0.25 body of RetinaFace-MobileNet0.25 (features 64/128/256 channels, LeakyReLU 0.1)."""
    return MobileNetV1(width_multiplier=0.25, negative_slope=0.1)


def resnet50_body() -> ResNetBody:
    """torchvision ResNet-50 body of RetinaFace-ResNet50 (features 512/1024/2048 channels), randomly initialised."""
    return ResNetBody(resnet50(weights=None))
