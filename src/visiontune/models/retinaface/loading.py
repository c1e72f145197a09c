"""Reading RetinaFace checkpoints (reference format) and backbone ImageNet weights into visiontune models.

The pieces are separable so that a generic loader can reuse them: :func:`read_state_dict` (file or mapping ->
``dict[str, Tensor]``), :func:`convert_reference_state_dict` (reference keys -> visiontune keys) and the two
``load_*`` functions that check keys and shapes before touching the model and return the load report every loader
returns (:class:`~visiontune.models.loading.LoadReport`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from os import PathLike, fspath

from torch import Tensor, nn

from visiontune.models.loading import (
    LoadReport,
    ShapeChange,
    check_tensors_fit,
    read_weights,
    select_state_dict,
    strip_prefixes,
)

logger = logging.getLogger(__name__)

CLASSIFIER_PREFIXES: tuple[str, ...] = ("fc.",)
"""Keys of the ImageNet classifier in backbone checkpoints (MobileNetV1 pretrain file, torchvision/timm ResNet)."""

StateDictSource = str | PathLike[str] | Mapping[str, Tensor]


def describe_source(source: StateDictSource) -> str:
    """Human-readable name of a state-dict source for messages."""
    return "<state dict>" if isinstance(source, Mapping) else fspath(source)


def read_state_dict(source: StateDictSource, *, arch: str | None = None) -> dict[str, Tensor]:
    """Read a state dict from a file (:func:`visiontune.models.loading.read_weights`) or check a mapping.

    Args:
        source: path (``.pth``/``.tar``/``.safetensors``, or a MindSpore ``.ckpt`` with ``arch``) or mapping.
        arch: MindSpore architecture of a ``.ckpt`` file
            (:func:`visiontune.interop.mindspore.list_mindspore_architectures`).

    Returns:
        A new ``dict[str, Tensor]`` with ``module.`` / ``_orig_mod.`` prefixes removed.

    Raises:
        ValueError: the content is not a mapping of names to tensors.
    """
    if not isinstance(source, Mapping):
        return read_weights(fspath(source), arch=arch)
    return select_state_dict(source, describe_source(source))


def convert_reference_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Convert a reference RetinaFace state dict (``mobilenet0.25_Final.pth``, ``Resnet50_Final.pth``) to visiontune.

    visiontune uses the reference module names, so only wrapper prefixes (``module.``) are removed.
    """
    return strip_prefixes(state_dict)


def _load_checked(
    module: nn.Module,
    state_dict: dict[str, Tensor],
    *,
    source: str,
    reinitialized: list[ShapeChange] | None = None,
    skipped: list[str] | None = None,
    strict: bool,
) -> LoadReport:
    """Check keys, shapes, dtypes and values (:func:`~visiontune.models.loading.check_tensors_fit`) of ``state_dict``
    against ``module`` and load it; raises before loading anything.

    ``reinitialized`` (a class head of another shape) and ``skipped`` (a classifier) were taken out of
    ``state_dict`` by the caller; they are reported, not counted as missing."""
    expected = module.state_dict()
    for key, value in state_dict.items():
        if key in expected and expected[key].shape != value.shape:
            raise ValueError(
                f"{source}: {key!r} has shape {list(value.shape)} but the model expects {list(expected[key].shape)}"
            )
    report = LoadReport(source=source, reinitialized=list(reinitialized or []), skipped=list(skipped or []))
    left_out = set(report.reinitialized_names)
    missing = [key for key in expected if key not in state_dict and key not in left_out]
    unexpected = [key for key in state_dict if key not in expected]
    if strict and (missing or unexpected):
        raise ValueError(
            f"{source}: state dict does not match {type(module).__name__}: {len(missing)} missing keys "
            f"{_preview(missing)}, {len(unexpected)} unexpected keys {_preview(unexpected)}"
        )
    to_load = {key: value for key, value in state_dict.items() if key in expected}
    report.converted = check_tensors_fit(to_load, expected, source=source)
    module.load_state_dict(to_load, strict=False)
    report.loaded, report.missing, report.unexpected = list(to_load), missing, unexpected
    report.count_backbone(expected, lambda key: key in left_out)
    logger.info("%s", report.summary())
    return report


def _preview(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}]"


def load_retinaface_state_dict(
    model: nn.Module, state_dict_or_path: StateDictSource, *, strict: bool = True
) -> LoadReport:
    """Load a full RetinaFace checkpoint (reference or visiontune) into ``model``.

    ``module.`` / ``_orig_mod.`` prefixes are removed. When the checkpoint's class head has a different shape
    (the model was built with another ``num_classes``), the ``ClassHead`` tensors are skipped and reported, as timm
    does for classifiers; any other shape mismatch is an error.

    Args:
        model: a :class:`~visiontune.models.retinaface.net.RetinaFace`.
        state_dict_or_path: checkpoint file or state dict.
        strict: raise when keys are missing or unexpected (skipped class-head keys excepted).

    Returns:
        The load report.

    Raises:
        ValueError: mismatching keys (strict) or shapes; a ``WeightValuesError`` for integer tensors in floating-point
            weights or NaN / inf values; nothing is loaded then.
    """
    source = describe_source(state_dict_or_path)
    arch = "retinaface_resnet50" if _has_resnet_body(model) else "retinaface_mobilenet025"  # for a MindFace .ckpt
    state_dict = convert_reference_state_dict(read_state_dict(state_dict_or_path, arch=arch))
    expected = model.state_dict()
    reinitialized = [
        (key, tuple(value.shape), tuple(expected[key].shape))
        for key, value in state_dict.items()
        if key.startswith("ClassHead.") and key in expected and expected[key].shape != value.shape
    ]
    names = [key for key, _, _ in reinitialized]
    if names:
        logger.info("%s: class head shape differs (num_classes changed); not loading %s", source, names)
    kept = {key: value for key, value in state_dict.items() if key not in names}
    return _load_checked(model, kept, source=source, reinitialized=reinitialized, strict=strict)


def _has_resnet_body(model: nn.Module) -> bool:
    return any(name.startswith("body.layer4.") for name, _ in model.named_parameters())


def load_backbone_state_dict(
    body: nn.Module, state_dict_or_path: StateDictSource, *, strict: bool = True
) -> LoadReport:
    """Load ImageNet weights into a RetinaFace body (``model.body``).

    Accepts the reference ``mobilenetV1X0.25_pretrain.tar`` (weights under ``state_dict``, keys prefixed
    ``module.``) for :class:`~visiontune.models.retinaface.backbones.MobileNetV1`, and torchvision- or timm-named
    ResNet-50 state dicts (the two use the same keys) or a MindSpore ImageNet ResNet-50 ``.ckpt`` (MindCV's, the model
    zoo's / MindFace's, or the model zoo's Mask R-CNN backbone naming) for
    :class:`~visiontune.models.retinaface.backbones.ResNetBody`. The classifier (``fc.*``) is skipped.

    Args:
        body: the backbone module.
        state_dict_or_path: checkpoint file or state dict.
        strict: raise when backbone keys are missing or unexpected.

    Returns:
        The load report.

    Raises:
        ValueError: mismatching keys (strict) or shapes; a ``WeightValuesError`` for integer tensors in floating-point
            weights or NaN / inf values; nothing is loaded then.
    """
    source = describe_source(state_dict_or_path)
    is_resnet = any(name.startswith("layer4.") for name, _ in body.named_parameters())
    state_dict = read_state_dict(state_dict_or_path, arch="resnet50" if is_resnet else None)  # any ResNet-50 naming
    skipped = [key for key in state_dict if key.startswith(CLASSIFIER_PREFIXES)]
    kept = {key: value for key, value in state_dict.items() if key not in skipped}
    return _load_checked(body, kept, source=source, skipped=skipped, strict=strict)
