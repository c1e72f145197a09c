"""The training loop shared by every task: one readable loop with four hook points.

``Trainer(config).fit()`` builds everything from the config through the task, then runs epochs of
``train_one_epoch`` + ``evaluate``, writing ``metrics.csv``, plots and checkpoints to the run directory.
Hooks (:class:`Hook`) see ``before_step``, ``after_step``, ``after_epoch`` and ``on_eval``.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import signal
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from visiontune import __version__
from visiontune.config import Config, config_from_dict, config_to_dict, parse_freeze, save_config
from visiontune.config.loader import overlay_changed
from visiontune.utils import comm as dist_utils
from visiontune.engine.checkpoint import (
    CheckpointError,
    atomic_save,
    capture_rng_state,
    find_valid_checkpoint,
    load_checkpoint,
    restore_rng_state,
)
from visiontune.engine.data import SeededDataset, ShardSampler, TrainSampler, build_loader, sample_seed, seed_everything
from visiontune.engine.finetune import (
    build_param_groups,
    describe_param_groups,
    freeze_parameters,
    set_frozen_batchnorm_eval,
    unfreeze_all,
)
from visiontune.engine.run_dir import new_run_dir, newest_run_dir
from visiontune.engine.scheduler import IterationScheduler, build_schedule_spec
from visiontune.tasks import create_task
from visiontune.tasks.base import Evaluator, Task

logger = logging.getLogger(__name__)


PER_INVOCATION_KEYS = ("train.max_steps", "train.time_budget", "train.progress", "device")
"""Config keys that describe one invocation, not the run: a resume takes them from the new command line."""

REPEATED_SIGNAL_GRACE_S = 1.0
"""A SIGINT/SIGTERM this soon after the first one counts as the same request, not as the second signal that exits
at once: under torchrun, Ctrl-C reaches every worker twice (from the terminal, then forwarded by the agent)."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf (``train.nan_policy: error``)."""


class Hook:
    """Extension points of the loop; override any of the four methods. Exceptions propagate."""

    def before_step(self, trainer: Trainer) -> None:
        """Before each optimizer step's forward passes."""

    def after_step(self, trainer: Trainer, losses: dict[str, float]) -> None:
        """After each optimizer step, with the step's losses."""

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        """After each epoch, with its ``metrics.csv`` row."""

    def on_eval(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        """After each evaluation, with its metrics (``val_*`` keys)."""


@dataclass
class TrainState:
    """Counters that a checkpoint restores."""

    epoch: int = 0
    """The epoch being trained (0-based); after a finished epoch ``e`` it is ``e + 1``."""
    step: int = 0
    """Optimizer steps done."""
    batch_in_epoch: int = 0
    """Micro-batches of ``epoch`` already consumed (mid-epoch checkpoints)."""
    best_metric: float | None = None
    best_epoch: int | None = None
    evals_without_improvement: int = 0
    skipped_steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_loss_sums: dict[str, float] = field(default_factory=dict)
    """Sums of the step losses of ``epoch`` so far, so that a mid-epoch resume logs the whole epoch's mean."""
    epoch_loss_steps: int = 0
    """Steps counted in ``epoch_loss_sums``."""


@dataclass
class TrainResult:
    """What ``fit`` returns."""

    run_dir: Path
    best_metric: float | None
    best_epoch: int | None
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    stop_reason: str


def to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move tensors inside nested lists/tuples/dicts to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, dict):
        return {key: to_device(value, device, non_blocking) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(value, device, non_blocking) for value in obj)
    return obj


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


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


@torch.no_grad()
def run_evaluation(model: nn.Module, loader: DataLoader, evaluator: Evaluator, *, device: torch.device,
                   autocast_dtype: torch.dtype | None = None, progress: bool = False,
                   description: str = "eval") -> dict[str, float]:
    """Evaluate ``model`` on every batch of ``loader`` and return the synchronised metrics.

    This single function serves validation during training and ``visiontune eval``, so both report the
    same numbers for the same weights.
    """
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    evaluator.reset()
    iterator = tqdm(loader, desc=description, leave=False, disable=not progress, dynamic_ncols=True)
    for images, targets in iterator:
        images = to_device(images, device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):
            outputs = model(images)
        evaluator.update(to_device(outputs, torch.device("cpu")), targets)
    evaluator.synchronize()
    metrics = evaluator.compute()
    model.train(was_training)
    return metrics


class Trainer:
    """Builds a run from ``config`` and trains it.

    Args:
        config: The resolved config (``resume`` selects a checkpoint to continue).
        hooks: Extra :class:`Hook` objects.
    """

    def __init__(self, config: Config, hooks: Sequence[Hook] = ()) -> None:
        self.config = config
        self.hooks = list(hooks)
        self.state = TrainState()
        self.pending_stop: str | None = None
        """Why this process was asked to stop (:meth:`request_stop`), not yet agreed with the other ranks."""
        self.stop_requested: str | None = None
        """Why every rank stops after the current step (set on all ranks together)."""
        self._first_signal_time: float | None = None

    def request_stop(self, reason: str) -> None:
        """Stop after the current optimizer step and write ``last.pt`` (SIGINT/SIGTERM call this).

        Safe to call on one rank only (a signal, a hook): the ranks agree at the end of each step and stop
        together, so none is left waiting in a collective.
        """
        if self.pending_stop is None:
            self.pending_stop = reason

    # ------------------------------------------------------------------ setup
    def _resolve_resume(self) -> Path | None:
        resume = self.config.resume
        if resume in (None, False, "", "false"):
            if not self.config.train.auto_resume:
                return None
            resume = True
        if resume is True or resume == "true":
            run = newest_run_dir(Path(self.config.project) / self.config.task, self.config.name)
            if run is None:
                if self.config.train.auto_resume:
                    return None
                raise CheckpointError(
                    f"resume=true: no earlier run named {self.config.name!r} in "
                    f"{Path(self.config.project) / self.config.task}"
                )
            candidates = [p for p in run.glob("*.pt") if p.name != "best.pt"]
            found = find_valid_checkpoint(candidates)
            if found is None:
                if self.config.train.auto_resume:
                    return None
                raise CheckpointError(f"resume=true: no loadable checkpoint in {run}")
            return found
        path = Path(str(resume))
        if not path.is_file():
            raise CheckpointError(f"resume: checkpoint not found: {path}")
        return path

    def setup(self) -> None:
        """Build task, data, model, optimizer, scheduler, EMA and run directory (restoring a checkpoint)."""
        self.dist = dist_utils.env_dist_info()
        self.device = dist_utils.resolve_device(self.config.device, self.dist)  # a per-invocation key
        dist_utils.init_distributed(self.device)
        self.is_main = self.dist.is_main
        # rank 0 alone looks at the file system; workers restarted by torchrun must agree on checkpoint and run dir
        resume_path = dist_utils.main_process_result(self._resolve_resume)
        checkpoint = None
        if resume_path is not None:
            checkpoint = load_checkpoint(resume_path)
            # the checkpoint's config, with what this invocation set explicitly on top (e.g. more epochs);
            # per-invocation limits (max_steps, time budget) never carry over from the interrupted run
            stored = config_from_dict(checkpoint["config"])
            self.config = overlay_changed(stored, self.config, always=PER_INVOCATION_KEYS)
            self.config.resume = None
        config = self.config
        seed_everything(config.seed + self.dist.rank)
        configure_torch_backends(self.device, deterministic=config.train.deterministic)

        if checkpoint is not None:
            self.run_dir = resume_path.parent
        else:
            self.run_dir = dist_utils.main_process_result(
                lambda: new_run_dir(Path(config.project) / config.task, config.name))
        self.task: Task = create_task(config)
        if checkpoint is not None:
            self.task.load_meta(checkpoint.get("meta", {}))

        self.train_dataset = self.task.build_dataset(config.data.train_split, train=True)
        self.val_dataset = (self.task.build_dataset(config.data.val_split, train=False)
                            if config.data.val_split else None)
        self.model = self.task.build_model(load_weights=checkpoint is None).to(self.device)
        self.parts = self.task.model_parts(self.model)
        if config.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        mode, argument = parse_freeze(config.finetune.freeze)
        self.frozen_names = freeze_parameters(self.model, mode, argument, self.parts)

        self.train_sampler = TrainSampler(len(self.train_dataset), seed=config.seed, shuffle=True,
                                          rank=self.dist.rank, world_size=self.dist.world_size)
        self.train_loader = build_loader(
            SeededDataset(self.train_dataset), batch_size=config.data.batch_size, sampler=self.train_sampler,
            collate_fn=self.task.collate_fn(train=True), num_workers=config.data.num_workers,
            pin_memory=config.data.pin_memory, persistent_workers=config.data.persistent_workers, drop_last=True,
        )  # drop_last as timm/torchvision: a 1-image last batch breaks BatchNorm and skews the loss
        self.val_loader = None
        if self.val_dataset is not None:
            self.val_loader = build_loader(
                self.val_dataset, batch_size=config.data.eval_batch_size or config.data.batch_size,
                sampler=ShardSampler(len(self.val_dataset), rank=self.dist.rank, world_size=self.dist.world_size),
                collate_fn=self.task.collate_fn(train=False), num_workers=config.data.num_workers,
                pin_memory=config.data.pin_memory, persistent_workers=config.data.persistent_workers,
            )
        self.batches_per_epoch = self.train_sampler.per_rank // config.data.batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"the training split has {self.train_sampler.per_rank} images per process, fewer than "
                             f"data.batch_size={config.data.batch_size}; lower the batch size")
        self.steps_per_epoch = max(1, math.ceil(self.batches_per_epoch / config.train.accumulate))
        self.global_batch = global_batch = config.data.batch_size * self.dist.world_size * config.train.accumulate
        self.base_lr = self._scaled_lr(global_batch)
        param_groups = build_param_groups(
            self.model, lr=self.base_lr, weight_decay=config.optim.weight_decay, parts=self.parts,
            head_lr_mult=config.finetune.head_lr_mult, lr_mults=config.finetune.lr_mults,
            layer_decay=config.finetune.layer_decay,
            no_weight_decay_norm_bias=config.finetune.no_weight_decay_norm_bias,
        )
        self.optimizer = self._create_optimizer(param_groups)
        spec = build_schedule_spec(config.sched, epochs=config.train.epochs, steps_per_epoch=self.steps_per_epoch,
                                   base_lr=self.base_lr)
        self.scheduler = IterationScheduler(self.optimizer, spec)
        self.autocast_dtype = amp_dtype(config, self.device)
        self.scaler = build_grad_scaler(self.device, self.autocast_dtype)
        self.ema = None
        if config.train.ema:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=config.train.ema_decay, device=self.device)
        if checkpoint is not None:
            self._restore(checkpoint)
            logger.info("resumed from %s at epoch %d, step %d", resume_path, self.state.epoch, self.state.step)
            if self.state.epoch >= config.train.epochs and self.is_main:
                logger.warning("%s already finished its %d epochs: nothing left to train (raise train.epochs to "
                               "continue it, or use another name to start a new run)", self.run_dir,
                               config.train.epochs)
        self.train_model = self._wrap_model()
        if self.is_main:
            save_config(config, self.run_dir / "config.yaml")
            logger.info("run directory: %s", self.run_dir)
            logger.info("global batch %d = %d per device x %d devices x %d accumulation; lr %.4g (base %.4g, "
                        "scaling %s)", global_batch, config.data.batch_size, self.dist.world_size,
                        config.train.accumulate, self.base_lr, config.optim.lr, config.optim.lr_scale)
            logger.info("device %s%s; autocast %s (loss scaling %s); channels_last %s; torch.compile %s", self.device,
                        f", DDP over {self.dist.world_size} processes ({dist_utils.backend_name()})"
                        if self.dist.enabled else "", self.autocast_dtype or "off",
                        "on" if self.scaler.is_enabled() else "off", config.train.channels_last,
                        config.train.compile)
            logger.info("optimizer %s param groups:\n%s", config.optim.name, describe_param_groups(param_groups))

    def _scaled_lr(self, global_batch: int) -> float:
        optim = self.config.optim
        ratio = global_batch / optim.lr_base_batch_size
        if optim.lr_scale == "linear":
            return optim.lr * ratio
        if optim.lr_scale == "sqrt":
            return optim.lr * math.sqrt(ratio)
        return optim.lr

    def _create_optimizer(self, param_groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        from timm.optim import create_optimizer_v2

        optim = self.config.optim
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
        groups = [{key: value for key, value in group.items()} for group in param_groups]
        try:
            return create_optimizer_v2(groups, opt=name, lr=self.base_lr, weight_decay=optim.weight_decay,
                                       **kwargs)
        except (ValueError, AssertionError) as error:
            from timm.optim import list_optimizers

            from visiontune.registry import suggest

            raise ValueError(f"optim.name: {optim.name!r} is not a timm optimizer{suggest(name, list_optimizers())}"
                             f" ({error})") from None

    def _wrap_model(self) -> nn.Module:
        """The module the loop calls: ``self.model`` (SyncBatchNorm-converted in place) in DDP, then compiled."""
        model = self.model
        if self.dist.enabled:
            if self.config.train.sync_bn and self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            elif self.config.train.sync_bn and self.is_main:
                logger.warning("train.sync_bn: SyncBatchNorm runs on CUDA only; on %s every process keeps its own "
                               "BatchNorm statistics", self.device.type)
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            has_frozen = any(not p.requires_grad for p in model.parameters())
            model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                                        find_unused_parameters=has_frozen)
        if self.config.train.compile:
            try:
                model = torch.compile(model)
            except Exception as error:  # noqa: BLE001 - compile support varies by platform
                logger.warning("torch.compile failed (%s); continuing without it", error)
        return model

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_dict(self) -> dict[str, Any]:
        """The plain dict written to ``last.pt`` / ``best.pt`` / ``step_*.pt``."""
        return {
            "version": __version__,
            "task": self.config.task,
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "epoch": self.state.epoch,
            "step": self.state.step,
            "batch_in_epoch": self.state.batch_in_epoch,
            "best_metric": self.state.best_metric,
            "best_epoch": self.state.best_epoch,
            "evals_without_improvement": self.state.evals_without_improvement,
            "skipped_steps": self.state.skipped_steps,
            "world_size": self.dist.world_size,
            "history": self.state.history,
            "epoch_loss_sums": dict(self.state.epoch_loss_sums),
            "epoch_loss_steps": self.state.epoch_loss_steps,
            "config": config_to_dict(self.config),
            "meta": self.task.state_for_checkpoint(),
            "rng": capture_rng_state(),
        }

    def save_checkpoint(self, name: str) -> Path | None:
        """Atomically write a checkpoint named ``name`` on rank 0, then wait for every rank."""
        path = None
        if self.is_main:
            path = atomic_save(self.checkpoint_dict(), self.run_dir / name)
        dist_utils.barrier()
        return path

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        unwrap(self.model).load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        if self.ema is not None and checkpoint.get("ema") is not None:
            self.ema.module.load_state_dict(checkpoint["ema"])
        self.state = TrainState(
            epoch=checkpoint["epoch"], step=checkpoint["step"], batch_in_epoch=checkpoint.get("batch_in_epoch", 0),
            best_metric=checkpoint.get("best_metric"), best_epoch=checkpoint.get("best_epoch"),
            evals_without_improvement=checkpoint.get("evals_without_improvement", 0),
            skipped_steps=checkpoint.get("skipped_steps", 0), history=list(checkpoint.get("history", [])),
            epoch_loss_sums=dict(checkpoint.get("epoch_loss_sums", {})),
            epoch_loss_steps=checkpoint.get("epoch_loss_steps", 0),
        )
        unfreeze_at = self.config.finetune.unfreeze_at_epoch
        if unfreeze_at is not None and self.state.epoch >= unfreeze_at:
            unfreeze_all(self.model)
        if "rng" in checkpoint:
            restore_rng_state(checkpoint["rng"])
        stored_world_size = checkpoint.get("world_size", self.dist.world_size)
        if stored_world_size != self.dist.world_size and self.is_main:
            logger.warning("the checkpoint was written by %d processes and this run has %d: the global batch changes%s",
                           stored_world_size, self.dist.world_size,
                           "; the rest of the interrupted epoch is split anew, so a few of its samples may be seen "
                           "twice or not at all" if self.state.batch_in_epoch else "")

    def _prune_step_checkpoints(self) -> None:
        step_files = sorted(self.run_dir.glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        for old in step_files[: max(0, len(step_files) - self.config.train.keep_last)]:
            old.unlink(missing_ok=True)

    # ------------------------------------------------------------------ training
    def _loss_value(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        if not isinstance(losses, dict) or not losses:
            raise TypeError("in train mode the model must return a non-empty dict of losses "
                            f"(got {type(losses).__name__})")
        return sum(losses.values())

    def _handle_non_finite(self, loss_values: dict[str, float], last_finite: float | None) -> bool:
        """Return True when the step must be skipped; raise under ``nan_policy: error``."""
        if self.config.train.nan_policy == "error":
            raise NonFiniteLossError(
                f"non-finite loss at epoch {self.state.epoch}, step {self.state.step}: {loss_values}; "
                f"last finite loss: {last_finite}. Lower optim.lr, enable train.clip_grad, check the data, "
                "or set train.nan_policy=skip to skip such steps"
            )
        self.state.skipped_steps += 1
        logger.warning("skipping step %d: non-finite loss %s (%d skipped so far)", self.state.step, loss_values,
                       self.state.skipped_steps)
        return True

    def train_one_epoch(self) -> dict[str, float]:
        """One pass over the training data; returns averaged losses, lr and throughput."""
        from tqdm import tqdm

        config = self.config
        epoch = self.state.epoch
        if config.finetune.unfreeze_at_epoch is not None and epoch == config.finetune.unfreeze_at_epoch \
                and self.frozen_names:
            unfreeze_all(self.model)
            self.frozen_names = []
            self.train_model = self._wrap_model()
            logger.info("epoch %d: unfroze every layer (finetune.unfreeze_at_epoch)", epoch)
        self.train_model.train()
        set_frozen_batchnorm_eval(self.model)
        start_batch = self.state.batch_in_epoch
        self.train_sampler.set_epoch(epoch, start=start_batch * config.data.batch_size)
        if start_batch == 0:
            self.state.epoch_loss_sums, self.state.epoch_loss_steps = {}, 0
        totals = self.state.epoch_loss_sums  # updated in place: mid-epoch checkpoints carry them
        images_seen = 0
        last_finite: float | None = None
        accumulate = config.train.accumulate
        batches_total = self.batches_per_epoch
        progress = tqdm(total=batches_total, initial=start_batch, desc=f"epoch {epoch + 1}/{config.train.epochs}",
                        disable=not (config.train.progress and self.is_main), dynamic_ncols=True, leave=True)
        started = time.perf_counter()
        micro = 0
        step_losses: list[dict[str, torch.Tensor]] = []
        batch_index = start_batch
        for images, targets in self.train_loader:
            if micro == 0:
                for hook in self.hooks:
                    hook.before_step(self)
                # dropout / mixup randomness depends only on (seed, step, rank): exact resumes
                seed_everything(sample_seed(config.seed, self.state.step, 1_000_000 + self.dist.rank))
                if config.train.nan_policy == "skip":  # a skipped step must not leave NaN in BN statistics
                    buffers_before = [buffer.detach().clone() for buffer in self.model.buffers()]
            images = to_device(images, self.device, non_blocking=True)
            targets = to_device(targets, self.device, non_blocking=True)
            if config.train.channels_last and isinstance(images, torch.Tensor):
                images = images.contiguous(memory_format=torch.channels_last)
            images, targets = self.task.prepare_train_batch(images, targets)
            batch_index += 1
            micro += 1
            final_micro = micro == accumulate or batch_index == batches_total
            sync_context = (self.train_model.no_sync() if self.dist.enabled and not final_micro
                            and isinstance(self.train_model, nn.parallel.DistributedDataParallel)
                            else contextlib.nullcontext())
            with sync_context:
                with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype or torch.float32,
                                    enabled=self.autocast_dtype is not None):
                    losses = self.train_model(images, targets)
                    loss = self._loss_value(losses)
                self.scaler.scale(loss / accumulate).backward()
            step_losses.append({k: v.detach() for k, v in losses.items()})
            images_seen += self.task.batch_size_of(images)
            if not final_micro:
                continue
            loss_values = self._reduce_step_losses(step_losses)
            skip = False
            if not math.isfinite(loss_values["loss"]):  # the same on every rank: the values are reduced
                skip = self._handle_non_finite(loss_values, last_finite)
            if skip:
                self.optimizer.zero_grad(set_to_none=True)
                with torch.no_grad():
                    for buffer, saved in zip(self.model.buffers(), buffers_before):
                        buffer.copy_(saved)
            else:
                if config.train.clip_grad is not None:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.train.clip_grad)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                if self.ema is not None:
                    self.ema.update(self.model, step=self.state.step)
                last_finite = loss_values["loss"]
                for key, value in loss_values.items():
                    totals[key] = totals.get(key, 0.0) + value
                self.state.epoch_loss_steps += 1
            self.state.step += 1
            self.scheduler.step()
            self.state.batch_in_epoch = batch_index
            micro = 0
            step_losses = []
            elapsed = time.perf_counter() - started
            progress.update(batch_index - progress.n)
            progress.set_postfix(loss=f"{loss_values['loss']:.4f}", lr=f"{self.optimizer.param_groups[-1]['lr']:.3g}",
                                 img_s=f"{images_seen * self.dist.world_size / max(elapsed, 1e-9):.1f}")
            for hook in self.hooks:
                hook.after_step(self, loss_values)
            if config.train.save_every_steps and self.state.step % config.train.save_every_steps == 0:
                self.save_checkpoint(f"step_{self.state.step}.pt")
                if self.is_main:
                    self._prune_step_checkpoints()
            if self._should_stop_early():
                break
        progress.close()
        elapsed = time.perf_counter() - started
        result = {f"train_{k}" if k != "loss" else "train_loss": v / max(1, self.state.epoch_loss_steps)
                  for k, v in totals.items()}
        result["lr"] = self.optimizer.param_groups[-1]["lr"]
        result["epoch_time_s"] = elapsed
        result["images_per_s"] = images_seen * self.dist.world_size / max(elapsed, 1e-9)
        skipped = getattr(self.train_dataset, "num_skipped", 0)
        if skipped:
            logger.warning("%d corrupt training images were skipped so far (data.on_corrupt=skip)", skipped)
            result["skipped_images"] = skipped
        return result

    def _reduce_step_losses(self, step_losses: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        """The step's losses, averaged over its micro-batches and over all ranks, plus their sum ``loss``.

        One ``all_reduce`` per step: every rank logs the same numbers and agrees on skipping a non-finite step
        (a NaN on any rank makes the average NaN).
        """
        names = list(step_losses[0])
        means = torch.stack([torch.stack([losses[name].float() for losses in step_losses]).mean() for name in names])
        dist_utils.all_reduce_sum(means)
        values = {name: value / self.dist.world_size for name, value in zip(names, means.tolist())}
        values["loss"] = sum(values.values())
        return values

    def _agree_to_stop(self) -> bool:
        """Whether any rank was asked to stop; if so ``stop_requested`` is set on every rank."""
        (stop,) = dist_utils.any_rank([self.pending_stop is not None], self.device)
        if stop and self.stop_requested is None:
            self.stop_requested = self.pending_stop or "stop requested on another rank"
        return stop

    def _should_stop_early(self) -> bool:
        """After each step: end the epoch now (a stop requested on any rank, or ``train.max_steps`` reached)."""
        if self._agree_to_stop():
            return True
        max_steps = self.config.train.max_steps
        return max_steps is not None and self.state.step >= max_steps

    @contextlib.contextmanager
    def _explain_out_of_memory(self, phase: str) -> Iterator[None]:
        """Re-raise ``torch.OutOfMemoryError`` with the batch size in use and what to change."""
        try:
            yield
        except torch.OutOfMemoryError as error:
            data, accumulate = self.config.data, self.config.train.accumulate
            detail = str(error).strip().splitlines()[0] if str(error).strip() else "no details"
            if phase == "evaluation":
                batch = data.eval_batch_size or data.batch_size
                advice = f"lower data.eval_batch_size (now {batch})"
            elif data.batch_size > 1:
                batch = data.batch_size
                smaller = max(d for d in range(1, data.batch_size) if data.batch_size % d == 0)  # keeps global batch
                advice = (f"lower data.batch_size and raise train.accumulate to keep the global batch of "
                          f"{self.global_batch}, e.g. data.batch_size={smaller} "
                          f"train.accumulate={accumulate * data.batch_size // smaller}")
            else:
                batch = 1
                advice = "data.batch_size is already 1: lower data.image_size or pick a smaller model"
            if self.autocast_dtype is None and self.device.type == "cuda":
                advice += "; train.amp=auto also halves activation memory"
            raise torch.OutOfMemoryError(
                f"out of memory during {phase} on {self.device} with a batch of {batch} images per device "
                f"(data.batch_size={data.batch_size}, train.accumulate={accumulate}, {self.dist.world_size} "
                f"process(es)): {advice}. ({detail})") from error

    def evaluate(self) -> dict[str, float]:
        """Validation metrics of the model (``val_*``) and of its EMA (``val_ema_*``)."""
        if self.val_loader is None:
            return {}
        metrics = {f"val_{k}": v for k, v in run_evaluation(
            self.model, self.val_loader, self.task.build_evaluator(self.val_dataset), device=self.device,
            autocast_dtype=self.autocast_dtype, progress=self.config.train.progress and self.is_main,
            description="val").items()}
        if self.ema is not None:
            metrics.update({f"val_ema_{k}": v for k, v in run_evaluation(
                self.ema.module, self.val_loader, self.task.build_evaluator(self.val_dataset), device=self.device,
                autocast_dtype=self.autocast_dtype, progress=False).items()})
        return metrics

    @property
    def metric_key(self) -> str:
        return "val_" + (self.config.train.metric or self.task.default_metric)

    @property
    def metric_mode(self) -> str:
        return self.config.train.metric_mode or self.task.metric_mode

    def _is_better(self, value: float) -> bool:
        best = self.state.best_metric
        if best is None:
            return True
        return value > best if self.metric_mode == "max" else value < best

    def _write_metrics(self, row: dict[str, Any]) -> None:
        path = self.run_dir / "metrics.csv"
        columns: list[str] = []
        for entry in self.state.history:
            for key in entry:
                if key not in columns:
                    columns.append(key)
        with path.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=columns)
            writer.writeheader()
            for entry in self.state.history:
                writer.writerow(entry)
        if self.config.train.plots:
            from visiontune.utils.plots import plot_training_curves

            try:
                plot_training_curves(self.state.history, self.run_dir / "plots")
            except Exception as error:  # noqa: BLE001 - a plot must never kill a training run
                logger.warning("could not draw the training curves: %s", error)
        if self._tensorboard is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self._tensorboard.add_scalar(key, value, row["epoch"])
            self._tensorboard.flush()

    def _install_signal_handlers(self) -> list[tuple[int, Any]]:
        """SIGINT/SIGTERM: the first requests a stop with a checkpoint, a second one exits at once."""
        previous = []

        def handler(signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            now = time.monotonic()
            if self._first_signal_time is not None:
                if now - self._first_signal_time < REPEATED_SIGNAL_GRACE_S:
                    return  # the same request delivered twice (terminal + torchrun agent)
                raise KeyboardInterrupt(f"second signal {name}: exiting at once, without a checkpoint")
            self._first_signal_time = now
            self.request_stop(f"signal {name}")
            logger.warning("%s received: stopping after this step with a checkpoint (send it again to exit at once)",
                           name)

        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                previous.append((signum, signal.signal(signum, handler)))
            except ValueError:  # not in the main thread
                pass
        return previous

    def fit(self) -> TrainResult:
        """Train for ``train.epochs`` (or until early stopping / time budget / ``max_steps``)."""
        self.setup()
        config = self.config
        self._tensorboard = None
        if config.train.tensorboard and self.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(self.run_dir / "tensorboard"))
        previous_handlers = self._install_signal_handlers()
        started = time.perf_counter()
        stop_reason = "completed"
        last_metrics: dict[str, float] = {}
        try:
            while self.state.epoch < config.train.epochs:
                epoch = self.state.epoch
                with self._explain_out_of_memory("training"):
                    train_stats = self.train_one_epoch()
                if self.stop_requested and self.state.batch_in_epoch < self.batches_per_epoch:
                    self.save_checkpoint("last.pt")  # mid-epoch: resumes at the next batch
                    stop_reason = self.stop_requested
                    self._log_stop()
                    break
                self.state.epoch = epoch + 1
                self.state.batch_in_epoch = 0
                row: dict[str, Any] = {"epoch": epoch + 1, "step": self.state.step, **train_stats}
                evaluate_now = (self.val_loader is not None and ((epoch + 1) % config.train.eval_every == 0
                                                                  or self.state.epoch >= config.train.epochs))
                improved = False
                if evaluate_now:
                    with self._explain_out_of_memory("evaluation"):
                        metrics = self.evaluate()
                    last_metrics = metrics
                    row.update(metrics)
                    for hook in self.hooks:
                        hook.on_eval(self, metrics)
                    if self.metric_key not in metrics:
                        raise KeyError(f"train.metric: {self.metric_key[4:]!r} is not among the validation metrics "
                                       f"{sorted(k[4:] for k in metrics)}")
                    value = metrics[self.metric_key]
                    if self._is_better(value):
                        self.state.best_metric, self.state.best_epoch = value, epoch + 1
                        self.state.evals_without_improvement = 0
                        improved = True
                    else:
                        self.state.evals_without_improvement += 1
                self.state.history.append(row)
                if self.is_main:
                    self._write_metrics(row)
                self.save_checkpoint("last.pt")
                if improved and self.is_main:
                    atomic_save(self.checkpoint_dict(), self.run_dir / "best.pt")
                for hook in self.hooks:
                    hook.after_epoch(self, row)
                if self.is_main:
                    logger.info("epoch %d: %s", epoch + 1, ", ".join(
                        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "epoch"))
                if self._agree_to_stop():
                    stop_reason = self.stop_requested
                    self._log_stop()
                    break
                if config.train.max_steps is not None and self.state.step >= config.train.max_steps:
                    stop_reason = "max_steps"
                    break
                if config.train.patience is not None and self.state.evals_without_improvement >= config.train.patience:
                    stop_reason = (f"early stopping: no improvement of {self.metric_key} in {config.train.patience} "
                                   "evaluations")
                    logger.info("%s", stop_reason)
                    break
                if config.train.time_budget is not None and dist_utils.any_rank(
                        [(time.perf_counter() - started) / 60 >= config.train.time_budget], self.device)[0]:
                    stop_reason = f"time budget of {config.train.time_budget} min reached"
                    logger.info("%s", stop_reason)
                    break
        finally:
            for signum, handler in previous_handlers:
                signal.signal(signum, handler)
            if self._tensorboard is not None:
                self._tensorboard.close()
        if self.is_main and self.val_dataset is not None and (self.run_dir / "best.pt").exists():
            self._save_eval_artifacts()
        return TrainResult(run_dir=self.run_dir, best_metric=self.state.best_metric, best_epoch=self.state.best_epoch,
                           metrics=last_metrics, history=self.state.history, stop_reason=stop_reason)

    def _log_stop(self) -> None:
        if self.is_main:
            logger.warning("%s: stopped after step %d; continue with resume=%s (or train.auto_resume=true)",
                           self.stop_requested, self.state.step, self.run_dir / "last.pt")

    def _save_eval_artifacts(self) -> None:
        """Confusion matrix / PR curves of the best checkpoint, in ``<run>/eval``."""
        if self.dist.enabled:
            return  # artifacts need the whole split in one process; `visiontune eval` writes them
        best = load_checkpoint(self.run_dir / "best.pt")
        unwrap(self.model).load_state_dict(best["model"])
        evaluator = self.task.build_evaluator(self.val_dataset)
        run_evaluation(self.model, self.val_loader, evaluator, device=self.device, autocast_dtype=self.autocast_dtype)
        try:
            evaluator.save_artifacts(self.run_dir / "eval")
        except Exception as error:  # noqa: BLE001 - artifacts are a convenience, never a failure
            logger.warning("could not write evaluation artifacts: %s", error)


def train(config: Config, hooks: Iterable[Hook] = ()) -> TrainResult:
    """Python API: train ``config`` and return the result (``visiontune.train``)."""
    return Trainer(config, hooks=list(hooks)).fit()


def build_eval_loader(task: Task, dataset: Dataset, config: Config) -> DataLoader:
    """The validation loader used by ``visiontune eval`` (same batching as during training)."""
    info = dist_utils.current_info()
    return build_loader(dataset, batch_size=config.data.eval_batch_size or config.data.batch_size,
                        sampler=ShardSampler(len(dataset), rank=info.rank, world_size=info.world_size),
                        collate_fn=task.collate_fn(train=False), num_workers=config.data.num_workers,
                        pin_memory=config.data.pin_memory, persistent_workers=False)
