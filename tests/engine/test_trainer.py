"""The shared training loop, on a tiny classification problem."""

import csv
import math
from pathlib import Path

import pytest
import torch

from tests.helpers import set_up_with_nan_at_step, train
from visiontune.api import evaluate
from visiontune.engine.checkpoint import load_checkpoint
from visiontune.engine.hooks import HookBase
from visiontune.engine.stop import NonFiniteLossError
from visiontune.engine.trainer import Trainer


def trainer_root(run):
    """The data root recorded in a run's checkpoint config."""
    from pathlib import Path

    return Path(load_checkpoint(run / "last.pt")["config"]["data"]["root"])


def weights(path):
    return load_checkpoint(path)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class Crash(HookBase):
    """Simulates a crash right after epoch ``at`` was checkpointed."""

    def __init__(self, at):
        self.at = at

    def after_epoch(self, trainer, row):
        if row["epoch"] == self.at:
            raise RuntimeError("simulated crash")


def test_resume_gives_identical_weights(tiny_config):
    options = ("train.epochs=4", "train.ema=true", "train.ema_decay=0.9", "train.eval_before=false")
    straight = train(tiny_config(*options, "name=straight"))
    crashed = Trainer(tiny_config(*options, "name=split"), hooks=[Crash(at=2)])
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit()
    resumed = train(tiny_config(*options, f"resume={crashed.run_dir / 'last.pt'}"))
    assert resumed.run_dir == crashed.run_dir  # continues in the same run directory
    final_straight = load_checkpoint(straight.run_dir / "last.pt")
    final_resumed = load_checkpoint(resumed.run_dir / "last.pt")
    assert_same_weights(final_straight["model"], final_resumed["model"])
    assert_same_weights(final_straight["ema"], final_resumed["ema"])
    assert final_resumed["epoch"] == 4 and final_resumed["step"] == final_straight["step"]
    assert [row["epoch"] for row in final_resumed["history"]] == [1, 2, 3, 4]
    assert final_resumed["optimizer"]["state"].keys() == final_straight["optimizer"]["state"].keys()


def test_mid_epoch_resume_from_step_checkpoint(tiny_config):
    straight = train(tiny_config("train.epochs=2", "name=straight", "data.num_workers=2"))
    # 18 samples / batch 4 -> 4 steps per epoch (drop_last); stop after step 6 (inside epoch 2), resume from step_6
    partial = train(tiny_config("train.epochs=2", "name=partial", "train.save_every_steps=1", "train.max_steps=6"))
    step_file = partial.run_dir / "step_6.pt"
    assert load_checkpoint(step_file)["batch_in_epoch"] == 2
    resumed = train(tiny_config("train.epochs=2", f"resume={step_file}"))
    assert_same_weights(weights(straight.run_dir / "last.pt"), weights(resumed.run_dir / "last.pt"))


def test_outputs_and_step_checkpoints(tiny_config):
    result = train(tiny_config("train.epochs=3", "train.save_every_steps=1", "train.keep_last=2", "train.plots=true",
                               "train.eval_before=false"))
    run = result.run_dir
    # 18 samples / 4 -> 4 full batches per epoch
    assert sorted(p.name for p in run.glob("step_*.pt")) == ["step_11.pt", "step_12.pt"]
    assert {"last.pt", "best.pt", "config.yaml", "metrics.csv"} <= {p.name for p in run.iterdir()}
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"train_loss", "lr", "val_top1", "images_per_s"} <= set(rows[0])
    assert (run / "plots" / "loss.png").stat().st_size > 0
    assert (run / "eval" / "confusion_matrix.png").is_file()
    stored = load_checkpoint(run / "best.pt")
    assert stored["config"]["optim"]["lr"] == 0.05
    assert stored["meta"]["class_names"] == sorted(p.name for p in (trainer_root(run) / "train").iterdir())
    assert set(stored) >= {"model", "optimizer", "scheduler", "scaler", "ema", "epoch", "step", "config", "version"}
    second = train(tiny_config("train.epochs=1"))
    assert second.run_dir.name == "t-2"  # never overwrites


def test_eval_equals_in_training_validation(tiny_config):
    result = train(tiny_config("train.epochs=1", "train.ema=true"))
    config = tiny_config()
    measured = evaluate(config, checkpoint=result.run_dir / "last.pt").metrics
    in_training = result.history[-1]
    for key in ("val_top1", "val_macro_f1", "val_ema_top1"):
        assert measured[key] == pytest.approx(in_training[key], abs=1e-9), key


def test_frozen_backbone_weights_and_bn_buffers_bit_identical(tiny_config):
    trainer = Trainer(tiny_config("finetune.freeze=backbone", "train.epochs=2"))
    result = trainer.fit()
    final = weights(result.run_dir / "last.pt")
    frozen = [k for k in final if not k.startswith("net.fc")]
    first = load_checkpoint(result.run_dir / "last.pt")
    assert first["step"] > 0
    # compare against the weights before training: the same config and seed set up anew, before any step
    reference = Trainer(tiny_config("finetune.freeze=backbone", "name=ref"))
    reference.setup()
    start = reference.model.state_dict()
    assert start.keys() == final.keys() and len(frozen) > len(final) // 2  # every tensor compared, most frozen
    for key in frozen:
        assert torch.equal(start[key], final[key]), key  # includes running_mean/var, num_batches_tracked
    assert not torch.equal(start["net.fc.weight"], final["net.fc.weight"])


def test_unfreeze_at_epoch(tiny_config):
    seen = []

    class Record(HookBase):
        def after_epoch(self, trainer, row):
            seen.append(sum(p.requires_grad for p in trainer.model.parameters()))

    trainer = Trainer(tiny_config("finetune.freeze=backbone", "finetune.unfreeze_at_epoch=1"), hooks=[Record()])
    trainer.fit()
    total = len(list(trainer.model.parameters()))
    assert seen == [2, total]


def test_nan_loss_error_names_step_and_last_finite_loss(tiny_config, monkeypatch):
    trainer = Trainer(tiny_config("train.epochs=1"))
    original = None

    def poison(images, targets):
        if trainer.state.step == 1:
            images = images * float("nan")
        return original(images, targets)

    trainer.setup()
    original = trainer.task.prepare_train_batch
    monkeypatch.setattr(trainer.task, "prepare_train_batch", poison)
    monkeypatch.setattr(trainer, "setup", lambda: None)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at epoch 0, step 1: .*last finite loss: \d"):
        trainer.fit()


def test_nan_loss_skip_counts(tiny_config, monkeypatch):
    trainer = Trainer(tiny_config("train.epochs=1", "train.nan_policy=skip"))
    set_up_with_nan_at_step(trainer, monkeypatch, 1)
    trainer.fit()
    assert trainer.train_step.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_early_stopping_and_time_budget(tiny_config, monkeypatch):
    values = iter([50.0, 40.0, 45.0, 60.0])
    monkeypatch.setattr(Trainer, "evaluate", lambda self: {"val_top1": next(values)})
    result = train(tiny_config("train.epochs=10", "train.patience=2", "train.eval_before=false"))
    assert result.stop_reason.startswith("early stopping") and len(result.history) == 3
    assert result.best_metric == 50.0 and result.best_epoch == 1
    monkeypatch.undo()
    budget = train(tiny_config("train.epochs=10", "train.time_budget=0.00001", "name=budget",
                               "train.eval_before=false"))
    assert budget.stop_reason.startswith("time budget") and len(budget.history) == 1


def test_unknown_metric_is_reported(tiny_config):
    from visiontune.config import ConfigError

    with pytest.raises(ConfigError, match=r"train.metric: 'top7' is not a metric of task 'classification' "
                                          r"\(did you mean 'top5' or 'top1'"):  # before training, not after an epoch
        train(tiny_config("train.epochs=1", "train.metric=top7"))
    config = tiny_config("train.epochs=1", "train.metric=top5", "name=top5")
    with pytest.raises(ConfigError, match=r"train.metric: 'top5' is not a metric of task 'classification'.*"
                                          r"metrics: top1, macro_precision"):  # 3 classes: no top5, known before
        train(config)                                                        # the first step
    assert not (Path(config.project) / "classification" / "top5").exists()


def test_layerwise_lr_groups_follow_config(tiny_config):
    trainer = Trainer(tiny_config("finetune.head_lr_mult=1.2", "finetune.lr_mults={layer1: 0.5}",
                                  "sched.name=constant"))
    trainer.setup()
    lr_of = {name: group["lr"] for group in trainer.optimizer.param_groups for name in group["names"]}
    assert lr_of["net.fc.weight"] == pytest.approx(0.06)
    assert any(math.isclose(lr, 0.025) for name, lr in lr_of.items() if "layer1" in name)
    assert lr_of["net.conv1.0.weight"] == pytest.approx(0.05)
