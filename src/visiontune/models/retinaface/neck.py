"""RetinaFace neck: a 3-level feature pyramid (FPN) and the SSH context module applied to each level.

Attribute names (``output1``, ``merge1``, ``conv3X3``, ``conv7x7_3`` ...) are those of the reference implementation's
state dict, including its mixed capitalisation, so that published checkpoints load with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visiontune.models.retinaface.blocks import ConvBnAct


def neck_negative_slope(out_channels: int) -> float:
    """Activation slope of the FPN and SSH blocks: LeakyReLU 0.1 for narrow necks (<= 64 channels), else ReLU.

    This is the reference implementation's rule (0.1 for MobileNet0.25 with 64 channels, 0 for ResNet-50 with 256).
    """
    return 0.1 if out_channels <= 64 else 0.0


class FeaturePyramid(nn.Module):
    """Top-down feature pyramid over three levels with nearest-neighbour upsampling.

    Each input level is projected by a 1x1 conv-BN-act (``output1..3``); the coarser level is upsampled to the finer
    one's size, added, and smoothed by a 3x3 conv-BN-act (``merge2`` for stride 16, ``merge1`` for stride 8).

    Args:
        in_channels_list: channels of the stride-8, 16 and 32 inputs.
        out_channels: channels of every output level.
    """

    def __init__(self, in_channels_list: Sequence[int], out_channels: int) -> None:
        super().__init__()
        if len(in_channels_list) != 3:
            raise ValueError(f"FeaturePyramid expects 3 input levels, got in_channels_list={list(in_channels_list)}")
        slope = neck_negative_slope(out_channels)
        self.output1 = ConvBnAct(in_channels_list[0], out_channels, kernel_size=1, negative_slope=slope)
        self.output2 = ConvBnAct(in_channels_list[1], out_channels, kernel_size=1, negative_slope=slope)
        self.output3 = ConvBnAct(in_channels_list[2], out_channels, kernel_size=1, negative_slope=slope)
        self.merge1 = ConvBnAct(out_channels, out_channels, kernel_size=3, negative_slope=slope)
        self.merge2 = ConvBnAct(out_channels, out_channels, kernel_size=3, negative_slope=slope)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Fuse the three levels.

        Args:
            features: ``[Tensor[B, C1, H1, W1], Tensor[B, C2, H2, W2], Tensor[B, C3, H3, W3]]`` at strides 8, 16, 32.

        Returns:
            Three ``Tensor[B, out_channels, Hi, Wi]`` with the input spatial sizes.
        """
        level1 = self.output1(features[0])
        level2 = self.output2(features[1])
        level3 = self.output3(features[2])
        level2 = self.merge2(level2 + F.interpolate(level3, size=level2.shape[-2:], mode="nearest"))
        level1 = self.merge1(level1 + F.interpolate(level2, size=level1.shape[-2:], mode="nearest"))
        return [level1, level2, level3]


class SSHContext(nn.Module):
    """SSH context module: parallel 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches, concatenated, then ReLU.

    Output channels are split 1/2 (3x3 branch), 1/4 (5x5) and 1/4 (7x7); the 5x5 and 7x7 branches share their first
    convolution (``conv5X5_1``).

    Args:
        in_channels: input channels.
        out_channels: output channels, a multiple of 4.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if out_channels % 4 != 0:
            raise ValueError(f"SSHContext out_channels must be a multiple of 4, got {out_channels}")
        slope = neck_negative_slope(out_channels)
        quarter = out_channels // 4
        self.conv3X3 = ConvBnAct(in_channels, out_channels // 2, negative_slope=None)
        self.conv5X5_1 = ConvBnAct(in_channels, quarter, negative_slope=slope)
        self.conv5X5_2 = ConvBnAct(quarter, quarter, negative_slope=None)
        self.conv7X7_2 = ConvBnAct(quarter, quarter, negative_slope=slope)
        self.conv7x7_3 = ConvBnAct(quarter, quarter, negative_slope=None)

    def forward(self, features: Tensor) -> Tensor:
        """Apply the module.

        Args:
            features: ``Tensor[B, in_channels, H, W]``.

        Returns:
            ``Tensor[B, out_channels, H, W]``, non-negative.
        """
        branch3x3 = self.conv3X3(features)
        shared = self.conv5X5_1(features)
        branch5x5 = self.conv5X5_2(shared)
        branch7x7 = self.conv7x7_3(self.conv7X7_2(shared))
        return F.relu(torch.cat([branch3x3, branch5x5, branch7x7], dim=1))
