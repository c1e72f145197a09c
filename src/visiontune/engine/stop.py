"""Why training ends: one controller for every stop, agreed by every rank in one place.

Three ways to ask, one answer (:attr:`StopController.reason`):

* :meth:`~StopController.request`: stop after the current optimizer step with a checkpoint (SIGINT/SIGTERM through
  :class:`~visiontune.engine.faults.SignalStop`, or a hook). It may be asked on one rank only: the ranks vote
  (:meth:`~StopController.flags` ride on the loss reduction of :class:`~visiontune.engine.events.EventStorage`, or
  :meth:`~StopController.vote` at the end of an epoch) and :meth:`~StopController.agree` sets
  :attr:`~StopController.agreed` on every rank together, so none is left waiting in a collective.
* :meth:`~StopController.propose`: stop after this epoch (early stopping, time budget, ``max_steps``, a pruned
  trial); hooks call it from ``after_epoch`` on every rank alike; the first reason wins.
* :meth:`~StopController.end_epoch_early`: end the current epoch after this step (``train.max_steps``).

The reason training ended: :data:`COMPLETED`, :data:`MAX_STEPS`, ``"early stopping: ..."``, ``"time budget of ...
reached"``, ``"signal SIGTERM"``, ``"pruned: ..."``; ``None`` while training and when training raised (a non-finite
loss under ``train.nan_policy: error`` raises :class:`NonFiniteLossError`).
"""

from __future__ import annotations

import logging

import torch

from visiontune.engine.faults import SignalStop
from visiontune.utils import comm

logger = logging.getLogger(__name__)

__all__ = ["COMPLETED", "MAX_STEPS", "NonFiniteLossError", "StopController"]

COMPLETED = "completed"
"""Every epoch of ``train.epochs`` was trained."""
MAX_STEPS = "max_steps"
"""``train.max_steps`` optimizer steps were done."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf (``train.nan_policy: error``): training ends with this error (no stop reason)."""


class StopController:
    """Every stop of one training run: the requests, the vote of the ranks, and the reason training ended."""

    def __init__(self) -> None:
        self.requested: str | None = None
        """Why this process was asked to stop (:meth:`request`), not yet agreed with the other ranks."""
        self.agreed: str | None = None
        """Why every rank stops after the current step (set on all ranks together by :meth:`agree`)."""
        self.signal: str | None = None
        """The signal (``SIGTERM`` wins over ``SIGINT``) any rank had received when the ranks agreed to stop."""
        self.proposed: str | None = None
        """A reason to stop after the current epoch (:meth:`propose`)."""
        self.announce = True
        """Whether the loop logs :attr:`proposed` when it stops for it."""
        self.end_epoch = False
        """End the current epoch after this step (:meth:`end_epoch_early`)."""
        self.reason: str | None = None
        """Why training ended; ``None`` while training and when training raised."""
        self.signals = SignalStop(self.request)
        """SIGINT/SIGTERM while training: the first requests a stop with a checkpoint, a second exits at once."""

    def request(self, reason: str) -> None:
        """Stop after the current optimizer step and write ``last.pt``; the first request wins. Safe on one rank."""
        if self.requested is None:
            self.requested = reason

    def propose(self, reason: str, *, announce: bool = True) -> None:
        """Stop after the current epoch (from ``after_epoch``, on every rank alike); the first reason wins, and an
        agreed request (a signal) wins over all. ``announce`` logs the reason when training stops for it."""
        if self.proposed is None:
            self.proposed, self.announce = reason, announce

    def end_epoch_early(self) -> None:
        """End the current epoch after this step, as if it were complete (every rank alike)."""
        self.end_epoch = True

    def begin_epoch(self) -> None:
        """A new epoch: no epoch-end request, no proposal yet."""
        self.end_epoch, self.proposed = False, None

    def flags(self) -> list[bool]:
        """This rank's votes: a stop was requested, SIGTERM received, SIGINT received."""
        received = self.signals.received
        return [self.requested is not None, received == "SIGTERM", received == "SIGINT"]

    def agree(self, stop: bool, sigterm: bool, sigint: bool) -> None:
        """The ranks' vote (:meth:`flags` summed over ranks): every rank stops after this step when any asked."""
        if stop and self.agreed is None:
            self.agreed = self.requested or "stop requested on another rank"
            self.signal = "SIGTERM" if sigterm else "SIGINT" if sigint else None

    def vote(self, device: torch.device) -> bool:
        """Whether any rank was asked to stop (a collective under DDP, a local check in one process)."""
        stop, sigterm, sigint = comm.any_rank(self.flags(), device)
        self.agree(stop, sigterm, sigint)
        return stop

    def breaks_epoch(self) -> bool:
        """Whether the epoch ends after the current step (an agreed stop, or :meth:`end_epoch_early`)."""
        return self.agreed is not None or self.end_epoch

    def stopped_by_signal(self) -> str | None:
        """The signal that ended training, if it was one (not when training ended otherwise first)."""
        if self.signal is not None and self.reason is not None and self.reason == self.agreed:
            return self.signal
        return None
