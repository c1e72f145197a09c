"""Convolution blocks shared by the RetinaFace backbones, FPN and SSH modules.

The blocks are ``nn.Sequential`` subclasses so that their children are numbered ``0, 1, 2, ...`` exactly like the
reference implementation's helpers; this keeps state-dict keys such as ``fpn.output1.0.weight`` (convolution) and
``fpn.output1.1.running_mean`` (BatchNorm) compatible with the published checkpoints.
"""

from __future__ import annotations

from torch import nn


def make_activation(negative_slope: float) -> nn.Module:
    """Return the activation used after a convolution block.

    Args:
        negative_slope: slope of the negative part; ``0.0`` gives a plain ReLU (identical output to
            ``LeakyReLU(0.0)``, which the reference writes), anything else a ``LeakyReLU``.

    Returns:
        An in-place activation module without parameters.
    """
    if negative_slope == 0.0:
        return nn.ReLU(inplace=True)
    return nn.LeakyReLU(negative_slope=negative_slope, inplace=True)


class ConvBnAct(nn.Sequential):
    """Convolution (no bias) -> BatchNorm -> optional (leaky) ReLU.

    Children: ``0`` convolution, ``1`` BatchNorm2d, ``2`` activation (absent when ``negative_slope`` is None).
    Padding keeps the spatial size for stride 1 (``kernel_size // 2``).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size (1 or 3 in RetinaFace).
        stride: convolution stride.
        groups: convolution groups (``in_channels`` for a depthwise convolution).
        negative_slope: activation slope (0.0 = ReLU); None leaves the activation out.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        negative_slope: float | None = 0.0,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if negative_slope is not None:
            layers.append(make_activation(negative_slope))
        super().__init__(*layers)


class DepthwiseSeparableConv(nn.Sequential):
    """MobileNetV1 block: depthwise 3x3 conv-BN-act followed by pointwise 1x1 conv-BN-act.

    Children (reference numbering): ``0`` depthwise conv, ``1`` BN, ``2`` act, ``3`` pointwise conv, ``4`` BN,
    ``5`` act.

    Args:
        in_channels: input channels (also the depthwise groups).
        out_channels: output channels of the pointwise convolution.
        stride: stride of the depthwise convolution (1 or 2).
        negative_slope: LeakyReLU slope of both activations.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, negative_slope: float = 0.1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, stride=stride, padding=1, groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels),
            make_activation(negative_slope),
            nn.Conv2d(in_channels, out_channels, 1, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(out_channels),
            make_activation(negative_slope),
        )
