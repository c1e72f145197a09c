"""Cached backbone features for classification (``finetune.cache_features``): when a frozen, deterministic backbone
lets its pooled features stand in for the images, the training and validation images are encoded once and the
classifier trains on the features."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import Dataset

from visiontune.config import parse_freeze
from visiontune.data.feature_cache import FeatureDataset, cache_key, cached_features
from visiontune.models.classification import ImageClassifier, backbone_sha256
from visiontune.tasks.classification_transforms import random_train_transform_keys
from visiontune.utils import comm

logger = logging.getLogger(__name__)


def stochastic_backbone_modules(net: nn.Module) -> list[str]:
    """Modules of ``net`` outside the classifier that are random in train mode (dropout, drop path, drop block),
    except a dropout of ``net.drop_rate`` in the classifier's parent (timm's head dropout, kept when cached)."""
    classifier = cast(Any, net).get_classifier()
    names = {id(module): name for name, module in net.named_modules()}
    head_parent = names.get(id(classifier), "").rpartition(".")[0]
    found = []
    for name, module in net.named_modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            if module.p > 0 and not (name.rpartition(".")[0] == head_parent and head_parent
                                     and module.p == getattr(net, "drop_rate", None)):
                found.append(name)
        elif float(getattr(module, "drop_prob", 0.0) or 0.0) > 0:
            found.append(name)
    return found


def feature_cache_obstacles(config: Any, model: nn.Module) -> list[str]:
    """Why the frozen backbone's features of ``model`` (an :class:`ImageClassifier`) cannot stand in for the images
    during training with ``config`` (empty: they can)."""
    obstacles = []
    mode, _ = parse_freeze(config.finetune.freeze)
    if mode != "backbone":
        return [f"finetune.freeze is {config.finetune.freeze!r}, not backbone"]
    unfreeze_at = config.finetune.unfreeze_at_epoch
    if unfreeze_at is not None and unfreeze_at < config.train.epochs:
        obstacles.append(f"finetune.unfreeze_at_epoch={unfreeze_at} trains the backbone later (set it to null)")
    net: Any = model.net  # a timm model
    if not (hasattr(net, "forward_head") and hasattr(net, "get_classifier")):
        return [*obstacles, f"model {config.model.name} has no timm forward_head/get_classifier"]
    classifier = {id(p) for p in net.get_classifier().parameters()}
    trainable = [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in classifier]
    if trainable:
        obstacles.append(f"{len(trainable)} trainable tensors outside the classifier ({', '.join(trainable[:3])})")
    stochastic = stochastic_backbone_modules(net)
    if stochastic:
        obstacles.append(f"the backbone is random in train mode ({', '.join(stochastic[:3])}): set "
                         "model.drop_path_rate=0")
    if config.train.channels_last is True:  # auto: off for features
        obstacles.append("train.channels_last=true (set it to false: it does not apply to features)")
    random_keys = random_train_transform_keys(config.data)
    if random_keys:
        obstacles.append("the training transform is random: set " + " ".join(random_keys))
    return obstacles


def head_decomposition_error(model: ImageClassifier, dataset: Dataset, device: torch.device,
                             model_name: str) -> str | None:
    """Check on a few images of ``dataset`` that classifier(pooled features) is the model's output (eval mode);
    the reason it is not, naming ``model_name``, or None."""
    samples = [dataset[index] for index in range(min(4, len(dataset)))]  # type: ignore[arg-type]
    images = [sample[0] for sample in samples if sample is not None]
    if not images:
        return None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            batch = torch.stack(images).to(device)
            direct = model.net(batch)
            split = model.head_on_features(model.pooled_features(batch))
    finally:
        model.train(was_training)
    if direct.shape != split.shape or not torch.allclose(direct, split, rtol=1e-4, atol=1e-4):
        return f"model {model_name} computes more than dropout + classifier after its pooled features"
    return None


def feature_encoder(model: ImageClassifier, device: torch.device,
                    autocast_dtype: torch.dtype | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``images`` ``(B, 3, H, W)`` float32 -> pooled features ``(B, D)`` of ``model`` on ``device``, no gradient."""
    def encode(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=autocast_dtype or torch.float32,
                                             enabled=autocast_dtype is not None):
            return model.pooled_features(images.to(device, non_blocking=True))
    return encode


def cache_dataset_features(config: Any, model: ImageClassifier, dataset: Dataset, *, device: torch.device,
                           autocast_dtype: torch.dtype | None, run_dir: Path, name: str) -> FeatureDataset:
    """The pooled features of every image of ``dataset`` (a ``ClassificationDataset``), computed once per rank
    shard and kept under ``run_dir/feature_cache`` (keyed by backbone weights, transform and samples)."""
    data, finetune = config.data, config.finetune
    source = dataset.source  # type: ignore[attr-defined]  # a ClassificationDataset
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            probe = next(sample for sample in (dataset[i] for i in range(len(dataset)))  # type: ignore[arg-type]
                         if sample is not None)
            encode = feature_encoder(model, device, autocast_dtype)
            feature_dim = encode(probe[0][None]).shape[1]
            key = cache_key(backbone_digest=backbone_sha256(model), transform=dataset.transform,  # type: ignore[attr-defined]
                            samples=source.samples, extra={"model": config.model.name,
                                                           "autocast": str(autocast_dtype)})
            info = comm.current_info()
            return cached_features(
                encode, dataset, [label for _, label in source.samples], name=name, key=key,
                feature_dim=feature_dim, cache_dir=run_dir / "feature_cache",
                memory_limit_bytes=finetune.cache_memory_limit_mb * 2**20,
                batch_size=data.eval_batch_size or data.batch_size, num_workers=data.num_workers,
                progress=config.train.progress and info.is_main, is_main=info.is_main,
                barrier=comm.barrier, shard=(info.rank, info.world_size), gather=comm.all_gather_objects)
    finally:
        model.train(was_training)


def feature_datasets(config: Any, model: nn.Module, train_dataset: Dataset, val_dataset: Dataset | None, *,
                     device: torch.device, autocast_dtype: torch.dtype | None,
                     run_dir: Path) -> tuple[Dataset, Dataset | None]:
    """``finetune.cache_features``: the image datasets replaced with the frozen backbone's pooled features when
    :func:`feature_cache_obstacles` finds nothing against it, else unchanged (``auto``, logged) or refused (``true``).

    Raises:
        ValueError: ``finetune.cache_features=true`` and an obstacle, each named.
    """
    setting = config.finetune.cache_features
    if setting is False:
        return train_dataset, val_dataset
    obstacles = feature_cache_obstacles(config, model)
    classifier = cast(ImageClassifier, model)  # the classification task's model
    if not obstacles:
        mismatch = head_decomposition_error(classifier, train_dataset, device, config.model.name)
        obstacles += [mismatch] if mismatch else []
    if obstacles:
        if setting is True:
            raise ValueError("finetune.cache_features=true, but " + "; ".join(obstacles)
                             + " (or set finetune.cache_features=auto)")
        logger.info("finetune.cache_features=auto: training on images, not cached features: %s", "; ".join(obstacles))
        return train_dataset, val_dataset
    def cache(dataset: Dataset, name: str) -> FeatureDataset:
        return cache_dataset_features(config, classifier, dataset, device=device, autocast_dtype=autocast_dtype,
                                      run_dir=run_dir, name=name)

    return cache(train_dataset, "train"), (cache(val_dataset, "val") if val_dataset is not None else None)
