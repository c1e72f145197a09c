"""Surviving faults in one process: crashes, corrupt checkpoints, signals and out-of-memory errors.

Every run trains ``test_resnet`` on the 18 + 9 image shapes set (``tiny_shapes``): 4 steps of 4 images per epoch,
2 epochs. The torchrun variants (SIGKILL + elastic restart) are in ``test_distributed.py``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import one_thread, train
from visiontune.config import load_config
from visiontune.engine.checkpoint import load_checkpoint
from visiontune.engine.faults import REPEATED_SIGNAL_GRACE_S
from visiontune.engine.hooks import HookBase
from visiontune.engine.loaders import SeededDataset
from visiontune.engine.trainer import Trainer

SCRIPT = Path(__file__).parent / "scripts" / "train_with_faults.py"
STEPS_PER_EPOCH = 4  # 18 images, batch 4, drop_last
EPOCHS = 2


def overrides(data_root: Path, project: Path, *extra: str) -> list[str]:
    """The tiny run of ``tests/engine/conftest.py`` as ``key=value`` strings (also for the subprocesses)."""
    return ["task=classification", "device=cpu", f"data.root={data_root}", f"project={project}", "name=t",
            "model.name=test_resnet", "data.image_size=32", "data.crop_pct=1.0", "data.batch_size=4",
            "data.num_workers=0", "data.color_jitter=0.1", "optim.name=sgd", "optim.lr=0.05",
            f"train.epochs={EPOCHS}", "train.progress=false", "train.plots=false", "train.eval_before=false", "seed=7",
            *extra]


@pytest.fixture(autouse=True)
def single_threaded():
    with one_thread():
        yield


def record_samples(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Make every training sample loaded in this process append its ``(sample seed, dataset index)`` to a list."""
    seen: list[tuple[int, int]] = []
    load = SeededDataset.__getitem__

    def recording(self: SeededDataset, item: tuple[int, int]):
        seen.append(tuple(item))
        return load(self, item)

    monkeypatch.setattr(SeededDataset, "__getitem__", recording)
    return seen


@pytest.fixture(scope="module")
def straight(tiny_shapes, tmp_path_factory):
    """An uninterrupted run: its final checkpoint and the samples it loaded, in order."""
    with pytest.MonkeyPatch.context() as monkeypatch, one_thread():
        seen = record_samples(monkeypatch)
        result = train(load_config(None, overrides(tiny_shapes, tmp_path_factory.mktemp("straight"))))
    return load_checkpoint(result.run_dir / "last.pt"), seen


def assert_same_run(final: dict, reference: dict) -> None:
    """Bit-identical weights and optimizer state, the same steps, and the same logged losses and metrics."""
    assert final["step"] == reference["step"] == EPOCHS * STEPS_PER_EPOCH
    for key, tensor in reference["model"].items():
        assert torch.equal(final["model"][key], tensor), key
    for index, state in reference["optimizer"]["state"].items():
        assert torch.equal(final["optimizer"]["state"][index]["momentum_buffer"], state["momentum_buffer"]), index
    for row, expected in zip(final["history"], reference["history"], strict=True):
        assert {k: row[k] for k in ("epoch", "step", "train_loss", "val_top1")} == \
               {k: expected[k] for k in ("epoch", "step", "train_loss", "val_top1")}


class StopAfterStep(HookBase):
    """Requests a stop (as SIGTERM does) after step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def after_step(self, trainer, losses):
        if trainer.state.step == self.step:
            trainer.stop.request("stopped by test")


class CrashBeforeStep(HookBase):
    """Raises before step ``step`` (after ``step`` steps and their checkpoints)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def before_step(self, trainer):
        if trainer.state.step == self.step:
            raise RuntimeError("simulated crash")


def test_stop_mid_epoch_then_auto_resume_sees_each_sample_once(tiny_shapes, tmp_path, straight, monkeypatch):
    reference, straight_seen = straight
    seen = record_samples(monkeypatch)
    options = overrides(tiny_shapes, tmp_path, "train.auto_resume=true")
    stopped = Trainer(load_config(None, options), hooks=[StopAfterStep(6)])
    assert stopped.fit().stop_reason == "stopped by test"
    last = load_checkpoint(stopped.run_dir / "last.pt")
    assert (last["epoch"], last["step"], last["batch_in_epoch"]) == (1, 6, 2)  # two batches into epoch 2
    first_part = list(seen)
    seen.clear()
    resumed = train(load_config(None, options))
    assert resumed.run_dir == stopped.run_dir
    # 8 steps of 4 distinct (epoch-seeded) samples, each loaded once: nothing repeated, nothing skipped
    assert len(set(straight_seen)) == len(straight_seen) == EPOCHS * STEPS_PER_EPOCH * 4
    assert len(first_part) == 6 * 4
    assert first_part + seen == straight_seen
    assert_same_run(load_checkpoint(resumed.run_dir / "last.pt"), reference)


def test_auto_resume_skips_corrupt_newest_checkpoint(tiny_shapes, tmp_path, straight, monkeypatch, caplog):
    reference, straight_seen = straight
    seen = record_samples(monkeypatch)
    options = overrides(tiny_shapes, tmp_path, "train.auto_resume=true", "train.save_every_steps=1",
                        "train.keep_last=3")
    crashed = Trainer(load_config(None, options), hooks=[CrashBeforeStep(6)])
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit()
    run = crashed.run_dir
    assert sorted(path.name for path in run.glob("*.pt")) == ["best.pt", "last.pt", "step_4.pt", "step_5.pt",
                                                              "step_6.pt"]
    newest = run / "step_6.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # a torn write, e.g. a full disk without an atomic rename
    crashed_seen = list(seen)
    seen.clear()
    caplog.set_level(logging.INFO, logger="visiontune")
    resumed = train(load_config(None, options))
    assert f"skipping unusable checkpoint {newest}" in caplog.text
    assert f"resumed from {run / 'step_5.pt'} at epoch 1, step 5" in caplog.text
    assert resumed.run_dir == run
    assert crashed_seen[:5 * 4] + seen == straight_seen  # step 6 is trained again, from the same samples
    assert_same_run(load_checkpoint(run / "last.pt"), reference)


# ------------------------------------------------------------------------------------------------ signals


def subprocess_env() -> dict[str, str]:
    """One thread per process, and no torchrun variables: the script runs as a single process."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start_script(arguments: list[str], ready_file: Path) -> subprocess.Popen:
    """Start ``train_with_faults.py`` and wait until it announces (in ``ready_file``) that it awaits a signal."""
    process = subprocess.Popen([sys.executable, str(SCRIPT), *arguments], env=subprocess_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not ready_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the training script never reached the signal step:\n{process.communicate()[0]}")
        time.sleep(0.05)
    assert int(ready_file.read_text()) == process.pid
    return process


def test_sigterm_stops_with_checkpoint_and_resume_completes(tiny_shapes, tmp_path, straight):
    reference, _ = straight
    ready = tmp_path / "ready"
    options = overrides(tiny_shapes, tmp_path / "runs")
    process = start_script(["--wait-for-signal-at-step", "3", "--ready-file", str(ready), *options], ready)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 143, output  # 128 + SIGTERM: a scheduler tells the preempted run from a finished one
    assert "SIGTERM received: stopping after this step with a checkpoint" in output
    assert "stop_reason: signal SIGTERM" in output
    last_file = tmp_path / "runs" / "classification" / "t" / "last.pt"
    last = load_checkpoint(last_file)
    assert (last["epoch"], last["step"], last["batch_in_epoch"]) == (0, 3, 3)  # < the planned 8 steps
    resumed = train(load_config(None, [*options, f"resume={last_file}"]))
    assert resumed.stop_reason == "completed" and resumed.exit_code == 0 and resumed.stopped_by_signal is None
    assert_same_run(load_checkpoint(last_file), reference)


def test_second_signal_exits_at_once_without_checkpoint(tiny_shapes, tmp_path):
    ready = tmp_path / "ready"
    options = overrides(tiny_shapes, tmp_path / "runs")
    # after the first signal the script lingers 300 s, as a slow shutdown would; the second signal cuts it short
    process = start_script(["--wait-for-signal-at-step", "3", "--ready-file", str(ready), "--linger", "300",
                            *options], ready)
    process.send_signal(signal.SIGTERM)
    time.sleep(REPEATED_SIGNAL_GRACE_S + 0.5)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert time.monotonic() - sent < 30
    assert process.returncode == 130, output  # 128 + SIGINT
    assert "second signal SIGINT: exiting at once with status 130, without a checkpoint" in output
    assert "Traceback" not in output
    assert not (tmp_path / "runs" / "classification" / "t" / "last.pt").exists()


def test_signal_repeated_within_grace_is_the_same_request(tiny_shapes, tmp_path):
    trainer = Trainer(load_config(None, overrides(tiny_shapes, tmp_path)))
    before = signal.getsignal(signal.SIGINT)
    with trainer.stop.signals:
        os.kill(os.getpid(), signal.SIGTERM)
        assert trainer.stop.requested == "signal SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)  # e.g. torchrun forwarding the signal that the worker also got
        assert trainer.stop.requested == "signal SIGTERM"
        trainer.stop.signals.first_time -= REPEATED_SIGNAL_GRACE_S  # as if the grace period had passed
        with pytest.raises(SystemExit) as raised:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs at the latest here
        assert raised.value.code == 130
    assert signal.getsignal(signal.SIGINT) is before  # the previous handlers are back
    assert trainer.stop.agreed is None  # the loop acts only once the ranks agreed (after a step)


# ------------------------------------------------------------------------------------------------ out of memory


def raise_out_of_memory(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity)")


def test_out_of_memory_in_training_step_names_batch_size(tiny_shapes, tmp_path, monkeypatch):
    trainer = Trainer(load_config(None, overrides(tiny_shapes, tmp_path, "train.accumulate=2")))
    trainer.setup()
    monkeypatch.setattr(trainer, "setup", lambda: None)
    monkeypatch.setattr(trainer.model, "forward", raise_out_of_memory)
    with pytest.raises(torch.OutOfMemoryError) as raised:
        trainer.fit()
    message = str(raised.value)
    assert message.startswith("out of memory during training on cpu with a batch of 4 images per device "
                              "(data.batch_size=4, train.accumulate=2, 1 process(es)): lower data.batch_size and "
                              "raise train.accumulate to keep the global batch of 8, e.g. data.batch_size=2 "
                              "train.accumulate=4.")
    assert message.endswith("(CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity))")
    assert isinstance(raised.value.__cause__, torch.OutOfMemoryError)


def test_out_of_memory_in_evaluation_names_eval_batch_size(tiny_shapes, tmp_path, monkeypatch):
    trainer = Trainer(load_config(None, overrides(tiny_shapes, tmp_path, "data.eval_batch_size=9",
                                                  "train.epochs=1")))
    trainer.setup()
    monkeypatch.setattr(trainer, "setup", lambda: None)
    forward = trainer.model.forward
    monkeypatch.setattr(trainer.model, "forward", lambda images, targets=None: (
        forward(images, targets) if trainer.model.training else raise_out_of_memory()))
    with pytest.raises(torch.OutOfMemoryError, match=r"^out of memory during evaluation on cpu with a batch of 9 "
                                                     r"images per device .*: lower data.eval_batch_size \(now 9\)\."):
        trainer.fit()
    assert trainer.state.step == STEPS_PER_EPOCH  # training itself went through
