"""Mask R-CNN (torchvision ``maskrcnn_resnet50_fpn`` v1 / ``maskrcnn_resnet50_fpn_v2``) with local weight loading.

Nothing is downloaded unless ``init="coco"`` (or ``"backbone"``) is used without a local file, in
which case torchvision's weight enums are asked for their URL and a clear error explains how to pass a
local file when that fails. The model keeps torchvision's contract: in train mode
``model(images, targets)`` returns a dict of losses; in eval mode ``model(images)`` returns one dict
per image with ``boxes`` (float32 ``[N, 4]`` xyxy, pixels of the input image), ``labels`` (int64
``[N]``), ``scores`` (float32 ``[N]``) and ``masks`` (float32 ``[N, 1, H, W]`` probabilities).

The mask head predicts a small square of probabilities per detection (28x28, in the frame of its box);
:func:`paste_masks` places those into the image. The eager model pastes with it (:class:`MaskPastingTransform`), and
so does the ONNX runtime on the mask probabilities an exported graph returns, so both give the same masks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchvision.models import ResNet50_Weights
from torchvision.models.detection import (
    MaskRCNN,
    MaskRCNN_ResNet50_FPN_V2_Weights,
    MaskRCNN_ResNet50_FPN_Weights,
    maskrcnn_resnet50_fpn,
    maskrcnn_resnet50_fpn_v2,
)
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops.misc import FrozenBatchNorm2d

from visiontune.models.loading import LoadReport, WeightLoadError, check_tensors_fit, read_weights, strip_prefixes
from visiontune.utils import hub

__all__ = [
    "MaskPastingTransform",
    "PretrainedWeightsUnavailableError",
    "create_maskrcnn",
    "drop_preset_weights",
    "freeze_backbone_layers",
    "load_backbone_weights",
    "load_detector_weights",
    "load_initial_weights",
    "paste_masks",
    "resolve_batchnorm",
]

logger = logging.getLogger(__name__)

MaskRCNNVariant = Literal["v1", "v2"]
InitMode = Literal["coco", "none", "backbone"]

_VARIANTS = ("v1", "v2")
_INIT_MODES = ("coco", "none", "backbone")
_BACKBONE_PREFIX = "backbone.body."
_PREDICTOR_PREFIXES = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.")
_RESNET_LAYERS_FROM_TOP = ("layer4", "layer3", "layer2", "layer1", "conv1")
_COCO_WEIGHTS = {"v1": MaskRCNN_ResNet50_FPN_Weights.COCO_V1, "v2": MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1}


class PretrainedWeightsUnavailableError(WeightLoadError, RuntimeError):
    """Pretrained weights could not be fetched (no network, no cached file); the CLI reports it as a load error."""


def paste_masks(mask_probabilities: Tensor, boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Paste per-detection mask probabilities into the image, as the eager torchvision Mask R-CNN does.

    torchvision's ``paste_masks_in_image`` in eager mode: each mask is padded by one pixel, its box enlarged to
    match and truncated to integer pixels, the mask resized bilinearly to the box and placed in an empty image. (Under
    tracing torchvision switches to another paste with its own rounding; this function is meant for eager use: the
    PyTorch model's post-processing and the host side of an exported graph.)

    Args:
        mask_probabilities: ``Tensor[N, 1, M, M]`` float, the mask of each detection's class in its box frame.
        boxes: ``Tensor[N, 4]`` float xyxy pixels of the image.
        image_size: ``(height, width)`` of the image.

    Returns:
        ``Tensor[N, 1, height, width]`` float probabilities, zero outside each enlarged box.
    """
    return paste_masks_in_image(mask_probabilities, boxes, (int(image_size[0]), int(image_size[1])))


class MaskPastingTransform(GeneralizedRCNNTransform):
    """torchvision's ``GeneralizedRCNNTransform`` whose eval-mode post-processing pastes masks with
    :func:`paste_masks` (the function the ONNX runtime pastes with): boxes are rescaled from the resized to the
    original image size, masks ``[N, 1, M, M]`` become ``[N, 1, H, W]``."""

    @classmethod
    def like(cls, transform: GeneralizedRCNNTransform) -> MaskPastingTransform:
        """A transform with the settings (sizes, mean, std, padding) of ``transform``."""
        return cls(transform.min_size, transform.max_size, transform.image_mean, transform.image_std,
                   size_divisible=transform.size_divisible, fixed_size=transform.fixed_size,
                   _skip_resize=getattr(transform, "_skip_resize", False))

    def postprocess(self, result: list[dict[str, Tensor]], image_shapes: list[tuple[int, int]],
                    original_image_sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        """Rescale the boxes of each image's detections to its original size and paste its masks (eval mode)."""
        if self.training:
            return result
        for detections, resized_size, original_size in zip(result, image_shapes, original_image_sizes):
            detections["boxes"] = resize_boxes(detections["boxes"], resized_size, original_size)
            if "masks" in detections:
                detections["masks"] = paste_masks(detections["masks"], detections["boxes"], original_size)
        return result


def _fetch_torchvision_weights(weights: Any, *, local_argument: str) -> dict[str, torch.Tensor]:
    """Fetch torchvision weights through their enum (hub download or cache); explain how to avoid it on failure.

    Without a cached copy the download host is probed once (:func:`~visiontune.utils.hub.hub_reachable`, a few
    seconds) so that a machine without network fails at once.
    """
    advice = (f"Without network access, download that file elsewhere and pass its local path as `{local_argument}` "
              f"(e.g. {local_argument}=/path/to/{weights.url.rsplit('/', 1)[-1]}).")
    host = hub.url_host(weights.url)
    if hub.torch_hub_cached_file(weights.url) is None and not hub.hub_reachable(host):
        raise PretrainedWeightsUnavailableError(
            f"could not fetch torchvision weights {weights} from {weights.url} ({host} cannot be reached and "
            f"{hub.torch_hub_dir()} holds no copy). {advice}")
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # URLError, OSError, RuntimeError (hash), ... all mean "not available"
        raise PretrainedWeightsUnavailableError(
            f"could not fetch torchvision weights {weights} from {weights.url} ({type(error).__name__}: {error}). "
            f"{advice}") from error


def _convert_batchnorm_to_frozen(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` under ``module`` by ``FrozenBatchNorm2d`` holding the same statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                frozen.weight.copy_(child.weight)
                frozen.bias.copy_(child.bias)
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            _convert_batchnorm_to_frozen(child)
    return module


def freeze_backbone_layers(model: MaskRCNN, trainable_layers: int) -> None:
    """Freeze the ResNet body except its last ``trainable_layers`` stages, as torchvision does.

    ``trainable_layers`` counts from the top: 1 trains ``layer4``, 3 trains ``layer2..layer4``, 5 trains
    everything including the stem (``conv1`` and ``bn1``); 0 freezes the whole body. The FPN, RPN and
    ROI heads stay trainable.

    Args:
        model: A Mask R-CNN with a ResNet-FPN backbone.
        trainable_layers: Number of trainable stages, 0 to 5.
    """
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_backbone_layers must be in [0, 5], got {trainable_layers}")
    trainable = list(_RESNET_LAYERS_FROM_TOP[:trainable_layers])
    if trainable_layers == 5:
        trainable.append("bn1")
    for name, parameter in model.backbone.body.named_parameters():
        parameter.requires_grad_(any(name.startswith(prefix) for prefix in trainable))


def load_backbone_weights(
    model: MaskRCNN, state_dict: Mapping[str, torch.Tensor], *, source: str = "state dict"
) -> LoadReport:
    """Copy an ImageNet ResNet-50 state dict into the detector's backbone (``backbone.body.*``).

    Accepted key names: torchvision's and timm's ResNet-50 (both use ``conv1.weight``, ``bn1.*``,
    ``layer1.0.conv1.weight``, ... with the classifier at ``fc.*``), optionally already prefixed with
    ``backbone.body.``. The classifier and any key the body lacks are reported as unexpected;
    ``num_batches_tracked`` is skipped for frozen BatchNorm, which has none.

    Args:
        model: The detector; its body is modified in place.
        state_dict: ``{name: tensor}``.
        source: Name of the origin, used in the report and in errors.

    Returns:
        The load report; ``missing`` lists body keys that received nothing.

    Raises:
        ValueError: No key matches the body, or a matching key has a different shape (wrong architecture); a
            ``WeightValuesError`` for integer tensors in floating-point weights or NaN / inf values.
    """
    body_state = model.backbone.body.state_dict()
    report = LoadReport(source=source)
    mismatched = []
    to_load = {}
    for key, tensor in strip_prefixes(state_dict).items():
        body_key = key.removeprefix(_BACKBONE_PREFIX)
        if body_key not in body_state:
            if not body_key.endswith("num_batches_tracked"):
                report.unexpected.append(key)
            continue
        if tuple(tensor.shape) != tuple(body_state[body_key].shape):
            mismatched.append(f"{key}: file {tuple(tensor.shape)} vs model {tuple(body_state[body_key].shape)}")
            continue
        to_load[body_key] = tensor
    if mismatched:
        raise ValueError(
            f"{source}: {len(mismatched)} backbone tensor(s) have a different shape than the ResNet-50 body, "
            f"e.g. {mismatched[:3]}; is it a ResNet-50 checkpoint?"
        )
    if not to_load:
        raise ValueError(
            f"{source}: no key matches the ResNet-50 backbone (expected torchvision/timm names such as "
            f"'conv1.weight', 'layer1.0.conv1.weight'); first keys in the file: {list(state_dict)[:5]}"
        )
    report.converted = check_tensors_fit(to_load, body_state, source=source)
    model.backbone.body.load_state_dict(to_load, strict=False)
    report.loaded = [_BACKBONE_PREFIX + key for key in to_load]
    report.missing = [_BACKBONE_PREFIX + key for key in body_state if key not in to_load]
    report.count_backbone(_BACKBONE_PREFIX + key for key in body_state)
    return report


def load_detector_weights(
    model: MaskRCNN, state_dict: Mapping[str, torch.Tensor], *, source: str = "state dict"
) -> LoadReport:
    """Load a full Mask R-CNN state dict, re-initialising the class-specific predictors if their shapes differ.

    Tensors of the box and mask predictors (``roi_heads.box_predictor.*``, ``roi_heads.mask_predictor.*``)
    whose shapes differ (another number of classes) are skipped, so those layers keep their fresh
    initialisation. Every other key must match in name and shape.

    Args:
        model: The detector, modified in place.
        state_dict: ``{name: tensor}`` (``module.`` / ``_orig_mod.`` prefixes are stripped).
        source: Name of the origin, used in the report and in errors.

    Returns:
        The load report.

    Raises:
        ValueError: Keys outside the predictors are missing, unexpected or of another shape (e.g. a v1
            checkpoint given to a v2 model); a ``WeightValuesError`` for integer tensors in floating-point
            weights or NaN / inf values.
    """
    model_state = model.state_dict()
    report = LoadReport(source=source)
    problems = []
    to_load = {}
    for key, tensor in strip_prefixes(state_dict).items():
        if key not in model_state:
            if not key.endswith("num_batches_tracked"):
                report.unexpected.append(key)
            continue
        if tuple(tensor.shape) != tuple(model_state[key].shape):
            if key.startswith(_PREDICTOR_PREFIXES):
                report.reinitialized.append((key, tuple(tensor.shape), tuple(model_state[key].shape)))
            else:
                problems.append(f"{key}: file {tuple(tensor.shape)} vs model {tuple(model_state[key].shape)}")
            continue
        to_load[key] = tensor
    report.loaded = list(to_load)
    reinitialized = set(report.reinitialized_names)
    report.missing = [
        key for key in model_state
        if key not in to_load and key not in reinitialized and not key.endswith("num_batches_tracked")
    ]
    report.count_backbone(model_state, lambda key: key.startswith(_PREDICTOR_PREFIXES))
    if problems or report.unexpected or report.missing:
        raise ValueError(
            f"{source}: does not fit this Mask R-CNN ({len(report.missing)} missing, {len(report.unexpected)} "
            f"unexpected, {len(problems)} of another shape), e.g. missing {report.missing[:3]}, unexpected "
            f"{report.unexpected[:3]}, shapes {problems[:3]}; is it a checkpoint of the same variant?"
        )
    report.converted = check_tensors_fit(to_load, model_state, source=source)
    model.load_state_dict(to_load, strict=False)
    return report


def _set_frozen_batchnorm_eps(module: nn.Module, eps: float) -> None:
    for child in module.modules():
        if isinstance(child, FrozenBatchNorm2d):
            child.eps = eps


def load_initial_weights(
    model: MaskRCNN,
    variant: MaskRCNNVariant,
    init: InitMode,
    *,
    checkpoint: str | Path | None = None,
    backbone_checkpoint: str | Path | None = None,
) -> LoadReport | None:
    """Load the initial weights that ``init`` asks for into a freshly built Mask R-CNN and log the report.

    ``"coco"``: a full Mask R-CNN state dict from ``checkpoint`` (else torchvision's COCO weights of ``variant``
    through the weight enum), predictors of another class count re-initialised (:func:`load_detector_weights`).
    ``"backbone"``: an ImageNet ResNet-50 from ``backbone_checkpoint`` (else torchvision's
    ``IMAGENET1K_V1``) copied into ``backbone.body`` (:func:`load_backbone_weights`). ``"none"``: nothing.

    Build ``model`` with the BatchNorm of :func:`resolve_batchnorm` for the same ``init`` so that the result equals
    ``create_maskrcnn(variant, init=init, ...)``.

    Returns:
        The load report, or None for ``init="none"``.

    Raises:
        FileNotFoundError: A checkpoint file does not exist.
        ValueError: The weights do not fit the model.
        PretrainedWeightsUnavailableError: No local file was given and the download failed.
    """
    if init == "coco":
        if checkpoint is not None:
            state_dict, source = read_weights(checkpoint), str(checkpoint)
        else:
            weights = _COCO_WEIGHTS[variant]
            state_dict, source = _fetch_torchvision_weights(weights, local_argument="checkpoint"), str(weights)
        report = load_detector_weights(model, state_dict, source=source)
        logger.info("Mask R-CNN %s COCO init: %s", variant, report.summary())
        return report
    if init == "backbone":
        if backbone_checkpoint is not None:
            state_dict = read_weights(backbone_checkpoint, arch="resnet50")  # a .ckpt: any MindSpore ResNet-50 naming
            source = str(backbone_checkpoint)
        else:
            weights = ResNet50_Weights.IMAGENET1K_V1
            state_dict = _fetch_torchvision_weights(weights, local_argument="backbone_checkpoint")
            source = str(weights)
        report = load_backbone_weights(model, state_dict, source=source)
        logger.info("Mask R-CNN %s backbone init: %s", variant, report.summary())
        return report
    if init != "none":
        raise ValueError(f"unknown init {init!r}; expected one of {_INIT_MODES}")
    return None


def drop_preset_weights(
    init: InitMode,
    checkpoint: str | None,
    backbone_checkpoint: str | None,
    *,
    preset_init: str | None,
    preset_checkpoint: str | None = None,
    preset_backbone_checkpoint: str | None = None,
) -> tuple[str | None, str | None]:
    """``(checkpoint, backbone_checkpoint)`` without the weight files a preset names for the ``model.init`` it chose.

    A preset written for ``init: coco`` names a COCO ``model.checkpoint``; choosing ``model.init=backbone`` (or
    ``none``) on the command line makes that file irrelevant, so it is dropped with one note line, and likewise a
    preset's ``model.backbone_checkpoint`` when another init is chosen. A file the command line gives itself (one
    that differs from the preset's) is kept, and :meth:`load_initial_weights`'s caller reports the contradiction.

    Args:
        init: The resolved ``model.init``.
        checkpoint: The resolved ``model.checkpoint``.
        backbone_checkpoint: The resolved ``model.backbone_checkpoint``.
        preset_init: The preset's ``model.init`` (None without a preset file).
        preset_checkpoint: The preset's ``model.checkpoint``.
        preset_backbone_checkpoint: The preset's ``model.backbone_checkpoint``.
    """
    if preset_init is None or preset_init == init:
        return checkpoint, backbone_checkpoint
    if init != "coco" and checkpoint is not None and checkpoint == preset_checkpoint:
        logger.info("model.init=%s: not using the preset's model.checkpoint=%s (a COCO Mask R-CNN, for "
                    "model.init=coco)", init, checkpoint)
        checkpoint = None
    if init != "backbone" and backbone_checkpoint is not None and backbone_checkpoint == preset_backbone_checkpoint:
        logger.info("model.init=%s: not using the preset's model.backbone_checkpoint=%s (for model.init=backbone)",
                    init, backbone_checkpoint)
        backbone_checkpoint = None
    return checkpoint, backbone_checkpoint


def resolve_batchnorm(
    variant: MaskRCNNVariant,
    init: InitMode,
    *,
    frozen_batchnorm: bool | None = None,
    frozen_batchnorm_eps: float | None = None,
) -> tuple[bool, float | None]:
    """The ResNet body's BatchNorm settings that :func:`create_maskrcnn` uses for ``variant`` and ``init``.

    Defaults follow torchvision: ``FrozenBatchNorm2d`` for v1 with pretrained weights (``eps`` 0.0 for the v1 COCO
    weights, 1e-5 otherwise), trainable ``BatchNorm2d`` for v1 from scratch and for v2. Store the result with a
    trained model and pass it back to rebuild the same modules for inference (``init="none"``).

    Args:
        variant: ``"v1"`` or ``"v2"``.
        init: ``"coco"``, ``"backbone"`` or ``"none"``.
        frozen_batchnorm: Explicit choice, or None for the default.
        frozen_batchnorm_eps: Explicit ``eps`` of the frozen layers, or None for the default.

    Returns:
        ``(frozen_batchnorm, eps)``; ``eps`` is None when the BatchNorm is not frozen.

    Raises:
        ValueError: ``frozen_batchnorm_eps`` is given for trainable BatchNorm.
    """
    if frozen_batchnorm is None:
        frozen_batchnorm = variant == "v1" and init != "none"
    if not frozen_batchnorm:
        if frozen_batchnorm_eps is not None:
            raise ValueError("frozen_batchnorm_eps is only used with frozen BatchNorm (frozen_batchnorm=True)")
        return False, None
    if frozen_batchnorm_eps is None:
        frozen_batchnorm_eps = 0.0 if variant == "v1" and init == "coco" else 1e-5
    return True, float(frozen_batchnorm_eps)


def create_maskrcnn(
    variant: MaskRCNNVariant = "v1",
    *,
    num_classes: int,
    init: InitMode = "coco",
    checkpoint: str | Path | None = None,
    backbone_checkpoint: str | Path | None = None,
    trainable_backbone_layers: int | None = None,
    min_size: int | tuple[int, ...] = 800,
    max_size: int = 1333,
    frozen_batchnorm: bool | None = None,
    frozen_batchnorm_eps: float | None = None,
    **kwargs: Any,
) -> MaskRCNN:
    """Build a torchvision Mask R-CNN ResNet-50-FPN for ``num_classes`` classes (background included).

    Args:
        variant: ``"v1"`` (``maskrcnn_resnet50_fpn``, COCO mask AP 34.6) or ``"v2"``
            (``maskrcnn_resnet50_fpn_v2``, COCO mask AP 41.8, BatchNorm in the heads).
        num_classes: Number of classes including the background (``K + 1``).
        init: ``"coco"``: torchvision's COCO-trained detector (from ``checkpoint`` if given, else via
            torchvision's weight enum, which needs network or a cached file); the box and mask predictors
            are re-initialised when ``num_classes`` differs from 91. ``"backbone"``: an ImageNet ResNet-50
            state dict (torchvision or timm names) from ``backbone_checkpoint`` (else torchvision's
            ``ResNet50_Weights.IMAGENET1K_V1`` via the enum) copied into ``backbone.body``; the rest is
            random. ``"none"``: everything random.
        checkpoint: Local file with a full Mask R-CNN state dict (``init="coco"`` only).
        backbone_checkpoint: Local file with a ResNet-50 state dict (``init="backbone"`` only).
        trainable_backbone_layers: ResNet stages to train, counted from the top (0-5). None means 3 for
            pretrained inits and 5 for ``"none"``, as torchvision does.
        min_size: Shorter side the model resizes inputs to (a tuple: random choice per training batch).
        max_size: Upper bound of the longer side after resizing.
        frozen_batchnorm: Use ``FrozenBatchNorm2d`` in the ResNet body. None follows torchvision: frozen for
            v1 with pretrained weights, trainable ``BatchNorm2d`` for v1 from scratch and for v2. Set it
            explicitly when rebuilding a trained model for inference, so the state dict keys match.
        frozen_batchnorm_eps: ``eps`` of the frozen BatchNorm layers (not stored in state dicts). None: 0.0
            for v1 with ``init="coco"`` (torchvision's v1 COCO weights were trained that way, see its
            ``overwrite_eps``), else 1e-5. Pass the training value when rebuilding for inference.
        **kwargs: Passed to :class:`torchvision.models.detection.MaskRCNN` (e.g. ``box_score_thresh``,
            ``box_detections_per_img``).

    Returns:
        The model (in train mode, on the CPU).

    Raises:
        ValueError: An argument is invalid or a checkpoint does not fit the model.
        FileNotFoundError: A checkpoint file does not exist.
        PretrainedWeightsUnavailableError: ``init`` needs weights that could not be fetched.
    """
    if variant not in _VARIANTS:
        raise ValueError(f"unknown Mask R-CNN variant {variant!r}; expected one of {_VARIANTS}")
    if init not in _INIT_MODES:
        raise ValueError(f"unknown init {init!r}; expected one of {_INIT_MODES}")
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    if checkpoint is not None and init != "coco":
        raise ValueError(f"checkpoint is only used with init='coco' (got init={init!r}); use backbone_checkpoint "
                         "for an ImageNet backbone")
    if backbone_checkpoint is not None and init != "backbone":
        raise ValueError(f"backbone_checkpoint is only used with init='backbone' (got init={init!r})")
    if trainable_backbone_layers is None:
        trainable_backbone_layers = 5 if init == "none" else 3
    if not 0 <= trainable_backbone_layers <= 5:
        raise ValueError(f"trainable_backbone_layers must be in [0, 5], got {trainable_backbone_layers}")
    frozen_batchnorm, eps = resolve_batchnorm(
        variant, init, frozen_batchnorm=frozen_batchnorm, frozen_batchnorm_eps=frozen_batchnorm_eps
    )

    builder = maskrcnn_resnet50_fpn if variant == "v1" else maskrcnn_resnet50_fpn_v2
    # weights=None and weights_backbone=None: torchvision builds BatchNorm2d everywhere and downloads nothing.
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes, min_size=min_size,
                    max_size=max_size, **kwargs)
    model.transform = MaskPastingTransform.like(model.transform)
    if frozen_batchnorm and eps is not None:  # resolve_batchnorm gives an eps exactly for frozen BatchNorm
        _convert_batchnorm_to_frozen(model.backbone.body)
        _set_frozen_batchnorm_eps(model, eps)

    load_initial_weights(model, variant, init, checkpoint=checkpoint, backbone_checkpoint=backbone_checkpoint)
    freeze_backbone_layers(model, trainable_backbone_layers)
    return model
