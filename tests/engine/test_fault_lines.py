"""Bad inputs and faults of a training run end in one clear line; no file is lost and nothing is written where it
does not belong (corrupt checkpoints, copied checkpoints, killed writes, failed starts, run names, file modes, full
disks, signals and exit codes). Runs train ``test_resnet`` on the tiny shapes set of ``conftest.py``."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import train
from visiontune.api import evaluate
from visiontune.config import ConfigError, load_config
from visiontune.engine.checkpoint import CheckpointError, load_checkpoint
from visiontune.engine.hooks import HookBase
from visiontune.engine.run_dir import RUN_MARKER, RunDirError, is_run_dir, new_run_dir
from visiontune.engine.trainer import Trainer
from visiontune.models.loading import WeightLoadError

SCRIPT = Path(__file__).parent / "scripts" / "train_with_faults.py"
CORRUPT = ("does not match the SHA-256 checksum stored when the file was written; use another copy or an earlier "
           "checkpoint")


def options(data_root: Path, project: Path, *extra: str) -> list[str]:
    """The run of ``conftest.tiny_config`` as ``key=value`` strings (for the CLI and the subprocess)."""
    return ["task=classification", "device=cpu", f"data.root={data_root}", f"project={project}", "name=t",
            "model.name=test_resnet",
            "data.image_size=32", "data.crop_pct=1.0", "data.batch_size=4", "data.num_workers=0", "optim.name=sgd",
            "optim.lr=0.05", "train.epochs=2", "train.progress=false", "train.plots=false", "train.eval_before=false",
            "seed=7", *extra]


@pytest.fixture
def config(tiny_config):
    """``tiny_config`` without the baseline evaluation (faster; every epoch row is a trained epoch)."""
    return lambda *extra: tiny_config("train.eval_before=false", *extra)


def flip_bytes(path: Path, tensor: torch.Tensor, count: int = 2000) -> None:
    """Invert ``count`` bytes of the stored bytes of ``tensor`` inside the checkpoint file ``path``."""
    data = bytearray(path.read_bytes())
    start = data.find(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    assert start >= 0
    data[start:start + count] = bytes(byte ^ 0xFF for byte in data[start:start + count])
    path.write_bytes(bytes(data))


class SignalSelf(HookBase):
    """Sends ``signum`` to this process after step ``step``, as a scheduler would."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def after_step(self, trainer, losses):
        if trainer.state.step == self.step:
            os.kill(os.getpid(), self.signum)


# ------------------------------------------------------------------ (2) corrupt checkpoints


def test_corrupt_best_pt_is_refused_by_eval_finetune_and_resume(config, tmp_path):
    first = train(config("train.epochs=1"))
    best = first.run_dir / "best.pt"
    weights = load_checkpoint(best)["model"]
    name = max((key for key, value in weights.items() if value.is_floating_point()), key=lambda k: weights[k].numel())
    flip_bytes(best, weights[name])
    expected = f"{best} is corrupt: tensor model/{name} {CORRUPT}"
    with pytest.raises(CheckpointError) as raised:  # visiontune eval
        evaluate(config(), checkpoint=best)
    assert str(raised.value) == expected
    with pytest.raises(WeightLoadError) as raised:  # visiontune train model.checkpoint=best.pt
        train(config("name=finetune", f"model.checkpoint={best}", "model.pretrained=false"))
    assert str(raised.value).endswith(expected)
    with pytest.raises(CheckpointError) as raised:  # visiontune train --resume best.pt
        train(config(f"resume={best}"))
    assert str(raised.value) == expected
    assert sorted(p.name for p in first.run_dir.parent.iterdir()) == ["t"]  # the failed starts left no folder


# ------------------------------------------------------------------ (7) only run folders are written into


def test_resume_of_a_checkpoint_outside_a_run_folder_continues_in_a_new_run_folder(config, tmp_path, caplog):
    first = train(config("train.epochs=1"))
    assert (first.run_dir / RUN_MARKER).is_file()
    elsewhere = tmp_path / "some" / "folder"
    elsewhere.mkdir(parents=True)
    shutil.copy(first.run_dir / "last.pt", elsewhere / "last.pt")
    (elsewhere / "config.yaml").write_text("mine: true\n")
    (elsewhere / "metrics.csv").write_text("my,own\n1,2\n")
    before = {path.name: path.read_bytes() for path in elsewhere.iterdir()}
    caplog.set_level(logging.INFO, logger="visiontune")
    resumed = train(config(f"resume={elsewhere / 'last.pt'}"))
    new_folder = tmp_path / "runs" / "classification" / "t-2"
    assert resumed.run_dir == new_folder and is_run_dir(new_folder)
    assert (f"{elsewhere / 'last.pt'} is not inside a visiontune run folder: continuing in the new run folder "
            f"{new_folder} (nothing is written next to the checkpoint)") in caplog.text
    assert len((new_folder / "metrics.csv").read_text().splitlines()) == 1 + 2  # both epochs
    assert load_checkpoint(new_folder / "last.pt")["epoch"] == 2
    result = evaluate(config(), checkpoint=elsewhere / "last.pt")  # visiontune eval
    assert result.output_dir == tmp_path / "runs" / "classification" / "eval-val"
    assert (result.output_dir / "metrics.json").is_file()
    assert {path.name: path.read_bytes() for path in elsewhere.iterdir()} == before  # untouched
    inside = evaluate(config(), checkpoint=first.run_dir / "best.pt")  # in a run folder: next to it, as before
    assert inside.output_dir == first.run_dir / "eval-val"


def test_run_folder_of_an_older_version_is_recognised_and_marked(config, tmp_path):
    first = train(config("train.epochs=1"))
    (first.run_dir / RUN_MARKER).unlink()  # as written before the marker existed
    assert is_run_dir(first.run_dir)  # a visiontune config.yaml + metrics.csv
    resumed = train(config(f"resume={first.run_dir / 'last.pt'}"))
    assert resumed.run_dir == first.run_dir and (first.run_dir / RUN_MARKER).is_file()


def test_is_run_dir_needs_marker_or_both_visiontune_files(tmp_path):
    lightning = tmp_path / "lightning"  # LightningCLI + CSVLogger also write config.yaml and metrics.csv
    lightning.mkdir()
    (lightning / "config.yaml").write_text("trainer: {max_epochs: 3}\nmodel: {lr: 0.1}\ndata: {}\n")
    (lightning / "metrics.csv").write_text("epoch,step,train_loss\n0,9,1.5\n")
    assert not is_run_dir(lightning)
    only_config = tmp_path / "only_config"
    only_config.mkdir()
    (only_config / "config.yaml").write_text("task: classification\nname: x\nproject: runs\ntrain: {}\ndata: {}\n"
                                             "model: {}\n")
    assert not is_run_dir(only_config)
    (only_config / "metrics.csv").write_text("epoch,step,train_loss\n1,4,0.9\n")
    assert is_run_dir(only_config)
    assert not is_run_dir(tmp_path / "absent")


# ------------------------------------------------------------------ (8) temporary files of killed writes


def test_sigkill_during_checkpoint_write_leaves_temp_file_that_resume_removes(tiny_shapes, tmp_path, caplog):
    project = tmp_path / "runs"
    arguments = options(tiny_shapes, project, "train.save_every_steps=1", "train.keep_last=2",
                        "train.auto_resume=true")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    process = subprocess.run([sys.executable, str(SCRIPT), "--kill-in-save-at-step", "3", *arguments], env=env,
                             capture_output=True, text=True, timeout=300)
    assert process.returncode == -signal.SIGKILL, process.stdout + process.stderr
    run = project / "classification" / "t"
    stale = list(run.glob(".step_3.pt.*.tmp"))
    assert len(stale) == 1 and stale[0].stat().st_size == 20000
    caplog.set_level(logging.INFO, logger="visiontune")
    resumed = train(load_config(None, arguments))
    assert resumed.run_dir == run and resumed.stop_reason == "completed"
    assert (f"removed 1 stale temporary file(s) of interrupted checkpoint writes in {run}, freeing 20000 bytes"
            in caplog.text)
    assert f"resumed from {run / 'step_2.pt'} at epoch 0, step 2" in caplog.text
    assert not list(run.glob(".*.tmp"))


# ------------------------------------------------------------------ (9) failed starts leave no folder


def test_failed_starts_leave_no_run_folder_and_next_run_gets_plain_name(config, tmp_path):
    with pytest.raises((ValueError, FileNotFoundError), match="missing"):
        train(config(f"data.root={tmp_path / 'missing'}"))
    with pytest.raises(WeightLoadError, match="weights file not found"):
        train(config(f"model.checkpoint={tmp_path / 'nope.pth'}", "model.pretrained=false"))
    assert not (tmp_path / "runs").exists()
    result = train(config("train.epochs=1"))
    assert result.run_dir == tmp_path / "runs" / "classification" / "t"
    log = (result.run_dir / "train.log").read_text(encoding="utf-8")
    assert log.startswith("=== visiontune run started") and "run directory:" in log  # header, then the records


def test_unwritable_project_folder_is_one_line(tmp_path, monkeypatch):
    def read_only(self, *args, **kwargs):  # the tests run as root: chmod would not stop them
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(RunDirError) as raised:
        new_run_dir(tmp_path / "runs" / "classification", "exp")
    assert str(raised.value) == f"cannot create the run folder {tmp_path / 'runs' / 'classification' / 'exp'}: " \
                                "Read-only file system"


# ------------------------------------------------------------------ (10) run names


@pytest.mark.parametrize("name", ["../../elsewhere", "a/b", "..", "a\\b", "/abs"])
def test_name_with_a_path_is_refused_before_anything_is_written(config, tmp_path, name):
    with pytest.raises(ConfigError) as raised:
        train(config(f"name={name}"))
    assert str(raised.value) == (f"name: {name!r} is not a plain folder name: no '/', '\\' or '..' (the run folder "
                                 "is <project>/<task>/<name>; set project= to put runs elsewhere)")
    assert list(tmp_path.iterdir()) == []


def test_empty_name_is_refused(config, tmp_path):
    empty = config()
    empty.name = ""
    with pytest.raises(ConfigError, match=r"^name: the run name must not be empty"):
        train(empty)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ (11) file modes


def test_run_files_follow_the_umask(config, tmp_path):
    previous = os.umask(0o002)
    try:
        result = train(config("train.epochs=1"))
    finally:
        os.umask(previous)
    for name in ("best.pt", "last.pt", "metrics.csv", "config.yaml", "train.log", RUN_MARKER):
        assert (result.run_dir / name).stat().st_mode & 0o777 == 0o664, name  # group members can read them


# ------------------------------------------------------------------ (12) disk full during training


def test_disk_full_at_epoch_checkpoint_keeps_earlier_files_and_writes_no_row(tiny_shapes, tmp_path, monkeypatch,
                                                                            capsys):
    from visiontune.cli import main

    values = iter([50.0, 40.0])  # epoch 2 is worse: only last.pt is written after it
    monkeypatch.setattr(Trainer, "evaluate", lambda self: {"val_top1": next(values)})
    save = torch.save

    def full_disk_in_epoch_2(obj, stream, *args, **kwargs):
        if obj.get("epoch") == 2:
            stream.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(obj, stream, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_in_epoch_2)
    code = main(["train", *options(tiny_shapes, tmp_path / "runs")])
    run = tmp_path / "runs" / "classification" / "t"
    assert code == 2
    expected = f"visiontune train: error: no space left on device while writing {run / 'last.pt'}\n"
    err = capsys.readouterr().err  # the log lines of the run, then the one error line
    assert err.endswith(expected) and "Traceback" not in err
    monkeypatch.setattr(torch, "save", save)
    assert load_checkpoint(run / "last.pt")["epoch"] == 1  # the earlier checkpoints are kept
    assert load_checkpoint(run / "best.pt")["epoch"] == 1
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("1,")  # header + epoch 1: no row for the failed epoch
    assert not list(run.glob(".*.tmp"))


# ------------------------------------------------------------------ (16) exit status after a signal


def test_sigint_stop_writes_last_pt_and_ends_with_status_130(config):
    result = Trainer(config(), hooks=[SignalSelf(2, signal.SIGINT)]).fit()
    assert (result.stop_reason, result.stopped_by_signal, result.exit_code) == ("signal SIGINT", "SIGINT", 130)
    assert load_checkpoint(result.run_dir / "last.pt")["step"] == 2


def test_train_command_exits_143_after_sigterm(tiny_shapes, tmp_path, monkeypatch):
    from visiontune.cli import main

    built = Trainer.build_hooks
    monkeypatch.setattr(Trainer, "build_hooks", lambda self: [*built(self), SignalSelf(2, signal.SIGTERM)])
    assert main(["train", *options(tiny_shapes, tmp_path / "runs")]) == 143
    assert load_checkpoint(tmp_path / "runs" / "classification" / "t" / "last.pt")["step"] == 2
