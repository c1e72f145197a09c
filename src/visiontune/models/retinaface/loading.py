"""Reading RetinaFace checkpoints (reference format) and backbone ImageNet weights into visiontune models.

The pieces are separable so that a generic loader can reuse them: :func:`read_state_dict` (file or mapping ->
``dict[str, Tensor]``), :func:`convert_reference_state_dict` (reference keys -> visiontune keys) and the two
``load_*`` functions that check keys and shapes before touching the model and return a :class:`StateDictLoadReport`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from os import PathLike, fspath

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

STRIPPED_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")
"""Wrapper prefixes removed from checkpoint keys (DataParallel/DistributedDataParallel, ``torch.compile``)."""

CLASSIFIER_PREFIXES: tuple[str, ...] = ("fc.",)
"""Keys of the ImageNet classifier in backbone checkpoints (MobileNetV1 pretrain file, torchvision/timm ResNet)."""

StateDictSource = str | PathLike[str] | Mapping[str, Tensor]


@dataclass
class StateDictLoadReport:
    """What a load did.

    Attributes:
        source: file path, or ``"<state dict>"`` for an in-memory mapping.
        loaded_keys: number of tensors copied into the model.
        missing_keys: model keys the checkpoint lacked (left at their current values).
        unexpected_keys: checkpoint keys the model does not have (ignored).
        skipped_keys: checkpoint keys deliberately not loaded (a classifier, or a class head whose shape differs
            because ``num_classes`` differs).
    """

    source: str
    loaded_keys: int = 0
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    skipped_keys: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.source}: loaded {self.loaded_keys} tensors, {len(self.missing_keys)} missing, "
            f"{len(self.unexpected_keys)} unexpected, {len(self.skipped_keys)} skipped"
        )


def describe_source(source: StateDictSource) -> str:
    """Human-readable name of a state-dict source for messages."""
    return "<state dict>" if isinstance(source, Mapping) else fspath(source)


def read_state_dict(source: StateDictSource) -> dict[str, Tensor]:
    """Read a state dict from a file or mapping.

    Files are read with ``torch.load(..., map_location="cpu", weights_only=True)`` (``.pth``, ``.pt``, ``.tar`` ...)
    or safetensors (``.safetensors``). A checkpoint dict holding the weights under ``"state_dict"`` or ``"model"``
    (e.g. the reference ``mobilenetV1X0.25_pretrain.tar``) is unwrapped.

    Args:
        source: path or mapping.

    Returns:
        A new ``dict[str, Tensor]`` (keys not yet converted).

    Raises:
        ValueError: the content is not a mapping of names to tensors.
    """
    name = describe_source(source)
    if isinstance(source, Mapping):
        content: object = source
    elif fspath(source).endswith(".safetensors"):
        from safetensors.torch import load_file

        content = load_file(fspath(source), device="cpu")
    else:
        content = torch.load(fspath(source), map_location="cpu", weights_only=True)
    if isinstance(content, Mapping) and not _is_tensor_mapping(content):
        for wrapper_key in ("state_dict", "model"):
            if isinstance(content.get(wrapper_key), Mapping):
                content = content[wrapper_key]
                break
    if not isinstance(content, Mapping):
        raise ValueError(f"{name}: expected a state dict (mapping of names to tensors), got {type(content).__name__}")
    for key, value in content.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise ValueError(
                f"{name}: expected a state dict (mapping of names to tensors), but key {key!r} holds "
                f"{type(value).__name__} (top-level keys: {sorted(map(str, content))[:10]})"
            )
    return dict(content)


def _is_tensor_mapping(content: Mapping[object, object]) -> bool:
    return len(content) > 0 and all(isinstance(value, Tensor) for value in content.values())


def strip_prefixes(state_dict: Mapping[str, Tensor], prefixes: Iterable[str] = STRIPPED_PREFIXES) -> dict[str, Tensor]:
    """Remove wrapper prefixes (repeatedly, so ``module._orig_mod.x`` becomes ``x``) from every key.

    Raises:
        ValueError: two keys become equal after stripping.
    """
    prefixes = tuple(prefixes)
    stripped: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new_key = key
        while new_key.startswith(prefixes):
            new_key = new_key[len(next(prefix for prefix in prefixes if new_key.startswith(prefix))) :]
        if new_key in stripped:
            raise ValueError(f"state dict keys collide after removing prefixes {prefixes}: {key!r} -> {new_key!r}")
        stripped[new_key] = value
    return stripped


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
    skipped_keys: list[str],
    strict: bool,
) -> StateDictLoadReport:
    """Check keys and shapes of ``state_dict`` against ``module`` and load it; raises before loading anything."""
    expected = module.state_dict()
    for key, value in state_dict.items():
        if key in expected and expected[key].shape != value.shape:
            raise ValueError(
                f"{source}: {key!r} has shape {list(value.shape)} but the model expects {list(expected[key].shape)}"
            )
    missing = [key for key in expected if key not in state_dict and key not in skipped_keys]
    unexpected = [key for key in state_dict if key not in expected]
    if strict and (missing or unexpected):
        raise ValueError(
            f"{source}: state dict does not match {type(module).__name__}: {len(missing)} missing keys "
            f"{_preview(missing)}, {len(unexpected)} unexpected keys {_preview(unexpected)}"
        )
    module.load_state_dict({key: value for key, value in state_dict.items() if key in expected}, strict=False)
    report = StateDictLoadReport(
        source=source,
        loaded_keys=len(state_dict) - len(unexpected),
        missing_keys=missing,
        unexpected_keys=unexpected,
        skipped_keys=skipped_keys,
    )
    logger.info("%s", report)
    return report


def _preview(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}]"


def load_retinaface_state_dict(
    model: nn.Module, state_dict_or_path: StateDictSource, *, strict: bool = True
) -> StateDictLoadReport:
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
        ValueError: mismatching keys (strict) or shapes; nothing is loaded then.
    """
    source = describe_source(state_dict_or_path)
    state_dict = convert_reference_state_dict(read_state_dict(state_dict_or_path))
    expected = model.state_dict()
    skipped = [
        key
        for key, value in state_dict.items()
        if key.startswith("ClassHead.") and key in expected and expected[key].shape != value.shape
    ]
    if skipped:
        logger.info("%s: class head shape differs (num_classes changed); not loading %s", source, skipped)
    kept = {key: value for key, value in state_dict.items() if key not in skipped}
    return _load_checked(model, kept, source=source, skipped_keys=skipped, strict=strict)


def load_backbone_state_dict(
    body: nn.Module, state_dict_or_path: StateDictSource, *, strict: bool = True
) -> StateDictLoadReport:
    """Load ImageNet weights into a RetinaFace body (``model.body``).

    Accepts the reference ``mobilenetV1X0.25_pretrain.tar`` (weights under ``state_dict``, keys prefixed
    ``module.``) for :class:`~visiontune.models.retinaface.backbones.MobileNetV1`, and torchvision- or timm-named
    ResNet-50 state dicts (the two use the same keys) for
    :class:`~visiontune.models.retinaface.backbones.ResNetBody`. The classifier (``fc.*``) is skipped.

    Args:
        body: the backbone module.
        state_dict_or_path: checkpoint file or state dict.
        strict: raise when backbone keys are missing or unexpected.

    Returns:
        The load report.

    Raises:
        ValueError: mismatching keys (strict) or shapes; nothing is loaded then.
    """
    source = describe_source(state_dict_or_path)
    state_dict = strip_prefixes(read_state_dict(state_dict_or_path))
    skipped = [key for key in state_dict if key.startswith(CLASSIFIER_PREFIXES)]
    kept = {key: value for key, value in state_dict.items() if key not in skipped}
    return _load_checked(body, kept, source=source, skipped_keys=skipped, strict=strict)
