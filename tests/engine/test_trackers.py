"""Experiment trackers (``train.trackers``): TensorBoard and a real local MLflow store, failures, the old key."""

from __future__ import annotations

import csv
import logging
import typing

import pytest

import visiontune
from tests.helpers import train
from visiontune.cli import main
from visiontune.config import ConfigError, load_config
from visiontune.config.schema import TrainConfig
from visiontune.engine.checkpoint import load_checkpoint
from visiontune.engine.trackers import (
    MLFLOW_PARAM_LENGTH,
    TRACKERS,
    MLflowTracker,
    Tracker,
    arrange_trackers,
    end_mlflow_run,
    mlflow_params,
    start_mlflow_run,
)

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")  # MLflow's SQL store


def only_run(client, experiment="classification"):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [run.info.run_name for run in runs]
    return runs[0]


def tracker_warnings(caplog):
    return [record.getMessage() for record in caplog.records
            if record.levelno == logging.WARNING and record.getMessage().startswith("tracker ")]


def test_mlflow_run_holds_config_epoch_rows_summary_and_run_files(tiny_config, mlflow_store):
    result = visiontune.train(tiny_config("train.epochs=1", "train.trackers=[mlflow]"))
    run = only_run(mlflow_store)
    assert run.info.run_name == result.run_dir.name and run.info.status == "FINISHED"
    assert run.data.tags["visiontune.run_dir"] == str(result.run_dir.resolve())
    params = run.data.params
    assert params["optim.lr"] == "0.05" and params["model.name"] == "test_resnet"
    assert params["train.trackers"] == '["mlflow"]' and params["data.val_split"] == "val"
    with open(result.run_dir / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    for key in ("val_top1", "train_loss"):  # the values of metrics.csv, by epoch (0: the baseline, no train loss)
        history = mlflow_store.get_metric_history(run.info.run_id, key)
        assert [(m.step, m.value) for m in history] == [(int(row["epoch"]), float(row[key])) for row in rows
                                                         if row[key]]
    assert [m.step for m in mlflow_store.get_metric_history(run.info.run_id, "val_top1")] == [0, 1]
    summary = result.summary
    assert run.data.metrics["summary.best.val_top1"] == summary["best"]["val_top1"]
    assert run.data.metrics["summary.epochs"] == 1
    assert run.data.tags["summary.stop_reason"] == "completed" and run.data.tags["summary.metric"] == "val_top1"
    artifacts = {item.path for item in mlflow_store.list_artifacts(run.info.run_id)}
    assert artifacts == {"report.html", "summary.json", "config.yaml"}


def test_a_tracker_given_as_hook_nests_under_a_parent_run_in_place_of_the_configured_one(tiny_config, mlflow_store):
    parent = start_mlflow_run("study", experiment_name="classification")
    tracker = MLflowTracker(parent_run_id=parent, tags={"trial": "0"})
    result = train(tiny_config("train.epochs=0", "train.trackers=[mlflow]"), hooks=[tracker])  # the baseline only
    end_mlflow_run(parent)
    runs = {run.info.run_name: run for run in mlflow_store.search_runs(
        [mlflow_store.get_experiment_by_name("classification").experiment_id])}
    assert set(runs) == {"study", result.run_dir.name}  # one training run: the hook replaced the configured tracker
    child = runs[result.run_dir.name]
    assert child.info.run_id == tracker.run_id and child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == parent and child.data.tags["trial"] == "0"
    assert [m.step for m in mlflow_store.get_metric_history(tracker.run_id, "val_top1")] == [0]
    assert runs["study"].info.status == "FINISHED"


def test_an_unreachable_store_is_one_warning_and_training_keeps_its_checkpoints(tiny_config, monkeypatch, caplog):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the discard port: nothing answers
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    with caplog.at_level(logging.WARNING):
        result = train(tiny_config("train.epochs=1", "train.trackers=[csv, mlflow, tensorboard]"))
    assert result.stop_reason == "completed"
    (warning,) = tracker_warnings(caplog)
    assert warning.startswith("tracker mlflow failed at start, training goes on without it: ")
    assert "\n" not in warning and "127.0.0.1" in warning and "Connection refused" in warning[-60:]
    assert load_checkpoint(result.run_dir / "last.pt")["epoch"] == 1 and (result.run_dir / "best.pt").is_file()
    events = EventAccumulator(str(result.run_dir / "tensorboard"))  # the other tracker went on
    events.Reload()
    assert [event.step for event in events.Scalars("val_top1")] == [0, 1]


class FailingTracker(Tracker):
    """Records its calls; the row of epoch ``fail_at`` raises a full disk."""

    name = "failing"

    def __init__(self, fail_at):
        super().__init__()
        self.fail_at, self.calls = fail_at, []

    def start(self, trainer):
        self.calls.append("start")

    def log_row(self, trainer, row):
        self.calls.append(row["epoch"])
        if row["epoch"] == self.fail_at:
            raise OSError(28, "No space left on device")

    def finish(self, trainer):
        self.calls.append("finish")

    def close(self):
        self.calls.append("close")


def test_a_failing_tracker_warns_once_then_stays_off(tiny_config, caplog):
    tracker = FailingTracker(fail_at=1)
    with caplog.at_level(logging.WARNING):
        result = train(tiny_config("train.epochs=2"), hooks=[tracker])
    assert tracker.calls == ["start", 0, 1, "close"]  # nothing after the failure: not epoch 2, not the end
    assert tracker_warnings(caplog) == [
        "tracker failing failed at epoch 1, training goes on without it: OSError: [Errno 28] No space left on device"]
    assert result.stop_reason == "completed" and load_checkpoint(result.run_dir / "last.pt")["epoch"] == 2
    with open(result.run_dir / "metrics.csv", newline="") as file:
        assert [row["epoch"] for row in csv.DictReader(file)] == ["0", "1", "2"]


def test_train_tensorboard_is_a_deprecated_alias_of_the_tracker(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        config = load_config(None, ["train.tensorboard=true"])
    assert config.train.trackers == ["csv", "tensorboard"] and "train.trackers" in config.set_keys
    assert [record.getMessage() for record in caplog.records] == [
        "train.tensorboard=true (override 'train.tensorboard=true') is deprecated: it adds tensorboard to "
        "train.trackers; write train.trackers: [..., tensorboard] instead"]
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  tensorboard: true\n  trackers: [mlflow]\n", encoding="utf-8")
    assert load_config(path).train.trackers == ["mlflow", "tensorboard"]  # the old key last, whatever the order
    assert f"({path}:2)" in caplog.records[-1].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # configs saved before the change hold tensorboard: false
        assert load_config(None, ["train.tensorboard=false"]).train.trackers == ["csv"]
    assert not caplog.records
    with pytest.raises(ConfigError, match=r"^train.tensorboard: expected bool \(true/false\), got 'yes please' "):
        load_config(None, ["train.tensorboard=yes please"])


def test_an_unknown_tracker_is_a_one_line_error_with_the_nearest_name(capsys):
    assert main(["config", "show", "train.trackers=[csv, mlfow]"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("visiontune config: error: train.trackers[1]: expected one of 'csv' | 'tensorboard' | "
                          "'mlflow', got 'mlfow' (did you mean 'mlflow'?)")
    config = load_config(None)
    config.train.trackers = ["tensorbord"]  # a config built in code skips the loader's check
    with pytest.raises(ConfigError, match=r"^train.trackers: unknown tracker 'tensorbord' \(did you mean 'tensorb"):
        arrange_trackers(config, is_main=True, user_hooks=[])


def test_trackers_run_on_rank_zero_only_and_the_schema_names_them_all():
    (names,) = typing.get_args(typing.get_type_hints(TrainConfig)["trackers"])
    assert set(typing.get_args(names)) == {"csv", *TRACKERS}
    config = load_config(None, ["train.trackers=[csv, tensorboard, mlflow, mlflow]"])
    user_hook = visiontune.HookBase()
    trackers, others = arrange_trackers(config, is_main=True, user_hooks=[user_hook])
    assert [tracker.name for tracker in trackers] == ["tensorboard", "mlflow"] and others == [user_hook]
    assert arrange_trackers(config, is_main=False, user_hooks=[MLflowTracker()]) == ([], [])


def test_mlflow_params_are_texts_and_a_value_too_long_for_mlflow_is_cut_with_a_note():
    params = mlflow_params({"optim": {"lr": 0.05, "name": "sgd"}, "data": {"categories": None, "mean": [0.5, 0.4]},
                            "model": {"kwargs": {}, "checkpoint": "x" * 7000}})
    assert params["optim.lr"] == "0.05" and params["optim.name"] == "sgd" and params["data.categories"] == "null"
    assert params["data.mean"] == "[0.5, 0.4]" and params["model.kwargs"] == "{}"
    cut = params["model.checkpoint"]
    assert len(cut) == MLFLOW_PARAM_LENGTH and cut.endswith(" ... [cut: 7000 characters, see config.yaml]")
    assert cut.startswith("x" * 5000)
