"""RetinaFace prediction heads: one 1x1 convolution per pyramid level for classes, boxes and landmarks."""

from __future__ import annotations

from torch import Tensor, nn


class AnchorHead(nn.Module):
    """1x1 convolution predicting ``values_per_anchor`` numbers for each anchor of each feature-map cell.

    Args:
        in_channels: input channels.
        num_anchors: anchors per cell.
        values_per_anchor: outputs per anchor (number of classes, 4 box deltas or 10 landmark deltas).
    """

    def __init__(self, in_channels: int, *, num_anchors: int, values_per_anchor: int) -> None:
        super().__init__()
        self.values_per_anchor = values_per_anchor
        self.conv1x1 = nn.Conv2d(in_channels, num_anchors * values_per_anchor, kernel_size=1)

    def forward(self, features: Tensor) -> Tensor:
        """Predict per-anchor values.

        Args:
            features: ``Tensor[B, C, H, W]``.

        Returns:
            ``Tensor[B, H * W * num_anchors, values_per_anchor]``, ordered by row, column, then anchor (the order of
            :func:`visiontune.models.retinaface.priors.generate_priors`).
        """
        output = self.conv1x1(features).permute(0, 2, 3, 1)
        return output.reshape(output.shape[0], -1, self.values_per_anchor)
