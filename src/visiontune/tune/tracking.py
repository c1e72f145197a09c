"""The study's MLflow run: one parent run per tune folder, a nested run per trial and per final seed.

When the searched config's ``train.trackers`` lists ``mlflow``, rank 0 opens (:meth:`StudyRun.open`) a run named
after the tune folder, with the search space and the ``tune`` settings as parameters, and keeps its id in the study
(user attribute :data:`RUN_ID_ATTR`), so that a resumed study goes on logging to the same run. Every trial and final
seed trains with an :class:`~visiontune.engine.trackers.MLflowTracker` nested under it (in place of the configured
one); the trial's run gets the tags :data:`TRIAL_TAG`, :data:`STATE_TAG` and :data:`REASON_TAG`. At the end
(:meth:`StudyRun.close`) the parent gets the best value and values, the trial counts, the final seeds' mean and
std and the tune folder's files.

The study run follows the trackers' rule: its first failure is one warning, and MLflow is left alone for the rest
of the invocation (the trials' own trackers included); the search goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visiontune.engine.trackers import (
    MLflowTracker,
    Tracker,
    end_mlflow_run,
    mlflow_experiment_name,
    mlflow_params,
    start_mlflow_run,
)
from visiontune.tune.types import Search, TuneResult

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

__all__ = ["FINAL_SEED_TAG", "REASON_TAG", "RUN_ID_ATTR", "STATE_TAG", "STUDY_ARTIFACTS", "TRIAL_TAG", "StudyRun",
           "study_run"]

RUN_ID_ATTR = "mlflow_run_id"
"""The study's user attribute that holds the id of its MLflow run."""
TRIAL_TAG, STATE_TAG, REASON_TAG = "visiontune.trial", "visiontune.trial_state", "visiontune.trial_reason"
"""Tags of a trial's MLflow run: its number, how it ended (``complete``, ``pruned``, ``failed``, ``interrupted``)
and a failed trial's one-line reason."""
FINAL_SEED_TAG = "visiontune.final_seed"
"""Tag of a final seed's MLflow run: the seed."""
STUDY_ARTIFACTS = ("trials.csv", "best.yaml", "final.json", "report.html")
"""The tune folder's files that the study run uploads at the end (those that exist)."""


class StudyRun(Tracker):
    """The MLflow run of a study (rank 0). A :class:`Tracker` for its rule on failures only: it is no hook.

    Args:
        search: The search (its config, space, metric and tune folder).
    """

    name = "mlflow"

    def __init__(self, search: Search) -> None:
        super().__init__()
        self.search = search
        self.experiment = mlflow_experiment_name(search.config.task)
        self.client: Any = None
        self.run_id: str | None = None
        """The parent run's id once opened."""

    def open(self, study: optuna.Study) -> None:
        """Start the parent run, or reopen the one the study names (a resumed study)."""
        self.guarded("the start of the study run", lambda: self._open(study))

    def _open(self, study: optuna.Study) -> None:
        import mlflow

        self.client = mlflow.MlflowClient()
        stored = study.user_attrs.get(RUN_ID_ATTR)
        reused = bool(stored) and self._reopen(str(stored))
        if reused:
            self.run_id = str(stored)
        else:
            tags = {"visiontune.run_dir": str(self.search.folder.resolve()), "visiontune.task": self.search.config.task,
                    "visiontune.study": "true"}
            self.run_id = start_mlflow_run(self.search.folder.name, experiment_name=self.experiment, tags=tags,
                                           client=self.client)
            study.set_user_attr(RUN_ID_ATTR, self.run_id)
        logger.info("MLflow: %s the study's run %s in experiment %s (its trials and final seeds nest under it)",
                    "continuing" if reused else "logging to", self.run_id, self.experiment)
        from mlflow.entities import Param

        logged = self.client.get_run(self.run_id).data.params  # a resumed study keeps its first parameters
        params = [Param(key, value) for key, value in self.params().items() if key not in logged]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def _reopen(self, run_id: str) -> bool:
        """Mark the stored run running again and end the trial runs a killed process left running; ``False`` when
        the store no longer holds it (a new parent run is made)."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            logger.warning("the study's MLflow run %s is not in the store: logging to a new run", run_id)
            return False
        self.client.update_run(run_id, status="RUNNING")
        self.experiment = self.client.get_experiment(run.info.experiment_id).name  # the trials nest in its experiment
        left = self.client.search_runs([run.info.experiment_id], filter_string=(
            f"tags.`mlflow.parentRunId` = '{run_id}' and attributes.status = 'RUNNING'"))
        for child in left:
            self.client.set_tag(child.info.run_id, STATE_TAG, "interrupted")
            end_mlflow_run(child.info.run_id, "KILLED", client=self.client)
        return True

    def params(self) -> dict[str, str]:
        """The parent's parameters: ``space.<key>`` (the spec as written) and ``tune.<setting>``, ``metric``."""
        tune = self.search.config.tune
        settings = {key: getattr(tune, key) for key in ("trials", "timeout_s", "sampler", "pruner", "startup_trials",
                                                         "seed", "final_seeds")}
        return {**{f"space.{spec.key}": spec.text for spec in self.search.specs},
                **mlflow_params({"tune": settings}), "metric": self.search.metric_key,
                "direction": self.search.direction}

    def trial_tracker(self, number: int) -> MLflowTracker:
        """The tracker of trial ``number``: nested under the study run, or switched off when the study run failed."""
        return self._child(f"trial-{number:04d}", {TRIAL_TAG: str(number)})

    def final_tracker(self, seed: int) -> MLflowTracker:
        """The tracker of the final run with ``seed`` (as :meth:`trial_tracker`)."""
        return self._child(f"seed-{seed}", {FINAL_SEED_TAG: str(seed)})

    def _child(self, run_name: str, tags: Mapping[str, str]) -> MLflowTracker:
        tracker = MLflowTracker(parent_run_id=self.run_id, experiment_name=self.experiment, run_name=run_name,
                                tags=tags)
        tracker.failed = self.failed or self.run_id is None  # replaces the configured tracker, which stays silent
        return tracker

    def end_trial(self, tracker: MLflowTracker | None, number: int, state: str, reason: str | None) -> None:
        """Tag the trial's run with how it ended; a trial that never trained (its values refused by the config)
        gets a run of its own, ended ``FAILED``."""
        if tracker is None or self.failed or self.run_id is None or (tracker.failed and tracker.started):
            return
        self.guarded(f"trial {number}", lambda: self._end_trial(tracker, number, state, reason))

    def _end_trial(self, tracker: MLflowTracker, number: int, state: str, reason: str | None) -> None:
        tags = {TRIAL_TAG: str(number), STATE_TAG: state, **({REASON_TAG: reason} if reason else {})}
        if tracker.run_id is None:
            run_id = start_mlflow_run(f"trial-{number:04d}", experiment_name=self.experiment, tags=tags,
                                      parent_run_id=self.run_id, client=self.client)
            end_mlflow_run(run_id, "FAILED", client=self.client)
            return
        for key, value in tags.items():
            self.client.set_tag(tracker.run_id, key, value)

    def close(self) -> None:  # a failure already said it; the run stays as the store has it
        """Nothing to release (the client holds no resource)."""

    def finish_study(self, result: TuneResult) -> None:
        """Log the end of the search to the parent run and end it (``KILLED`` when a signal stopped the search)."""
        if self.run_id is not None:
            self.guarded("the end of the study run", lambda: self._finish(result))

    def _finish(self, result: TuneResult) -> None:
        metrics = {f"trials.{name}": float(count) for name, count in result.counts.items()}
        if result.best_value is not None:
            metrics[f"best.{result.metric_key}"] = float(result.best_value)
        final = result.final or {}
        for key in ("mean", "std"):
            if final.get(key) is not None:
                metrics[f"final.{result.metric_key}.{key}"] = float(final[key])
        for key, value in metrics.items():
            self.client.log_metric(self.run_id, key, value)
        if result.best_number is not None:
            self.client.set_tag(self.run_id, "best.trial", str(result.best_number))
        for key, text in mlflow_params(result.best_params).items():  # tags: a resumed study may find another best
            self.client.set_tag(self.run_id, f"best.{key}", text)
        for name in STUDY_ARTIFACTS:
            path = Path(result.folder) / name
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        end_mlflow_run(str(self.run_id), "FINISHED" if result.exit_code == 0 else "KILLED", client=self.client)

    def abort(self) -> None:
        """End the parent run ``FAILED`` (the search raised)."""
        if self.run_id is not None:
            self.guarded("the end of the study run", lambda: end_mlflow_run(str(self.run_id), "FAILED",
                                                                            client=self.client))


def study_run(study: optuna.Study | None, search: Search) -> StudyRun | None:
    """Rank 0 (which holds ``study``): the opened study run when ``train.trackers`` lists ``mlflow``, else ``None``."""
    if study is None or "mlflow" not in search.config.train.trackers:
        return None
    run = StudyRun(search)
    run.open(study)
    return run

