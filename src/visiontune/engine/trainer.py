"""The training loop shared by every task: steps and epochs, with everything else in hooks.

``Trainer(config, hooks).fit()`` builds the run from the config through the task (:meth:`Trainer.setup`, with
the builders of :mod:`visiontune.engine.build`), then trains epochs of optimizer steps. Evaluation, checkpoints,
the best checkpoint and early stopping, ``metrics.csv``, plots, TensorBoard, console output and the stop
conditions are the hooks of :mod:`visiontune.engine.hooks` (``before_train``, ``before_step``, ``after_step``,
``after_epoch``, ``after_train``); the user's hooks run among them. Rank 0 logs the run to ``<run>/train.log``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from visiontune import __version__
from visiontune.config import Config, config_from_dict, config_to_dict, parse_freeze, save_config
from visiontune.config.loader import overlay_changed
from visiontune.engine.build import (
    amp_dtype,
    build_ema,
    build_grad_scaler,
    build_train_loader,
    build_val_loader,
    configure_torch_backends,
    create_optimizer,
    resolve_channels_last,
    resolve_resume,
    scaled_lr,
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
from visiontune.engine.loaders import sample_seed, seed_everything
from visiontune.engine.inference import build_eval_loader, run_evaluation, to_device
from visiontune.engine.faults import (
    REPEATED_SIGNAL_GRACE_S,
    SIGNAL_EXIT_CODES,
    SignalExit,
    SignalStop,
    explain_out_of_memory,
)
from visiontune.engine.finetune import (
    build_param_groups,
    describe_param_groups,
    freeze_parameters,
    set_frozen_batchnorm_eval,
    unfreeze_all,
    warn_frozen_random_weights,
    warn_unused_unfreeze,
)
from visiontune.engine.hooks import Hook, HookBase, default_hooks
from visiontune.engine.run_dir import RunLock, check_run_name, is_run_dir, mark_run_dir, new_run_dir
from visiontune.engine.run_log import RUN_INFO_FILE, RunLog, environment_lines, run_info
from visiontune.engine.scheduler import IterationScheduler, build_schedule_spec
from visiontune.engine.trackers import arrange_trackers
from visiontune.evaluation.bootstrap import evaluator_per_image
from visiontune.evaluation.widerface_predictions import NonFinitePredictionError
from visiontune.tasks import create_task
from visiontune.tasks.base import Task
from visiontune.utils import comm as dist_utils

logger = logging.getLogger(__name__)

__all__ = [
    "PER_INVOCATION_KEYS", "REPEATED_SIGNAL_GRACE_S", "SIGNAL_EXIT_CODES", "Hook", "HookBase", "NonFiniteLossError",
    "SignalExit", "TrainResult",
    "TrainState", "Trainer", "amp_dtype", "build_eval_loader", "build_grad_scaler", "configure_torch_backends",
    "run_evaluation", "to_device", "unwrap",
]

PER_INVOCATION_KEYS = ("train.max_steps", "train.time_budget", "train.progress", "device")
"""Config keys that describe one invocation, not the run: a resume takes them from the new command line."""

class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf (``train.nan_policy: error``)."""


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

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> TrainState:
        return cls(
            epoch=checkpoint["epoch"], step=checkpoint["step"], batch_in_epoch=checkpoint.get("batch_in_epoch", 0),
            best_metric=checkpoint.get("best_metric"), best_epoch=checkpoint.get("best_epoch"),
            evals_without_improvement=checkpoint.get("evals_without_improvement", 0),
            skipped_steps=checkpoint.get("skipped_steps", 0), history=list(checkpoint.get("history", [])),
            epoch_loss_sums=dict(checkpoint.get("epoch_loss_sums", {})),
            epoch_loss_steps=checkpoint.get("epoch_loss_steps", 0),
        )


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
    when a signal stopped it (:data:`SIGNAL_EXIT_CODES`), so that a scheduler can tell preemption from the end. The
    ``train`` command exits with it."""
    summary: dict[str, Any] | None = None
    """Baseline, best and last validation metrics and more (:func:`visiontune.engine.hooks.run_summary`; the
    content of ``<run>/summary.json``)."""


class Trainer:
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
        """The run folder made beforehand (``run_dir``), or ``None``: a new one (or the resumed run's)."""
        self.user_hooks: list[HookBase] = list(hooks)
        self.final_hooks: list[HookBase] = list(final_hooks)
        """Hooks called after every built-in one (e.g. the run report, which reads what the others wrote)."""
        self.hooks: list[HookBase] = list(self.user_hooks)
        """All hooks in calling order once :meth:`fit` built them (:meth:`build_hooks`)."""
        self.state = TrainState()
        self.pending_stop: str | None = None
        """Why this process was asked to stop (:meth:`request_stop`), not yet agreed with the other ranks."""
        self.stop_requested: str | None = None
        """Why every rank stops after the current step (set on all ranks together)."""
        self.stop_reason: str | None = None
        """Why training ended (``completed``, ``max_steps``, ...); ``None`` while training and after an error."""
        self.fit_started = time.perf_counter()
        """When :meth:`fit` began (setup included): the start of the run's wall time."""
        self.pending_best: dict[str, Any] | None = None
        """Rank 0: the checkpoint of a new best epoch not yet in ``best.pt`` (``train.checkpoint_interval_s``)."""
        self.last_saved_step: int | None = None
        """The step of the state in ``last.pt`` (None: not written by this invocation nor resumed from)."""
        self.proposed_stop: str | None = None
        """A reason to stop after the current epoch, from a hook's :meth:`propose_stop`."""
        self.epoch_metrics: dict[str, float] | None = None
        """The validation metrics of the epoch that just ended (``None``: not evaluated)."""
        self.last_metrics: dict[str, float] = {}
        self.last_per_image: Any = None
        """Rank 0, ``eval.intervals``: the per-image results (:mod:`visiontune.evaluation.bootstrap`) of the last
        :meth:`evaluate`, until a hook keeps them (``None``: none)."""
        self.test_metrics: dict[str, float] | None = None
        """``test_*`` metrics of ``best.pt`` on ``data.test_split`` once training finished (``None``: no test split)."""
        self.test_checkpoint: str | None = None
        """The checkpoint :attr:`test_metrics` measured (``best.pt``, or ``last.pt`` without a best)."""
        self.per_image: dict[int | str, Any] = {}
        """Rank 0, ``eval.intervals``: per-image results kept for ``summary.json``'s intervals, by epoch (and
        ``"test"``)."""
        self.summary: dict[str, Any] | None = None
        """The run's summary once it finished (the ``RunSummary`` hook; ``summary.json``)."""
        self.run_log: RunLog | None = None
        self._announce_proposed_stop = True
        self._end_epoch_requested = False
        self.signals = SignalStop(self.request_stop)
        """SIGINT/SIGTERM while :meth:`fit` trains: the first requests a stop with a checkpoint, a second exits."""
        self.run_lock = RunLock()
        """Rank 0: the run folder's lock, claimed before anything is written there and held until :meth:`fit` ends."""
        self.stop_signal: str | None = None
        """The signal (``SIGTERM`` wins over ``SIGINT``) received by any rank when the ranks agreed to stop."""
        self._loss_names: list[str] | None = None
        """The loss names of the pending rows (``_step_means``)."""
        self._last_values: dict[str, float] = {}
        """The reduced losses of the last skipped step (``after_step`` when every step of a window was skipped)."""

    # ------------------------------------------------------------------ requests from hooks and signals
    def request_stop(self, reason: str) -> None:
        """Stop after the current optimizer step and write ``last.pt`` (SIGINT/SIGTERM call this).

        Safe to call on one rank only (a signal, a hook): the ranks agree and stop together, so none is left
        waiting in a collective. In one process the stop follows the current step; under DDP the vote rides on the
        next loss reduction (the next logging step, ``train.log_every``; every step with ``nan_policy: skip``) or
        the end of the epoch.
        """
        if self.pending_stop is None:
            self.pending_stop = reason

    def propose_stop(self, reason: str, *, announce: bool = True) -> None:
        """Stop training after the current epoch (call it from ``after_epoch``, on every rank alike); the first
        reason proposed wins, and a stop requested by a signal wins over all. ``announce`` logs the reason."""
        if self.proposed_stop is None:
            self.proposed_stop, self._announce_proposed_stop = reason, announce

    def end_epoch_early(self) -> None:
        """End the current epoch after this step, as if it were complete (``train.max_steps``; every rank alike)."""
        self._end_epoch_requested = True

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Build task, data, model, optimizer, scheduler and EMA (restoring a checkpoint), then the run directory.

        Nothing is written before the run can start: ``name`` is checked first, and the run folder is created (or
        chosen, on resume) only once task, datasets and model are built, so a bad config, a missing data folder or
        unusable weights leave no folder behind. ``train.log`` keeps the lines logged before it existed.
        """
        check_run_name(self.config.name)
        self.dist = dist_utils.env_dist_info()
        self.device = dist_utils.resolve_device(self.config.device, self.dist)  # a per-invocation key
        dist_utils.init_distributed(self.device)
        self.is_main = self.dist.is_main
        checkpoint, resume_path = self._load_resume_checkpoint()
        config = self.config
        check_run_name(config.name)  # a resumed run takes the checkpoint's name unless given
        seed_everything(config.seed + self.dist.rank)
        configure_torch_backends(self.device, deterministic=config.train.deterministic)
        self.task: Task = create_task(config)
        self.task.check_metric(config.train.metric)  # a misspelt metric fails now, not after an epoch
        self.autocast_dtype = amp_dtype(config, self.device)
        self.run_log = RunLog(None, enabled=self.is_main)
        self.run_log.write_header(config, environment_lines(
            device=self.device, world_size=self.dist.world_size, autocast_dtype=self.autocast_dtype,
            loss_scaling=self.autocast_dtype == torch.float16))
        with self.run_log.attached():
            self._build(checkpoint, resume_path)

    def _choose_run_dir(self, resume_path: Path | None) -> Path:
        """Rank 0: the run folder. A new one under ``<project>/<task>``; on resume the checkpoint's folder when it is
        a run folder (:func:`is_run_dir`), else a new one, so that nothing is written next to a copied checkpoint.
        Temporary files of writes that a killed process left in a resumed run folder are removed."""
        config = self.config
        base = Path(config.project) / config.task
        if resume_path is None:
            return self.run_lock.claim(self.given_run_dir if self.given_run_dir is not None
                                       else new_run_dir(base, config.name))
        folder = resume_path.parent
        if not is_run_dir(folder):
            run_dir = self.run_lock.claim(new_run_dir(base, config.name))
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

    def _load_resume_checkpoint(self) -> tuple[dict[str, Any] | None, Path | None]:
        """The checkpoint to resume (``None`` for a new run); its config becomes ``self.config``, with what this
        invocation set explicitly on top (e.g. more epochs) and the per-invocation keys of this invocation."""
        # rank 0 alone looks at the file system; workers restarted by torchrun must agree on checkpoint and run dir
        resume_path = dist_utils.main_process_result(lambda: resolve_resume(self.config))
        if resume_path is None:
            return None, None
        checkpoint = load_checkpoint(resume_path)
        stored = config_from_dict(checkpoint["config"])
        self.config = overlay_changed(stored, self.config, always=PER_INVOCATION_KEYS)
        self.config.resume = None
        return checkpoint, resume_path

    def _build(self, checkpoint: dict[str, Any] | None, resume_path: Path | None) -> None:
        if checkpoint is not None:
            self.task.load_meta(checkpoint.get("meta", {}))
        self._build_data()
        self._build_model(load_weights=checkpoint is None)
        param_groups = self._build_optimization()
        if checkpoint is not None:
            self._restore(checkpoint)
            if self.state.epoch >= self.config.train.epochs and self.is_main:
                logger.warning("%s already finished its %d epochs: nothing left to train (raise train.epochs to "
                               "continue it, or use another name to start a new run)", resume_path,
                               self.config.train.epochs)
        self.train_model = self._wrap_model()
        # every rank agrees on the folder that rank 0 creates; nothing was written before this point
        self.run_dir = dist_utils.main_process_result(lambda: self._choose_run_dir(resume_path))
        if checkpoint is not None:  # said once the run folder is ours (a training still running there refuses this)
            logger.info("resumed from %s at epoch %d, step %d", resume_path, self.state.epoch, self.state.step)
        assert self.run_log is not None
        self.run_log.open(self.run_dir / "train.log")
        if self.is_main:  # once the start cannot fail for bad settings: a failed start writes nothing (no hash cache)
            warn_validation_duplicates(self.config, self.train_dataset, self.val_dataset)
        self._prepare_task_datasets()
        if self.is_main:
            save_config(self.config, self.run_dir / "config.yaml")
            self._keep_preset()
            self._write_run_info()
            self._log_setup(param_groups)

    def _build_data(self) -> None:
        config = self.config
        self.train_dataset = self.task.build_dataset(config.data.train_split, train=True)
        self.val_dataset = (self.task.build_dataset(config.data.val_split, train=False)
                            if config.data.val_split else None)
        self.task.check_metric(config.train.metric)  # now that the data tells which metrics exist (top5: > 5 classes)

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
        self.train_loader, self.train_sampler = build_train_loader(self.task, train_dataset, self.config, self.dist)
        self.val_loader = (build_val_loader(self.task, val_dataset, self.config, self.dist)
                           if val_dataset is not None else None)

    def _build_model(self, *, load_weights: bool) -> None:
        config = self.config
        self.model = self.task.build_model(load_weights=load_weights).to(self.device)
        self.parts = self.task.model_parts(self.model)
        self.channels_last = resolve_channels_last(config.train.channels_last, self.device, self.model)
        """``train.channels_last`` resolved for this device and model (``auto``: a conv net on CUDA)."""
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        mode, argument = parse_freeze(config.finetune.freeze)
        self.frozen_names = freeze_parameters(self.model, mode, argument, self.parts)
        warn_frozen_random_weights(self.model, self.frozen_names, random_weights=load_weights and not any(
            key in self.task.meta for key in ("load_report", "backbone_load_report")))  # no report: random weights
        if load_weights:
            warn_unused_unfreeze(config.finetune.unfreeze_at_epoch, epochs=config.train.epochs,
                                 frozen_names=self.frozen_names)

    def _build_optimization(self) -> list[dict[str, Any]]:
        """Loaders, optimizer, scheduler, loss scaler and EMA; returns the parameter groups."""
        config = self.config
        self.train_loader, self.train_sampler = build_train_loader(self.task, self.train_dataset, config, self.dist)
        self.val_loader = (build_val_loader(self.task, self.val_dataset, config, self.dist)
                           if self.val_dataset is not None else None)
        self.batches_per_epoch = self.train_sampler.per_rank // config.data.batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"the training split has {self.train_sampler.per_rank} images per process, fewer than "
                             f"data.batch_size={config.data.batch_size}; lower the batch size")
        self.steps_per_epoch = max(1, math.ceil(self.batches_per_epoch / config.train.accumulate))
        self.global_batch = config.data.batch_size * self.dist.world_size * config.train.accumulate
        self.base_lr = scaled_lr(config, self.global_batch)
        param_groups = build_param_groups(
            self.model, lr=self.base_lr, weight_decay=config.optim.weight_decay, parts=self.parts,
            head_lr_mult=config.finetune.head_lr_mult, lr_mults=config.finetune.lr_mults,
            layer_decay=config.finetune.layer_decay,
            no_weight_decay_norm_bias=config.finetune.no_weight_decay_norm_bias,
        )
        self.optimizer = create_optimizer(config, param_groups, self.base_lr)
        spec = build_schedule_spec(config.sched, epochs=config.train.epochs, steps_per_epoch=self.steps_per_epoch,
                                   base_lr=self.base_lr)
        self.scheduler = IterationScheduler(self.optimizer, spec)
        self.scaler = build_grad_scaler(self.device, self.autocast_dtype)
        self.ema: Any = build_ema(self.model, config, self.device)  # timm ModelEmaV3 or None
        return param_groups

    def _keep_preset(self) -> None:
        """Copy the ``-c`` YAML file into the run folder as ``preset.yaml`` (the report shows the changes from it)."""
        preset = self.config.preset_file
        if preset is not None and Path(preset).is_file() and not (self.run_dir / "preset.yaml").exists():
            atomic_write_text(Path(preset).read_text(encoding="utf-8"), self.run_dir / "preset.yaml")

    def _write_run_info(self) -> None:
        """``<run>/run_info.json`` (:func:`run_info`): environment and load reports for ``visiontune report``."""
        info = run_info(device=self.device, world_size=self.dist.world_size, autocast_dtype=self.autocast_dtype,
                        loss_scaling=self.scaler.is_enabled(), channels_last=self.channels_last,
                        compiled=self.config.train.compile, meta=self.task.meta)
        atomic_write_text(json.dumps(info, indent=2, default=str) + "\n", self.run_dir / RUN_INFO_FILE)

    def _log_setup(self, param_groups: list[dict[str, Any]]) -> None:
        config = self.config
        logger.info("run directory: %s", self.run_dir)
        logger.info("global batch %d = %d per device x %d devices x %d accumulation; lr %.4g (base %.4g, "
                    "scaling %s)", self.global_batch, config.data.batch_size, self.dist.world_size,
                    config.train.accumulate, self.base_lr, config.optim.lr, config.optim.lr_scale)
        logger.info("device %s%s; autocast %s (loss scaling %s); channels_last %s; torch.compile %s", self.device,
                    f", DDP over {self.dist.world_size} processes ({dist_utils.backend_name()})"
                    if self.dist.enabled else "", self.autocast_dtype or "off",
                    "on" if self.scaler.is_enabled() else "off", self.channels_last, config.train.compile)
        logger.info("optimizer %s param groups:\n%s", config.optim.name, describe_param_groups(param_groups))

    def _wrap_model(self) -> nn.Module:
        """The module the loop calls: ``self.model`` (SyncBatchNorm-converted in place) in DDP, then compiled."""
        return wrap_model(self.model, self.config, device=self.device, distributed=self.dist.enabled,
                          is_main=self.is_main)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_dict(self) -> dict[str, Any]:
        """The plain dict written to ``last.pt`` / ``best.pt`` / ``step_*.pt``."""
        state = self.state
        return {
            "version": __version__,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "task": self.config.task,
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "epoch": state.epoch,
            "step": state.step,
            "batch_in_epoch": state.batch_in_epoch,
            "best_metric": state.best_metric,
            "best_epoch": state.best_epoch,
            "evals_without_improvement": state.evals_without_improvement,
            "skipped_steps": state.skipped_steps,
            "world_size": self.dist.world_size,
            "history": state.history,
            "epoch_loss_sums": dict(state.epoch_loss_sums),
            "epoch_loss_steps": state.epoch_loss_steps,
            "config": config_to_dict(self.config),
            "meta": self.task.state_for_checkpoint(),
            "rng": capture_rng_state(),
        }

    def save_checkpoint(self, name: str) -> Path | None:
        """Atomically write a checkpoint named ``name`` on rank 0, then wait for every rank.

        A best state waiting in memory (:attr:`pending_best`, ``train.checkpoint_interval_s``) is written as
        ``best.pt`` first, so that the ``best_metric`` of every checkpoint on disk is the one of ``best.pt``."""
        path = None
        if self.is_main:
            if self.pending_best is not None:
                atomic_save(self.pending_best, self.run_dir / "best.pt")
                self.pending_best = None
            path = atomic_save(self.checkpoint_dict(), self.run_dir / name)
        if name == "last.pt":
            self.last_saved_step = self.state.step
        dist_utils.barrier()
        return path

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        unwrap(self.model).load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        if self.ema is not None and checkpoint.get("ema") is not None:
            self.ema.module.load_state_dict(checkpoint["ema"])
        self.state = TrainState.from_checkpoint(checkpoint)
        self.last_saved_step = self.state.step
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

    # ------------------------------------------------------------------ hooks and the run
    def build_hooks(self) -> list[HookBase]:
        """The built-in hooks of the config with the user's hooks in their place (:func:`default_hooks`), the final
        hooks, then the trackers (:func:`~visiontune.engine.trackers.arrange_trackers`: last, so they send the
        complete rows and the files the others wrote; a :class:`~visiontune.engine.trackers.Tracker` among the
        user's hooks runs there too)."""
        trackers, user_hooks = arrange_trackers(self, self.user_hooks)
        return [*default_hooks(self, user_hooks), *self.final_hooks, *trackers]

    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        """Add user hooks (before :meth:`fit`), after those given to the constructor."""
        self.user_hooks.extend(hooks)

    def _call_hooks(self, point: str, *args: Any) -> None:
        for hook in self.hooks:
            getattr(hook, point)(self, *args)

    def fit(self) -> TrainResult:
        """Train for ``train.epochs`` (or until early stopping / time budget / ``max_steps`` / a signal)."""
        self.fit_started = time.perf_counter()
        with self.run_lock:  # the run folder is released however fit ends (setup included)
            self.setup()
            self.hooks = self.build_hooks()
            run_log = self.run_log or RunLog(Path("train.log"), enabled=False)
            with run_log.attached(), self.signals:
                self._train()
        return TrainResult(run_dir=self.run_dir, best_metric=self.state.best_metric, best_epoch=self.state.best_epoch,
                           metrics=self.last_metrics, history=self.state.history,
                           stop_reason=self.stop_reason or "completed",
                           stopped_by_signal=self._stopped_by_signal(),
                           exit_code=SIGNAL_EXIT_CODES.get(self._stopped_by_signal() or "", 0),
                           summary=self.summary)

    def _stopped_by_signal(self) -> str | None:
        """The signal that ended training, if it was one (not when training ended otherwise first)."""
        if self.stop_signal is not None and self.stop_reason is not None and self.stop_reason == self.stop_requested:
            return self.stop_signal
        return None

    def _train(self) -> None:
        """``before_train``, the epochs, then ``after_train``, which also runs when training raised."""
        self.stop_reason = None
        try:
            self._call_hooks("before_train")
            stop_reason = self._run_epochs()
            self.stop_reason = stop_reason
        finally:
            self._call_hooks("after_train")

    def _run_epochs(self) -> str:
        """Epochs until ``train.epochs`` or a stop; returns why training ended."""
        while self.state.epoch < self.config.train.epochs:
            with self.explain_out_of_memory("training"):
                train_stats = self.train_one_epoch()
            if self.stop_requested and self.state.batch_in_epoch < self.batches_per_epoch:
                self.save_checkpoint("last.pt")  # mid-epoch: resumes at the next batch
                self._log_stop()
                return self.stop_requested
            reason = self._end_epoch(train_stats)
            if reason is not None:
                return reason
        return "completed"

    def _end_epoch(self, train_stats: dict[str, float]) -> str | None:
        """Close the finished epoch: its row through the ``after_epoch`` hooks; returns a reason to stop, if any."""
        self.state.epoch += 1
        self.state.batch_in_epoch = 0
        row: dict[str, Any] = {"epoch": self.state.epoch, "step": self.state.step, **train_stats}
        self.state.history.append(row)  # the hooks complete the row in place (validation metrics)
        self.epoch_metrics = None
        self.proposed_stop = None
        self._call_hooks("after_epoch", row)
        if self._vote_stop():
            self._log_stop()
            return self.stop_requested
        if self.proposed_stop is not None and self._announce_proposed_stop:
            logger.info("%s", self.proposed_stop)
        return self.proposed_stop

    def _log_stop(self) -> None:
        if self.is_main:
            logger.warning("%s: stopped after step %d; continue with resume=%s (or train.auto_resume=true)",
                           self.stop_requested, self.state.step, self.run_dir / "last.pt")

    # ------------------------------------------------------------------ one epoch of steps
    def train_one_epoch(self) -> dict[str, float]:
        """One pass over the training data (its rest after a mid-epoch resume); averaged losses, lr, throughput.

        The steps do not wait for the device: their losses stay there until the next logging step
        (:meth:`_is_log_step`, every ``train.log_every`` steps), where one collective reduces them over the ranks
        together with the stop vote (see the synchronisation section).
        """
        self._begin_epoch()
        accumulate = self.config.train.accumulate
        batch_index = self.state.batch_in_epoch
        step_losses: list[dict[str, torch.Tensor]] = []
        for images, targets in self._epoch_batches():
            if not step_losses:
                self._begin_step()
            batch_index += 1
            final_micro = len(step_losses) + 1 == accumulate or batch_index == self.batches_per_epoch
            step_losses.append(self._forward_backward(images, targets, sync_gradients=final_micro))
            if not final_micro:
                continue
            self._optimizer_step(step_losses, batch_index)
            step_losses = []
            if not self.dist.enabled:
                self._vote_stop()  # one process: a local check, no collective and no host sync
            if self.stop_requested is not None or self._end_epoch_requested:
                break
        self._flush_losses()  # a stop between logging steps: the sums of every step (checkpoint, epoch mean)
        return self._epoch_summary()

    def _epoch_batches(self) -> Iterable[tuple[Any, Any]]:
        """The training loader, through the task's device prefetcher when it has one (classification on CUDA)."""
        wrap = getattr(self.task, "device_prefetcher", None)
        prefetcher = wrap(self.train_loader, device=self.device, train=True,
                          channels_last=self.channels_last) if wrap is not None else None
        return self.train_loader if prefetcher is None else prefetcher

    def _begin_epoch(self) -> None:
        config, epoch = self.config, self.state.epoch
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
        self.epoch_images = 0
        """Images this rank trained on in this epoch (this invocation)."""
        self.epoch_started = time.perf_counter()
        self._last_finite: float | None = None
        self._end_epoch_requested = False
        self._pending_losses: list[torch.Tensor] = []
        """Per-step loss means (one row per step, this rank, on the device) not yet reduced and counted."""
        self._pending_steps: list[tuple[int, int]] = []
        """(epoch, step) of each pending row: a non-finite loss found at a logging step names its step."""
        self._window: list[dict[str, float]] = []
        """Reduced losses of the finite steps since the last logging step (what ``after_step`` gets there)."""

    def _begin_step(self) -> None:
        self._call_hooks("before_step")
        # dropout / mixup randomness depends only on (seed, step, rank): exact resumes
        seed_everything(sample_seed(self.config.seed, self.state.step, 1_000_000 + self.dist.rank))
        if self.config.train.nan_policy == "skip":  # a skipped step must not leave NaN in BN statistics
            self._buffers_before = [buffer.detach().clone() for buffer in self.model.buffers()]

    def _forward_backward(self, images: Any, targets: Any, *, sync_gradients: bool) -> dict[str, torch.Tensor]:
        """One micro-batch: forward under autocast, backward of its share of the step's loss; its losses."""
        images = to_device(images, self.device, non_blocking=True)
        targets = to_device(targets, self.device, non_blocking=True)
        if self.channels_last and isinstance(images, torch.Tensor) and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        images, targets = self.task.prepare_train_batch(images, targets)
        no_sync = (not sync_gradients and self.dist.enabled
                   and isinstance(self.train_model, nn.parallel.DistributedDataParallel))
        with cast(Any, self.train_model).no_sync() if no_sync else contextlib.nullcontext():  # DDP's, when no_sync
            with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype or torch.float32,
                                enabled=self.autocast_dtype is not None):
                losses = self.train_model(images, targets)
                loss = self._loss_value(losses)
            self.scaler.scale(loss / self.config.train.accumulate).backward()
        self.epoch_images += self.task.batch_size_of(images)
        return {key: value.detach() for key, value in losses.items()}

    @staticmethod
    def _loss_value(losses: dict[str, torch.Tensor]) -> torch.Tensor:
        if not isinstance(losses, dict) or not losses:
            raise TypeError("in train mode the model must return a non-empty dict of losses "
                            f"(got {type(losses).__name__})")
        return cast(torch.Tensor, sum(losses.values()))

    def _optimizer_step(self, step_losses: list[dict[str, torch.Tensor]], batch_index: int) -> None:
        """Apply (or, for a non-finite loss, skip) the accumulated gradients, then the ``after_step`` hooks.

        ``nan_policy: error``: no host sync; the step's losses join the pending rows, reduced and checked at the
        next logging step. ``nan_policy: skip``: whether to apply the step must be known before the optimizer
        step, so every step pays one host sync (and, under DDP, one collective that also carries the stop vote).
        """
        means = self._step_means(step_losses)
        log_step = self._is_log_step(batch_index)
        if self.config.train.nan_policy == "skip":
            self._flush_losses()  # nothing pending in practice: every step is reduced at once
            (values,) = self._reduce_rows([means])
            if math.isfinite(values["loss"]):
                self._apply_gradients()
                self._count_step(values)
            else:
                self._skip_step(values)
        else:
            self._apply_gradients()
            self._pending_losses.append(means)
            self._pending_steps.append((self.state.epoch, self.state.step))
            if log_step:
                self._flush_losses()
        self.state.step += 1
        self.scheduler.step()
        self.state.batch_in_epoch = batch_index
        self._call_hooks("after_step", self._window_means() if log_step else None)

    def _is_log_step(self, batch_index: int) -> bool:
        """Whether the step being finished reduces the losses and calls ``after_step`` with them: every
        ``train.log_every`` steps, the epoch's last step, a step checkpoint's step and ``train.max_steps``."""
        train, step = self.config.train, self.state.step + 1
        return (step % train.log_every == 0 or batch_index >= self.batches_per_epoch
                or (train.save_every_steps > 0 and step % train.save_every_steps == 0)
                or (train.max_steps is not None and step >= train.max_steps))

    def _step_means(self, step_losses: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """This rank's losses of the step averaged over its micro-batches, a float32 vector on the device (in the
        order of ``_loss_names``; no sync)."""
        names = list(step_losses[0])
        if names != self._loss_names:
            self._flush_losses()  # rows of one shape per reduction
            self._loss_names = names
        return torch.stack([torch.stack([losses[name].float() for losses in step_losses]).mean() for name in names])

    def _apply_gradients(self) -> None:
        clip_grad = self.config.train.clip_grad
        if clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model, step=self.state.step)

    def _count_step(self, loss_values: dict[str, float]) -> None:
        """Add an applied step's reduced losses to the epoch's sums (in step order: the same float additions as
        one sync per step, so epoch means and resumed runs are bit-identical)."""
        self._last_finite = loss_values["loss"]
        totals = self.state.epoch_loss_sums  # updated in place: mid-epoch checkpoints carry them
        for key, value in loss_values.items():
            totals[key] = totals.get(key, 0.0) + value
        self.state.epoch_loss_steps += 1
        self._window.append(loss_values)

    def _flush_losses(self) -> None:
        """Reduce the pending rows (one collective, one host sync), check them and count them (``nan_policy:
        error`` raises for the first non-finite step, naming it). Every rank calls it at the same steps."""
        if not self._pending_losses:
            return
        rows, steps = self._pending_losses, self._pending_steps
        self._pending_losses, self._pending_steps = [], []
        for (epoch, step), values in zip(steps, self._reduce_rows(rows), strict=True):
            if not math.isfinite(values["loss"]):
                self._raise_non_finite(values, epoch=epoch, step=step)
            self._count_step(values)

    def _window_means(self) -> dict[str, float]:
        """The reduced losses averaged over the finite steps since the last logging step (a skipped step's own
        values when all of them were skipped); the window starts anew."""
        window, self._window = self._window, []
        if not window:
            return dict(self._last_values)
        return {key: sum(values[key] for values in window) / len(window) for key in window[-1]}

    def _raise_non_finite(self, loss_values: dict[str, float], *, epoch: int, step: int) -> None:
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch}, step {step}: {loss_values}; "
            f"last finite loss: {self._last_finite}. Lower optim.lr, enable train.clip_grad, check the data, "
            "or set train.nan_policy=skip to skip such steps"
        )

    def _skip_step(self, loss_values: dict[str, float]) -> None:
        """A non-finite loss under ``nan_policy: skip``: drop the gradients and restore the buffers."""
        self._last_values = loss_values
        self.state.skipped_steps += 1
        logger.warning("skipping step %d: non-finite loss %s (%d skipped so far)", self.state.step, loss_values,
                       self.state.skipped_steps)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buffer, saved in zip(self.model.buffers(), self._buffers_before):
                buffer.copy_(saved)

    def _epoch_summary(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.epoch_started
        result = {f"train_{key}": value / max(1, self.state.epoch_loss_steps)
                  for key, value in self.state.epoch_loss_sums.items()}
        result["lr"] = self.optimizer.param_groups[-1]["lr"]
        result["epoch_time_s"] = elapsed
        result["images_per_s"] = self.epoch_images * self.dist.world_size / max(elapsed, 1e-9)
        skipped = getattr(self.train_dataset, "num_skipped", 0)
        if skipped:
            logger.warning("%d corrupt training images were skipped so far (data.on_corrupt=skip)", skipped)
            result["skipped_images"] = skipped
        return result

    # ------------------------------------------------------------------ synchronisation with the other ranks
    # The steps never wait for the device. The host syncs only at a logging step (:meth:`_is_log_step`: every
    # ``train.log_every`` steps, the epoch's last step, a step checkpoint's step, ``train.max_steps``), where one
    # collective reduces the pending per-step losses together with the stop vote, and one ``tolist`` reads them.
    # ``nan_policy: skip`` syncs every step (the skip decision precedes the optimizer step; the stop vote rides on
    # that collective). In one process the stop vote is a local check after every step; under DDP a stop requested
    # by a signal or a hook is agreed at the next synchronisation (at most ``log_every`` steps later).
    def _reduce_rows(self, rows: list[torch.Tensor]) -> list[dict[str, float]]:
        """The steps' losses (rows of :meth:`_step_means`) averaged over all ranks, each plus its sum ``loss``.

        One ``all_reduce`` for all rows and the stop vote (a NaN on any rank makes the step's average NaN, so every
        rank takes the same decision), then one device-to-host copy. The per-step values and their python float
        arithmetic are those of one reduction per step.
        """
        stacked = torch.stack(rows)
        if self.dist.enabled:
            table, (stop, sigterm, sigint) = dist_utils.all_reduce_sum_with_votes(stacked, self._stop_flags())
            self._agree_stop(stop, sigterm, sigint)
        else:
            table = stacked.tolist()
        names, result = self._loss_names or [], []
        for row in table:
            values = {name: value / self.dist.world_size for name, value in zip(names, row, strict=True)}
            values["loss"] = sum(values.values())
            result.append(values)
        return result

    def _stop_flags(self) -> list[bool]:
        received = self.signals.received
        return [self.pending_stop is not None, received == "SIGTERM", received == "SIGINT"]

    def _agree_stop(self, stop: bool, sigterm: bool, sigint: bool) -> None:
        if stop and self.stop_requested is None:
            self.stop_requested = self.pending_stop or "stop requested on another rank"
            self.stop_signal = "SIGTERM" if sigterm else "SIGINT" if sigint else None

    def _vote_stop(self) -> bool:
        """Whether any rank was asked to stop; if so ``stop_requested`` is set on every rank (a collective under
        DDP: the end of an epoch; a local check in one process)."""
        stop, sigterm, sigint = dist_utils.any_rank(self._stop_flags(), self.device)
        self._agree_stop(stop, sigterm, sigint)
        return stop

    # ------------------------------------------------------------------ evaluation
    def explain_out_of_memory(self, phase: str) -> contextlib.AbstractContextManager[None]:
        """Re-raise ``torch.OutOfMemoryError`` with the batch size in use and what to change
        (:func:`~visiontune.engine.faults.explain_out_of_memory`)."""
        return explain_out_of_memory(self.config, phase, device=self.device, world_size=self.dist.world_size,
                                     global_batch=self.global_batch, autocast_dtype=self.autocast_dtype)

    def evaluate(self) -> dict[str, float]:
        """Validation metrics of the model (``val_*``) and of its EMA (``val_ema_*``).

        Raises:
            NonFinitePredictionError: an image's predictions hold NaN or infinite values; the message adds the
                epoch and what to change.
        """
        try:
            return self._evaluate()
        except NonFinitePredictionError as error:
            skipped = self.state.skipped_steps
            loss = (f"{skipped} training steps had a non-finite loss and were skipped (train.nan_policy=skip)"
                    if skipped else "the training loss was finite")
            amp = ", or evaluate in float32 (train.amp=off)" if self.autocast_dtype is not None else ""
            raise NonFinitePredictionError(
                f"epoch {self.state.epoch}: {error}; {loss}, the NaN appeared in evaluation: lower optim.lr or set "
                f"train.clip_grad (e.g. 1.0){amp}", image=error.image) from None

    def _evaluate(self) -> dict[str, float]:
        if self.val_loader is None or self.val_dataset is None:
            return {}
        evaluator = self.task.build_evaluator(self.val_dataset)
        metrics = {f"val_{k}": v for k, v in run_evaluation(
            self.model, self.val_loader, evaluator, device=self.device, autocast_dtype=self.autocast_dtype,
            progress=self.config.train.progress and self.is_main, description="val").items()}
        if self.config.eval.intervals and self.is_main:
            self.last_per_image = evaluator_per_image(evaluator)
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

    def is_better(self, value: float) -> bool:
        """Whether ``value`` of :attr:`metric_key` beats the best so far (``train.metric_mode``)."""
        best = self.state.best_metric
        if best is None:
            return True
        return value > best if self.metric_mode == "max" else value < best

    def save_eval_artifacts(self) -> None:
        """Confusion matrix / PR curves of the best checkpoint, in ``<run>/eval``."""
        if self.dist.enabled:
            return  # artifacts need the whole split in one process; `visiontune eval` writes them
        if self.val_loader is None or self.val_dataset is None:
            return
        best = load_checkpoint(self.run_dir / "best.pt")
        unwrap(self.model).load_state_dict(best["model"])
        evaluator = self.task.build_evaluator(self.val_dataset)
        run_evaluation(self.model, self.val_loader, evaluator, device=self.device, autocast_dtype=self.autocast_dtype)
        try:
            evaluator.save_artifacts(self.run_dir / "eval")
        except Exception as error:  # noqa: BLE001 - artifacts are a convenience, never a failure
            logger.warning("could not write evaluation artifacts: %s", error)
