"""Python API: ``train``, ``evaluate``, ``predict``, ``check_data`` (the CLI is a thin layer over these)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from visiontune.config import Config, config_from_dict, config_to_dict, load_config
from visiontune.engine.checkpoint import load_checkpoint
from visiontune.engine.evaluation import build_eval_loader, run_evaluation
from visiontune.engine.hooks import Hook, HookBase
from visiontune.engine.run_dir import is_run_dir, new_run_dir
from visiontune.engine.trainer import Trainer, TrainResult
from visiontune.tasks import create_task
from visiontune.utils import comm as dist_utils

logger = logging.getLogger(__name__)

__all__ = ["EvalResult", "Hook", "HookBase", "check_data", "config_for_checkpoint", "evaluate", "predict", "train"]


@dataclass
class EvalResult:
    """Metrics of ``evaluate`` and where its artifacts went."""

    metrics: dict[str, float]
    output_dir: Path | None


def train(config: Config, hooks: Iterable[HookBase] = ()) -> TrainResult:
    """Train ``config`` and return the result (run directory, best metric, history, why it stopped).

    Args:
        config: The resolved config (``resume`` continues a checkpoint).
        hooks: :class:`HookBase` objects called at ``before_train``, ``before_step``, ``after_step``,
            ``after_epoch`` and ``after_train``, after the built-in evaluation, writers and epoch checkpoint (e.g.
            a logger to an experiment tracker; see the README's "Hooks").
    """
    hooks = list(hooks)
    if config.train.report:
        from visiontune.report.hook import ReportWriter

        hooks.append(ReportWriter())
    return Trainer(config, hooks=hooks).fit()


def config_for_checkpoint(checkpoint: dict[str, Any], config_path: str | Path | None = None,
                          overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The config of a checkpoint, optionally replaced by a YAML file, then overridden.

    The ``model`` section always comes from the checkpoint: it describes the stored weights.
    """
    stored = config_from_dict(checkpoint["config"])
    config = load_config(config_path, overrides) if config_path else load_config(None, overrides, base=stored)
    if config.model.name != stored.model.name:
        logger.warning("model.name %r differs from the checkpoint's %r; using the checkpoint's", config.model.name,
                       stored.model.name)
    config.model = stored.model
    config.task = stored.task
    return config


def evaluate(config: Config, *, checkpoint: str | Path | None = None) -> EvalResult:
    """Evaluate a visiontune checkpoint on ``data.val_split`` with the same code as validation in training.

    Args:
        config: Data and evaluation settings (``config.checkpoint`` names the checkpoint unless given).
        checkpoint: Path overriding ``config.checkpoint``.

    Returns:
        ``val_*`` metrics of the weights (and ``val_ema_*`` when the checkpoint holds an EMA), and the folder
        with the confusion matrix / PR curves / ``metrics.json``.
    """
    path = Path(checkpoint or config.checkpoint or "")
    if not str(path) or str(path) == ".":
        raise ValueError("evaluate needs a checkpoint: checkpoint=path/to/best.pt")
    state = load_checkpoint(path)
    info = dist_utils.env_dist_info()
    device = dist_utils.resolve_device(config.device, info)
    dist_utils.init_distributed(device)
    task = create_task(config)
    task.load_meta(state.get("meta", {}))
    if not config.data.val_split:
        raise ValueError("data.val_split is not set: nothing to evaluate")
    dataset = task.build_dataset(config.data.val_split, train=False)
    loader = build_eval_loader(task, dataset, config)
    model = task.build_model(load_weights=False)
    model.load_state_dict(state["model"])
    model.to(device)
    evaluator = task.build_evaluator(dataset)
    metrics = {f"val_{k}": v for k, v in run_evaluation(model, loader, evaluator, device=device,
                                                          progress=config.train.progress and info.is_main).items()}
    output_dir = None
    if info.is_main:
        folder_name = f"eval-{Path(config.data.val_split).stem}"
        if config.output:
            output_dir = Path(config.output)
        elif is_run_dir(path.parent):  # next to the checkpoint only in a run folder that visiontune created
            output_dir = path.parent / folder_name
        else:
            output_dir = new_run_dir(Path(config.project) / config.task, folder_name)
            logger.info("%s is not inside a visiontune run folder: results go to %s", path, output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        evaluator.save_artifacts(output_dir)
    if state.get("ema") is not None:
        model.load_state_dict(state["ema"])
        ema_evaluator = task.build_evaluator(dataset)
        metrics.update({f"val_ema_{k}": v for k, v in run_evaluation(model, loader, ema_evaluator,
                                                                      device=device).items()})
    if output_dir is not None:
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return EvalResult(metrics=metrics, output_dir=output_dir)


def predict(config: Config, *, checkpoint: str | Path | None = None, source: str | None = None) -> list[Path]:
    """Run a checkpoint on ``source`` (image, folder or list) and write the task's prediction files."""
    path = Path(checkpoint or config.checkpoint or "")
    source = source or config.source
    if not source:
        raise ValueError("predict needs a source: source=path/to/image_or_folder")
    state = load_checkpoint(path)
    device = dist_utils.resolve_device(config.device)
    task = create_task(config)
    task.load_meta(state.get("meta", {}))
    model = task.build_model(load_weights=False)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    output_dir = Path(config.output) if config.output else new_run_dir(Path(config.project) / config.task, "predict")
    with torch.no_grad():
        files = task.predict(model, source, output_dir, device=device)
    return files


def check_data(config: Config, *, report: bool = False) -> tuple[str, bool, Path | None]:
    """Scan the configured dataset.

    Args:
        config: The dataset to check (``task``, ``data.*``).
        report: Also write ``data_report.html`` (counts, box statistics, flagged images, a sample grid with the
            labels drawn) into a new ``<project>/<task>/check-data[-N]`` folder.

    Returns:
        The report text, whether it found errors, and the page's path (None without ``report``).
    """
    check = create_task(config).check_data()
    if not report:
        return check.text, check.has_errors, None
    from visiontune.engine.run_dir import new_run_dir
    from visiontune.report import write_data_report

    folder = new_run_dir(Path(config.project) / config.task, "check-data")
    page = write_data_report(folder / "data_report.html", check.samples, task=config.task,
                             class_names=check.class_names, flagged=check.flagged,
                             notes=[f"data.root: {config.data.root}", *check.text.splitlines()[-1:]])
    return check.text, check.has_errors, page


def metrics_table(metrics: dict[str, float]) -> str:
    """Two-column text table of metrics."""
    if not metrics:
        return "(no metrics)"
    width = max(len(key) for key in metrics)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -------"]
    for key, value in metrics.items():
        lines.append(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    return "\n".join(lines)


def _significant(value: Any, sign: str = "") -> str:
    """A metric value for people: 4 significant digits (``0.9167``, ``91.67``, ``1.000``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    return format(float(value), f"{sign}#.4g")


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def format_summary(summary: dict[str, Any] | None) -> str:
    """The before -> after table of a training run (``TrainResult.summary`` or ``<run>/summary.json``).

    One row per validation metric: the baseline (the epoch-0 row, before training; "not measured" without it), the
    best epoch (the weights of ``best.pt``), the last epoch, and the change best - baseline; values with 4
    significant digits (``summary.json`` keeps full precision). Then the metric that picks ``best.pt``, why the run
    stopped, its time and throughput, and the run directory.
    """
    if not summary:
        return "(no summary: training did not finish)"
    best, baseline, last = summary.get("best"), summary.get("baseline"), summary.get("last")
    metric = summary.get("metric")
    lines: list[str] = []
    if not best and not last:
        lines.append("no validation metrics (data.val_split is not set)")
    else:
        names: list[str] = []
        for values in (best, last, baseline):
            names.extend(key for key in values or {} if key not in names)
        if metric in names:
            names.remove(metric)
            names.insert(0, metric)
        change = summary.get("change") or {}
        header = ["metric", "baseline (epoch 0)" if baseline else "baseline",
                  f"best (epoch {summary.get('best_epoch')})", f"last (epoch {summary.get('last_epoch')})",
                  "change (best - baseline)"]
        rows = [[f"{name} *" if name == metric else name,
                 _significant(baseline.get(name)) if baseline else "not measured",
                 _significant((best or {}).get(name)), _significant((last or {}).get(name)),
                 _significant(change[name], "+") if name in change else "-"] for name in names]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, ["-" * width for width in widths], *rows]:
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        lines.append("")
        lines.append(f"* {metric} ({summary.get('mode')}) picks best.pt (the first epoch of equal values)")
        if baseline is None:
            lines.append("baseline not measured: train.eval_before=false, or a resumed run that started without it")
        elif summary.get("best_epoch") == 0 and summary.get("epochs"):
            lines.append("no epoch beat the baseline: best.pt is the model before training")
    parts = [f"stopped: {summary.get('stop_reason')} after {summary.get('epochs')} epoch(s), "
             f"{summary.get('steps')} steps"]
    if summary.get("wall_time_s") is not None:
        parts.append(f"wall time {_duration(summary['wall_time_s'])}")
    if summary.get("images_per_s"):
        parts.append(f"{summary['images_per_s']:.1f} images/s in training")
    lines.append("; ".join(parts))
    if summary.get("run_dir"):
        lines.append(f"run directory: {summary['run_dir']}  (summary.json, metrics.csv, best.pt, last.pt)")
    return "\n".join(lines)


def result_summary(result: TrainResult) -> dict[str, Any]:
    return {"run_dir": str(result.run_dir), "best_metric": result.best_metric, "best_epoch": result.best_epoch,
            "stop_reason": result.stop_reason}


__all__ += ["config_to_dict", "format_summary", "metrics_table", "result_summary"]
