"""Command line: ``visiontune <command> [-c config.yaml] [key=value ...]``.

Commands: ``demo``, ``train``, ``eval``, ``predict``, ``check-data``. Run ``visiontune <command> -h`` for
details. Every ``key=value`` is a dotted config override (``optim.lr=0.002 model.name=convnext_tiny``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from visiontune import __version__


def _setup_logging(verbose: bool) -> None:
    rank = int(os.environ.get("RANK", 0))
    level = logging.DEBUG if verbose else (logging.INFO if rank == 0 else logging.WARNING)
    logging.basicConfig(level=level, format="%(message)s" if not verbose else "%(levelname)s %(name)s: %(message)s",
                        force=True)


def _add_common(parser: argparse.ArgumentParser, *, config: bool = True) -> None:
    if config:
        parser.add_argument("-c", "--config", help="YAML config file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _split_overrides(overrides: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Separate top-level ``checkpoint=``/``source=``/``model=`` shortcuts from ordinary overrides."""
    shortcuts = {}
    rest = []
    for item in overrides:
        key, _, value = item.partition("=")
        if key in ("checkpoint", "source") and value:
            shortcuts[key] = value
        rest.append(item)
    return shortcuts, rest


def cmd_demo(args: argparse.Namespace) -> int:
    from visiontune.api import metrics_table
    from visiontune.demo import run_demo

    config, result, seconds = run_demo(args.overrides)
    print()
    print(metrics_table({k: v for k, v in result.metrics.items()}))
    print(f"\nbest {config.train.metric or 'top1'}: {result.best_metric:.2f} (epoch {result.best_epoch}); "
          f"{seconds:.0f} s in all")
    print(f"run directory: {result.run_dir}  (metrics.csv, plots/, eval/, best.pt, last.pt, config.yaml)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from visiontune.api import metrics_table, train
    from visiontune.config import load_config

    overrides = list(args.overrides)
    if args.resume:
        overrides.append(f"resume={args.resume}")
    config = load_config(args.config, overrides)
    result = train(config)
    if int(os.environ.get("RANK", 0)) == 0:
        print()
        print(metrics_table(result.metrics))
        print(f"\nstopped: {result.stop_reason}; best {result.best_metric} at epoch {result.best_epoch}")
        print(f"run directory: {result.run_dir}")
    return 0


def _checkpoint_config(args: argparse.Namespace):
    from visiontune.api import config_for_checkpoint
    from visiontune.engine.checkpoint import load_checkpoint

    shortcuts, overrides = _split_overrides(args.overrides)
    if "checkpoint" not in shortcuts:
        raise SystemExit(f"visiontune {args.command}: give the checkpoint as checkpoint=path/to/best.pt")
    state = load_checkpoint(shortcuts["checkpoint"])
    return config_for_checkpoint(state, args.config, overrides)


def cmd_eval(args: argparse.Namespace) -> int:
    from visiontune.api import evaluate, metrics_table

    config = _checkpoint_config(args)
    result = evaluate(config)
    if int(os.environ.get("RANK", 0)) == 0:
        print(metrics_table(result.metrics))
        print(f"\nresults: {result.output_dir}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from visiontune.api import predict

    onnx_model = next((item.partition("=")[2] for item in args.overrides
                       if item.startswith("model=") and item.endswith(".onnx")), None)
    if onnx_model is not None:  # an exported model: onnxruntime with the same pre- and post-processing
        from visiontune.export.runtime import predict_onnx

        options = dict(item.split("=", 1) for item in args.overrides if "=" in item and not item.startswith("model="))
        source = options.pop("source", None)
        if source is None:
            raise SystemExit("visiontune predict: give the images as source=path/to/image_or_folder")
        output = options.pop("output", None)
        files = predict_onnx(Path(onnx_model), source, Path(output) if output else None, **options)
    else:
        files = predict(_checkpoint_config(args))
    for path in files:
        print(path)
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    from visiontune.api import check_data
    from visiontune.config import load_config

    config = load_config(args.config, args.overrides)
    text, has_errors = check_data(config)
    print(text)
    return 1 if has_errors else 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "demo": (cmd_demo, "fine-tune on a generated dataset, offline (a few minutes on CPU)"),
    "train": (cmd_train, "train from a config"),
    "eval": (cmd_eval, "evaluate a checkpoint: eval [-c cfg.yaml] checkpoint=best.pt"),
    "predict": (cmd_predict, "predict: predict checkpoint=best.pt|model=exported.onnx source=image|folder|list"),
    "check-data": (cmd_check_data, "scan a dataset for corrupt images, empty classes, duplicates"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visiontune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"visiontune {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        _add_common(sub, config=name != "demo")
        if name == "train":
            sub.add_argument("--resume", help="checkpoint to resume (or 'true' for the newest run of this name)")
    for name, (function, help_text) in extra_commands().items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        function(sub)
    return parser


EXTRA_COMMAND_MODULES = ("visiontune.interop.cli", "visiontune.export.cli")
"""Modules whose ``register_commands(commands)`` adds commands with their own arguments (``convert``,
``import-config``, ``export``). Each entry maps a name to ``(configure(subparser), help)``; ``configure`` adds the
arguments and ``subparser.set_defaults(handler=function)`` where ``function(args) -> int``."""


def extra_commands() -> dict[str, tuple[Callable[[argparse.ArgumentParser], None], str]]:
    """Commands contributed by :data:`EXTRA_COMMAND_MODULES`."""
    import importlib

    commands: dict[str, tuple[Callable[[argparse.ArgumentParser], None], str]] = {}
    for module_name in EXTRA_COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        module.register_commands(commands)
    return commands


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``visiontune`` console script."""
    from visiontune.config import ConfigError
    from visiontune.engine.checkpoint import CheckpointError
    from visiontune.models.loading import WeightLoadError
    from visiontune.registry import UnknownNameError

    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "verbose", False))
    handler = COMMANDS[args.command][0] if args.command in COMMANDS else args.handler
    try:
        return handler(args)
    except (ConfigError, CheckpointError, WeightLoadError, UnknownNameError, FileNotFoundError, ValueError) as error:
        if getattr(args, "verbose", False):
            raise
        print(f"visiontune {args.command}: error: {error}", file=sys.stderr)
        return 2
    finally:
        from visiontune.utils.comm import cleanup_distributed

        cleanup_distributed()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
