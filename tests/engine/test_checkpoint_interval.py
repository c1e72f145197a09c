"""``train.checkpoint_interval_s``: last.pt / best.pt written at most that often, always agreeing on disk; and the
loaders of in-memory datasets (cached features) without worker processes."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import script_metric, train
from visiontune.config import load_config
from visiontune.data.feature_cache import FeatureDataset
from visiontune.engine import checkpoint as checkpoint_module
from visiontune.engine import trainer as trainer_module
from visiontune.engine.build import build_train_loader, build_val_loader
from visiontune.engine.checkpoint import load_checkpoint
from visiontune.engine.hooks import HookBase
from visiontune.engine.hooks import checkpoints as checkpoint_hooks
from visiontune.engine.hooks import evaluation as evaluation_hooks
from visiontune.tasks import create_task
from visiontune.tasks.classification import ClassificationTask
from visiontune.utils.comm import DistInfo

ONE_HOUR = "train.checkpoint_interval_s=3600"
EPOCH_2_WINS = (0.2, 0.5, 0.8, 0.6, 0.7)
"""Validation top-1 of the baseline and 4 epochs, scripted: which epoch of a real run wins depends on float rounding."""


@pytest.fixture
def writes(monkeypatch) -> list[str]:
    """The names of the checkpoints written, in order."""
    names: list[str] = []
    original = checkpoint_module.atomic_save

    def recording(obj, path):
        names.append(path.name)
        return original(obj, path)

    for module in (trainer_module, evaluation_hooks, checkpoint_hooks):  # every writer of checkpoints
        monkeypatch.setattr(module, "atomic_save", recording)
    return names


def assert_same_weights(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_interval_writes_the_same_files_once_at_the_end(tiny_config, writes, monkeypatch):
    recipe = ("train.epochs=4", "sched.name=constant", "optim.lr=0.02")
    script_metric(monkeypatch, ClassificationTask, "top1", EPOCH_2_WINS)
    every_epoch = train(tiny_config(*recipe, "name=every"))
    counted = writes.count("last.pt")
    assert counted == 5  # the baseline (epoch 0) and 4 epochs
    writes.clear()
    script_metric(monkeypatch, ClassificationTask, "top1", EPOCH_2_WINS)
    spaced = train(tiny_config(*recipe, "name=spaced", ONE_HOUR))
    # the baseline's last.pt (with its best.pt first), then nothing until the run ends: best.pt (an epoch beat the
    # baseline: its state waited in memory), last.pt
    assert every_epoch.best_epoch == spaced.best_epoch == 2
    assert writes == ["best.pt", "last.pt", "best.pt", "last.pt"]
    for name in ("best.pt", "last.pt"):
        reference, checked = load_checkpoint(every_epoch.run_dir / name), load_checkpoint(spaced.run_dir / name)
        assert checked["epoch"] == reference["epoch"] and checked["best_metric"] == reference["best_metric"]
        assert_same_weights(checked["model"], reference["model"])
        assert_same_weights(checked["optimizer"]["state"][0], reference["optimizer"]["state"][0])


def test_interval_elapsed_writes_at_the_epoch_end(tiny_config, writes, monkeypatch):
    clock = iter(float(t) for t in range(0, 1000, 10))  # every call 10 s later
    monkeypatch.setattr(checkpoint_hooks.time, "monotonic", lambda: next(clock))
    train(tiny_config("train.epochs=2", "train.checkpoint_interval_s=5", "train.eval_before=false"))
    assert writes.count("last.pt") == 2  # each epoch ended more than 5 s after the previous write


class Crash(HookBase):
    def after_epoch(self, trainer, row):
        if row["epoch"] == 2:
            raise RuntimeError("simulated crash")


def test_crash_leaves_agreeing_files_and_the_resume_is_exact(tiny_config):
    reference = train(tiny_config("train.epochs=3", "name=reference"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_config("train.epochs=3", "name=crashed", ONE_HOUR), hooks=[Crash()])
    run_dir = reference.run_dir.parent / "crashed"
    last, best = load_checkpoint(run_dir / "last.pt"), load_checkpoint(run_dir / "best.pt")
    # as a crash would leave them: the baseline's last.pt and the best.pt of its best_metric, nothing newer
    assert last["epoch"] == 0 and best["epoch"] == 0 and last["best_metric"] == best["best_metric"]
    resumed = train(tiny_config("train.epochs=3", ONE_HOUR, f"resume={run_dir / 'last.pt'}"))
    assert resumed.run_dir == run_dir
    assert_same_weights(load_checkpoint(run_dir / "last.pt")["model"],
                        load_checkpoint(reference.run_dir / "last.pt")["model"])
    assert_same_weights(load_checkpoint(run_dir / "best.pt")["model"],
                        load_checkpoint(reference.run_dir / "best.pt")["model"])


def test_in_memory_features_are_loaded_without_workers(tiny_config):
    config = tiny_config("data.num_workers=2")
    task = create_task(config)
    features = FeatureDataset(torch.randn(10, 8), [0, 1] * 5)
    train_loader, _sampler = build_train_loader(task, features, config, DistInfo())
    val_loader = build_val_loader(task, features, config, DistInfo())
    assert train_loader.num_workers == 0 and val_loader.num_workers == 0
    images = task.build_dataset(config.data.train_split, train=True)
    assert build_train_loader(task, images, config, DistInfo())[0].num_workers == 2


def test_interval_cannot_be_negative():
    with pytest.raises(ValueError, match="checkpoint_interval_s"):
        load_config(None, ["train.checkpoint_interval_s=-1"])


def test_slow_plots_are_skipped_but_the_last_epoch_is_drawn(tiny_config, monkeypatch):
    import types

    import visiontune.utils.plots as plots
    import visiontune.utils.timing as timing

    now = [0.0]

    def clock() -> float:  # the share's clock: 10 ms per reading, plus what a drawing takes
        now[0] += 0.01
        return now[0]

    drawn: list[int] = []

    def slow_plot(history, out_dir, **kwargs):
        now[0] += 100.0  # far above 5% of these epochs, on any machine
        drawn.append(int(history[-1]["epoch"]))
        return []

    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=clock))
    monkeypatch.setattr(plots, "plot_training_curves", slow_plot)
    train(tiny_config("train.epochs=3", "train.plots=true", "train.eval_before=false"))
    assert drawn == [1, 3]  # the first, then under the 5% share, the last


def test_head_only_checkpoints_follow_the_best_written_later(tiny_config, monkeypatch):
    script_metric(monkeypatch, ClassificationTask, "top1", EPOCH_2_WINS)
    result = train(tiny_config("train.epochs=4", "sched.name=constant", "optim.lr=0.02", "train.save_head_only=true",
                               ONE_HOUR))
    best = load_checkpoint(result.run_dir / "best.pt")
    head = torch.load(result.run_dir / "best_head.pt", weights_only=True)
    assert best["epoch"] == head["epoch"] == 2 and head["model"]
    for name, tensor in head["model"].items():
        assert torch.equal(tensor, best["model"][name]), name
