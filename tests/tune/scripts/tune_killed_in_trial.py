"""Run ``visiontune.tune.tune`` on the command line's overrides and SIGKILL this process at the first optimizer step
of trial ``--kill-trial`` (its run folder ``trial-NNNN``): a crash in the middle of a search."""

from __future__ import annotations

import argparse
import os
import signal

from visiontune.config import load_config
from visiontune.engine.hooks import HookBase
from visiontune.tune import tune


class KillInTrial(HookBase):
    def __init__(self, number: int) -> None:
        self.folder = f"trial-{number:04d}"

    def before_step(self, trainer) -> None:
        if trainer.run_dir.name == self.folder:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill-trial", type=int, required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    tune(load_config(None, args.overrides), hooks=[KillInTrial(args.kill_trial)])
    raise SystemExit("the process was not killed")


if __name__ == "__main__":
    main()
