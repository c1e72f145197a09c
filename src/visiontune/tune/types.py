"""What a search runs and what it returns: :class:`Search` and :class:`TuneResult`, shared by the study
(:mod:`.study`), its MLflow run (:mod:`.tracking`), the final seeds (:mod:`.final`) and the tune folder's files
(:mod:`.report`); none of them imports another for these types."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from visiontune.config import Config
from visiontune.engine.hooks import HookBase
from visiontune.engine.trackers import MLflowTracker
from visiontune.tune.space import ParamSpec
from visiontune.tune.trials import training_config

__all__ = ["Search", "StudyTracking", "TuneResult"]


class StudyTracking(Protocol):
    """The study's MLflow run as the search uses it (:class:`~visiontune.tune.tracking.StudyRun`)."""

    def trial_tracker(self, number: int) -> MLflowTracker:
        """The tracker of trial ``number``."""
        ...

    def final_tracker(self, seed: int) -> MLflowTracker:
        """The tracker of the final run with ``seed``."""
        ...

    def end_trial(self, tracker: MLflowTracker | None, number: int, state: str, reason: str | None) -> None:
        """Record how trial ``number`` ended (``complete``, ``pruned``, ``failed`` with its ``reason``)."""
        ...

    def finish_study(self, result: TuneResult) -> None:
        """Log the end of the search and end the study's run."""
        ...

    def abort(self) -> None:
        """End the study's run as failed (the search raised)."""
        ...


@dataclass
class Search:
    """What one search runs: the config, the parsed space and the metric."""

    config: Config
    specs: list[ParamSpec]
    metric_key: str
    """``val_<metric>``, the objective (the best value of a run, as its ``best.pt``)."""
    direction: str
    """``maximize`` or ``minimize``."""
    hooks: list[HookBase] = field(default_factory=list)
    folder: Path = Path()
    """The tune folder (set once chosen)."""
    mlflow: StudyTracking | None = None
    """Rank 0, when ``train.trackers`` lists ``mlflow``: the study's MLflow run (:mod:`.tracking`)."""

    @property
    def train_config(self) -> Config:
        """The config of one training run of the search (:func:`~visiontune.tune.trials.training_config`)."""
        return training_config(self.config, self.metric_key.removeprefix("val_"))


@dataclass
class TuneResult:
    """What :func:`~visiontune.tune.study.tune` returns (rank 0 has every field; other ranks the folder and the exit
    code)."""

    folder: Path
    metric_key: str
    direction: str
    resumed: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    """``complete``, ``pruned``, ``failed`` (with a reason) and ``interrupted`` trials of the study."""
    best_number: int | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_value: float | None = None
    final: dict[str, Any] | None = None
    """The content of ``final.json`` (``None``: ``tune.final_seeds=0`` or no completed trial)."""
    wall_time_s: float = 0.0
    exit_code: int = 0
    """0, or 130 / 143 when SIGINT / SIGTERM stopped a run (the study continues with the same command)."""
