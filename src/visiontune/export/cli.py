"""``visiontune export checkpoint=best.pt [key=value ...]``: ONNX export with a parity check.

Keys (all optional except ``checkpoint``):

============  ===========  ====================================================================================
key           default      meaning
============  ===========  ====================================================================================
checkpoint                 the visiontune checkpoint to export (required)
output        <ckpt>.onnx  the ONNX file to write (default: the checkpoint's path with suffix .onnx)
format        onnx         export format (only ``onnx``)
dynamic       true         dynamic batch (and image height / width for the detectors)
opset         17           ONNX opset
half          false        float16 weights and input (outputs stay float32)
softmax       false        classification: probabilities instead of logits
decode        false        face detection: boxes / scores / landmarks in pixels instead of raw head outputs
tolerance     1e-3         parity tolerance relative to each output's scale (2e-2 with ``half=true``)
input_size    480x640      detection tasks: example input ``HxW`` (or one number for a square)
sample                     an image or a folder of images for the parity check (default: synthetic images)
============  ===========  ====================================================================================
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from visiontune.registry import suggest

logger = logging.getLogger(__name__)

EXPORT_HELP = "export a checkpoint to ONNX, checked against PyTorch: export checkpoint=best.pt [decode=true ...]"
EXPORT_KEYS = ("checkpoint", "output", "format", "dynamic", "opset", "half", "softmax", "decode", "tolerance",
               "input_size", "sample")
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


def parse_bool(key: str, text: str) -> bool:
    """``true/false`` (also ``yes/no``, ``1/0``, ``on/off``, any case).

    Raises:
        ValueError: anything else, naming the key.
    """
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{key}={text!r}: expected true or false")


def parse_size(key: str, text: str) -> tuple[int, int]:
    """``HxW`` (``480x640``) or one number for a square.

    Raises:
        ValueError: not of that form, naming the key.
    """
    parts = text.lower().replace(",", "x").split("x")
    try:
        sizes = [int(part) for part in parts]
    except ValueError:
        raise ValueError(f"{key}={text!r}: expected HEIGHTxWIDTH (e.g. 480x640) or one number") from None
    if len(sizes) == 1:
        return sizes[0], sizes[0]
    if len(sizes) != 2:
        raise ValueError(f"{key}={text!r}: expected HEIGHTxWIDTH (e.g. 480x640) or one number")
    return sizes[0], sizes[1]


def parse_export_arguments(items: Sequence[str]) -> tuple[str, str | None, dict[str, Any]]:
    """Split ``key=value`` arguments into the checkpoint, the output and :class:`ExportOptions` keyword arguments.

    Raises:
        ValueError: an argument without ``=``, an unknown or repeated key, a malformed value, or no checkpoint.
    """
    values: dict[str, str] = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise ValueError(f"{item!r}: expected key=value (keys: {', '.join(EXPORT_KEYS)})")
        if key not in EXPORT_KEYS:
            raise ValueError(f"unknown export option {key!r}{suggest(key, EXPORT_KEYS)}; "
                             f"valid: {', '.join(EXPORT_KEYS)}")
        if key in values:
            raise ValueError(f"export option {key!r} is given twice")
        values[key] = value
    if not values.get("checkpoint"):
        raise ValueError("give the checkpoint to export: visiontune export checkpoint=path/to/best.pt")
    options: dict[str, Any] = {}
    for key in ("dynamic", "half", "softmax", "decode"):
        if key in values:
            options[key] = parse_bool(key, values[key])
    if "opset" in values:
        try:
            options["opset"] = int(values["opset"])
        except ValueError:
            raise ValueError(f"opset={values['opset']!r}: expected an integer") from None
    if "tolerance" in values:
        try:
            options["tolerance"] = float(values["tolerance"])
        except ValueError:
            raise ValueError(f"tolerance={values['tolerance']!r}: expected a number") from None
    if "input_size" in values:
        options["input_size"] = parse_size("input_size", values["input_size"])
    for key in ("format", "sample"):
        if key in values:
            options[key] = values[key]
    return values["checkpoint"], values.get("output") or None, options


def run_export(args: argparse.Namespace) -> int:
    """Handler of ``visiontune export``: export, print the parity table and the written file."""
    from visiontune.export._dependencies import MissingExportDependencyError
    from visiontune.export.exporter import ExportOptions, export_checkpoint

    checkpoint, output, option_values = parse_export_arguments(args.options)
    try:
        result = export_checkpoint(checkpoint, output=output, options=ExportOptions(**option_values))
    except MissingExportDependencyError as error:
        print(f"visiontune export: error: {error}", file=sys.stderr)
        return 2
    print(result.parity_table())
    print(f"\nexported {result.metadata.task} ({result.metadata.output_kind}, outputs "
          f"{', '.join(result.metadata.output_names)}) to {result.path} in {result.seconds:.1f} s")
    return 0


def configure_export(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``visiontune export``."""
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("options", nargs="*", metavar="key=value", help="checkpoint=... and export options")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.set_defaults(handler=run_export)


def register_commands(commands: dict[str, tuple[Callable[[argparse.ArgumentParser], None], str]]) -> None:
    """Add ``export`` to the CLI's extra commands (see :func:`visiontune.cli.extra_commands`)."""
    commands["export"] = (configure_export, EXPORT_HELP)
