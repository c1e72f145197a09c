"""The trainer of every task: builds a run from a config and trains it with :class:`~visiontune.engine.train_loop.
TrainerBase`'s loop.

``Trainer(config, hooks).fit()``: :meth:`Trainer.setup` resolves a resume, builds task, data, model and optimization
with the builders of :mod:`visiontune.engine.build`, claims the run folder and writes its files, and builds the hooks
(:func:`~visiontune.engine.hooks.default_hooks`, with the user's among them) with their state restored; then the loop
trains. Rank 0 logs the run to ``<run>/train.log``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visiontune import __version__
from visiontune.config import Config, config_from_dict, config_to_dict, save_config
from visiontune.config.loader import overlay_changed
from visiontune.engine.build import (
    amp_dtype,
    build_model,
    build_optimization,
    build_train_loader,
    build_val_loader,
    configure_torch_backends,
    resolve_resume,
    unwrap,
    warn_validation_duplicates,
    wrap_model,
)
from visiontune.engine.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    atomic_save,
    atomic_write_text,
    capture_rng_state,
    load_checkpoint,
    remove_stale_temp_files,
    restore_rng_state,
)
from visiontune.engine.events import EventStorage
from visiontune.engine.faults import SIGNAL_EXIT_CODES, explain_out_of_memory
from visiontune.engine.finetune import describe_param_groups, unfreeze_all
from visiontune.engine.hooks import HookBase, TrainState, default_hooks, selection_metric
from visiontune.engine.inference import validate
from visiontune.engine.loaders import seed_everything
from visiontune.engine.run_dir import RunLock, check_run_name, is_run_dir, mark_run_dir, new_run_dir
from visiontune.engine.run_log import RUN_INFO_FILE, RunLog, environment_lines, run_info
from visiontune.engine.step import TrainStep
from visiontune.engine.stop import StopController
from visiontune.engine.trackers import arrange_trackers
from visiontune.engine.train_loop import TrainerBase
from visiontune.tasks import create_task
from visiontune.utils import comm

logger = logging.getLogger(__name__)

__all__ = ["PER_INVOCATION_KEYS", "TrainResult", "Trainer"]

PER_INVOCATION_KEYS = ("train.max_steps", "train.time_budget", "train.progress", "device")
"""Config keys that describe one invocation, not the run: a resume takes them from the new command line."""


@dataclass
class TrainResult:
    """What ``fit`` returns."""

    run_dir: Path
    best_metric: float | None
    best_epoch: int | None
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    stop_reason: str
    stopped_by_signal: str | None = None
    """``"SIGTERM"`` / ``"SIGINT"`` when a signal stopped the run (``last.pt`` is written; resume it), else ``None``."""
    exit_code: int = 0
    """The process exit status for this result: 0 when training ended by itself, 143 (SIGTERM) or 130 (SIGINT)
    when a signal stopped it (:data:`~visiontune.engine.faults.SIGNAL_EXIT_CODES`), so that a scheduler can tell
    preemption from the end. The ``train`` command exits with it."""
    summary: dict[str, Any] | None = None
    """Baseline, best and last validation metrics and more (:func:`visiontune.engine.hooks.summarize_history`; the
    content of ``<run>/summary.json``)."""


class Trainer(TrainerBase):
    """Builds a run from ``config`` and trains it.

    Args:
        config: The resolved config (``resume`` selects a checkpoint to continue).
        hooks: The user's :class:`~visiontune.engine.hooks.HookBase` objects (they run after the built-in
            evaluation, writers and epoch checkpoint, before the console output and the stop conditions).
        final_hooks: Hooks that run after all built-in ones (the run report reads the files the others write).
        run_dir: A run folder made beforehand with :func:`~visiontune.engine.run_dir.new_run_dir` to train in instead
            of a new ``<project>/<task>/<name>[-N]`` (the trials of ``visiontune tune``); not with ``resume``.
    """

    def __init__(self, config: Config, hooks: Sequence[HookBase] = (), final_hooks: Sequence[HookBase] = (),
                 run_dir: Path | None = None) -> None:
        self.config = config
        self.given_run_dir = run_dir
        self.user_hooks, self.final_hooks = list(hooks), list(final_hooks)
        self.hooks = list(self.user_hooks)
        """Every hook in calling order once :meth:`setup` built them."""
        self.state = TrainState()
        self.storage = EventStorage()
        self.stop = StopController()
        self.fit_started = time.perf_counter()
        """When :meth:`fit` began (setup included): the start of the run's wall time."""
        self.last_saved_step: int | None = None
        """The step of the state in ``last.pt`` (None: not written by this invocation nor resumed from)."""
        self.run_log: RunLog | None = None
        self.run_lock = RunLock()
        """Rank 0: the run folder's lock, claimed before anything is written there and held until :meth:`fit` ends."""

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Build task, data, model and optimization (restoring a checkpoint), the run folder and the hooks.

        Nothing is written before the run can start: ``name`` is checked first, and the run folder is created (or
        chosen, on resume) only once task, datasets and model are built, so a bad config, a missing data folder or
        unusable weights leave no folder behind. ``train.log`` keeps the lines logged before it existed.
        """
        check_run_name(self.config.name)
        self.dist = comm.env_dist_info()
        self.device = comm.resolve_device(self.config.device, self.dist)  # a per-invocation key
        comm.init_distributed(self.device)
        self.is_main = self.dist.is_main
        checkpoint, resume_path = self._load_resume_checkpoint()
        config = self.config
        check_run_name(config.name)  # a resumed run takes the checkpoint's name unless given
        seed_everything(config.seed + self.dist.rank)
        configure_torch_backends(self.device, deterministic=config.train.deterministic)
        self.task = create_task(config)
        self.task.check_metric(config.train.metric)  # a misspelt metric fails now, not after an epoch
        self.autocast_dtype = amp_dtype(config, self.device)
        self.storage = EventStorage(self.dist.world_size)
        self.run_log = RunLog(None, enabled=self.is_main)
        self.run_log.write_header(config, environment_lines(
            device=self.device, world_size=self.dist.world_size, autocast_dtype=self.autocast_dtype,
            loss_scaling=self.autocast_dtype == torch.float16))
        with self.run_log.attached():
            self._build(checkpoint, resume_path)
        self.hooks = self.build_hooks()
        if checkpoint is not None:
            for hook in self.hooks:
                hook.load_state_dict(checkpoint)

    def _load_resume_checkpoint(self) -> tuple[dict[str, Any] | None, Path | None]:
        """The checkpoint to resume (``None`` for a new run); its config becomes ``self.config``, with what this
        invocation set explicitly on top (e.g. more epochs) and the per-invocation keys of this invocation."""
        # rank 0 alone looks at the file system; workers restarted by torchrun must agree on checkpoint and run dir
        resume_path = comm.main_process_result(lambda: resolve_resume(self.config))
        if resume_path is None:
            return None, None
        checkpoint = load_checkpoint(resume_path)
        self.config = overlay_changed(config_from_dict(checkpoint["config"]), self.config, always=PER_INVOCATION_KEYS)
        self.config.resume = None
        return checkpoint, resume_path

    def _build(self, checkpoint: dict[str, Any] | None, resume_path: Path | None) -> None:
        config = self.config
        if checkpoint is not None:
            self.task.load_meta(checkpoint.get("meta", {}))
        self.train_dataset = self.task.build_dataset(config.data.train_split, train=True)
        val_split = config.data.val_split
        self.val_dataset = self.task.build_dataset(val_split, train=False) if val_split else None
        self.task.check_metric(config.train.metric)  # now that the data tells which metrics exist (top5: > 5 classes)
        setup = build_model(self.task, config, self.device, load_weights=checkpoint is None)
        self.model, self.parts, self.channels_last, self.frozen_names = (
            setup.model, setup.parts, setup.channels_last, setup.frozen_names)
        self._build_loaders()
        self.optimization = optimization = build_optimization(
            setup, self.train_sampler.per_rank, config, self.dist, device=self.device,
            autocast_dtype=self.autocast_dtype)
        self.batches_per_epoch = optimization.batches_per_epoch
        self.optimizer, self.scaler, self.ema = optimization.optimizer, optimization.scaler, optimization.ema
        self.train_step = TrainStep(self.model, self.model, self.optimizer, self.scaler, self.task, config,
                                    device=self.device, autocast_dtype=self.autocast_dtype,
                                    channels_last=self.channels_last, rank=self.dist.rank)
        if checkpoint is not None:
            self._restore(checkpoint, resume_path)
        self.rewrap_model()
        # every rank agrees on the folder that rank 0 creates; nothing was written before this point
        self.run_dir = comm.main_process_result(lambda: self._choose_run_dir(resume_path))
        if checkpoint is not None:  # said once the run folder is ours (a training still running there refuses this)
            logger.info("resumed from %s at epoch %d, step %d", resume_path, self.state.epoch, self.state.step)
        assert self.run_log is not None
        self.run_log.open(self.run_dir / "train.log")
        if self.is_main:  # once the start cannot fail for bad settings: a failed start writes nothing (no hash cache)
            warn_validation_duplicates(config, self.train_dataset, self.val_dataset)
        self._prepare_task_datasets()
        if self.is_main:
            self._write_run_files()

    def _restore(self, checkpoint: dict[str, Any], resume_path: Path | None) -> None:
        """The model, optimizer, scaler, counters and random state of ``checkpoint`` (the hooks restore theirs once
        built: schedule, EMA, best metric)."""
        unwrap(self.model).load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.state.load_state_dict(checkpoint)
        self.storage.load_state_dict(checkpoint)
        self.train_step.load_state_dict(checkpoint)
        self.last_saved_step = self.state.step
        unfreeze_at = self.config.finetune.unfreeze_at_epoch
        if unfreeze_at is not None and self.state.epoch >= unfreeze_at:
            unfreeze_all(self.model)  # before the model is wrapped: DDP needs the final trainable parameters
        if "rng" in checkpoint:
            restore_rng_state(checkpoint["rng"])
        if not self.is_main:
            return
        stored_world_size = checkpoint.get("world_size", self.dist.world_size)
        if stored_world_size != self.dist.world_size:
            logger.warning("the checkpoint was written by %d processes and this run has %d: the global batch changes%s",
                           stored_world_size, self.dist.world_size,
                           "; the rest of the interrupted epoch is split anew, so a few of its samples may be seen "
                           "twice or not at all" if self.state.batch_in_epoch else "")
        if self.state.epoch >= self.config.train.epochs:
            logger.warning("%s already finished its %d epochs: nothing left to train (raise train.epochs to continue "
                           "it, or use another name to start a new run)", resume_path, self.config.train.epochs)

    def _choose_run_dir(self, resume_path: Path | None) -> Path:
        """Rank 0: the run folder. A new one under ``<project>/<task>``; on resume the checkpoint's folder when it is
        a run folder (:func:`is_run_dir`), else a new one, so that nothing is written next to a copied checkpoint.
        Temporary files of writes that a killed process left in a resumed run folder are removed."""
        base = Path(self.config.project) / self.config.task
        if resume_path is None:
            return self.run_lock.claim(self.given_run_dir if self.given_run_dir is not None
                                       else new_run_dir(base, self.config.name))
        folder = resume_path.parent
        if not is_run_dir(folder):
            run_dir = self.run_lock.claim(new_run_dir(base, self.config.name))
            logger.warning("%s is not inside a visiontune run folder: continuing in the new run folder %s (nothing "
                           "is written next to the checkpoint)", resume_path, run_dir)
            return run_dir
        self.run_lock.claim(folder)  # first: a training still running there refuses this one, which writes nothing
        mark_run_dir(folder)  # a run folder of an older version: marked from now on
        files, freed = remove_stale_temp_files(folder)
        if files:
            logger.warning("removed %d stale temporary file(s) of interrupted checkpoint writes in %s, freeing %d "
                           "bytes", files, folder, freed)
        return folder

    def _prepare_task_datasets(self) -> None:
        """The task's last word on the datasets (:meth:`Task.prepare_training`, e.g. cached frozen-backbone features)
        once the weights are final; new datasets get new loaders (same length and order: same sampler)."""
        train_dataset, val_dataset = self.task.prepare_training(
            self.model, self.train_dataset, self.val_dataset, device=self.device, autocast_dtype=self.autocast_dtype,
            run_dir=self.run_dir)
        device_dataset = getattr(self.task, "device_train_dataset", None)  # uint8 batches for a device prefetcher
        if device_dataset is not None:
            train_dataset = device_dataset(train_dataset, device=self.device)
        if train_dataset is self.train_dataset and val_dataset is self.val_dataset:
            return
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        self._build_loaders()

    def _build_loaders(self) -> None:
        """The loaders of :attr:`train_dataset` and :attr:`val_dataset` (none without a validation split)."""
        self.train_loader, self.train_sampler = build_train_loader(self.task, self.train_dataset, self.config,
                                                                   self.dist)
        self.val_loader = (build_val_loader(self.task, self.val_dataset, self.config, self.dist)
                           if self.val_dataset is not None else None)

    def _write_run_files(self) -> None:
        """Rank 0: ``config.yaml``, ``preset.yaml`` (the ``-c`` file: the report shows the changes from it),
        ``run_info.json`` (environment and load reports) and the setup lines of ``train.log``."""
        config, optimization = self.config, self.optimization
        save_config(config, self.run_dir / "config.yaml")
        preset = config.preset_file
        if preset is not None and Path(preset).is_file() and not (self.run_dir / "preset.yaml").exists():
            atomic_write_text(Path(preset).read_text(encoding="utf-8"), self.run_dir / "preset.yaml")
        info = run_info(device=self.device, world_size=self.dist.world_size, autocast_dtype=self.autocast_dtype,
                        loss_scaling=self.scaler.is_enabled(), channels_last=self.channels_last,
                        compiled=config.train.compile, meta=self.task.meta)
        atomic_write_text(json.dumps(info, indent=2, default=str) + "\n", self.run_dir / RUN_INFO_FILE)
        logger.info("run directory: %s", self.run_dir)
        logger.info("global batch %d = %d per device x %d devices x %d accumulation; lr %.4g (base %.4g, "
                    "scaling %s)", optimization.global_batch, config.data.batch_size, self.dist.world_size,
                    config.train.accumulate, optimization.base_lr, config.optim.lr, config.optim.lr_scale)
        logger.info("device %s%s; autocast %s (loss scaling %s); channels_last %s; torch.compile %s", self.device,
                    f", DDP over {self.dist.world_size} processes ({comm.backend_name()})"
                    if self.dist.enabled else "", self.autocast_dtype or "off",
                    "on" if self.scaler.is_enabled() else "off", self.channels_last, config.train.compile)
        logger.info("optimizer %s param groups:\n%s", config.optim.name,
                    describe_param_groups(optimization.param_groups))

    def build_hooks(self) -> list[HookBase]:
        """The built-in hooks of the config with the user's hooks in their place (:func:`default_hooks`), the final
        hooks, then the trackers (:func:`~visiontune.engine.trackers.arrange_trackers`: last, so they send the
        complete rows and the files the others wrote; a :class:`~visiontune.engine.trackers.Tracker` among the
        user's hooks runs there too)."""
        trackers, user_hooks = arrange_trackers(self.config, self.user_hooks, is_main=self.is_main)
        built = default_hooks(self.config, user_hooks, is_main=self.is_main,
                              selection=selection_metric(self.config, self.task),
                              scheduler=self.optimization.scheduler, ema=self.ema, frozen_names=self.frozen_names)
        return [*built, *self.final_hooks, *trackers]

    def rewrap_model(self) -> nn.Module:
        """Wrap :attr:`model` for training (SyncBatchNorm + DDP, ``torch.compile``) and give it to the step; again
        after its trainable parameters changed (progressive unfreezing)."""
        self.train_step.train_model = wrap_model(self.model, self.config, device=self.device,
                                                 distributed=self.dist.enabled, is_main=self.is_main)
        return self.train_step.train_model

    # ------------------------------------------------------------------ the run
    def fit(self) -> TrainResult:
        """Train for ``train.epochs`` (or until early stopping / time budget / ``max_steps`` / a signal)."""
        self.fit_started = time.perf_counter()
        with self.run_lock:  # the run folder is released however fit ends (setup included)
            self.setup()
            run_log = self.run_log or RunLog(Path("train.log"), enabled=False)
            with run_log.attached(), self.stop.signals:
                self.train()
        signal = self.stop.stopped_by_signal()
        storage = self.storage
        return TrainResult(run_dir=self.run_dir, best_metric=storage.best_metric, best_epoch=storage.best_epoch,
                           metrics=storage.latest_metrics, history=storage.history,
                           stop_reason=self.stop.reason or "completed", stopped_by_signal=signal,
                           exit_code=SIGNAL_EXIT_CODES.get(signal or "", 0), summary=storage.summary)

    def epoch_batches(self) -> Iterable[tuple[Any, Any]]:
        """The training loader, through the task's device prefetcher when it has one (classification on CUDA)."""
        wrap = getattr(self.task, "device_prefetcher", None)
        prefetcher = wrap(self.train_loader, device=self.device, train=True,
                          channels_last=self.channels_last) if wrap is not None else None
        return self.train_loader if prefetcher is None else prefetcher

    def checkpoint_dict(self) -> dict[str, Any]:
        """The plain dict written to ``last.pt`` / ``best.pt`` / ``step_*.pt``: the model, optimizer and scaler, the
        loop's counters, the storage's rows and loss sums, and the state of every hook (schedule, EMA, best)."""
        checkpoint: dict[str, Any] = {
            "version": __version__, "format_version": CHECKPOINT_FORMAT_VERSION, "task": self.config.task,
            "model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), **self.state.state_dict(), **self.train_step.state_dict(),
            "world_size": self.dist.world_size, **self.storage.state_dict(),
        }
        for hook in self.hooks:
            checkpoint.update(hook.state_dict())
        checkpoint.update(config=config_to_dict(self.config), meta=self.task.state_for_checkpoint(),
                          rng=capture_rng_state())
        return checkpoint

    def save_checkpoint(self, name: str) -> Path | None:
        """Atomically write a checkpoint named ``name`` on rank 0, then wait for every rank.

        A best state waiting in memory (``storage.pending_best``, ``train.checkpoint_interval_s``) is written as
        ``best.pt`` first, so that the ``best_metric`` of every checkpoint on disk is the one of ``best.pt``."""
        path = None
        if self.is_main:
            if self.storage.pending_best is not None:
                atomic_save(self.storage.pending_best, self.run_dir / "best.pt")
                self.storage.pending_best = None
            path = atomic_save(self.checkpoint_dict(), self.run_dir / name)
        if name == "last.pt":
            self.last_saved_step = self.state.step
        comm.barrier()
        return path

    def explain_out_of_memory(self, phase: str) -> contextlib.AbstractContextManager[None]:
        """Re-raise ``torch.OutOfMemoryError`` with the batch size in use and what to change
        (:func:`~visiontune.engine.faults.explain_out_of_memory`)."""
        return explain_out_of_memory(self.config, phase, device=self.device, world_size=self.dist.world_size,
                                     global_batch=self.optimization.global_batch, autocast_dtype=self.autocast_dtype)

    def evaluate(self) -> dict[str, float]:
        """Validation metrics of the model (``val_*``) and of its EMA (``val_ema_*``); with ``eval.intervals`` the
        per-image results go to ``storage.eval_per_image`` (rank 0). ``{}`` without a validation split.

        Raises:
            NonFinitePredictionError: an image's predictions hold NaN or infinite values; the message adds the
                epoch and what to change.
        """
        if self.val_loader is None or self.val_dataset is None:
            return {}
        metrics, per_image = validate(
            self.model, self.ema.module if self.ema is not None else None, self.val_loader, self.val_dataset,
            self.task, device=self.device, autocast_dtype=self.autocast_dtype,
            progress=self.config.train.progress and self.is_main, per_image=self.config.eval.intervals and self.is_main,
            context=f"epoch {self.state.epoch}", skipped_steps=self.train_step.skipped_steps)
        if per_image is not None:
            self.storage.eval_per_image = per_image
        return metrics
