"""Train from ``key=value`` overrides with injected faults; launched by the fault tests, alone or under torchrun.

Usage::

    python train_with_faults.py [--kill-at-step N --kill-rank R --marker FILE]
                                [--wait-for-signal-at-step N --ready-file FILE --linger SECONDS]
                                [--kill-in-save-at-step N]
                                [--pause-after-epoch N --ready-file FILE --go-file FILE] key=value ...

``--kill-at-step``: rank ``R`` SIGKILLs itself before step ``N`` (after ``N`` steps), once: it first writes
``--marker``, and a restarted worker that finds the marker trains on (torchrun ``--max-restarts``).

``--wait-for-signal-at-step``: after step ``N`` the script writes its pid to ``--ready-file`` and waits until the
trainer has received a stop request (the test sends SIGTERM/SIGINT), then sleeps ``--linger`` seconds, a slow
shutdown during which a second signal can arrive.

``--kill-in-save-at-step``: the process SIGKILLs itself in the middle of writing the checkpoint of step ``N``
(after 20000 bytes of it), as a preemption without grace would: the temporary file stays behind.

``--pause-after-epoch``: after epoch ``N`` (its ``last.pt`` written) the script writes its pid to ``--ready-file``
and waits until ``--go-file`` exists, then trains on: the run is alive, with a checkpoint to resume, while the test
starts a second training of the same folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

import torch

from visiontune.config import load_config
from visiontune.engine.hooks import HookBase
from visiontune.engine.trainer import Trainer
from visiontune.utils.comm import cleanup_distributed

SIGNAL_WAIT_LIMIT_S = 60.0
"""How long ``--wait-for-signal-at-step`` waits for the test's signal before training on."""


class KillOnce(HookBase):
    """SIGKILLs this process before step ``step`` on rank ``rank``, unless ``marker`` exists (then it creates it)."""

    def __init__(self, step: int, rank: int, marker: Path) -> None:
        self.step = step
        self.rank = rank
        self.marker = marker

    def before_step(self, trainer: Trainer) -> None:
        if trainer.state.step != self.step or trainer.dist.rank != self.rank or self.marker.exists():
            return
        self.marker.write_text(f"killed rank {self.rank} before step {self.step}\n", encoding="utf-8")
        os.kill(os.getpid(), signal.SIGKILL)


class WaitForSignal(HookBase):
    """After step ``step``: announce the pid in ``ready_file``, wait for a stop request, then linger."""

    def __init__(self, step: int, ready_file: Path, linger: float) -> None:
        self.step = step
        self.ready_file = ready_file
        self.linger = linger

    def after_step(self, trainer: Trainer, losses: dict[str, float]) -> None:
        if trainer.state.step != self.step:
            return
        temporary = self.ready_file.with_suffix(".tmp")
        temporary.write_text(str(os.getpid()), encoding="utf-8")
        temporary.replace(self.ready_file)  # the test never reads a half-written file
        deadline = time.monotonic() + SIGNAL_WAIT_LIMIT_S
        while trainer.stop.requested is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(self.linger)


class PauseAfterEpoch(HookBase):
    """After epoch ``epoch``: announce the pid in ``ready_file``, then wait until ``go_file`` exists."""

    def __init__(self, epoch: int, ready_file: Path, go_file: Path) -> None:
        self.epoch = epoch
        self.ready_file = ready_file
        self.go_file = go_file

    def after_epoch(self, trainer: Trainer, row: dict[str, float]) -> None:
        if trainer.state.epoch != self.epoch:
            return
        temporary = self.ready_file.with_suffix(".tmp")
        temporary.write_text(str(os.getpid()), encoding="utf-8")
        temporary.replace(self.ready_file)
        deadline = time.monotonic() + SIGNAL_WAIT_LIMIT_S
        while not self.go_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)


def kill_in_save_at_step(step: int) -> None:
    """Make ``torch.save`` SIGKILL this process after writing 20000 bytes of the checkpoint of ``step``."""
    save = torch.save

    def killing_save(obj, stream, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == step:
            stream.write(b"\0" * 20000)
            stream.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return save(obj, stream, *args, **kwargs)

    torch.save = killing_save


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kill-at-step", type=int)
    parser.add_argument("--kill-rank", type=int, default=0)
    parser.add_argument("--marker", type=Path)
    parser.add_argument("--wait-for-signal-at-step", type=int)
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--linger", type=float, default=0.0)
    parser.add_argument("--kill-in-save-at-step", type=int)
    parser.add_argument("--pause-after-epoch", type=int)
    parser.add_argument("--go-file", type=Path)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    arguments = parser.parse_args(argv)
    if arguments.kill_at_step is not None and arguments.marker is None:
        parser.error("--kill-at-step needs --marker")
    if arguments.wait_for_signal_at_step is not None and arguments.ready_file is None:
        parser.error("--wait-for-signal-at-step needs --ready-file")
    if arguments.pause_after_epoch is not None and (arguments.ready_file is None or arguments.go_file is None):
        parser.error("--pause-after-epoch needs --ready-file and --go-file")
    return arguments


def main(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format=f"[rank {rank}] %(message)s")
    hooks: list[HookBase] = []
    if arguments.kill_at_step is not None:
        hooks.append(KillOnce(arguments.kill_at_step, arguments.kill_rank, arguments.marker))
    if arguments.wait_for_signal_at_step is not None:
        hooks.append(WaitForSignal(arguments.wait_for_signal_at_step, arguments.ready_file, arguments.linger))
    if arguments.pause_after_epoch is not None:
        hooks.append(PauseAfterEpoch(arguments.pause_after_epoch, arguments.ready_file, arguments.go_file))
    if arguments.kill_in_save_at_step is not None:
        kill_in_save_at_step(arguments.kill_in_save_at_step)
    config = load_config(None, arguments.overrides)
    try:
        result = Trainer(config, hooks=hooks).fit()
    finally:
        cleanup_distributed()
    if rank == 0:
        print(f"stop_reason: {result.stop_reason}", flush=True)
    return result.exit_code  # as `visiontune train`: 143 / 130 after a stop by SIGTERM / SIGINT


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
