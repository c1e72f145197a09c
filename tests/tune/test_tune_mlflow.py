"""``visiontune tune`` with ``train.trackers=[mlflow]``: one MLflow run per study, a nested run per trial and final
seed, the same parent after a kill and a resume, and a store that fails as one warning."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import one_thread
from tests.tune.test_tune import SCRIPT, overrides, read_trials
from visiontune.config import load_config
from visiontune.engine.hooks import HookBase
from visiontune.engine.stop import NonFiniteLossError
from visiontune.tune import parse_space, tune
from visiontune.tune.tracking import REASON_TAG, RUN_ID_ATTR, STATE_TAG, TRIAL_TAG, study_run
from visiontune.tune.types import Search

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")  # MLflow's SQL store


def runs_by_name(client):
    runs = client.search_runs([client.get_experiment_by_name("classification").experiment_id])
    by_name = {run.info.run_name: run for run in runs}
    assert len(by_name) == len(runs), [run.info.run_name for run in runs]
    return by_name


class FailFirstRun(HookBase):
    """The first run this object sees fails at its first step."""

    def __init__(self) -> None:
        self.runs = 0

    def before_train(self, trainer) -> None:
        self.runs += 1

    def before_step(self, trainer) -> None:
        if self.runs == 1:
            raise NonFiniteLossError("non-finite loss at epoch 0, step 0: scripted")


def test_a_killed_and_resumed_study_is_one_mlflow_run_with_a_nested_run_per_trial(tiny_shapes, tmp_path,
                                                                                  mlflow_store, caplog):
    arguments = overrides(tiny_shapes, tmp_path / "runs", "tune.trials=2", "train.trackers=[csv, mlflow]")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    killed = subprocess.run([sys.executable, str(SCRIPT), "--kill-trial", "1", *arguments], env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    runs = runs_by_name(mlflow_store)
    assert set(runs) == {"search", "trial-0000", "trial-0001"} and runs["trial-0001"].info.status == "RUNNING"

    caplog.set_level(logging.INFO)
    with one_thread():  # trial 2 fails (the second counted trial), then trial 0's values with one more seed
        result = tune(load_config(None, [*arguments, "tune.final_seeds=1"]), hooks=[FailFirstRun()])
    assert result.resumed and [row["state"] for row in read_trials(result.folder)] == [
        "complete", "interrupted", "failed"]
    runs = runs_by_name(mlflow_store)
    assert set(runs) == {"search", "trial-0000", "trial-0001", "trial-0002", "seed-43"}  # one parent
    parent = runs.pop("search")
    assert parent.info.status == "FINISHED" and parent.data.tags["visiontune.run_dir"] == str(result.folder.resolve())
    import optuna

    study = optuna.load_study(study_name="search", storage=f"sqlite:///{result.folder / 'study.db'}")
    assert study.user_attrs[RUN_ID_ATTR] == parent.info.run_id
    assert (f"MLflow: continuing the study's run {parent.info.run_id} in experiment classification (its trials and "
            "final seeds nest under it)") in caplog.text
    assert "tracker mlflow failed" not in caplog.text
    assert all(run.data.tags["mlflow.parentRunId"] == parent.info.run_id for run in runs.values())

    states = {name: (run.data.tags.get(TRIAL_TAG), run.data.tags.get(STATE_TAG), run.info.status)
              for name, run in runs.items()}
    assert states == {"trial-0000": ("0", "complete", "FINISHED"), "trial-0001": ("1", "interrupted", "KILLED"),
                      "trial-0002": ("2", "failed", "FAILED"), "seed-43": (None, None, "FINISHED")}
    reason = "NonFiniteLossError: non-finite loss at epoch 0, step 0: scripted"
    assert runs["trial-0002"].data.tags[REASON_TAG] == reason
    assert REASON_TAG not in runs["trial-0000"].data.tags and runs["seed-43"].data.tags["visiontune.final_seed"] == "43"
    assert [m.step for m in mlflow_store.get_metric_history(runs["trial-0000"].info.run_id, "val_top1")] == [1]
    assert runs["trial-0000"].data.params["optim.lr"] == read_trials(result.folder)[0]["optim.lr"]

    params = parent.data.params
    assert params["space.optim.lr"] == "loguniform(1e-3, 0.3)" and params["tune.sampler"] == "random"
    assert params["tune.trials"] == "2" and params["metric"] == "val_top1"  # the first invocation's parameters
    metrics = parent.data.metrics
    assert {key: metrics[f"trials.{key}"] for key in result.counts} == {
        "complete": 1, "pruned": 0, "failed": 1, "interrupted": 1}
    assert metrics["best.val_top1"] == pytest.approx(result.best_value)
    assert metrics["final.val_top1.mean"] == pytest.approx(result.final["mean"]) and metrics["final.val_top1.std"] == 0
    assert parent.data.tags["best.trial"] == str(result.best_number)
    assert float(parent.data.tags["best.optim.lr"]) == pytest.approx(result.best_params["optim.lr"])
    artifacts = {item.path for item in mlflow_store.list_artifacts(parent.info.run_id)}
    assert artifacts == {"trials.csv", "best.yaml", "final.json", "report.html"}
    local = Path(mlflow_store.download_artifacts(parent.info.run_id, "trials.csv", str(tmp_path)))
    assert local.read_text() == (result.folder / "trials.csv").read_text()


def test_an_unreachable_store_is_one_warning_and_the_search_goes_on(tiny_shapes, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the discard port: nothing answers
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    config = load_config(None, overrides(tiny_shapes, tmp_path, "tune.trials=2", "train.trackers=[mlflow]"))
    with caplog.at_level(logging.WARNING), one_thread():
        result = tune(config)
    assert [row["state"] for row in read_trials(result.folder)] == ["complete", "complete"]
    (warning,) = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert warning.startswith("tracker mlflow failed at the start of the study run, training goes on without it: ")
    assert "\n" not in warning and "127.0.0.1" in warning


def test_a_trial_that_never_trained_gets_a_failed_run_with_its_reason(tiny_shapes, tmp_path, mlflow_store):
    import optuna

    config = load_config(None, overrides(tiny_shapes, tmp_path, "train.trackers=[mlflow]"))
    search = Search(config=config, specs=parse_space(config.tune.space), metric_key="val_top1",
                    direction="maximize", folder=tmp_path / "search")
    assert study_run(optuna.create_study(), Search(config=load_config(None, overrides(tiny_shapes, tmp_path)),
                                                   specs=search.specs, metric_key="val_top1",
                                                   direction="maximize")) is None  # train.trackers without mlflow
    study = optuna.create_study()
    run = study_run(study, search)
    assert run is not None and study.user_attrs[RUN_ID_ATTR] == run.run_id
    reason = "ConfigError: finetune.freeze: expected {first_n: N}, got {'first': 3}"
    run.end_trial(run.trial_tracker(4), 4, "failed", reason)  # its values were refused: no training, no tracker run
    child = runs_by_name(mlflow_store)["trial-0004"]
    assert child.info.status == "FAILED" and child.data.tags["mlflow.parentRunId"] == run.run_id
    assert (child.data.tags[TRIAL_TAG], child.data.tags[STATE_TAG], child.data.tags[REASON_TAG]) == (
        "4", "failed", reason)
