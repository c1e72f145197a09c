"""The hook API (``visiontune.train(config, hooks=[...])``), ``<run>/train.log`` and setup's order."""

from __future__ import annotations

import importlib
import logging

import pytest

import visiontune
from visiontune.config import ConfigError
from visiontune.engine.checkpoint import load_checkpoint

STEPS_PER_EPOCH = 4  # 18 images, batch 4, drop_last


class Recorder(visiontune.HookBase):
    """Records every hook point with what it saw."""

    def __init__(self):
        self.calls = []
        self.logged = []

    def before_train(self, trainer):
        self.calls.append(("before_train", trainer.state.step))

    def before_step(self, trainer):
        self.calls.append(("before_step", trainer.state.step))

    def after_step(self, trainer, losses):
        self.calls.append(("after_step", trainer.state.step))
        if losses is not None:  # a logging step (train.log_every, the epoch's end)
            self.logged.append(trainer.state.step)
            assert set(losses) >= {"loss"} and all(isinstance(value, float) for value in losses.values())

    def after_epoch(self, trainer, row):
        self.calls.append(("after_epoch", row["epoch"]))
        assert "val_top1" in row and row["step"] == trainer.state.step  # evaluation ran before the user hooks
        assert load_checkpoint(trainer.run_dir / "last.pt")["epoch"] == row["epoch"]  # so did last.pt

    def after_train(self, trainer):
        self.calls.append(("after_train", trainer.stop.reason))


def test_user_hook_sees_five_points_in_order(tiny_config):
    recorder = Recorder()
    result = visiontune.train(tiny_config("train.epochs=2"), hooks=[recorder])
    expected = [("before_train", 0)]
    for epoch in range(2):
        for step in range(epoch * STEPS_PER_EPOCH, (epoch + 1) * STEPS_PER_EPOCH):
            expected += [("before_step", step), ("after_step", step + 1)]
        expected.append(("after_epoch", epoch + 1))
    expected.append(("after_train", "completed"))
    assert recorder.calls == expected
    assert result.stop_reason == "completed"
    assert recorder.logged == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]  # train.log_every=20: the epochs' last steps


def test_after_step_gets_losses_every_log_every_steps_averaged(tiny_config):
    recorder = Recorder()
    seen = []

    class Losses(visiontune.HookBase):
        def after_step(self, trainer, losses):
            seen.append(losses)

    result = visiontune.train(tiny_config("train.epochs=2", "train.log_every=3", "train.eval_before=false"),
                              hooks=[recorder, Losses()])
    assert recorder.logged == [3, 4, 6, 8]  # every 3 steps and each epoch's last step (4 steps per epoch)
    logged = [losses for losses in seen if losses is not None]
    # the two windows of epoch 1 (steps 1-3, step 4) average to the epoch's mean, weighted by their steps
    first_epoch = (3 * logged[0]["loss"] + logged[1]["loss"]) / 4
    assert first_epoch == pytest.approx(result.history[0]["train_loss"], rel=1e-9)


def test_after_train_runs_when_training_fails(tiny_config):
    class Fail(visiontune.HookBase):
        def after_step(self, trainer, losses):
            raise RuntimeError("hook failed")

    recorder = Recorder()
    with pytest.raises(RuntimeError, match="hook failed"):
        visiontune.train(tiny_config("train.epochs=1"), hooks=[recorder, Fail()])
    assert recorder.calls == [("before_train", 0), ("before_step", 0), ("after_step", 1), ("after_train", None)]


def test_the_earlier_name_hook_still_answers_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="visiontune.Hook is deprecated: use visiontune.HookBase"):
        earlier = visiontune.Hook
    assert earlier is visiontune.HookBase
    assert not hasattr(importlib.import_module("visiontune.engine.hooks"), "Hook")


def test_train_log_has_config_environment_and_log_lines(tiny_config):
    package_logger = logging.getLogger("visiontune")
    before = (list(package_logger.handlers), package_logger.level, package_logger.propagate)
    first = visiontune.train(tiny_config("train.epochs=1", "name=first"))
    assert (list(package_logger.handlers), package_logger.level, package_logger.propagate) == before
    second = visiontune.train(tiny_config("train.epochs=1", "name=second", "optim.lr=0.03"))
    assert (list(package_logger.handlers), package_logger.level, package_logger.propagate) == before
    text = (first.run_dir / "train.log").read_text(encoding="utf-8")
    header, _, log = text.partition("\nlog:\n")
    assert f"visiontune {visiontune.__version__}, python " in header
    assert all(f"{name} " in header for name in ("torch", "torchvision", "timm"))
    assert "device cpu, world size 1, AMP off (loss scaling off)" in header
    assert "  task: classification" in header and "    lr: 0.05" in header and "  name: first" in header
    assert f"run directory: {first.run_dir}" in log and "global batch 4 = 4 per device" in log
    assert "INFO visiontune.engine.hooks: epoch 1: step=4, " in log and ", train_loss=" in log
    other = (second.run_dir / "train.log").read_text(encoding="utf-8")
    assert "name: second" in other and "lr: 0.03" in other and "name: first" not in other
    assert str(first.run_dir) not in other  # the first run's handler is gone
    # a resumed run appends a new section to the same file
    visiontune.train(tiny_config("train.epochs=2", f"resume={first.run_dir / 'last.pt'}"))
    resumed = (first.run_dir / "train.log").read_text(encoding="utf-8")
    assert resumed.startswith(text) and resumed.count("=== visiontune run started") == 2
    assert f"resumed from {first.run_dir / 'last.pt'} at epoch 1, step 4" in resumed
    assert "epoch 2: step=8" in resumed


def test_train_log_keeps_console_output_unchanged(tiny_config, caplog):
    # the root logger at its default WARNING level: its handlers (here pytest's) get the warnings of the run and
    # none of the INFO lines that train.log records
    assert logging.getLogger("visiontune").getEffectiveLevel() == logging.WARNING
    first = visiontune.train(tiny_config("train.epochs=1"))
    visiontune.train(tiny_config("train.epochs=1", f"resume={first.run_dir / 'last.pt'}"))
    messages = [(record.levelno, record.getMessage()) for record in caplog.records]
    assert all(level >= logging.WARNING for level, _ in messages), messages
    assert any("already finished its 1 epochs" in message for _, message in messages)
    assert "already finished its 1 epochs" in (first.run_dir / "train.log").read_text(encoding="utf-8")


def test_unknown_task_fails_before_creating_the_run_directory(tiny_config, tmp_path):
    config = tiny_config("train.epochs=1")
    config.task = "clasification"
    with pytest.raises(ConfigError):
        visiontune.train(config)
    assert not (tmp_path / "runs").exists()


def test_readme_hook_example_runs(tiny_config):
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Hooks"):]
    code = section[section.index("```python") + len("```python"):section.index("\nconfig = ")]
    namespace: dict = {}
    exec(compile(code, "README.md (Hooks)", "exec"), namespace)

    class Client:
        def __init__(self):
            self.events = []

        def start(self, **kwargs):
            self.events.append(("start", kwargs))

        def log(self, values, step):
            self.events.append(("log", step, sorted(values)))

        def finish(self, status):
            self.events.append(("finish", status))

    client = Client()
    result = visiontune.train(tiny_config("train.epochs=1", "train.log_every=2"),
                              hooks=[namespace["TrackerLogger"](client, every=2)])
    assert client.events[0] == ("start", {"run_name": result.run_dir.name, "params": {"lr": 0.05}})
    assert [event[1] for event in client.events[1:-1]] == [2, 4, 4]  # steps 2 and 4, then the epoch row
    assert "val_top1" in client.events[-2][2] and client.events[-1] == ("finish", "completed")
