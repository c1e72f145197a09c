"""``visiontune tune``: an Optuna study whose trials are ordinary training runs of one config.

The tune folder ``<project>/<task>/<name>[-N]`` (a run folder, :func:`~visiontune.engine.run_dir.new_run_dir`)
holds the study (``study.db``, SQLite), the config searched from (``config.yaml``), ``trials.csv``, ``best.yaml``,
``final.json``, ``report.html``, the shared ``feature_cache/`` and one run folder per trial
(``trials/trial-NNNN``) and per final seed (``final/seed-S``).

The same command continues a study (``tune.resume``): the newest folder of that name is reused when its
``config.yaml`` equals this config apart from :data:`RESUME_IGNORED_KEYS`; a trial left running by a crash or a
kill is marked failed (user attribute ``interrupted``) and not counted, and the search runs until ``tune.trials``
trials have finished (completed, pruned, or failed with a reason).

Under ``torchrun`` every process runs every trial; rank 0 alone opens the study, asks for the values and
broadcasts them (:func:`visiontune.utils.comm.broadcast_object`).

When ``train.trackers`` lists ``mlflow``, the study is one MLflow run with a nested run per trial and final seed
(:mod:`visiontune.tune.tracking`).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from visiontune.config import Config, ConfigError, config_to_dict, save_config
from visiontune.engine.hooks import HookBase
from visiontune.engine.run_dir import new_run_dir, newest_run_dir
from visiontune.tasks import create_task
from visiontune.tune.space import apply_params, check_space, grid_values, parse_space
from visiontune.tune.tracking import study_run
from visiontune.tune.trials import RunOutcome, TrialPruning, one_line, run_training
from visiontune.tune.types import Search, TuneResult
from visiontune.utils import comm
from visiontune.utils.plots import format_metric

logger = logging.getLogger(__name__)

__all__ = ["RESUME_IGNORED_KEYS", "STUDY_FILE", "counted_trials", "tune"]

STUDY_FILE = "study.db"
RESUME_IGNORED_KEYS = ("tune.trials", "tune.timeout_s", "tune.final_seeds", "tune.resume", "device",
                       "train.progress", "resume")
"""Keys that may change between the invocations of one study (how long it runs, where, how it prints)."""
REASON, INTERRUPTED = "reason", "interrupted"
"""User attributes of failed trials: the one-line error, or why the trial never ended (not counted)."""


def _flat(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"optim.lr": 0.01, ...}`` of a nested config dict (the sections' keys; a key's own mapping stays whole)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}.{name}": item for name, item in value.items()})
        else:
            flat[key] = value
    return flat


def config_differences(stored: Mapping[str, Any], config: Config) -> list[str]:
    """The keys (outside :data:`RESUME_IGNORED_KEYS`) whose values differ between a stored config and ``config``."""
    old, new = _flat(stored), _flat(config_to_dict(config))
    return sorted(key for key in set(old) | set(new)
                  if key not in RESUME_IGNORED_KEYS and old.get(key) != new.get(key))


def _choose_folder(config: Config) -> tuple[Path, bool]:
    """Rank 0: the tune folder and whether it continues a study (see the module docstring)."""
    base = Path(config.project) / config.task
    newest = newest_run_dir(base, config.name)
    if config.tune.resume and newest is not None and (newest / STUDY_FILE).is_file():
        stored_file = newest / "config.yaml"
        stored = yaml.safe_load(stored_file.read_text(encoding="utf-8")) if stored_file.is_file() else None
        differences = config_differences(stored, config) if isinstance(stored, dict) else ["config.yaml is missing"]
        if not differences:
            return newest, True
        logger.warning("%s holds a study of another config (%s differ%s): starting a new study", newest,
                       ", ".join(differences[:5]), " ..." if len(differences) > 5 else "")
    folder = new_run_dir(base, config.name)
    save_config(config, folder / "config.yaml")
    return folder, False


def _sampler(search: Search, previous_trials: int) -> optuna.samplers.BaseSampler:
    tune = search.config.tune
    # a resumed study must not replay the random numbers of its first invocation
    seed = (tune.seed if tune.seed is not None else search.config.seed) + previous_trials
    if tune.sampler in ("random", "grid"):  # grid: every trial's values are enqueued (_next_grid_point)
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tune.startup_trials)


def _pruner(search: Search) -> optuna.pruners.BasePruner:
    tune = search.config.tune
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials)
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, search.config.train.epochs))
    return optuna.pruners.NopPruner()


def open_study(folder: Path, search: Search) -> optuna.Study:
    """Rank 0: the study of ``folder/study.db`` (created or loaded); trials a killed process left running are
    marked failed (``interrupted``), so they are not counted."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(folder / STUDY_FILE).resolve()}")
    name = search.config.name
    previous = 0
    if any(summary.study_name == name for summary in optuna.get_all_study_summaries(storage)):
        previous = len(optuna.load_study(study_name=name, storage=storage).trials)
    study = optuna.create_study(storage=storage, study_name=name, direction=search.direction,  # type: ignore[arg-type]
                                sampler=_sampler(search, previous), pruner=_pruner(search), load_if_exists=True)
    study_id = storage.get_study_id_from_name(name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(trial_id, INTERRUPTED, "the process ended during this trial (crash or kill)")
        study.tell(trial.number, state=TrialState.FAIL)
        logger.warning("trial %d was left running by an earlier invocation: marked failed, not counted", trial.number)
    return study


def counted_trials(trials: Iterable[FrozenTrial]) -> int:
    """Trials that count towards ``tune.trials``: completed, pruned, or failed with a reason (not interrupted)."""
    return sum(1 for trial in trials if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (trial.state == TrialState.FAIL and REASON in trial.user_attrs))


def make_search(config: Config, hooks: Iterable[HookBase] = ()) -> Search:
    """Check the ``tune`` section and the space against ``config`` (nothing is written).

    Raises:
        ConfigError: a malformed or unknown key of the space, a value a key refuses, no validation split.
    """
    specs = parse_space(config.tune.space)
    check_space(config, specs)
    if config.tune.sampler == "grid":
        grid_values(specs)
    if not config.data.val_split:
        raise ConfigError("data.val_split is not set: tune scores every trial on the validation split")
    task = create_task(config)
    metric = config.tune.metric or config.train.metric or task.default_metric
    mode = config.train.metric_mode or task.metric_mode
    return Search(config=config, specs=specs, metric_key=f"val_{metric}",
                  direction="maximize" if mode == "max" else "minimize", hooks=list(hooks))


def _trial_limit(search: Search) -> int:
    limit = search.config.tune.trials
    if search.config.tune.sampler == "grid":
        size = math.prod(len(values) for values in grid_values(search.specs).values())
        if size < limit:
            logger.info("tune.sampler=grid: %d combinations, so %d trials instead of tune.trials=%d", size, size, limit)
        limit = min(limit, size)
    return limit


def _ask(study: optuna.Study, search: Search, started: float) -> optuna.Trial | None:
    """Rank 0: the next trial, or ``None`` when the search is done (enough trials, time up)."""
    if counted_trials(study.get_trials(deepcopy=False)) >= _trial_limit(search):
        return None
    timeout = search.config.tune.timeout_s
    if timeout is not None and time.perf_counter() - started >= timeout:
        logger.info("tune.timeout_s=%g reached: no new trial", timeout)
        return None
    if search.config.tune.sampler == "grid":
        point = _next_grid_point(study, search)
        if point is None:
            return None
        study.enqueue_trial(point)
    return study.ask({spec.key: spec.distribution() for spec in search.specs})


def _next_grid_point(study: optuna.Study, search: Search) -> dict[str, Any] | None:
    """``tune.sampler=grid``: the first combination (in the order of ``itertools.product`` over the space) that no
    counted trial has run (an interrupted trial's combination runs again), or ``None``."""
    grid = grid_values(search.specs)
    keys = list(grid)
    done = {tuple(trial.params.get(key) for key in keys) for trial in study.get_trials(deepcopy=False)
            if counted_trials([trial])}
    return next((dict(zip(keys, values)) for values in itertools.product(*grid.values()) if values not in done), None)


def _record(study: optuna.Study, trial: optuna.Trial, search: Search, outcome: RunOutcome,
            pruning: TrialPruning) -> str:
    """Rank 0: tell the study how the trial ended; returns its state's name."""
    trial.set_user_attr("epochs", outcome.epochs)
    trial.set_user_attr("seconds", round(outcome.seconds, 3))
    trial.set_user_attr("run_dir", str(outcome.run_dir) if outcome.run_dir is not None else "")
    result = outcome.result
    if result is not None and result.stopped_by_signal:
        trial.set_user_attr(INTERRUPTED, f"stopped by {result.stopped_by_signal}")
        study.tell(trial, state=TrialState.FAIL)
        return "interrupted"
    if outcome.reason is None and (result is None or result.best_metric is None
                                   or not math.isfinite(result.best_metric)):
        outcome.reason = f"no finite {search.metric_key} was measured"
    if outcome.reason is not None:
        trial.set_user_attr(REASON, outcome.reason)
        study.tell(trial, state=TrialState.FAIL)
        return "failed"
    assert result is not None and result.best_metric is not None
    if pruning.pruned_at is not None:
        study.tell(trial, state=TrialState.PRUNED)
        return "pruned"
    study.tell(trial, float(result.best_metric))
    return "complete"


def run_trial(study: optuna.Study | None, trial: optuna.Trial | None, search: Search, number: int,
              params: dict[str, Any]) -> RunOutcome:
    """Every rank: train trial ``number`` with ``params``; rank 0 (which holds ``study`` and ``trial``) records it
    in the study, also when training raises."""
    pruning = TrialPruning(trial, search.metric_key)
    tracker = search.mlflow.trial_tracker(number) if search.mlflow is not None else None
    try:
        config = apply_params(search.train_config, params)
        object.__setattr__(config, "preset_file", search.config.preset_file)  # the trial's report shows its changes
        outcome = run_training(config, [*search.hooks, pruning, *([tracker] if tracker else [])],
                               tune_dir=search.folder, group="trials", name=f"trial-{number:04d}")
    except ConfigError as error:  # a combination of values that the config refuses (a cross-field check)
        outcome = RunOutcome(run_dir=None, reason=one_line(error))
        logger.warning("trial %d failed: %s", number, outcome.reason)
    except BaseException as error:
        if study is not None and trial is not None:
            trial.set_user_attr(REASON, f"{type(error).__name__}: {error}")
            study.tell(trial, state=TrialState.FAIL)
            if search.mlflow is not None:
                search.mlflow.end_trial(tracker, number, "failed", one_line(error))
        raise
    if study is not None and trial is not None:
        state = _record(study, trial, search, outcome, pruning)
        if search.mlflow is not None:
            search.mlflow.end_trial(tracker, number, state, outcome.reason)
        value = outcome.result.best_metric if outcome.result is not None else None
        logger.info("trial %d %s: %s; %s %s after %d epoch(s), %.1f s", number, state,
                    ", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                              for key, value in params.items()),
                    search.metric_key, "-" if value is None or state != "complete" else format_metric(value),
                    outcome.epochs, outcome.seconds)
    return outcome


def _search_loop(study: optuna.Study | None, search: Search, started: float) -> int:
    """Every rank: trials until the search is done; returns 0, or the exit status of a run a signal stopped."""
    from visiontune.tune.report import write_study_files

    while True:
        trial = _ask(study, search, started) if study is not None else None
        asked = comm.broadcast_object((trial.number, dict(trial.params)) if trial is not None else None)
        if asked is None:
            return 0
        outcome = run_trial(study, trial, search, *asked)
        if study is not None:
            write_study_files(study, search)
        if outcome.result is not None and outcome.result.stopped_by_signal:
            return outcome.result.exit_code


def tune(config: Config, hooks: Iterable[HookBase] = ()) -> TuneResult:
    """Search ``config.tune.space`` (see the module docstring); rank 0 writes the files, every rank trains.

    Args:
        config: The config every trial starts from, with its ``tune`` section.
        hooks: Extra :class:`HookBase` objects for every trial and final run (before the pruning hook).

    Raises:
        ConfigError: the space or the ``tune`` section is invalid (before anything is written).
    """
    from visiontune.tune.final import run_final_seeds
    from visiontune.tune.report import summarize_study, write_study_files, write_tune_report

    started = time.perf_counter()
    search = make_search(config, hooks)
    comm.init_distributed(comm.resolve_device(config.device))
    search.folder, resumed = comm.main_process_result(lambda: _choose_folder(config))
    study = open_study(search.folder, search) if comm.is_main_process() else None
    logger.info("%s study in %s: %s (%s), %d trials", "continuing the" if resumed else "a new", search.folder,
                search.metric_key, search.direction, config.tune.trials)
    search.mlflow = study_run(study, search)
    try:
        result = TuneResult(folder=search.folder, metric_key=search.metric_key, direction=search.direction,
                            resumed=resumed, exit_code=_search_loop(study, search, started))
        if study is not None:
            write_study_files(study, search)
            summarize_study(study, search, result)
        if result.exit_code == 0:
            result.final = run_final_seeds(study, search, result)
        result.wall_time_s = time.perf_counter() - started
        if study is not None:
            write_tune_report(study, search, result)
    except BaseException:
        if search.mlflow is not None:
            search.mlflow.abort()
        raise
    if search.mlflow is not None:
        search.mlflow.finish_study(result)
    return result
