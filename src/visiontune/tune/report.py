"""The files of a search (``trials.csv``, ``best.yaml``, ``report.html``) and its console summary.

``report.html`` is one self-contained page built with the run report's helpers (:mod:`visiontune.report.html`,
figures from :mod:`visiontune.utils.plots` as inline PNGs, no JavaScript): the summary, the metric of every trial
with the best so far, the parameters' importance (:mod:`optuna.importance`, from 3 completed trials on), the metric
against each parameter, the final seeds and the trials table.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from visiontune.config import save_config
from visiontune.report.figures import DPI, bar_chart
from visiontune.report.html import Page, esc, fmt_number, img_tag, key_value_table, note, pre, table
from visiontune.tune.space import ParamSpec, apply_params
from visiontune.tune.types import Search, TuneResult
from visiontune.utils.files import atomic_write_text
from visiontune.utils.plots import figure_uri, format_metric, new_figure, style_axes

logger = logging.getLogger(__name__)

__all__ = ["MIN_TRIALS_FOR_IMPORTANCE", "format_tune_summary", "state_name", "summarize_study", "trial_rows",
           "write_study_files", "write_tune_report"]

MIN_TRIALS_FOR_IMPORTANCE = 3
"""Completed trials needed before the report estimates the parameters' importance."""


def state_name(trial: FrozenTrial) -> str:
    """``complete``, ``pruned``, ``failed``, ``interrupted`` (failed without a reason: not counted) or ``running``."""
    if trial.state == TrialState.FAIL:
        return "interrupted" if "interrupted" in trial.user_attrs else "failed"
    return {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(trial.state, trial.state.name.lower())


def trial_rows(study: optuna.Study, search: Search) -> tuple[list[str], list[dict[str, Any]]]:
    """The columns and rows of ``trials.csv``: one row per trial (the value of a pruned trial is its last
    reported one)."""
    keys = [spec.key for spec in search.specs]
    columns = ["number", "state", search.metric_key, "epochs", "seconds", *keys, "reason", "run_dir"]
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        rows.append({"number": trial.number, "state": state_name(trial), search.metric_key: trial.value,
                     "epochs": attrs.get("epochs"), "seconds": attrs.get("seconds"),
                     **{key: trial.params.get(key) for key in keys},
                     "reason": attrs.get("reason") or attrs.get("interrupted") or "", "run_dir": attrs.get("run_dir")})
    return columns, rows


def _best_trial(study: optuna.Study) -> FrozenTrial | None:
    completed = [trial for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return study.best_trial if completed else None


def write_study_files(study: optuna.Study, search: Search) -> None:
    """Rank 0: ``trials.csv`` and, once a trial completed, ``best.yaml`` (the config ``visiontune train -c best.yaml``
    trains: the searched config with the best values, named ``<name>-best``)."""
    columns, rows = trial_rows(study, search)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(text.getvalue(), search.folder / "trials.csv")
    best = _best_trial(study)
    if best is not None:
        config = apply_params(search.config, {**best.params, "name": f"{search.config.name}-best",
                                              "train.metric": search.metric_key.removeprefix("val_")})
        save_config(config, search.folder / "best.yaml")


def summarize_study(study: optuna.Study, search: Search, result: TuneResult) -> None:
    """Rank 0: fill the counts and the best trial of ``result``."""
    trials = study.get_trials(deepcopy=False)
    result.counts = {name: sum(1 for trial in trials if state_name(trial) == name)
                     for name in ("complete", "pruned", "failed", "interrupted")}
    best = _best_trial(study)
    if best is not None:
        result.best_number, result.best_params, result.best_value = best.number, dict(best.params), best.value


# ------------------------------------------------------------------ console


def format_tune_summary(result: TuneResult) -> str:
    """The table printed at the end of ``visiontune tune``."""
    counts = result.counts
    final = result.final or {}
    lines = [
        ("trials", f"{counts.get('complete', 0)} completed, {counts.get('pruned', 0)} pruned, "
                   f"{counts.get('failed', 0)} failed" + (f", {counts['interrupted']} interrupted (not counted)"
                                                          if counts.get("interrupted") else "")),
        ("metric", f"{result.metric_key} ({result.direction})"),
        ("best trial", "none completed" if result.best_number is None else str(result.best_number)),
        ("best params", ", ".join(f"{key}={_short(value)}" for key, value in result.best_params.items()) or "-"),
        (f"best {result.metric_key}", format_metric(result.best_value)),
    ]
    if final.get("mean") is not None:
        values = ", ".join("failed" if value is None else format_metric(value) for value in final["values"])
        lines.append((f"final seeds ({len(final['seeds'])})",
                      f"{format_metric(final['mean'])} ± {final['std']:.2g}  ({values}; seeds {final['seeds']})"))
    elif final:
        lines.append(("final seeds", "every run failed: see final.json"))
    lines += [("wall time", _duration(result.wall_time_s)), ("tune folder", str(result.folder)),
              ("files", "study.db, trials.csv, best.yaml, report.html" + (", final.json" if final else "")
               + ", trials/")]
    width = max(len(label) for label, _ in lines)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in lines)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


# ------------------------------------------------------------------ report.html


def _history_figure(trials: list[FrozenTrial], metric: str, direction: str) -> str:
    """Metric per trial (by state) and the best so far of the completed ones, PNG data URI."""
    figure = new_figure(5.0, 3.0, dpi=DPI)
    axes = figure.add_subplot()
    for state, marker, color in (("complete", "o", "#2b6ca3"), ("pruned", "x", "#a15c00")):
        points = [(trial.number, trial.value) for trial in trials
                  if state_name(trial) == state and trial.value is not None]
        if points:
            axes.scatter([x for x, _ in points], [y for _, y in points], marker=marker, color=color, label=state,
                         s=24)
    best: list[tuple[int, float]] = []
    for trial in trials:
        if state_name(trial) == "complete" and trial.value is not None:
            better = not best or (trial.value > best[-1][1] if direction == "maximize" else trial.value < best[-1][1])
            best.append((trial.number, trial.value if better else best[-1][1]))
    if best:
        axes.step(*zip(*best), where="post", color="#2f8f46", label="best so far")
    axes.legend(fontsize=7)
    style_axes(axes, f"{metric} per trial", x_label="trial", y_label=metric)
    return figure_uri(figure)


def _param_figure(spec: ParamSpec, trials: list[FrozenTrial], metric: str) -> str:
    """The metric against one parameter (completed and pruned trials), PNG data URI."""
    figure = new_figure(3.2, 2.5, dpi=DPI)
    axes = figure.add_subplot()
    points = [(trial.params[spec.key], trial.value) for trial in trials
              if spec.key in trial.params and trial.value is not None and state_name(trial) in ("complete", "pruned")]
    if spec.kind == "choice":
        labels = [str(choice) for choice in spec.arguments]
        points = [(labels.index(str(value)), metric_value) for value, metric_value in points]
        axes.set_xticks(range(len(labels)), labels=[label[:12] for label in labels], fontsize=7)
    if points:
        axes.scatter([x for x, _ in points], [y for _, y in points], color="#2b6ca3", s=20)
    if spec.kind == "loguniform":
        axes.set_xscale("log")
    style_axes(axes, spec.key, x_label=spec.text, y_label=metric)
    return figure_uri(figure)


def _importance_section(study: optuna.Study, completed: int) -> str:
    if completed < MIN_TRIALS_FOR_IMPORTANCE:
        return note(f"{completed} completed trial(s): the importance needs at least {MIN_TRIALS_FOR_IMPORTANCE}.")
    try:
        with warnings.catch_warnings():  # e.g. "importances will be equal" on a flat metric: the chart shows it
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError, ZeroDivisionError) as error:
        return note(f"the importance could not be estimated: {error}")
    if not importances:
        return note("no parameter varied among the completed trials.")
    chart = bar_chart("parameter importance (optuna.importance)", list(importances),
                      {"importance": list(importances.values())}, y_label="share")
    return img_tag(chart, "parameter importance") + table(["parameter", "importance"], list(importances.items()))


def _final_section(final: dict[str, Any] | None) -> str:
    if not final:
        return note("no final runs (tune.final_seeds=0, or no trial completed).")
    rows = [[seed, "failed: " + final["failures"].get(str(seed), "") if value is None else value]
            for seed, value in zip(final["seeds"], final["values"])]
    mean, std = final.get("mean"), final.get("std")
    summary = (f"trial {final['trial']} trained with {len(final['seeds'])} other seed(s): {final['metric']} "
               f"{fmt_number(mean)} ± {fmt_number(std)} (the search's best run: {fmt_number(final['search_best'])})")
    return f"<p>{esc(summary)}</p>" + table(["seed", final["metric"]], rows)


def _trials_table(study: optuna.Study, search: Search, best_number: int | None) -> str:
    columns, rows = trial_rows(study, search)
    shown = [column for column in columns if column != "run_dir"]
    body = [[row[column] if not isinstance(row[column], float) or math.isfinite(row[column]) else None
             for column in shown] for row in rows]
    classes = ["best" if row["number"] == best_number else "" for row in rows]
    return table(shown, body, row_classes=classes)


def write_tune_report(study: optuna.Study, search: Search, result: TuneResult) -> Path:
    """Rank 0: ``<tune>/report.html`` (see the module docstring); returns its path."""
    trials = study.get_trials(deepcopy=False)
    completed = result.counts.get("complete", 0)
    page = Page(f"visiontune tune: {search.config.name}", f"{search.folder} · {search.metric_key} "
                                                          f"({search.direction})")
    final = result.final or {}
    page.section("Summary", key_value_table({
        "trials": f"{completed} completed, {result.counts.get('pruned', 0)} pruned, "
                  f"{result.counts.get('failed', 0)} failed, {result.counts.get('interrupted', 0)} interrupted",
        "best trial": result.best_number if result.best_number is not None else "none completed",
        f"best {search.metric_key}": result.best_value,
        "best params": ", ".join(f"{key}={_short(value)}" for key, value in result.best_params.items()) or "–",
        "final seeds": f"{fmt_number(final.get('mean'))} ± {fmt_number(final.get('std'))}" if final else "–",
        "wall time": _duration(result.wall_time_s),
        "sampler / pruner": f"{search.config.tune.sampler} / {search.config.tune.pruner}",
    }))
    page.section("Metric per trial", img_tag(_history_figure(trials, search.metric_key, search.direction),
                                             "metric per trial"))
    page.section("Parameter importance", _importance_section(study, completed))
    figures = "".join(f"<figure>{img_tag(_param_figure(spec, trials, search.metric_key), spec.key)}</figure>"
                      for spec in search.specs)
    page.section("Metric against each parameter", f'<div class="grid">{figures}</div>')
    page.section("Final seeds", _final_section(result.final))
    page.section("Trials", _trials_table(study, search, result.best_number))
    page.section("Search space", pre("\n".join(f"{spec.key}: {spec.text}" for spec in search.specs)))
    path = search.folder / "report.html"
    atomic_write_text(page.render(), path)
    return path
