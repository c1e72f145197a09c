"""``demo``, ``train``, ``eval``, ``predict`` and ``check-data``: the workflow commands.

Every option is a config key (``key=value``, checked against the schema like a YAML file); ``checkpoint=``,
``source=`` and ``output=`` are the top-level keys of the same name.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from visiontune.cli._common import (
    ONNX_SUFFIX,
    Command,
    add_config_arguments,
    expand_shortcuts,
    launched_as_main_rank,
    override_keys,
)

if TYPE_CHECKING:
    from visiontune.config import Config


def run_demo(args: argparse.Namespace) -> int:
    from visiontune.api import format_summary
    from visiontune.demo import run_demo as demo
    from visiontune.engine.trainer import TrainResult

    _config, result, seconds = demo(args.overrides)
    assert isinstance(result, TrainResult)
    print()
    print(format_summary(result.summary))
    print(f"{seconds:.0f} s in all, with the dataset; also plots/, eval/ and config.yaml in the run directory")
    _print_report(result.run_dir)
    return result.exit_code


def _print_report(run_dir: Path) -> None:
    report = run_dir / "report.html"
    if report.is_file():
        print(f"report: {report}  (open it in a browser: metrics, curves, confusion matrix or detections, config)")


def run_train(args: argparse.Namespace) -> int:
    from visiontune.api import format_summary, train
    from visiontune.config import load_config

    overrides = list(args.overrides)
    if args.resume:
        overrides.append(f"resume={args.resume}")
    config = cap_workers(load_config(args.config, overrides))
    result = train(config)
    if launched_as_main_rank():
        print()
        print(format_summary(result.summary))
        _print_report(result.run_dir)
    return result.exit_code  # 0, or 143 / 130 when SIGTERM / SIGINT stopped the run (after writing last.pt)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, as PyTorch's DataLoader counts them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity mask on macOS / Windows
        return max(1, os.cpu_count() or 1)


def cap_workers(config: Config) -> Config:
    """``data.num_workers`` capped at :func:`available_cpus` (a preset's 4 workers on a 2-CPU machine would make
    PyTorch warn at every loader), with one note line when it lowers them; returns ``config``."""
    cpus = available_cpus()
    if config.data.num_workers > cpus:
        if launched_as_main_rank():
            print(f"note: data.num_workers={config.data.num_workers} is more than the {cpus} CPU(s) available: using "
                  f"{cpus} loader worker(s)")
        config.data.num_workers = cpus
    return config


def _requested_config(args: argparse.Namespace) -> tuple[Config, list[str]]:
    """The config of the command line alone (every key and value checked), and the expanded overrides."""
    from visiontune.config import load_config

    overrides = expand_shortcuts(args.overrides)
    return load_config(args.config, overrides), overrides


WEIGHTS_HELP = (
    "weights: checkpoint= takes a visiontune checkpoint (runs/.../best.pt: the config comes from it; -c and\n"
    "key=value change data and evaluation settings) or plain weights (.pth/.pt state dicts of the reference\n"
    "implementations, .safetensors, MindSpore .ckpt); plain weights need -c CFG.yaml or task=/model.name= to say\n"
    "what to build, and load as train loads model.checkpoint (with its load report). model.checkpoint= is the\n"
    "same for plain weights; checkpoint= wins when both are given."
)
"""The one rule of ``eval`` / ``predict`` for their weights (``-h``; ``visiontune.api.WEIGHTS_RULE`` in errors)."""

WHAT_TO_BUILD_KEYS = ("task", "model.name")
"""Override keys that say what to build for plain weights (besides ``-c``)."""


def _checkpoint_config(args: argparse.Namespace) -> Config:
    """The config of ``eval`` / ``predict`` (see :data:`WEIGHTS_HELP`): a visiontune checkpoint's stored config with
    ``-c`` / the overrides applied (see ``config_for_checkpoint``); for plain weights, the command line's config,
    which must say what to build."""
    from visiontune.api import WEIGHTS_RULE, config_for_checkpoint, read_visiontune_checkpoint
    from visiontune.config import ConfigError
    from visiontune.models.loading import WeightFileNotFoundError

    requested, overrides = _requested_config(args)
    key = "checkpoint" if requested.checkpoint else "model.checkpoint"
    given = requested.checkpoint or requested.model.checkpoint
    if not given:
        raise ConfigError(f"give the weights as checkpoint=path/to/best.pt or plain weights: {WEIGHTS_RULE}")
    try:
        state = read_visiontune_checkpoint(given)
    except WeightFileNotFoundError:
        raise WeightFileNotFoundError(f"{key} not found: {given}") from None
    if state is not None:
        config = config_for_checkpoint(state, args.config, overrides)
        config.checkpoint = given  # also when it came as model.checkpoint= (the stored model section replaced it)
        return config
    if not args.config and not set(WHAT_TO_BUILD_KEYS) & set(override_keys(overrides)):
        raise ConfigError(f"{key}={given} holds plain weights, not a visiontune checkpoint: say what to build with "
                          f"-c CFG.yaml or task=... model.name=... (e.g. task=classification "
                          f"model.name=mobilenetv3_small_100)")
    return requested


def run_eval(args: argparse.Namespace) -> int:
    from visiontune.api import evaluate, metrics_table

    config = cap_workers(_checkpoint_config(args))
    result = evaluate(config)
    if launched_as_main_rank():
        print(metrics_table(result.metrics, result.intervals))
        print(f"\nresults: {result.output_dir}")
    return 0


PREDICT_ONNX_KEYS = ("checkpoint", "source", "output", "device")
"""Keys of ``predict checkpoint=model.onnx`` that choose the files and the device; every other override changes
the config stored in the ONNX file."""


def run_predict(args: argparse.Namespace) -> int:
    from visiontune.config import ConfigError

    requested, overrides = _requested_config(args)
    if requested.checkpoint and requested.checkpoint.lower().endswith(ONNX_SUFFIX):
        # an exported model: onnxruntime with the same pre- and post-processing as the PyTorch path
        from visiontune.api import check_predict_output
        from visiontune.export.runtime import predict_onnx

        if args.config:
            raise ConfigError(f"-c {args.config}: an ONNX model carries its config; give changes as key=value")
        if not requested.source:
            raise ConfigError("give the images as source=path/to/image_or_folder")
        check_predict_output(requested, requested.checkpoint, requested.source)
        keys = override_keys(overrides)
        rest = [item for item, key in zip(overrides, keys) if key not in PREDICT_ONNX_KEYS]
        files = predict_onnx(Path(requested.checkpoint), requested.source,
                             Path(requested.output) if requested.output else None,
                             device=requested.device if "device" in keys else "cpu", overrides=rest)
    else:
        from visiontune.api import predict

        files = predict(cap_workers(_checkpoint_config(args)))
    for path in files:
        print(path)
    return 0


def run_check_data(args: argparse.Namespace) -> int:
    from visiontune.api import check_data
    from visiontune.config import load_config

    config = load_config(args.config, args.overrides)
    text, has_errors, page = check_data(config, report=args.report)
    print(text)
    if page is not None:
        print(f"\ndata report: {page}")
    return 1 if has_errors else 0


def _configure_weights_command(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.ArgumentParser],
                                                                                         None]:
    def configure(parser: argparse.ArgumentParser) -> None:
        add_config_arguments(parser, handler)
        parser.description = f"{parser.description}\n\n{WEIGHTS_HELP}"

    return configure


def _configure_check_data(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, run_check_data)
    parser.add_argument("--report", action="store_true",
                        help="also write data_report.html (counts, box statistics, flagged images, a sample grid with "
                             "the labels drawn) into a new <project>/<task>/check-data folder")


def _configure_train(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, run_train)
    parser.add_argument("--resume", help="checkpoint to resume (or 'true' for the newest run of this name); "
                                         "the same as resume=...")


COMMANDS = (
    Command(
        "demo", "fine-tune on a generated dataset, offline (a few minutes on CPU)",
        "  visiontune demo\n"
        "  visiontune demo train.epochs=5 model.name=resnet18",
        lambda parser: add_config_arguments(parser, run_demo, config_file=False),
    ),
    Command(
        "train", "train from a config",
        "  visiontune train -c configs/classification/mobilenetv2_100.yaml data.root=data/flowers optim.lr=0.002\n"
        "  visiontune train --resume runs/classification/mobilenetv2_100/last.pt\n"
        "  visiontune train -c cfg.yaml resume=true            # the newest run of this task and name\n"
        "  torchrun --nproc-per-node 4 -m visiontune train -c cfg.yaml",
        _configure_train,
    ),
    Command(
        "eval", "evaluate a checkpoint or plain weights on data.val_split",
        "  visiontune eval checkpoint=runs/classification/exp/best.pt\n"
        "  visiontune eval -c cfg.yaml checkpoint=best.pt data.val_split=test output=eval-test\n"
        "  visiontune eval checkpoint=best.pt face.gt_dir=widerface/eval_tools/ground_truth\n"
        "  visiontune eval -c configs/face_detection/retinaface_mobilenet025_finetune.yaml \\\n"
        "      checkpoint=mobilenet0.25_Final.pth data.root=widerface face.gt_dir=widerface/ground_truth"
        "   # baseline\n"
        "  visiontune eval task=classification model.name=mobilenetv3_small_100 checkpoint=mindcv.ckpt "
        "data.root=data",
        _configure_weights_command(run_eval),
    ),
    Command(
        "predict", "predict with a checkpoint, plain weights or an exported .onnx model on an image, a folder or "
                   "a list",
        "  visiontune predict checkpoint=runs/classification/exp/best.pt source=photos/ topk=3\n"
        "  visiontune predict checkpoint=best.pt source=photos/ output=preds face.vis_thresh=0.5\n"
        "  visiontune predict -c configs/face_detection/retinaface_mobilenet025_finetune.yaml "
        "checkpoint=mobilenet0.25_Final.pth source=photos/\n"
        "  visiontune predict task=classification model.name=mobilenetv3_small_100 checkpoint=mindcv.ckpt "
        "source=photos/\n"
        "  visiontune predict checkpoint=best.onnx source=photos/ output=preds   # ONNX Runtime (device=cpu)",
        _configure_weights_command(run_predict),
    ),
    Command(
        "check-data", "scan a dataset for corrupt images, empty classes, duplicates",
        "  visiontune check-data -c configs/classification/mobilenetv2_100.yaml data.root=data/flowers\n"
        "  visiontune check-data task=face_detection data.format=retinaface data.root=widerface --report",
        _configure_check_data,
    ),
)
