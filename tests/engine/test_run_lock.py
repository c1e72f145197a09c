"""One training per run folder: a second training of a folder in use is refused; a killed run resumes at once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from visiontune.cli import main
from visiontune.engine.checkpoint import load_checkpoint
from visiontune.engine.run_dir import RUN_LOCK, RunInUseError, RunLock, new_run_dir

SCRIPT = Path(__file__).parent / "scripts" / "train_with_faults.py"
STEPS_PER_EPOCH = 3  # 18 images, batch 6
START_LIMIT_S = 120


def overrides(data_root: Path, project: Path, *extra: str) -> list[str]:
    """A tiny two-epoch run named ``live`` as ``key=value`` strings (for the script and the command line)."""
    return ["task=classification", "device=cpu", f"data.root={data_root}", f"project={project}", "name=live",
            "model.name=test_resnet", "data.image_size=32", "data.crop_pct=1.0", "data.batch_size=6",
            "data.num_workers=0", "train.epochs=2", "train.progress=false", "train.plots=false", "train.report=false",
            "train.eval_before=false", *extra]


def start_script(arguments: list[str], ready_file: Path | None = None) -> subprocess.Popen:
    """Start ``train_with_faults.py`` as one process; with ``ready_file``, wait until the script announces itself."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    process = subprocess.Popen([sys.executable, str(SCRIPT), *arguments], env={**env, "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + START_LIMIT_S
    while ready_file is not None and not ready_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the training script never paused:\n{process.communicate()[0]}")
        time.sleep(0.05)
    return process


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_second_training_of_a_running_folder_is_refused(tiny_shapes: Path, tmp_path: Path, capsys):
    project, ready, go = tmp_path / "runs", tmp_path / "ready", tmp_path / "go"
    first = start_script(["--pause-after-epoch", "1", "--ready-file", str(ready), "--go-file", str(go),
                          *overrides(tiny_shapes, project)], ready)
    run = project / "classification" / "live"
    try:
        before = files_of(run)
        assert main(["train", *overrides(tiny_shapes, project), "resume=true"]) == 2
        captured = capsys.readouterr().err
        error = captured.strip().splitlines()[-1]
        assert "Traceback" not in captured and "resumed from" not in captured  # it never says it continues the run
        assert error.startswith(f"visiontune train: error: the run folder {run} is in use by pid {first.pid} on host "
                                f"{socket.gethostname()} since ")
        assert error.endswith(f": another training writes it (it holds {RUN_LOCK}); wait until it ends or stop it, "
                              "or train under another name=")
        assert files_of(run) == before  # the refused training wrote nothing
    finally:
        go.touch()
        output = first.communicate(timeout=START_LIMIT_S)[0]
    assert first.returncode == 0, output
    assert "stop_reason: completed" in output
    last = load_checkpoint(run / "last.pt")
    assert (last["epoch"], last["step"]) == (2, 2 * STEPS_PER_EPOCH)
    assert (run / "best.pt").is_file() and (run / "summary.json").is_file()
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 2  # header and both epochs, once each


def test_a_killed_run_resumes_at_once(tiny_shapes: Path, tmp_path: Path, capsys):
    project = tmp_path / "runs"
    killed = start_script(["--kill-at-step", str(STEPS_PER_EPOCH + 1), "--marker", str(tmp_path / "killed"),
                           *overrides(tiny_shapes, project)])
    killed.communicate(timeout=START_LIMIT_S)
    assert killed.returncode == -signal.SIGKILL
    run = project / "classification" / "live"
    assert f"pid {killed.pid} " in (run / RUN_LOCK).read_text()  # the file stays; the lock died with the process
    assert main(["train", *overrides(tiny_shapes, project), "resume=true"]) == 0
    assert f"resumed from {run / 'last.pt'} at epoch 1" in capsys.readouterr().err
    assert load_checkpoint(run / "last.pt")["step"] == 2 * STEPS_PER_EPOCH


def test_the_lock_is_released_when_its_holder_is_done(tmp_path: Path):
    folder = new_run_dir(tmp_path, "run")
    with RunLock() as first:
        first.claim(folder)
        assert f"pid {os.getpid()} on host {socket.gethostname()} since " in (folder / RUN_LOCK).read_text()
        with pytest.raises(RunInUseError, match=f"is in use by pid {os.getpid()} "):
            RunLock().claim(folder)  # a second holder in the same process too
    second = RunLock()
    assert second.claim(folder) == folder and second.folder == folder
    second.release()
    assert second.folder is None
