"""The parts of the training loop on their own: the stop controller, the event storage, hook state in checkpoints,
the hook interface, and hooks that never call each other."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

import visiontune.engine.hooks
from visiontune.api import train
from visiontune.engine.checkpoint import load_checkpoint
from visiontune.engine.events import EventStorage
from visiontune.engine.hooks import HookBase, TrainingContext
from visiontune.engine.stop import COMPLETED, NonFiniteLossError, StopController
from visiontune.engine.trainer import Trainer

HOOK_POINTS = ("before_train", "after_baseline", "before_epoch", "before_step", "after_step", "after_epoch",
               "after_train")


# ------------------------------------------------------------------ the stop controller


def test_the_first_request_wins_and_the_ranks_agree_on_it():
    stop = StopController()
    stop.request("signal SIGTERM")
    stop.request("a hook")
    assert stop.requested == "signal SIGTERM" and stop.agreed is None  # asked, not yet agreed
    assert stop.flags() == [True, False, False]
    assert not stop.breaks_epoch()
    stop.agree(True, True, False)
    assert stop.agreed == "signal SIGTERM" and stop.signal == "SIGTERM" and stop.breaks_epoch()


def test_a_rank_that_was_not_asked_stops_with_the_others():
    stop = StopController()
    assert stop.flags() == [False, False, False]
    stop.agree(False, False, False)
    assert stop.agreed is None
    stop.agree(True, False, True)
    assert stop.agreed == "stop requested on another rank" and stop.signal == "SIGINT"


def test_proposals_keep_the_first_reason_and_reset_with_the_epoch():
    stop = StopController()
    stop.propose("early stopping: no improvement", announce=True)
    stop.propose("time budget of 1 min reached")
    stop.end_epoch_early()
    assert stop.proposed == "early stopping: no improvement" and stop.breaks_epoch()
    stop.begin_epoch()
    assert stop.proposed is None and not stop.breaks_epoch()


def test_a_signal_is_the_reason_only_when_the_run_stopped_for_it():
    stop = StopController()
    stop.request("signal SIGINT")
    stop.agree(*stop.flags())
    assert stop.stopped_by_signal() is None  # still training
    stop.reason = COMPLETED  # ended otherwise first
    assert stop.stopped_by_signal() is None
    stop.reason = stop.agreed
    assert stop.stopped_by_signal() is None  # this process received no signal: flags() said so
    stop.signal = "SIGINT"
    assert stop.stopped_by_signal() == "SIGINT"


# ------------------------------------------------------------------ the event storage


def losses(loss: float, extra: float) -> dict[str, torch.Tensor]:
    return {"loss_cls": torch.tensor(loss), "loss_box": torch.tensor(extra)}


def test_losses_wait_on_the_device_until_a_flush_then_count_in_step_order():
    storage, stop = EventStorage(), StopController()
    storage.begin_epoch(resumed_mid_epoch=False)
    for step, (first, second) in enumerate([(1.0, 3.0), (2.0, 5.0)]):
        means = storage.step_means([losses(first, 0.5), losses(second, 0.5)], stop)  # two micro-batches
        storage.defer(means, epoch=0, step=step)
    assert storage.epoch_loss_steps == 0 and len(storage.pending) == 2
    storage.flush(stop)
    assert storage.pending == [] and storage.epoch_loss_steps == 2
    assert storage.window_means() == {"loss_cls": 2.75, "loss_box": 0.5, "loss": 3.25}
    assert storage.window_means() == {}  # the window starts anew
    row = storage.epoch_means(lr=0.1)
    assert list(row)[:4] == ["train_loss_cls", "train_loss_box", "train_loss", "lr"]
    assert row["train_loss"] == 3.25 and row["lr"] == 0.1


def test_a_non_finite_pending_loss_names_its_epoch_and_step():
    storage, stop = EventStorage(), StopController()
    storage.begin_epoch(resumed_mid_epoch=False)
    storage.defer(storage.step_means([losses(1.0, 1.0)], stop), epoch=2, step=40)
    storage.defer(storage.step_means([losses(math.nan, 1.0)], stop), epoch=2, step=41)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at epoch 2, step 41: .*last finite loss: 2\.0"):
        storage.flush(stop)


def test_a_mid_epoch_resume_keeps_the_sums_and_the_storage_round_trips_its_state():
    storage = EventStorage()
    storage.begin_epoch(resumed_mid_epoch=False)
    storage.count({"loss": 4.0})
    storage.history.append({"epoch": 1, "train_loss": 4.0})
    restored = EventStorage()
    restored.load_state_dict(storage.state_dict())
    restored.begin_epoch(resumed_mid_epoch=True)
    restored.count({"loss": 2.0})
    assert restored.epoch_means(lr=0.0)["train_loss"] == 3.0 and restored.history == storage.history
    restored.begin_epoch(resumed_mid_epoch=False)
    assert restored.epoch_loss_steps == 0 and restored.eval_metrics is None


# ------------------------------------------------------------------ hooks


class Counter(HookBase):
    """Counts optimizer steps over the whole run; the count survives a resume through the checkpoint."""

    def __init__(self) -> None:
        self.steps = 0
        self.restored: int | None = None

    def after_step(self, trainer, losses):
        self.steps += 1

    def state_dict(self):
        return {"counter_steps": self.steps}

    def load_state_dict(self, checkpoint):
        self.steps = self.restored = checkpoint["counter_steps"]


def test_a_hook_keeps_its_state_in_the_checkpoint_and_gets_it_back_on_resume(tiny_config):
    first = train(tiny_config("train.epochs=1", "train.eval_before=false"), hooks=[Counter()])
    checkpoint = load_checkpoint(first.run_dir / "last.pt")
    assert checkpoint["counter_steps"] == checkpoint["step"] > 0
    assert {"scheduler", "ema", "best_metric", "best_epoch", "evals_without_improvement"} <= set(checkpoint)
    counter = Counter()
    train(tiny_config("train.epochs=2", "train.eval_before=false", f"resume={first.run_dir / 'last.pt'}"),
          hooks=[counter])
    assert counter.restored == checkpoint["step"] and counter.steps == 2 * checkpoint["step"]


def test_the_trainer_offers_what_hooks_may_use(tiny_config):
    trainer = Trainer(tiny_config("train.epochs=1"))
    assert not isinstance(trainer, TrainingContext)  # nothing built yet
    trainer.setup()
    assert isinstance(trainer, TrainingContext)


def test_no_hook_calls_another_hook():
    """A hook point is called by the loop only: no module of the hooks calls ``<something>.after_epoch(...)``."""
    root = Path(visiontune.engine.hooks.__file__).parent
    modules = [*root.glob("*.py"), root.parent / "trackers.py"]
    calls = []
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in HOOK_POINTS:
                calls.append(f"{path.name}:{node.lineno} {ast.unparse(node.func)}")
    assert calls == []
