"""Command line: ``visiontune <command> [-c config.yaml] [key=value ...]``.

Every ``key=value`` is a dotted config key (``optim.lr=0.002``), checked against the schema like a YAML file: an
unknown key or a wrong type is an error naming the key. The commands live in the modules of this package
(``run``: demo, train, eval, predict, check-data; ``tune``; ``report``: report, compare; ``export``;
``interop``: convert, import-config; ``config``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from visiontune import __version__
from visiontune.cli import config as _config_commands
from visiontune.cli import export as _export_commands
from visiontune.cli import interop as _interop_commands
from visiontune.cli import report as _report_commands
from visiontune.cli import run as _run_commands
from visiontune.cli import tune as _tune_commands
from visiontune.cli._common import Command

__all__ = ["COMMANDS", "build_parser", "main"]

# The command modules import nothing heavy at module level (torch, timm, torchvision load in the handlers), so
# that ``visiontune --help`` and ``--version`` answer at once.
COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (*_run_commands.COMMANDS, *_tune_commands.COMMANDS, *_report_commands.COMMANDS,
                    *_export_commands.COMMANDS,
                    *_interop_commands.COMMANDS, *_config_commands.COMMANDS)
}
"""Every command in the order of ``visiontune --help``."""

DESCRIPTION = """Fine-tune pretrained vision models on your own data and measure them honestly.

Every key=value is a dotted config key (optim.lr=0.002 model.name=convnext_tiny), checked against the schema
like a YAML file: an unknown key, a wrong type or a value out of its range is an error naming the key. An empty
value (data.image_ext=) is the empty string for a text key and null for a key that takes null. `visiontune config
keys` lists every key with its type, range, default and documentation; `visiontune <command> -h` shows a command's
examples. Every expected failure prints one line `visiontune <command>: error: ...` and exits with status 2.
"""

EPILOG = """examples:
  visiontune demo
  visiontune train -c configs/classification/mobilenetv2_100.yaml data.root=data/flowers optim.lr=0.002
  visiontune eval checkpoint=runs/classification/mobilenetv2_100/best.pt
  visiontune predict checkpoint=runs/classification/mobilenetv2_100/best.pt source=photos/
  visiontune report runs/classification/mobilenetv2_100
  visiontune compare runs/classification/mobilenetv2_100 runs/classification/mobilenetv2_100-2
  visiontune export checkpoint=runs/classification/mobilenetv2_100/best.pt half=true
  visiontune config keys optim
"""


def _setup_logging(verbose: bool) -> None:
    rank = int(os.environ.get("RANK", 0))
    level = logging.DEBUG if verbose else (logging.INFO if rank == 0 else logging.WARNING)
    logging.basicConfig(level=level, format="%(message)s" if not verbose else "%(levelname)s %(name)s: %(message)s",
                        force=True)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (nothing heavy is imported)."""
    parser = argparse.ArgumentParser(prog="visiontune", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"visiontune {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="<command>", title="commands")
    for command in COMMANDS.values():
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help,
                                    epilog=f"examples:\n{command.examples}",
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        command.configure(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors reported as one line (exit code 2): bad configs, paths, names, checkpoints, options, and a training
    stopped by a non-finite loss (``train.nan_policy=error``).

    ``ConfigError``, ``CheckpointError``, ``WeightLoadError``, ``ConvertError`` and the export and interop errors
    are ``ValueError`` subclasses; the registry's ``UnknownNameError`` is a ``KeyError``; the engine's
    ``NonFiniteLossError`` is a ``FloatingPointError`` (looked up only when the engine was imported: the CLI does
    not import torch for an error). Any other exception is unexpected and keeps its traceback.
    """
    from visiontune.registry import UnknownNameError

    errors: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, UnknownNameError)
    stop = sys.modules.get("visiontune.engine.stop")
    if stop is not None:
        errors += (stop.NonFiniteLossError,)
    return errors


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (the lines of a multi-line message joined with a space)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``visiontune`` console script; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling a positional list at the first flag: `train a=1 --resume x b=2` leaves b=2 over
    positional = next((name for name in ("overrides", "arguments") if isinstance(getattr(args, name, None), list)),
                      None)
    if extra:
        if positional is None or any(item.startswith("-") for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        getattr(args, positional).extend(extra)
    verbose = getattr(args, "verbose", False)
    _setup_logging(verbose)
    try:
        return int(args.handler(args))
    except _user_errors() as error:
        if verbose:
            raise
        print(f"visiontune {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    finally:
        comm = sys.modules.get("visiontune.utils.comm")
        if comm is not None:  # only a command that imported it can have started a process group
            comm.cleanup_distributed()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
