"""Adapt a PyTorch model so it computes exactly what the MindSpore model computes.

Names and weights map one to one for every supported architecture, but a few MindSpore models pad
differently from their timm counterparts. MindCV's MobileNetV3 builds its depthwise convolutions with
``pad_mode="same"``: MindSpore then pads ``max((ceil(in / stride) - 1) * stride + kernel - in, 0)``
pixels in total per spatial axis, half of it (rounded down) at the top/left and the rest at the
bottom/right. For stride 1 and an odd kernel this equals timm's symmetric ``kernel // 2`` padding; for
stride 2 it does not (a 224 input gives 0 pixels at the top and 1 at the bottom of the 112 -> 56 step,
timm pads 1 on both sides), which shifts every strided depthwise window by one pixel.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from torch import nn

from visiontune.interop.mindspore.mapping import get_mindspore_architecture

if TYPE_CHECKING:
    from timm.layers import Conv2dSame

__all__ = ["match_mindspore_padding"]

logger = logging.getLogger(__name__)


def match_mindspore_padding(model: nn.Module, arch: str) -> list[str]:
    """Give a converted timm model MindSpore's padding where the two differ (in place).

    For ``mobilenet_v3_*`` every depthwise ``nn.Conv2d`` with a stride above 1 is replaced by timm's
    ``Conv2dSame`` (TensorFlow/MindSpore "same" padding, computed from the input size) holding the same
    parameters, so state-dict keys, weights, device, dtype, ``requires_grad`` and train/eval mode are
    unchanged. Other architectures need no padding change and are returned untouched (remaining
    known differences, if any, are logged; see ``MindSporeArchitecture.notes``).

    Args:
        model: a timm model of ``arch``'s target (weights may already be loaded).
        arch: architecture name (see :func:`~visiontune.interop.mindspore.list_mindspore_architectures`).

    Returns:
        Names of the replaced modules (e.g. ``["blocks.0.0.conv_dw", ...]``); empty if nothing changed.

    Raises:
        UnknownArchitectureError: ``arch`` is not supported.
    """
    architecture = get_mindspore_architecture(arch)
    if not architecture.depthwise_same_padding:
        if architecture.notes:
            logger.warning("%s: no padding change applies; known difference: %s", architecture.name, architecture.notes)
        return []
    replaced = []
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if _is_strided_depthwise_conv(child):
                setattr(parent, child_name, _same_padding_copy(child))
                replaced.append(f"{parent_name}.{child_name}" if parent_name else child_name)
    logger.info("%s: MindSpore 'same' padding for %d strided depthwise convolutions", architecture.name, len(replaced))
    return replaced


def _is_strided_depthwise_conv(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.groups > 1
        and module.groups == module.in_channels
        and max(module.stride) > 1
    )


def _pair(values: tuple[int, ...]) -> tuple[int, int]:
    return values[0], values[1]


def _same_padding_copy(conv: nn.Conv2d) -> Conv2dSame:
    from timm.layers import Conv2dSame  # imported here: reading checkpoints must not need timm

    replacement = Conv2dSame(
        conv.in_channels,
        conv.out_channels,
        _pair(conv.kernel_size),
        stride=_pair(conv.stride),
        dilation=_pair(conv.dilation),
        groups=conv.groups,
        bias=conv.bias is not None,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    replacement.load_state_dict(conv.state_dict())
    for name, parameter in replacement.named_parameters():
        parameter.requires_grad_(getattr(conv, name).requires_grad)
    replacement.train(conv.training)
    return replacement
