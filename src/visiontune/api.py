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
from visiontune.engine.run_dir import new_run_dir
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
    return Trainer(config, hooks=list(hooks)).fit()


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
        output_dir = Path(config.output) if config.output else path.parent / f"eval-{Path(config.data.val_split).stem}"
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


def check_data(config: Config) -> tuple[str, bool]:
    """Scan the configured dataset; returns the report text and whether it found errors."""
    return create_task(config).data_problems()


def metrics_table(metrics: dict[str, float]) -> str:
    """Two-column text table of metrics."""
    if not metrics:
        return "(no metrics)"
    width = max(len(key) for key in metrics)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -------"]
    for key, value in metrics.items():
        lines.append(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    return "\n".join(lines)


def result_summary(result: TrainResult) -> dict[str, Any]:
    return {"run_dir": str(result.run_dir), "best_metric": result.best_metric, "best_epoch": result.best_epoch,
            "stop_reason": result.stop_reason}


__all__ += ["config_to_dict", "metrics_table", "result_summary"]
