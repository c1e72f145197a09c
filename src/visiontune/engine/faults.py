"""What the loop does when something outside it goes wrong: SIGINT/SIGTERM and running out of device memory.

* :class:`SignalStop`: the first SIGINT/SIGTERM asks the trainer to stop after the current step with a checkpoint
  (exit status 130 / 143); a second one, after :data:`REPEATED_SIGNAL_GRACE_S`, leaves at once without a
  checkpoint or a traceback (:class:`SignalExit`).
* :func:`explain_out_of_memory`: ``torch.OutOfMemoryError`` again, with the batch in use and the change that keeps
  the global batch.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from visiontune.config import Config

logger = logging.getLogger(__name__)

__all__ = ["REPEATED_SIGNAL_GRACE_S", "SIGNAL_EXIT_CODES", "SignalExit", "SignalStop", "explain_out_of_memory",
           "out_of_memory_advice"]

REPEATED_SIGNAL_GRACE_S = 1.0
"""A SIGINT/SIGTERM this soon after the first one counts as the same request, not as the second signal that exits
at once: under torchrun, Ctrl-C reaches every worker twice (from the terminal, then forwarded by the agent)."""

SIGNAL_EXIT_CODES = {"SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}
"""Exit status of a run stopped by a signal (after writing ``last.pt``): 128 + the signal number, the shell's
convention, 130 for SIGINT and 143 for SIGTERM; :attr:`TrainResult.exit_code`. A completed run (also one stopped
by early stopping, ``train.time_budget`` or ``train.max_steps``) exits with 0."""


class SignalExit(SystemExit):
    """A second SIGINT/SIGTERM: leave at once, without a checkpoint, with status 128 + the signal number (no
    traceback: the interpreter exits quietly on ``SystemExit``)."""


class SignalStop:
    """SIGINT/SIGTERM handlers for the time of a ``with`` block (the previous handlers come back after it).

    Args:
        request_stop: Called with ``"signal SIGINT"`` / ``"signal SIGTERM"`` on the first signal.
    """

    def __init__(self, request_stop: Callable[[str], None]) -> None:
        self.request_stop = request_stop
        self.received: str | None = None
        """The name of the first SIGINT/SIGTERM this process received."""
        self.first_time: float | None = None
        self._previous: list[tuple[int, Any]] = []

    def __enter__(self) -> SignalStop:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not in the main thread: no handlers
                self._previous.append((signum, signal.signal(signum, self._handle)))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous:
            signal.signal(signum, handler)
        self._previous = []

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        now = time.monotonic()
        if self.first_time is not None:
            if now - self.first_time < REPEATED_SIGNAL_GRACE_S:
                return  # the same request delivered twice (terminal + torchrun agent)
            logger.error("second signal %s: exiting at once with status %d, without a checkpoint", name, 128 + signum)
            raise SignalExit(128 + signum)
        self.first_time = now
        self.received = name
        self.request_stop(f"signal {name}")
        logger.warning("%s received: stopping after this step with a checkpoint (send it again to exit at once)",
                       name)


def out_of_memory_advice(config: Config, phase: str, *, global_batch: int, device: torch.device,
                         autocast_dtype: torch.dtype | None) -> tuple[int, str]:
    """The images per device of ``phase`` (``"training"`` / ``"evaluation"``) and what to change."""
    data, accumulate = config.data, config.train.accumulate
    if phase == "evaluation":
        batch = data.eval_batch_size or data.batch_size
        advice = f"lower data.eval_batch_size (now {batch})"
    elif data.batch_size > 1:
        batch = data.batch_size
        smaller = max(d for d in range(1, data.batch_size) if data.batch_size % d == 0)  # keeps the global batch
        advice = (f"lower data.batch_size and raise train.accumulate to keep the global batch of {global_batch}, "
                  f"e.g. data.batch_size={smaller} train.accumulate={accumulate * data.batch_size // smaller}")
    else:
        batch = 1
        advice = "data.batch_size is already 1: lower data.image_size or pick a smaller model"
    if autocast_dtype is None and device.type == "cuda":
        advice += "; train.amp=auto also halves activation memory"
    return batch, advice


@contextlib.contextmanager
def explain_out_of_memory(config: Config, phase: str, *, device: torch.device, world_size: int, global_batch: int,
                          autocast_dtype: torch.dtype | None) -> Iterator[None]:
    """Re-raise ``torch.OutOfMemoryError`` with the batch size in use and what to change."""
    try:
        yield
    except torch.OutOfMemoryError as error:
        batch, advice = out_of_memory_advice(config, phase, global_batch=global_batch, device=device,
                                             autocast_dtype=autocast_dtype)
        data = config.data
        detail = str(error).strip().splitlines()[0] if str(error).strip() else "no details"
        raise torch.OutOfMemoryError(
            f"out of memory during {phase} on {device} with a batch of {batch} images per device "
            f"(data.batch_size={data.batch_size}, train.accumulate={config.train.accumulate}, {world_size} "
            f"process(es)): {advice}. ({detail})") from error
