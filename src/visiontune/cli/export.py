"""``visiontune export checkpoint=best.pt [key=value ...]``: ONNX export with a parity check.

The options are the ``export`` section of the config (``visiontune config keys export``); in this command they
may be written without the ``export.`` prefix (``half=true`` is ``export.half=true``). ``checkpoint`` and
``output`` are the top-level keys. The export reads the task, model and data settings from the checkpoint's
stored config, so no other section applies here.

==========  ===========  ======================================================================================
key         default      meaning
==========  ===========  ======================================================================================
checkpoint               the visiontune checkpoint to export (required)
output      <ckpt>.onnx  the ONNX file to write (default: the checkpoint's path with suffix .onnx)
format      onnx         export format (only ``onnx``)
dynamic     true         dynamic batch (and image height / width for the detectors)
opset       17           ONNX opset
half        false        float16 weights and input (outputs stay float32)
softmax     false        classification: probabilities instead of logits
decode      false        face detection: boxes / scores / landmarks in pixels instead of raw head outputs
tolerance   1e-3         parity tolerance of every compared output, relative to its scale (1 for probabilities);
                         2e-2 with ``half=true``
input_size  480x640      detection tasks: example input ``HxW`` (or one number for a square)
sample                   an image or a folder of images for the parity check (default: synthetic images)
==========  ===========  ======================================================================================
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from visiontune.cli._common import Command, add_config_arguments, section_overrides

if TYPE_CHECKING:
    from visiontune.config import Config

FILE_KEYS = ("checkpoint", "output")
"""Top-level keys that ``export`` reads besides the ``export`` section."""


def export_overrides(items: Sequence[str]) -> list[str]:
    """The command line's ``key=value`` items with the ``export.`` prefix added where it was left out.

    Raises:
        ConfigError: an item without ``=``, a key given twice, a bare key that is no export option (with the
            nearest one), or a key of another section (the export uses the checkpoint's stored config).
    """
    return section_overrides(items, section="export", command="export", top_level=FILE_KEYS,
                             reason="reads the task, model and data settings from the checkpoint")


def load_export_config(config_path: str | Path | None, items: Sequence[str]) -> Config:
    """The config of ``visiontune export [-c cfg.yaml] key=value ...``: ``checkpoint``, ``output``, ``export.*``.

    Raises:
        ConfigError: see :func:`export_overrides`; also a value of the wrong type, naming the key.
        ValueError: no checkpoint.
    """
    from visiontune.config import load_config

    config = load_config(config_path, export_overrides(items))
    if not config.checkpoint:
        raise ValueError("give the checkpoint to export: visiontune export checkpoint=path/to/best.pt")
    return config


def run_export(args: argparse.Namespace) -> int:
    """Handler of ``visiontune export``: export, print the parity table and the written file."""
    from visiontune.engine.run_dir import check_output_path, run_folder_of
    from visiontune.export._dependencies import MissingExportDependencyError
    from visiontune.export.exporter import export_checkpoint
    from visiontune.export.options import ExportOptions

    config = load_export_config(args.config, args.overrides)
    assert config.checkpoint is not None  # checked by load_export_config
    options = ExportOptions.from_config(config.export)
    output = Path(config.output) if config.output else Path(config.checkpoint).with_suffix(".onnx")
    check_output_path(output, command="export", writes="file", own_run=run_folder_of(config.checkpoint),
                      inputs={"checkpoint": config.checkpoint, "config": args.config, "sample": options.sample})
    try:
        result = export_checkpoint(config.checkpoint, output=output, options=options)
    except MissingExportDependencyError as error:
        print(f"visiontune export: error: {error}", file=sys.stderr)
        return 2
    print(result.parity_table())
    print(f"\nexported {result.metadata.task} ({result.metadata.output_kind}, outputs "
          f"{', '.join(result.metadata.output_names)}) to {result.path} in {result.seconds:.1f} s")
    return 0


def _configure_export(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    add_config_arguments(parser, run_export, overrides_help="checkpoint=..., output=... and export options "
                                                           "(export.* keys, prefix optional)")


COMMANDS = (
    Command(
        "export", "export a checkpoint to ONNX, checked against PyTorch with ONNX Runtime",
        "  visiontune export checkpoint=runs/classification/exp/best.pt\n"
        "  visiontune export checkpoint=best.pt output=model.onnx half=true softmax=true dynamic=false\n"
        "  visiontune export checkpoint=face/best.pt decode=true input_size=480x640 sample=photos/\n"
        "  visiontune config keys export        # every export option with its default",
        _configure_export,
    ),
)
