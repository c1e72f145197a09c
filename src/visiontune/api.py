"""Python API: ``train``, ``evaluate``, ``predict``, ``check_data`` (the CLI is a thin layer over these)."""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from visiontune.config import Config, config_from_dict, config_to_dict, load_config
from visiontune.engine.checkpoint import check_checkpoint_task, load_checkpoint, merge_checkpoint_config
from visiontune.engine.hooks import HookBase
from visiontune.engine.inference import build_eval_loader, run_evaluation
from visiontune.engine.run_dir import check_output_path, is_run_dir, new_run_dir, run_folder_of
from visiontune.engine.trainer import Trainer, TrainResult
from visiontune.tasks import create_task
from visiontune.utils import comm
from visiontune.utils.plots import missing_metric_text
from visiontune.utils.summary_table import interval_note, summary_table, value_with_interval

logger = logging.getLogger(__name__)

__all__ = ["WEIGHTS_RULE", "EvalResult", "HookBase", "Weights", "check_data", "check_eval_output",
           "check_predict_output", "config_for_checkpoint", "evaluate", "predict", "read_visiontune_checkpoint",
           "resolve_weights", "train"]


@dataclass
class EvalResult:
    """Metrics of ``evaluate`` and where its artifacts went."""

    metrics: dict[str, float]
    output_dir: Path | None
    intervals: dict[str, list[float | None]] | None = None
    """``eval.intervals`` (rank 0): ``val_<metric>`` -> its 95% bootstrap interval over the evaluated images."""


def train(config: Config, hooks: Iterable[HookBase] = ()) -> TrainResult:
    """Train ``config`` and return the result (run directory, best metric, history, why it stopped).

    Args:
        config: The resolved config (``resume`` continues a checkpoint).
        hooks: :class:`HookBase` objects called at ``before_train``, ``before_step``, ``after_step``,
            ``after_epoch`` and ``after_train``, after the built-in evaluation, writers and epoch checkpoint (e.g.
            a logger to an experiment tracker; see the README's "Hooks").
    """
    final = []
    if config.train.report:
        from visiontune.report.hook import ReportWriter

        final.append(ReportWriter())  # last: the page shows eval/ and summary.json, written by the built-in hooks
    return Trainer(config, hooks=list(hooks), final_hooks=final).fit()


def config_for_checkpoint(checkpoint: dict[str, Any], config_path: str | Path | None = None,
                          overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The config of a checkpoint, optionally replaced by a YAML file, then overridden.

    The task and the ``model`` section always come from the checkpoint: they describe the stored weights
    (:func:`~visiontune.engine.checkpoint.merge_checkpoint_config`: another task is refused, ``model.*`` keys given
    are ignored with a warning naming them).
    """
    stored = config_from_dict(checkpoint["config"])
    config = load_config(config_path, overrides) if config_path else load_config(None, overrides, base=stored)
    return merge_checkpoint_config(stored, config, config.checkpoint or config.model.checkpoint)


WEIGHTS_RULE = (
    "checkpoint= takes a visiontune checkpoint (runs/.../best.pt: the config comes from it) or plain weights "
    "(.pth/.pt state dict, .safetensors, MindSpore .ckpt); plain weights need -c config.yaml or task=/model.name= "
    "to say what to build, and load as train loads model.checkpoint. model.checkpoint= is the same for plain weights."
)
"""The one rule of ``eval`` / ``predict`` for the weights, printed by ``-h`` and in errors."""

_TORCH_SUFFIXES = (".pt", ".pth", ".tar", ".bin")


def read_visiontune_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint at ``path`` when it is a visiontune checkpoint (verified, see
    :func:`~visiontune.engine.checkpoint.load_checkpoint`), ``None`` when it holds plain weights (a state dict,
    ``.safetensors``, a MindSpore ``.ckpt``).

    Raises:
        WeightFileNotFoundError: ``path`` does not exist.
        WeightLoadError: an ONNX model, or a ``.pt``-like file ``torch.load`` cannot read (one line saying what it
            is, :func:`~visiontune.models.loading.describe_torch_load_failure`).
    """
    from visiontune.models.loading import WeightFileNotFoundError, WeightLoadError, describe_torch_load_failure

    path = Path(path)
    if not path.is_file():
        raise WeightFileNotFoundError(f"weights file not found: {path}")
    expected = "expected a visiontune checkpoint (runs/.../best.pt) or plain weights (.pth/.pt, .safetensors, .ckpt)"
    if path.suffix.lower() == ".onnx":
        raise WeightLoadError(f"{path} is an ONNX model: {expected}; visiontune predict runs ONNX models")
    if path.suffix.lower() not in _TORCH_SUFFIXES:
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a zip file (mmap), or unreadable: try again
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - neither a checkpoint nor weights
            raise WeightLoadError(f"cannot read {path}: it is {describe_torch_load_failure(path, error)}; "
                                  f"{expected}") from None
    if not (isinstance(obj, dict) and "model" in obj and "config" in obj):
        return None
    del obj
    return load_checkpoint(path)


@dataclass
class Weights:
    """What ``eval`` / ``predict`` run: the config to build and either a visiontune checkpoint or plain weights."""

    config: Config
    path: Path
    checkpoint: dict[str, Any] | None
    """The visiontune checkpoint; ``None``: plain weights, in ``config.model.checkpoint``."""


def resolve_weights(config: Config, checkpoint: str | Path | None = None) -> Weights:
    """The weights of ``eval`` / ``predict``: ``checkpoint``, else ``config.checkpoint``, else
    ``config.model.checkpoint`` (see :data:`WEIGHTS_RULE`).

    A visiontune checkpoint is used with its stored weights and meta; plain weights are put in (a copy of) the
    config's ``model.checkpoint``, so the task loads them as training does.

    Raises:
        ValueError: no weights given.
        WeightFileNotFoundError: the file does not exist.
        CheckpointError: a checkpoint of another task than ``config.task``.
    """
    given = checkpoint or config.checkpoint or config.model.checkpoint
    if not given:
        raise ValueError(f"no weights given: {WEIGHTS_RULE}")
    path = Path(given)
    state = read_visiontune_checkpoint(path)
    if state is not None:
        check_checkpoint_task(config_from_dict(state["config"]).task, config.task, path)
        return Weights(config=config, path=path, checkpoint=state)
    config = copy.deepcopy(config)
    config.checkpoint = None
    config.model.checkpoint = str(path)
    if config.task == "instance_segmentation" and config.model.init == "none":
        config.model.init = "coco"  # plain weights of a whole Mask R-CNN (training would ask for model.init=coco)
    return Weights(config=config, path=path, checkpoint=None)


def build_model_for_weights(task: Any, weights: Weights) -> torch.nn.Module:
    """The task's model with ``weights``: a checkpoint's state dict (strict, after its meta), or plain weights
    loaded as ``train`` loads ``model.checkpoint`` (with the load report)."""
    if weights.checkpoint is None:
        logger.info("%s holds plain weights: building %s (%s) and loading them as training does",
                    weights.path, weights.config.model.name, weights.config.task)
        return task.build_model(load_weights=True)
    model = task.build_model(load_weights=False)
    model.load_state_dict(weights.checkpoint["model"])
    return model


def evaluate(config: Config, *, checkpoint: str | Path | None = None) -> EvalResult:
    """Evaluate weights on ``data.val_split`` with the same code as validation in training.

    Args:
        config: Data and evaluation settings, and what to build for plain weights.
        checkpoint: A visiontune checkpoint or plain weights, overriding ``config.checkpoint`` /
            ``config.model.checkpoint`` (see :data:`WEIGHTS_RULE`).

    Returns:
        ``val_*`` metrics of the weights (and ``val_ema_*`` when the checkpoint holds an EMA), and the folder
        with the confusion matrix / PR curves / ``metrics.json``: ``output``, else ``eval-<split>`` next to a
        checkpoint inside a visiontune run folder, else a new folder under ``<project>/<task>/`` (always for plain
        weights).
    """
    weights = resolve_weights(config, checkpoint)
    config, path, state = weights.config, weights.path, weights.checkpoint
    check_eval_output(config, path, in_run=state is not None and is_run_dir(path.parent))
    info = comm.env_dist_info()
    device = comm.resolve_device(config.device, info)
    comm.init_distributed(device)
    task = create_task(config)
    if state is not None:
        task.load_meta(state.get("meta", {}))
    if not config.data.val_split:
        raise ValueError("data.val_split is not set: nothing to evaluate")
    dataset = task.build_dataset(config.data.val_split, train=False)
    loader = build_eval_loader(task, dataset, config)
    model = build_model_for_weights(task, weights)
    model.to(device)
    evaluator = task.build_evaluator(dataset)
    metrics = {f"val_{k}": v for k, v in run_evaluation(model, loader, evaluator, device=device,
                                                          progress=config.train.progress and info.is_main).items()}
    intervals = evaluation_intervals(config, evaluator) if info.is_main else None
    output_dir = None
    if info.is_main:
        folder_name = f"eval-{Path(config.data.val_split).stem}"
        if config.output:
            output_dir = Path(config.output)
        elif state is not None and is_run_dir(path.parent):  # next to a checkpoint in a run folder visiontune made
            output_dir = path.parent / folder_name
        else:
            output_dir = new_run_dir(Path(config.project) / config.task, folder_name)
            logger.info("%s is not a checkpoint inside a visiontune run folder: results go to %s", path, output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        evaluator.save_artifacts(output_dir)
    if state is not None and state.get("ema") is not None:
        model.load_state_dict(state["ema"])
        ema_evaluator = task.build_evaluator(dataset)
        metrics.update({f"val_ema_{k}": v for k, v in run_evaluation(model, loader, ema_evaluator,
                                                                      device=device).items()})
    if output_dir is not None:
        written = {**metrics, "intervals": intervals} if intervals is not None else metrics
        (output_dir / "metrics.json").write_text(json.dumps(written, indent=2), encoding="utf-8")
    return EvalResult(metrics=metrics, output_dir=output_dir, intervals=intervals)


def evaluation_intervals(config: Config, evaluator: Any) -> dict[str, list[float | None]] | None:
    """``val_<metric>`` -> ``[lo, hi]``, the bootstrap interval (``eval.resamples``, ``eval.seed``; 95%) of every
    metric the evaluator keeps per-image results for; ``None`` with ``eval.intervals=false`` or without them."""
    from visiontune.evaluation.bootstrap import bootstrap_intervals, evaluator_per_image

    per_image = evaluator_per_image(evaluator) if config.eval.intervals else None
    if per_image is None:
        return None
    found = bootstrap_intervals(per_image, resamples=config.eval.resamples, seed=config.eval.seed)
    return {f"val_{name}": [bound if math.isfinite(bound) else None for bound in interval]
            for name, interval in found.items()}


def check_eval_output(config: Config, weights: str | Path, *, in_run: bool) -> None:
    """Refuse, before evaluating, an ``output`` of ``eval`` that would write over what it reads or into another
    run's folder (:func:`~visiontune.engine.run_dir.check_output_path`).

    ``output`` must not be the weights file, nor be ``data.root`` or inside it, nor lie in a run folder other than
    the weights' run. Without ``output`` the results go to ``eval-<split>`` beside a checkpoint in its run folder
    (``in_run``), else to a new folder under ``project``, which must not lie in another run's folder.

    Raises:
        OutputPathError: one line naming ``output`` (or ``project``) and the path it collides with.
    """
    own_run = run_folder_of(weights)
    if config.output:
        check_output_path(config.output, command="eval", writes="folder", own_run=own_run,
                          inputs={"checkpoint": weights, "data.root": config.data.root})
    elif not in_run:
        check_output_path(config.project, command="eval", writes="folder", key="project", own_run=own_run)


def check_predict_output(config: Config, weights: str | Path, source: str | Path) -> None:
    """Refuse, before predicting, an ``output`` of ``predict`` that could replace an input or lies in another
    run's folder (:func:`~visiontune.engine.run_dir.check_output_path`).

    The prediction files mirror the names of the images (a drawn copy keeps the image's name), so ``output`` and the
    source must not overlap: ``output`` is not the source folder nor inside it, and holds neither the source folder
    nor the source file (the images that a list or annotation file names are not looked at). Nor is ``output`` the
    weights file, or in a run folder other than the weights' run. Without ``output``, the new folder goes under
    ``project``, which must not lie in another run's folder.

    Raises:
        OutputPathError: one line naming ``output`` (or ``project``) and the path it collides with.
    """
    own_run = run_folder_of(weights)
    if config.output:
        check_output_path(config.output, command="predict", writes="folder", own_run=own_run,
                          inputs={"checkpoint": weights, "source": source}, contained=("source",))
    else:
        check_output_path(config.project, command="predict", writes="folder", key="project", own_run=own_run)


def predict(config: Config, *, checkpoint: str | Path | None = None, source: str | None = None) -> list[Path]:
    """Run weights (a visiontune checkpoint or plain weights, see :data:`WEIGHTS_RULE`) on ``source`` (image,
    folder or list) and write the task's prediction files (in ``output``, else a new ``<project>/<task>/predict``
    folder)."""
    source = source or config.source
    if not source:
        raise ValueError("predict needs a source: source=path/to/image_or_folder")
    weights = resolve_weights(config, checkpoint)
    config = weights.config
    check_predict_output(config, weights.path, source)
    device = comm.resolve_device(config.device)
    task = create_task(config)
    if weights.checkpoint is not None:
        task.load_meta(weights.checkpoint.get("meta", {}))
    model = build_model_for_weights(task, weights)
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
    if report:
        check_output_path(config.project, command="check-data", writes="folder", key="project")
    check = create_task(config).check_data()
    if not report:
        return check.text, check.has_errors, None
    from visiontune.engine.run_dir import new_run_dir
    from visiontune.report import write_data_report

    folder = new_run_dir(Path(config.project) / config.task, "check-data")
    page = write_data_report(folder / "data_report.html", check.samples, task=config.task,
                             class_names=check.class_names, flagged=check.flagged,
                             notes=[f"data.root: {config.data.root}", *check.text.splitlines()[-1:]],
                             duplicates=check.duplicates if config.data.duplicates else None, root=config.data.root)
    return check.text, check.has_errors, page


def metrics_table(metrics: dict[str, float], intervals: dict[str, list[float | None]] | None = None) -> str:
    """Two-column text table of metrics; a metric with an interval reads ``0.9400 [0.8900, 0.9800]``."""
    if not metrics:
        return "(no metrics)"
    width = max(len(key) for key in metrics)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -------"]
    for key, value in metrics.items():
        text = value_with_interval(value, (intervals or {}).get(key), missing=missing_metric_text(key))
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)


def _metric_table(summary: dict[str, Any]) -> list[str]:
    """The rows of :func:`format_summary`: the cells of :func:`~visiontune.utils.summary_table.summary_table` (the
    report's table shows the same strings) as aligned text columns, the main metric marked ``*``."""
    cells = summary_table(summary)
    header = ["metric", *cells.header]
    rows = [[f"{name} *" if name == summary.get("metric") else name, *row]
            for name, row in zip(cells.names, cells.rows)]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in [header, ["-" * width for width in widths], *rows]]


def _selection_notes(summary: dict[str, Any]) -> list[str]:
    """Where the best epoch was selected, and what the intervals are."""
    interval_text = interval_note(summary)
    notes = [interval_text] if interval_text else []
    if summary.get("test") is not None:
        notes.append(f"best epoch selected on val; test: {summary.get('test_checkpoint', 'best.pt')} evaluated once "
                     "on data.test_split (the headline)")
    else:
        notes.append("best epoch selected on val (an optimistic estimate: set data.test_split to measure it once on "
                     "held-out images)")
    return notes


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
        lines += _metric_table(summary)
        lines.append("")
        lines.append(f"* {metric} ({summary.get('mode')}) picks best.pt (the first epoch of equal values)")
        lines += _selection_notes(summary)
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


__all__ += ["config_to_dict", "format_summary", "metrics_table"]
