"""Builders of a training run, one small function each: resume resolution, backends, AMP, loaders, optimizer,
model wrapping and EMA, then the model (:func:`build_model`) and its optimization (:func:`build_optimization`).
:meth:`visiontune.engine.trainer.Trainer.setup` calls them in order."""

from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from visiontune.config import Config, parse_freeze
from visiontune.engine.checkpoint import CheckpointError, find_valid_checkpoint
from visiontune.engine.finetune import (
    build_param_groups,
    freeze_parameters,
    warn_frozen_random_weights,
    warn_unused_unfreeze,
)
from visiontune.engine.loaders import (
    DrawTrainSampler,
    GroupedTrainBatchSampler,
    SeededDataset,
    ShardSampler,
    TrainSampler,
    build_loader,
)
from visiontune.engine.run_dir import newest_run_dir
from visiontune.engine.scheduler import IterationScheduler, build_schedule_spec
from visiontune.models.parts import ModelParts
from visiontune.tasks.base import Task
from visiontune.utils import comm

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------ resume


def _is_unset(value: Any) -> bool:
    return value in (None, False, "", "false")


def resolve_resume(config: Config) -> Path | None:
    """The checkpoint that ``resume`` / ``train.auto_resume`` select, or ``None`` for a fresh run.

    ``resume=true`` (or ``train.auto_resume``) picks the newest loadable checkpoint (never ``best.pt``) of the
    newest run named ``name``; ``resume=path`` names a file. Only ``auto_resume`` tolerates finding nothing.
    """
    resume = config.resume
    auto = config.train.auto_resume
    if _is_unset(resume):
        if not auto:
            return None
        resume = True
    if resume is not True and resume != "true":
        path = Path(str(resume))
        if not path.is_file():
            raise CheckpointError(f"resume: checkpoint not found: {path}")
        return path
    base = Path(config.project) / config.task
    run = newest_run_dir(base, config.name)
    if run is None:
        if auto:
            return None
        raise CheckpointError(f"resume=true: no earlier run named {config.name!r} in {base}")
    found = find_valid_checkpoint([p for p in run.glob("*.pt") if p.name != "best.pt"])
    if found is None and not auto:
        raise CheckpointError(f"resume=true: no loadable checkpoint in {run}")
    return found


# ------------------------------------------------------------------ devices and precision


def amp_dtype(config: Config, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``train.amp`` on ``device`` (``None`` = full precision).

    ``auto``: bfloat16 on a CUDA device that supports it, float16 on older GPUs, full precision on CPU.
    ``bf16`` / ``fp16`` force the dtype on any device; ``off`` disables autocast.
    """
    mode = config.train.amp
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "fp16":
        return torch.float16
    if mode == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def build_grad_scaler(device: torch.device, autocast_dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Loss scaling for float16 autocast only: bfloat16 has float32's exponent range and needs none.

    A disabled scaler passes ``scale``/``step``/``update`` through, so the loop has one code path.
    """
    return torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)


def configure_torch_backends(device: torch.device, *, deterministic: bool) -> None:
    """Process-wide backend switches for a run on ``device``.

    ``deterministic``: deterministic algorithms (warning where an op has none), cuDNN autotuning off, and cuBLAS's
    fixed workspace on CUDA; repeatable runs at some speed cost. Otherwise, on CUDA, ``cudnn.benchmark`` lets
    cuDNN time and pick the fastest convolution algorithms for the input shapes it sees.
    """
    if deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts (first matmul)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def is_conv_net(model: nn.Module) -> bool:
    """Whether convolutions do most of ``model``'s work: more than one 2-D convolution (a ViT's patch embedding
    alone does not count)."""
    return sum(isinstance(module, nn.Conv2d) for module in model.modules()) > 1


def resolve_channels_last(setting: bool | str, device: torch.device, model: nn.Module) -> bool:
    """``train.channels_last``: ``auto`` is on for a conv net on CUDA (NHWC convolutions on tensor cores), off
    elsewhere (on the CPU NHWC is rarely faster); ``true`` / ``false`` force it."""
    if setting == "auto":
        return device.type == "cuda" and is_conv_net(model)
    return bool(setting)


# ------------------------------------------------------------------ data


def loader_workers(dataset: Dataset, configured: int) -> int:
    """``data.num_workers``, or 0 for a dataset that says its items cost nothing to fetch (``uses_workers = False``,
    e.g. cached features in memory: worker processes would only add their start-up and transfer per epoch)."""
    return configured if getattr(dataset, "uses_workers", True) else 0


def warn_validation_duplicates(config: Config, train_dataset: Dataset, val_dataset: Dataset | None) -> str | None:
    """Log one warning line when validation images duplicate training images (exact or near copies, see
    :func:`visiontune.data.duplicates.find_duplicates`), with the count and the command that shows them; returns it.

    Nothing when ``data.duplicates`` is off, there is no validation split, or a dataset cannot list its image files
    (``image_paths()``). The hashes are cached in ``<project>/.cache/image_hashes.json``: a second run only hashes new
    or changed files.
    """
    from visiontune.data.duplicates import HashCache, find_duplicates, hash_cache_path, leak_warning

    data = config.data
    train_paths, val_paths = (getattr(dataset, "image_paths", None) for dataset in (train_dataset, val_dataset))
    if not data.duplicates or val_dataset is None or not callable(train_paths) or not callable(val_paths):
        return None
    train_name, val_name = data.train_split, str(data.val_split)
    if train_name == val_name:
        return None  # the same split on purpose: every image would be its own duplicate
    groups = find_duplicates({train_name: train_paths(), val_name: val_paths()},
                             cache=HashCache(hash_cache_path(config.project)), num_workers=max(1, data.num_workers))
    line = leak_warning(groups, val_name, train_name)
    if line is not None:
        logger.warning("%s", line)
    return line


def build_train_sampler(dataset: Dataset, config: Config, info: comm.DistInfo) -> TrainSampler:
    """The training order of ``data.sampler``: ``random`` (:class:`TrainSampler`), ``balanced`` (classification:
    class-balanced draws, the dataset's length per epoch) or ``repeat_factor`` (detection, segmentation: LVIS repeat
    factors with ``data.repeat_thresh``, ``round(sum of the factors)`` samples per epoch), both a
    :class:`DrawTrainSampler` (:mod:`visiontune.data.samplers`).

    Raises:
        ConfigError: ``balanced`` for a dataset without class labels, ``repeat_factor`` for one without categories.
    """
    from visiontune.config import ConfigError
    from visiontune.data.samplers import balanced_draw, balanced_weights, repeat_factor_draw, repeat_factors

    data = config.data
    size = len(dataset)  # type: ignore[arg-type]  # map-style
    place = {"seed": config.seed, "rank": info.rank, "world_size": info.world_size}
    if data.sampler == "random":
        return TrainSampler(size, shuffle=True, **place)
    if data.sampler == "balanced":
        labels = getattr(dataset, "labels", None)
        if labels is None:
            raise ConfigError(f"data.sampler=balanced draws classes evenly: classification only, not task "
                              f"{config.task!r} (use data.sampler=repeat_factor for detection and segmentation)")
        return DrawTrainSampler(functools.partial(_draw_with, balanced_draw, balanced_weights(labels)), size, size,
                                **place)
    categories = getattr(dataset, "image_categories", None)
    if not callable(categories):
        raise ConfigError(f"data.sampler=repeat_factor repeats images of rare categories: detection and segmentation "
                          f"only, not task {config.task!r} (use data.sampler=balanced for classification)")
    factors = repeat_factors(categories(), data.repeat_thresh)
    epoch_length = max(1, round(float(factors.sum())))
    if info.is_main:
        logger.info("data.sampler=repeat_factor (data.repeat_thresh=%g): %d of %d images repeat (largest factor %.2f); "
                    "%d samples per epoch", data.repeat_thresh, int((factors > 1).sum()), size, float(factors.max()),
                    epoch_length)
    return DrawTrainSampler(functools.partial(_draw_with, repeat_factor_draw, factors), size, epoch_length, **place)


def _draw_with(draw: Any, weights: Any, seed: int, length: int) -> list[int]:
    """``draw(weights, length, seed)``: the :class:`DrawTrainSampler` interface over the draws of
    :mod:`visiontune.data.samplers`."""
    return draw(weights, length, seed)


def build_train_loader(task: Task, dataset: Dataset, config: Config,
                       info: comm.DistInfo) -> tuple[DataLoader, TrainSampler]:
    """The training loader and its resumable sampler (``sampler.set_epoch(epoch, start=samples_done)``).

    Batches drop the last incomplete one, as timm/torchvision do: a 1-image last batch breaks BatchNorm and skews
    the loss. When the task groups its samples (:meth:`Task.train_group_ids`, e.g. aspect-ratio bins), every
    batch that can be is drawn from one group, with the same number of batches per epoch.
    """
    data = config.data
    sampler = build_train_sampler(dataset, config, info)
    group_ids = task.train_group_ids(dataset)
    batch_sampler = None
    if group_ids is not None:
        batch_sampler = GroupedTrainBatchSampler(sampler, group_ids, batch_size=data.batch_size)
    loader = build_loader(
        SeededDataset(dataset), batch_size=data.batch_size, sampler=sampler, collate_fn=task.collate_fn(train=True),
        num_workers=loader_workers(dataset, data.num_workers), pin_memory=data.pin_memory,
        persistent_workers=data.persistent_workers, drop_last=True, batch_sampler=batch_sampler,
    )
    return loader, sampler


def build_val_loader(task: Task, dataset: Dataset, config: Config, info: comm.DistInfo | None = None, *,
                     persistent_workers: bool | None = None) -> DataLoader:
    """The validation loader (training's validation and ``visiontune eval``): every sample once over the ranks
    (``info``: this process's place, by default the initialised process group's)."""
    data = config.data
    info = info or comm.current_info()
    return build_loader(dataset, batch_size=data.eval_batch_size or data.batch_size,
                        sampler=ShardSampler(len(dataset), rank=info.rank,  # type: ignore[arg-type]
                                             world_size=info.world_size),
                        collate_fn=task.collate_fn(train=False), num_workers=loader_workers(dataset, data.num_workers),
                        pin_memory=data.pin_memory,
                        persistent_workers=data.persistent_workers if persistent_workers is None
                        else persistent_workers)


# ------------------------------------------------------------------ optimization


def scaled_lr(config: Config, global_batch: int) -> float:
    """``optim.lr`` scaled by ``optim.lr_scale`` for ``global_batch`` (reference: ``optim.lr_base_batch_size``)."""
    optim = config.optim
    ratio = global_batch / optim.lr_base_batch_size
    if optim.lr_scale == "linear":
        return optim.lr * ratio
    if optim.lr_scale == "sqrt":
        return optim.lr * math.sqrt(ratio)
    return optim.lr


def _timm_optimizer_name(config: Config) -> tuple[str, dict[str, Any]]:
    """timm's name for ``optim.name`` and the keyword arguments it takes from the config."""
    optim = config.optim
    kwargs: dict[str, Any] = {}
    name = optim.name.lower()
    if name in ("sgd", "momentum", "nesterov"):
        kwargs["momentum"] = optim.momentum
        if optim.nesterov or name == "nesterov":
            name = "nesterov"
        else:
            name = "momentum" if optim.momentum > 0 else "sgd"
    if optim.betas is not None:
        kwargs["betas"] = tuple(optim.betas)
    if optim.eps is not None:
        kwargs["eps"] = optim.eps
    return name, kwargs


def create_optimizer(config: Config, param_groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """timm's optimizer ``optim.name`` over ``param_groups``; an unknown name names the close matches."""
    from timm.optim import create_optimizer_v2

    name, kwargs = _timm_optimizer_name(config)
    groups = [dict(group) for group in param_groups]
    try:
        return create_optimizer_v2(groups, opt=name, lr=lr, weight_decay=config.optim.weight_decay, **kwargs)
    except (ValueError, AssertionError) as error:
        from timm.optim import list_optimizers

        from visiontune.registry import suggest

        raise ValueError(f"optim.name: {config.optim.name!r} is not a timm optimizer"
                         f"{suggest(name, [str(entry) for entry in list_optimizers()])} ({error})") from None


def build_ema(model: nn.Module, config: Config, device: torch.device) -> nn.Module | None:
    """timm's ``ModelEmaV3`` of ``model`` when ``train.ema``."""
    if not config.train.ema:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=config.train.ema_decay, device=device)


# ------------------------------------------------------------------ model wrapping


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod  # type: ignore[assignment]  # torch.compile's OptimizedModule
        else:
            return model


STATIC_GRAPH_TASKS = ("classification", "face_detection")
"""Tasks whose training step runs the same autograd graph every step (DDP ``static_graph``)."""


def wrap_model(model: nn.Module, config: Config, *, device: torch.device, distributed: bool,
               is_main: bool, static_graph: bool | None = None) -> nn.Module:
    """The module the loop calls: ``model`` (SyncBatchNorm-converted in place) in DDP, then compiled.

    DDP: ``find_unused_parameters`` only with ``train.find_unused_parameters`` (frozen parameters need not it:
    DDP never registers hooks for parameters without ``requires_grad``; it costs a graph traversal every step);
    ``gradient_as_bucket_view`` (gradients are views into the communication buckets: one copy and their memory
    less); ``static_graph`` when the graph is the same every step (``static_graph``: ``None`` decides from the
    config: classification and face detection, not with ``finetune.unfreeze_at_epoch``, which re-wraps the model
    with other trainable parameters, nor with ``find_unused_parameters``, nor with ``train.accumulate`` > 1: DDP's
    static graph fails with ``no_sync`` (an internal assert in the reducer, torch 2.x); never Mask R-CNN, whose
    heads branch on the proposals of the batch).
    """
    train = config.train
    if distributed:
        if train.sync_bn and device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif train.sync_bn and is_main:
            logger.warning("train.sync_bn: SyncBatchNorm runs on CUDA only; on %s every process keeps its own "
                           "BatchNorm statistics", device.type)
        device_ids = [device.index] if device.type == "cuda" else None
        find_unused = bool(getattr(train, "find_unused_parameters", False))
        if static_graph is None:
            static_graph = (config.task in STATIC_GRAPH_TASKS and config.finetune.unfreeze_at_epoch is None
                            and not find_unused and train.accumulate == 1)
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused,
                                                    gradient_as_bucket_view=True, static_graph=static_graph)
    if train.compile:
        try:
            model = torch.compile(model)  # type: ignore[assignment]  # an OptimizedModule, an nn.Module
        except Exception as error:  # noqa: BLE001 - compile support varies by platform
            logger.warning("torch.compile failed (%s); continuing without it", error)
    return model


# ------------------------------------------------------------------ the model and its optimization


@dataclass
class ModelSetup:
    """The model of a run as :func:`build_model` leaves it."""

    model: nn.Module
    parts: ModelParts
    """Which parameters are backbone and head (per-layer learning rates, freezing, head-only checkpoints)."""
    channels_last: bool
    """``train.channels_last`` resolved for this device and model (``auto``: a conv net on CUDA)."""
    frozen_names: list[str]
    """The parameters ``finetune.freeze`` froze."""


def build_model(task: Task, config: Config, device: torch.device, *, load_weights: bool) -> ModelSetup:
    """The task's model on ``device`` (channels-last when chosen) with ``finetune.freeze`` applied; warns about
    frozen random weights and an ``unfreeze_at_epoch`` that can do nothing. ``load_weights=False``: a resumed
    run, whose checkpoint brings the weights."""
    model = task.build_model(load_weights=load_weights).to(device)
    parts = task.model_parts(model)
    channels_last = resolve_channels_last(config.train.channels_last, device, model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    mode, argument = parse_freeze(config.finetune.freeze)
    frozen_names = freeze_parameters(model, mode, argument, parts)
    warn_frozen_random_weights(model, frozen_names, random_weights=load_weights and not any(
        key in task.meta for key in ("load_report", "backbone_load_report")))  # no report: random weights
    if load_weights:
        warn_unused_unfreeze(config.finetune.unfreeze_at_epoch, epochs=config.train.epochs, frozen_names=frozen_names)
    return ModelSetup(model, parts, channels_last, frozen_names)


@dataclass
class Optimization:
    """The optimizer and what steps with it, as :func:`build_optimization` leaves them."""

    batches_per_epoch: int
    """Micro-batches per epoch and process."""
    global_batch: int
    """Images per optimizer step over every process: ``data.batch_size`` x processes x ``train.accumulate``."""
    base_lr: float
    """``optim.lr`` scaled for the global batch (``optim.lr_scale``)."""
    param_groups: list[dict[str, Any]]
    optimizer: torch.optim.Optimizer
    scheduler: IterationScheduler
    scaler: torch.amp.GradScaler
    ema: Any
    """timm's ``ModelEmaV3`` of the model, or ``None``."""


def build_optimization(setup: ModelSetup, samples_per_rank: int, config: Config, info: comm.DistInfo, *,
                       device: torch.device, autocast_dtype: torch.dtype | None) -> Optimization:
    """Parameter groups (per-layer learning rates), optimizer, per-step schedule, loss scaler and EMA for a training
    split of ``samples_per_rank`` samples per process (the training sampler's ``per_rank``)."""
    batches_per_epoch = samples_per_rank // config.data.batch_size
    if batches_per_epoch == 0:
        raise ValueError(f"the training split has {samples_per_rank} images per process, fewer than "
                         f"data.batch_size={config.data.batch_size}; lower the batch size")
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / config.train.accumulate))
    global_batch = config.data.batch_size * info.world_size * config.train.accumulate
    base_lr = scaled_lr(config, global_batch)
    finetune = config.finetune
    param_groups = build_param_groups(
        setup.model, lr=base_lr, weight_decay=config.optim.weight_decay, parts=setup.parts,
        head_lr_mult=finetune.head_lr_mult, lr_mults=finetune.lr_mults, layer_decay=finetune.layer_decay,
        no_weight_decay_norm_bias=finetune.no_weight_decay_norm_bias)
    optimizer = create_optimizer(config, param_groups, base_lr)
    spec = build_schedule_spec(config.sched, epochs=config.train.epochs, steps_per_epoch=steps_per_epoch,
                               base_lr=base_lr)
    return Optimization(batches_per_epoch, global_batch, base_lr, param_groups, optimizer,
                        IterationScheduler(optimizer, spec), build_grad_scaler(device, autocast_dtype),
                        build_ema(setup.model, config, device))
