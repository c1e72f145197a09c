"""Experiment trackers (``train.trackers``): hooks that send each epoch's ``metrics.csv`` row elsewhere.

``csv`` is ``metrics.csv`` itself (:class:`~visiontune.engine.hooks.MetricsWriter`, always written); the trackers here
are :class:`TensorBoardTracker` (``tensorboard``) and :class:`MLflowTracker` (``mlflow``). They run on rank 0 after
every other hook (:func:`arrange_trackers`), so they get the very rows of ``metrics.csv`` (``trainer.storage.history``,
the epoch-0 baseline row included) once complete, and at the end the files the other hooks wrote (``summary.json``,
the run report). A tracker that fails never ends training: its first failure is one warning naming the tracker and
the reason, and the tracker does nothing more in that run.

A :class:`Tracker` passed among the user's hooks (``visiontune.train(config, hooks=[MLflowTracker(...)])``) runs at
the trackers' place too, instead of the configured one of the same name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from visiontune.config import Config, ConfigError, config_to_dict
from visiontune.engine.hooks.base import HookBase, TrainingContext
from visiontune.registry import suggest
from visiontune.utils.mappings import flatten

logger = logging.getLogger(__name__)

__all__ = ["MLFLOW_ARTIFACTS", "MLFLOW_PARAM_LENGTH", "TRACKERS", "MLflowTracker", "TensorBoardTracker", "Tracker",
           "arrange_trackers", "end_mlflow_run", "mlflow_experiment_name", "mlflow_params", "start_mlflow_run"]

MLFLOW_PARAM_LENGTH = 6000
"""The longest parameter value an MLflow store takes (characters); longer config values are cut with a note."""
MLFLOW_ARTIFACTS = ("report.html", "summary.json", "config.yaml")
"""The run folder's files that :class:`MLflowTracker` uploads at the end (those that exist)."""
_REASON_LENGTH = 400
"""The most characters of a failure's reason that a tracker's warning shows (the start and the end)."""


class Tracker(HookBase):
    """A hook that sends the run somewhere, and whose failures never end training.

    Subclasses implement :meth:`start`, :meth:`log_row`, :meth:`finish` and, when they hold a local resource,
    :meth:`close`. The hook points call them guarded: the first exception is logged as one warning
    (``tracker <name> failed, training goes on without it: <type>: <reason>``), :meth:`close` is tried, and the
    tracker does nothing more. :meth:`start` runs before the first row (at ``before_train``, or earlier when the
    baseline evaluation's epoch-0 row comes first); :meth:`finish` only after a start.
    """

    name: ClassVar[str] = ""
    """The tracker's name in ``train.trackers``."""

    def __init__(self) -> None:
        self.started = False
        self.failed = False
        """Set by the first failure: the tracker does nothing more."""

    def start(self, trainer: TrainingContext) -> None:
        """Open the destination (``trainer.run_dir`` and ``trainer.config`` are set)."""

    def log_row(self, trainer: TrainingContext, row: dict[str, Any]) -> None:
        """Send one complete ``metrics.csv`` row (``epoch``, ``step``, ``train_*``, ``lr``, ``val_*``...)."""

    def finish(self, trainer: TrainingContext) -> None:
        """Send the end of the run (``trainer.storage.summary`` is ``None`` when training failed) and close."""

    def close(self) -> None:
        """Release local resources after a failure (best effort; exceptions are ignored)."""

    def before_train(self, trainer: TrainingContext) -> None:
        self.guarded("start", lambda: self._ensure_started(trainer))

    def after_epoch(self, trainer: TrainingContext, row: dict[str, Any]) -> None:
        self.guarded("start", lambda: self._ensure_started(trainer))
        self.guarded(f"epoch {row.get('epoch')}", lambda: self.log_row(trainer, row))

    after_baseline = after_epoch

    def after_train(self, trainer: TrainingContext) -> None:
        if self.started:
            self.guarded("the end of the run", lambda: self.finish(trainer))

    def guarded(self, when: str, action: Callable[[], None]) -> None:
        """Run ``action`` unless the tracker failed before; its exception becomes the one warning."""
        if self.failed:
            return
        try:
            action()
        except Exception as error:  # noqa: BLE001 - a tracker must never end a training run or lose a checkpoint
            self.failed = True
            reason = " ".join(str(error).split())
            if len(reason) > _REASON_LENGTH:  # the start says what failed, the end why (a long URL between)
                reason = f"{reason[: _REASON_LENGTH // 2]} ... {reason[-_REASON_LENGTH // 2:]}"
            logger.warning("tracker %s failed at %s, training goes on without it: %s: %s", self.name, when,
                           type(error).__name__, reason)
            with contextlib.suppress(Exception):  # already reported above
                self.close()

    def _ensure_started(self, trainer: TrainingContext) -> None:
        if not self.started:
            self.started = True
            self.start(trainer)


# ------------------------------------------------------------------ TensorBoard


class TensorBoardTracker(Tracker):
    """``<run>/tensorboard``: every numeric value of each row, by epoch (a resumed run appends to the same folder)."""

    name = "tensorboard"

    def __init__(self) -> None:
        super().__init__()
        self.writer: Any = None

    def start(self, trainer: TrainingContext) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(trainer.run_dir / "tensorboard"))

    def log_row(self, trainer: TrainingContext, row: dict[str, Any]) -> None:
        for key, value in _numbers(row).items():
            self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()

    def finish(self, trainer: TrainingContext) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()


# ------------------------------------------------------------------ MLflow


class MLflowTracker(Tracker):
    """One MLflow run per training run, in the store of ``MLFLOW_TRACKING_URI`` (unset: MLflow's default store).

    The run is named after the run folder, in the experiment of :func:`mlflow_experiment_name`, tagged with
    ``visiontune.run_dir`` and ``visiontune.task``. It gets the resolved config as parameters
    (:func:`mlflow_params`), every ``metrics.csv`` row as metrics with ``step`` = epoch (0: the baseline), and at
    the end ``summary.json``'s numbers as ``summary.*`` metrics (``summary.best.val_top1``, ``summary.epochs``...),
    its texts as ``summary.*`` tags (``summary.stop_reason``...), the files :data:`MLFLOW_ARTIFACTS` and the status
    (``FINISHED``, or ``FAILED`` when training raised). A resumed run is a new MLflow run with the whole history.

    Args:
        parent_run_id: Make the run a child of this MLflow run (``mlflow.parentRunId``: nested in the UI), e.g.
            the study run of a hyper-parameter search (:func:`start_mlflow_run`).
        experiment_name: The experiment; ``None``: :func:`mlflow_experiment_name`.
        run_name: The run's name; ``None``: the run folder's name.
        tags: More tags for the run.

    One object per training run (it keeps its run's id in :attr:`run_id`).
    """

    name = "mlflow"

    def __init__(self, *, parent_run_id: str | None = None, experiment_name: str | None = None,
                 run_name: str | None = None, tags: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.parent_run_id = parent_run_id
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.client: Any = None
        self.run_id: str | None = None
        """The MLflow run's id once started."""
        self.logged_epochs: set[Any] = set()

    def start(self, trainer: TrainingContext) -> None:
        import mlflow

        self.client = mlflow.MlflowClient()
        tags = {"visiontune.run_dir": str(Path(trainer.run_dir).resolve()), "visiontune.task": trainer.config.task,
                **self.tags}
        experiment = self.experiment_name or mlflow_experiment_name(trainer.config.task)
        self.run_id = start_mlflow_run(self.run_name or Path(trainer.run_dir).name, client=self.client,
                                       experiment_name=experiment, parent_run_id=self.parent_run_id, tags=tags)
        from mlflow.entities import Param

        params = [Param(key, value) for key, value in mlflow_params(config_to_dict(trainer.config)).items()]
        for chunk in _chunks(params, 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=chunk)
        for row in list(trainer.storage.history):  # a resumed run: the rows of the earlier invocations
            self.log_row(trainer, row)

    def log_row(self, trainer: TrainingContext, row: dict[str, Any]) -> None:
        if row.get("epoch") in self.logged_epochs:
            return
        self._log_metrics(_numbers(row), step=int(row["epoch"]))
        self.logged_epochs.add(row.get("epoch"))

    def finish(self, trainer: TrainingContext) -> None:
        summary = trainer.storage.summary or {}
        flat = flatten({key: value for key, value in summary.items() if key != "run_dir"})
        numbers = {f"summary.{key}": value for key, value in _numbers(flat).items() if math.isfinite(value)}
        self._log_metrics(numbers, step=trainer.state.epoch)
        for key, value in flat.items():
            if isinstance(value, str):
                self.client.set_tag(self.run_id, f"summary.{key}", value)
        for name in MLFLOW_ARTIFACTS:
            path = Path(trainer.run_dir) / name
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        status = "FINISHED" if trainer.stop.reason is not None else "FAILED"
        end_mlflow_run(str(self.run_id), status, client=self.client)

    def _log_metrics(self, values: Mapping[str, float], *, step: int) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        metrics = [Metric(key, value, timestamp, step) for key, value in values.items()]
        for chunk in _chunks(metrics, 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=chunk)


def mlflow_experiment_name(task: str | None = None) -> str:
    """The MLflow experiment of a run: ``MLFLOW_EXPERIMENT_NAME``, else the task's name, else ``visiontune``."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or task or "visiontune"


def start_mlflow_run(run_name: str, *, experiment_name: str | None = None, parent_run_id: str | None = None,
                     tags: Mapping[str, str] | None = None, client: Any = None) -> str:
    """Create a running MLflow run (the experiment too, when it does not exist) and return its id.

    For runs that are not training runs, e.g. the parent of a search's trials: give its id to
    ``MLflowTracker(parent_run_id=...)`` and end it with :func:`end_mlflow_run`.

    Args:
        run_name: The run's name.
        experiment_name: The experiment; ``None``: :func:`mlflow_experiment_name` (``MLFLOW_EXPERIMENT_NAME`` or
            ``visiontune``).
        parent_run_id: Nest the run under this one.
        tags: The run's tags.
        client: An ``mlflow.MlflowClient``; ``None``: one for ``MLFLOW_TRACKING_URI``.
    """
    import mlflow

    client = client or mlflow.MlflowClient()
    name = experiment_name or mlflow_experiment_name()
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment is not None else client.create_experiment(name)
    run_tags = dict(tags or {})
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    return str(client.create_run(experiment_id, run_name=run_name, tags=run_tags).info.run_id)


def end_mlflow_run(run_id: str, status: str = "FINISHED", *, client: Any = None) -> None:
    """End the MLflow run ``run_id`` with ``status`` (``FINISHED``, ``FAILED`` or ``KILLED``)."""
    import mlflow

    (client or mlflow.MlflowClient()).set_terminated(run_id, status=status)


def mlflow_params(config: Mapping[str, Any]) -> dict[str, str]:
    """MLflow parameters of a (nested) config: ``{"optim.lr": "0.05", "train.trackers": '["csv", "mlflow"]'}``.

    Texts stay as they are, other values are JSON (``true``, ``null``, lists); a value longer than
    :data:`MLFLOW_PARAM_LENGTH` characters is cut, ending in a note with its full length.
    """
    params = {}
    for key, value in flatten(config).items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if len(text) > MLFLOW_PARAM_LENGTH:
            note = f" ... [cut: {len(text)} characters, see config.yaml]"
            text = text[: MLFLOW_PARAM_LENGTH - len(note)] + note
        params[key] = text
    return params


# ------------------------------------------------------------------ the trackers of a run

TRACKERS: dict[str, type[Tracker]] = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker}
"""The trackers of ``train.trackers`` by name (``csv``, ``metrics.csv``, is always written by the built-in hooks)."""


def arrange_trackers(config: Config, user_hooks: Sequence[HookBase], *,
                     is_main: bool) -> tuple[list[Tracker], list[HookBase]]:
    """The trackers of ``config.train.trackers`` (none but on rank 0: ``is_main``), with the :class:`Tracker` objects
    among ``user_hooks`` in place of the configured ones of the same name; and the other user hooks.

    Raises:
        ConfigError: an unknown tracker name (a config built in code; the loader checks the YAML and overrides).
    """
    given = [hook for hook in user_hooks if isinstance(hook, Tracker)]
    others = [hook for hook in user_hooks if not isinstance(hook, Tracker)]
    names = list(dict.fromkeys(config.train.trackers))
    for name in names:
        if name != "csv" and name not in TRACKERS:
            raise ConfigError(f"train.trackers: unknown tracker {name!r}{suggest(name, ['csv', *TRACKERS])}")
    if not is_main:
        return [], others
    replaced = {tracker.name for tracker in given}
    configured = [TRACKERS[name]() for name in names if name in TRACKERS and name not in replaced]
    return [*configured, *given], others


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The numeric values of a row (not ``epoch``, the step of every tracker), as floats."""
    return {key: float(value) for key, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch"}


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
