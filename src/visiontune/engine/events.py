"""One storage for the numbers of a run, in the manner of detectron2's ``EventStorage``.

:class:`EventStorage` holds the step losses (kept on the device and reduced over the ranks only at a logging step:
the one place the training loop reads values to the host), their windowed means for ``after_step``, the epoch's
loss sums, the ``metrics.csv`` rows (:attr:`~EventStorage.history`) and what the hooks put there for each other:
the latest evaluation, the best so far, the per-image results, the test metrics and the summary. Hooks read and
write it instead of attributes of the trainer.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from visiontune.engine.stop import NonFiniteLossError, StopController
from visiontune.utils import comm

__all__ = ["EventStorage"]


class EventStorage:
    """The numbers of one training run (every rank keeps its own; the reduced losses are equal on every rank).

    Args:
        world_size: Processes whose losses are averaged.
    """

    def __init__(self, world_size: int = 1) -> None:
        self.world_size = world_size
        self.history: list[dict[str, Any]] = []
        """The ``metrics.csv`` rows: the epoch-0 baseline row, then one per epoch (hooks complete them in place)."""
        self.epoch_loss_sums: dict[str, float] = {}
        """Sums of the reduced step losses of the current epoch (a mid-epoch resume logs the whole epoch's mean)."""
        self.epoch_loss_steps = 0
        """Steps counted in :attr:`epoch_loss_sums`."""
        self.epoch_images = 0
        """Images this rank trained on in the current epoch (this invocation)."""
        self.epoch_started = time.perf_counter()
        self.loss_names: list[str] | None = None
        """The loss names of the pending rows."""
        self.pending: list[torch.Tensor] = []
        """Per-step loss means (this rank, on the device) not yet reduced."""
        self.pending_steps: list[tuple[int, int]] = []
        """``(epoch, step)`` of each pending row: a non-finite loss found later names its step."""
        self.step_applied = False
        """Whether the last optimizer step applied its gradients (``False``: skipped for a non-finite loss)."""
        self.window: list[dict[str, float]] = []
        """Reduced losses of the finite steps since the last logging step."""
        self.last_finite: float | None = None
        self.last_values: dict[str, float] = {}
        """The reduced losses of the last skipped step (the window of a logging step when all were skipped)."""
        self.eval_metrics: dict[str, float] | None = None
        """The validation metrics of the evaluation of the epoch (or baseline) being recorded; ``None``: not
        evaluated."""
        self.latest_metrics: dict[str, float] = {}
        """The validation metrics of the last evaluation."""
        self.eval_per_image: Any = None
        """Rank 0, ``eval.intervals``: the per-image results of the last evaluation, until a hook keeps them."""
        self.per_image: dict[int | str, Any] = {}
        """Rank 0, ``eval.intervals``: the per-image results kept for ``summary.json``, by epoch (and ``"test"``)."""
        self.best_metric: float | None = None
        """The best value of ``train.metric`` so far (the best-checkpoint hook keeps it)."""
        self.best_epoch: int | None = None
        """The epoch of ``best.pt``."""
        self.evals_without_improvement = 0
        """Evaluations since the best one."""
        self.pending_best: dict[str, Any] | None = None
        """Rank 0: the checkpoint of a new best epoch not yet in ``best.pt`` (``train.checkpoint_interval_s``: it is
        written just before the next ``last.pt``)."""
        self.test_metrics: dict[str, float] | None = None
        """``test_*`` metrics of the final checkpoint on ``data.test_split`` (``None``: no test split)."""
        self.test_checkpoint: str | None = None
        self.summary: dict[str, Any] | None = None
        """The run's summary once it finished (``summary.json``)."""

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's ``history``, ``epoch_loss_sums`` and ``epoch_loss_steps``."""
        return {"history": self.history, "epoch_loss_sums": dict(self.epoch_loss_sums),
                "epoch_loss_steps": self.epoch_loss_steps}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("history", []))
        self.epoch_loss_sums = dict(checkpoint.get("epoch_loss_sums", {}))
        self.epoch_loss_steps = checkpoint.get("epoch_loss_steps", 0)

    # ------------------------------------------------------------------ step losses
    def begin_epoch(self, *, resumed_mid_epoch: bool) -> None:
        """Start an epoch's counters (a mid-epoch resume keeps the loss sums of its first part); no evaluation yet."""
        if not resumed_mid_epoch:
            self.epoch_loss_sums, self.epoch_loss_steps = {}, 0
        self.epoch_images = 0
        self.epoch_started = time.perf_counter()
        self.eval_metrics = None
        self.last_finite = None
        self.pending, self.pending_steps, self.window = [], [], []

    def step_means(self, step_losses: list[dict[str, torch.Tensor]], stop: StopController) -> torch.Tensor:
        """This rank's losses of one step averaged over its micro-batches: a float32 vector on the device in the
        order of :attr:`loss_names` (no host sync)."""
        names = list(step_losses[0])
        if names != self.loss_names:
            self.flush(stop)  # rows of one shape per reduction
            self.loss_names = names
        return torch.stack([torch.stack([losses[name].float() for losses in step_losses]).mean() for name in names])

    def defer(self, means: torch.Tensor, *, epoch: int, step: int) -> None:
        """Keep an applied step's losses on the device until the next :meth:`flush`."""
        self.pending.append(means)
        self.pending_steps.append((epoch, step))

    def flush(self, stop: StopController) -> None:
        """Reduce the pending rows (one collective with the stop vote, one host sync), check and count them.

        Raises:
            NonFiniteLossError: a pending step's loss is NaN or infinite (named by epoch and step).
        """
        if not self.pending:
            return
        rows, steps = self.pending, self.pending_steps
        self.pending, self.pending_steps = [], []
        for (epoch, step), values in zip(steps, self.reduce(rows, stop), strict=True):
            if not math.isfinite(values["loss"]):
                raise NonFiniteLossError(
                    f"non-finite loss at epoch {epoch}, step {step}: {values}; last finite loss: {self.last_finite}. "
                    "Lower optim.lr, enable train.clip_grad, check the data, or set train.nan_policy=skip to skip "
                    "such steps")
            self.count(values)

    def reduce(self, rows: list[torch.Tensor], stop: StopController) -> list[dict[str, float]]:
        """The steps' losses (rows of :meth:`step_means`) averaged over the ranks, each plus its sum ``loss``.

        One ``all_reduce`` carries every row and the stop vote (a NaN on any rank makes the step's average NaN, so
        every rank decides alike), then one device-to-host copy; the values are those of one reduction per step.
        """
        stacked = torch.stack(rows)
        if self.world_size > 1:
            table, (requested, sigterm, sigint) = comm.all_reduce_sum_with_votes(stacked, stop.flags())
            stop.agree(requested, sigterm, sigint)
        else:
            table = stacked.tolist()
        result = []
        for row in table:
            values = {name: value / self.world_size for name, value in zip(self.loss_names or [], row, strict=True)}
            values["loss"] = sum(values.values())
            result.append(values)
        return result

    def count(self, values: dict[str, float]) -> None:
        """Add an applied step's reduced losses to the epoch's sums, in step order (bit-identical epoch means)."""
        self.last_finite = values["loss"]
        for key, value in values.items():
            self.epoch_loss_sums[key] = self.epoch_loss_sums.get(key, 0.0) + value
        self.epoch_loss_steps += 1
        self.window.append(values)

    def skipped(self, values: dict[str, float]) -> None:
        """A skipped step's reduced losses (``nan_policy: skip``): what a window of skipped steps reports."""
        self.last_values = values

    def window_means(self) -> dict[str, float]:
        """The reduced losses averaged over the finite steps since the last logging step (a skipped step's own
        values when all were skipped); the window starts anew."""
        window, self.window = self.window, []
        if not window:
            return dict(self.last_values)
        return {key: sum(values[key] for values in window) / len(window) for key in window[-1]}

    def epoch_means(self, lr: float) -> dict[str, float]:
        """The epoch's columns of ``metrics.csv``: ``train_<loss>`` (mean reduced losses), ``lr`` (given: the last
        parameter group's), ``epoch_time_s`` and ``images_per_s`` (all ranks)."""
        elapsed = time.perf_counter() - self.epoch_started
        result = {f"train_{key}": value / max(1, self.epoch_loss_steps) for key, value in self.epoch_loss_sums.items()}
        result["lr"] = lr
        result["epoch_time_s"] = elapsed
        result["images_per_s"] = self.epoch_images * self.world_size / max(elapsed, 1e-9)
        return result

    def images_per_s(self) -> float:
        """Training images per second of the current epoch so far, over all ranks."""
        return self.epoch_images * self.world_size / max(time.perf_counter() - self.epoch_started, 1e-9)

    # ------------------------------------------------------------------ evaluations
    def put_eval(self, metrics: dict[str, float]) -> None:
        """The validation metrics of the epoch (or baseline) being recorded."""
        self.eval_metrics = metrics
        self.latest_metrics = metrics
