"""The classification task's image transforms: timm's ``create_transform`` with the ``data`` section's options."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import timm

TRIVIAL_AUGMENT_NAMES = ("trivialaugment", "ta_wide")
"""``data.auto_augment`` values that select torchvision's TrivialAugmentWide (timm has no such policy)."""


def with_trivial_augment(transform: Callable) -> Callable:
    """Insert ``torchvision.transforms.TrivialAugmentWide`` before the tensor conversion of a timm pipeline."""
    from torchvision import transforms as tv_transforms

    steps = list(cast(Any, transform).transforms)  # a torchvision Compose
    first_tensor_step = next(i for i, step in enumerate(steps) if "ToTensor" in type(step).__name__)
    steps.insert(first_tensor_step, tv_transforms.TrivialAugmentWide())
    return tv_transforms.Compose(steps)


def random_train_transform_keys(data: Any) -> list[str]:
    """The ``data.*`` settings that make the training transform (or batch) random, each as ``key=value`` to set."""
    keys = []
    if list(data.scale) != [1.0, 1.0]:
        keys.append("data.scale=[1,1]")
    if list(data.ratio) != [1.0, 1.0]:
        keys.append("data.ratio=[1,1]")
    for name in ("hflip", "vflip", "reprob", "mixup", "cutmix"):
        if getattr(data, name):
            keys.append(f"data.{name}=0")
    if data.color_jitter:
        keys.append("data.color_jitter=0")
    if data.auto_augment:
        keys.append("data.auto_augment=null")
    return keys


def normalization_settings(config: Any) -> dict[str, Any]:
    """``mean``, ``std`` (3-tuples of floats in [0, 1]) and ``crop_pct`` of the evaluation transform: the ``data``
    section's values, else the pretrained configuration of ``model.name``, else timm's ImageNet defaults."""
    data = config.data
    pretrained = timm.models.get_pretrained_cfg(config.model.name) if timm.is_model(config.model.name) else None
    mean = tuple(data.mean) if data.mean else (getattr(pretrained, "mean", None) or timm.data.IMAGENET_DEFAULT_MEAN)
    std = tuple(data.std) if data.std else (getattr(pretrained, "std", None) or timm.data.IMAGENET_DEFAULT_STD)
    crop_pct = data.crop_pct or getattr(pretrained, "crop_pct", None) or timm.data.DEFAULT_CROP_PCT
    return {"mean": mean, "std": std, "crop_pct": crop_pct}


def create_classification_transform(config: Any, *, train: bool, uint8: bool = False) -> Callable:
    """timm's ``create_transform`` with the ``data`` section's options of ``config``.

    ``uint8``: the pipeline of a device prefetcher: the same steps up to a uint8 ``Tensor[3, H, W]`` (timm's
    ``use_prefetcher=True``); normalisation and random erasing run on the device
    (:class:`~visiontune.data.prefetch.DevicePrefetcher`).

    A training transform without any augmentation (:func:`random_train_transform_keys` finds none: ``data.scale``
    and ``data.ratio`` ``[1, 1]``, no flips, jitter, auto-augment, random erasing, mixup, cutmix) is the
    evaluation transform (resize to ``image_size / crop_pct``, center crop): deterministic, as the MobileNetV2
    tutorial's feature extraction, so a frozen backbone's features can be cached (``finetune.cache_features``).
    """
    from timm.data import create_transform

    data = config.data
    resolved = normalization_settings(config)
    if train and not random_train_transform_keys(data):
        train = False  # no augmentation configured: the deterministic evaluation transform (cacheable features)
    if train:
        trivial = data.auto_augment in TRIVIAL_AUGMENT_NAMES
        transform = create_transform(
            data.image_size, is_training=True, scale=(data.scale[0], data.scale[1]),
            ratio=(data.ratio[0], data.ratio[1]),
            hflip=data.hflip, vflip=data.vflip, color_jitter=data.color_jitter or 0.0,
            auto_augment=None if trivial else data.auto_augment, interpolation=data.interpolation,
            mean=resolved["mean"], std=resolved["std"], re_prob=data.reprob, re_mode=data.remode,
            use_prefetcher=uint8,
        )
        return with_trivial_augment(transform) if trivial else transform
    return create_transform(data.image_size, is_training=False, interpolation=data.interpolation,
                            mean=resolved["mean"], std=resolved["std"], crop_pct=resolved["crop_pct"],
                            use_prefetcher=uint8)
