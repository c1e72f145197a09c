"""``visiontune convert`` and ``visiontune import-config``: MindSpore checkpoints and configs in and out.

::

    visiontune convert mobilenet_v2_100.ckpt mobilenet_v2_100.safetensors arch=mobilenet_v2_100
    visiontune convert runs/classification/exp/best.pt model.ckpt to=mindspore    # arch from the checkpoint
    visiontune import-config RetinaFace_mobilenet025.yaml retinaface.yaml

``convert`` maps a MindSpore ``.ckpt`` (MindCV / MindFace names) to the PyTorch names of the timm / visiontune
model and writes ``.safetensors`` or ``.pth``; with ``to=mindspore`` it exports a visiontune checkpoint (or plain
weights) back to a MindSpore ``.ckpt`` with MindSpore's names, for deployment with MindSpore / MindSpore Lite.
The options are the ``convert`` section of the config (``visiontune config keys convert``), checked like every
command's; ``--arch``, ``--to``, ``--ema``, ``--list``, ``--family`` and ``-o OUT`` are the same as flags.

The conversion functions live here, in the CLI layer, because they read visiontune checkpoints with
:mod:`visiontune.models` (a layer above :mod:`visiontune.interop`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from visiontune.cli._common import Command, add_verbose

if TYPE_CHECKING:  # torch and the interop package load lazily: `visiontune --help` imports this module
    import torch

    from visiontune.config import ConvertConfig
    from visiontune.interop.mindspore import ConversionReport, MindSporeArchitecture

PYTORCH_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
MINDSPORE_SUFFIX = ".ckpt"
_NAMES_SHOWN = 8
_MINDCV_IMAGENET_CLASSES = 1000


class ConvertError(ValueError):
    """``visiontune convert`` cannot do what was asked (bad paths, direction or checkpoint content)."""


# --------------------------------------------------------------------------------------------------
# convert: MindSpore -> PyTorch
# --------------------------------------------------------------------------------------------------


def convert_mindspore_checkpoint(source: str | os.PathLike[str], output: str | os.PathLike[str], *,
                                 arch: str) -> ConversionReport:
    """Read a MindSpore ``.ckpt``, rename it for ``arch`` and write PyTorch weights atomically.

    Args:
        source: the MindSpore checkpoint (a training checkpoint is fine: optimizer state is skipped).
        output: ``.safetensors`` (safetensors) or ``.pth`` / ``.pt`` / ``.bin`` (``torch.save`` of the state dict).
        arch: architecture name (``visiontune.interop.mindspore.list_mindspore_architectures()``; timm names work).

    Returns:
        The conversion report: renamed tensors, skipped ones with the reason, added BatchNorm counters.

    Raises:
        ConvertError: ``output`` has no PyTorch suffix or is ``source``.
        MindSporeCheckpointError: ``source`` is not a readable MindSpore checkpoint.
        UnknownArchitectureError, ArchitectureMismatchError: ``arch`` is unknown or does not fit the names.
    """
    from visiontune.interop.mindspore import convert_mindspore_state_dict, read_mindspore_checkpoint

    source, output = Path(source), Path(output)
    _check_output(source, output, suffixes=PYTORCH_SUFFIXES, direction="pytorch")
    if not source.is_file():
        raise ConvertError(f"checkpoint not found: {source}")
    state_dict, report = convert_mindspore_state_dict(read_mindspore_checkpoint(source), arch)
    # mindspore_arch: loading the file into a model (model.checkpoint) gives it MindSpore's padding where the
    # architecture needs it (MobileNetV3; see visiontune.models.classification.load_classifier_weights)
    save_pytorch_state_dict(state_dict, output, metadata={"source": str(source), "arch": report.architecture,
                                                          "mindspore_arch": report.architecture,
                                                          "converted_by": "visiontune convert"})
    return report


def save_pytorch_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike[str], *,
                            metadata: Mapping[str, str] | None = None) -> Path:
    """Write a flat state dict atomically: safetensors for ``.safetensors``, else ``torch.save``.

    Both load with :func:`visiontune.models.loading.read_weights` (``model.checkpoint``); ``metadata`` is stored
    in the safetensors header only. The file is written next to ``path`` and renamed over it.
    """
    import torch

    from visiontune.engine.checkpoint import atomic_write

    path = Path(path)
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in state_dict.items()}
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save

        payload = save(tensors, metadata=dict(metadata or {}))
        return atomic_write(path, lambda stream: stream.write(payload))
    return atomic_write(path, lambda stream: torch.save(tensors, stream))


# --------------------------------------------------------------------------------------------------
# convert --to mindspore: visiontune -> MindSpore
# --------------------------------------------------------------------------------------------------


@dataclass
class MindSporeExport:
    """What :func:`export_mindspore_checkpoint` wrote.

    Attributes:
        source: the visiontune checkpoint or weight file.
        output: the MindSpore ``.ckpt``.
        architecture: canonical architecture name (e.g. ``mobilenet_v2_100``).
        mindspore_model: the MindSpore model the names belong to (e.g. ``MindCV mobilenet_v2_100``).
        task: the checkpoint's task (``classification`` / ``face_detection``), None for plain weights.
        weights: ``"model"``, ``"ema"`` or ``"weights"`` (a plain state dict).
        exported: number of tensors written.
        dropped: PyTorch names not exported, with the reason.
        num_classes: classifier rows of a classification model (None for RetinaFace).
        notes: known differences between the PyTorch and MindSpore models.
    """

    source: Path
    output: Path
    architecture: str
    mindspore_model: str
    task: str | None
    weights: str
    exported: int
    dropped: dict[str, str] = field(default_factory=dict)
    num_classes: int | None = None
    notes: str = ""


def export_mindspore_checkpoint(source: str | os.PathLike[str], output: str | os.PathLike[str], *,
                                arch: str | None = None, use_ema: bool = False) -> MindSporeExport:
    """Export fine-tuned weights to a MindSpore ``.ckpt`` with MindCV / MindFace parameter names.

    Classification checkpoints hold the timm network under ``net.`` in ``checkpoint["model"]``; face detection
    checkpoints hold the RetinaFace names directly. A classifier of another class count than the original MindCV
    model keeps MindCV's names (build the MindCV model with ``num_classes`` = :attr:`MindSporeExport.num_classes`).

    Args:
        source: a visiontune checkpoint (``best.pt`` / ``last.pt``) or plain weights (``.pth`` / ``.safetensors``).
        output: the ``.ckpt`` to write (atomically).
        arch: architecture name; default: the checkpoint's ``model.name``.
        use_ema: export the EMA weights of the checkpoint instead of the raw ones.

    Raises:
        ConvertError: bad paths, no architecture, an unsupported task, ``use_ema`` without EMA weights.
        UnknownArchitectureError, ArchitectureMismatchError: ``arch`` is unknown or does not fit the weights.
    """
    from visiontune.interop.mindspore import (
        get_mindspore_architecture,
        save_mindspore_checkpoint,
        to_mindspore_state_dict,
    )

    source, output = Path(source), Path(output)
    _check_output(source, output, suffixes=(MINDSPORE_SUFFIX,), direction="mindspore")
    state_dict, task, model_name, weights = _read_trained_weights(source, use_ema=use_ema)
    if arch is None:
        if model_name is None:
            raise ConvertError(f"{source} holds plain weights without a config: give the architecture with --arch")
        arch = model_name
    architecture = get_mindspore_architecture(arch)
    network, dropped = _network_weights(state_dict, task=task, source=source)
    arrays = to_mindspore_state_dict(network, architecture.name)
    for name in network:
        if name.endswith("num_batches_tracked"):
            dropped[name] = "BatchNorm step counter (MindSpore has none)"
    save_mindspore_checkpoint(output, arrays)
    return MindSporeExport(
        source=source,
        output=output,
        architecture=architecture.name,
        mindspore_model=architecture.source,
        task=task,
        weights=weights,
        exported=len(arrays),
        dropped=dropped,
        num_classes=_classifier_rows(network, architecture),
        notes=architecture.notes,
    )


def _read_trained_weights(source: Path, *, use_ema: bool) -> tuple[dict[str, torch.Tensor], str | None,
                                                                   str | None, str]:
    """``(state dict, task, model name, which weights)`` of a visiontune checkpoint or a plain weight file."""
    import torch

    from visiontune.models.loading import describe_torch_load_failure, read_weights, strip_prefixes

    if not source.is_file():
        raise ConvertError(f"checkpoint not found: {source}")
    if source.suffix.lower() == MINDSPORE_SUFFIX:
        raise ConvertError(f"{source} is a MindSpore checkpoint already; to convert it to PyTorch, write a "
                           f"{' / '.join(PYTORCH_SUFFIXES)} file")
    if source.suffix.lower() != ".safetensors":
        try:
            content = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unpickling failure means an unreadable file
            raise ConvertError(f"cannot read {source}: it is {describe_torch_load_failure(source, error)}; expected a "
                               "visiontune checkpoint or a PyTorch state dict") from None
        if isinstance(content, Mapping) and "model" in content and isinstance(content.get("config"), Mapping):
            config = content["config"]
            key = "ema" if use_ema else "model"
            if not isinstance(content.get(key), Mapping):
                problem = "no EMA weights (trained without train.ema=true); drop --ema" if use_ema else "no weights"
                raise ConvertError(f"{source} has {problem}")
            task = content.get("task") or config.get("task")
            model_name = config.get("model", {}).get("name") if isinstance(config.get("model"), Mapping) else None
            return strip_prefixes(dict(content[key])), task, model_name, key
    if use_ema:
        raise ConvertError(f"--ema needs a visiontune checkpoint with EMA weights; {source} holds plain weights")
    return read_weights(source), None, None, "weights"


def _network_weights(state_dict: Mapping[str, torch.Tensor], *, task: str | None,
                     source: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The network's own weights (``net.`` prefix removed for classifiers) and what was left out."""
    if task not in (None, "classification", "face_detection"):
        raise ConvertError(f"{source} is a {task} checkpoint; MindSpore export supports classification (timm) and "
                           "face_detection (RetinaFace) models")
    prefixed = [name for name in state_dict if name.startswith("net.")]
    if task == "classification" or (task is None and prefixed and len(prefixed) == len(state_dict)):
        if not prefixed:
            raise ConvertError(f"{source}: a classification checkpoint should hold the network under 'net.', "
                               f"found e.g. {list(state_dict)[:3]}")
        network = {name[len("net."):]: tensor for name, tensor in state_dict.items() if name.startswith("net.")}
        dropped = {name: "not part of the network (training-only module)"
                   for name in state_dict if not name.startswith("net.")}
        return network, dropped
    return dict(state_dict), {}


def _classifier_rows(network: Mapping[str, torch.Tensor], architecture: MindSporeArchitecture) -> int | None:
    """Number of classes of a timm classifier (from its ``pretrained_cfg["classifier"]``), else None."""
    if architecture.target_library != "timm":
        return None
    import timm

    classifier = getattr(timm.models.get_pretrained_cfg(architecture.target_name), "classifier", None)
    weight = network.get(f"{classifier}.weight") if isinstance(classifier, str) else None
    return int(weight.shape[0]) if weight is not None else None


def _check_output(source: Path, output: Path, *, suffixes: tuple[str, ...], direction: str) -> None:
    """The suffix of the direction; not the input, nor in a run folder other than the input's
    (:func:`~visiontune.engine.run_dir.check_output_path`)."""
    from visiontune.engine.run_dir import check_output_path, run_folder_of

    if output.suffix.lower() not in suffixes:
        raise ConvertError(f"-o {output}: converting to {direction} writes {' / '.join(suffixes)} files")
    check_output_path(output, command="convert", writes="file", key="-o", inputs={"input": source},
                      own_run=run_folder_of(source))


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _add_paths(parser: argparse.ArgumentParser, *, source_help: str, output_help: str) -> None:
    parser.add_argument("source", metavar="IN", help=source_help)
    parser.add_argument("arguments", nargs="*", metavar="OUT|key=value",
                        help=f"OUT: {output_help}; then options as key=value (visiontune config keys convert)")
    parser.add_argument("-o", "--output", metavar="OUT", help="the output file (the same as the OUT argument)")


def _paths_and_options(args: argparse.Namespace, options: tuple[str, ...],
                       flags: dict[str, str | None]) -> tuple[str | None, ConvertConfig]:
    """The output path (``OUT`` or ``-o OUT``) and the ``convert`` section of the ``key=value`` items and flags.

    Raises:
        ConvertError: the output is given twice.
        ConfigError: an unknown option (with the nearest one), a wrong value, or an option given twice.
    """
    from visiontune.cli._common import section_overrides
    from visiontune.config import load_config

    items = list(args.arguments)
    output = items.pop(0) if items and "=" not in items[0] else None
    if output is not None and args.output is not None:
        raise ConvertError(f"give the output once: {output} or -o {args.output}")
    flag_items = [f"{key}={value}" for key, value in flags.items() if value is not None]
    overrides = section_overrides([*items, *flag_items], section="convert", command=args.command, only=options)
    return output or args.output, load_config(None, overrides).convert


def configure_convert(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``visiontune convert IN OUT [arch=... to=... ema=true list_all=true]``."""
    _add_paths(parser, source_help="MindSpore .ckpt (to PyTorch) or visiontune checkpoint / weights (to MindSpore)",
               output_help=".safetensors / .pth (PyTorch) or .ckpt (MindSpore)")
    legacy = parser.add_argument_group("the options as flags (the same as the key=value options)")
    legacy.add_argument("--arch", help="arch=...")
    legacy.add_argument("--to", choices=("pytorch", "mindspore"), help="to=...")
    legacy.add_argument("--ema", action="store_true", help="ema=true")
    legacy.add_argument("--list", action="store_true", help="list_all=true")
    add_verbose(parser)
    parser.set_defaults(handler=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    """``visiontune convert``: print the report, write the file; returns the exit code."""
    output, options = _paths_and_options(args, ("arch", "to", "ema", "list_all"), {
        "arch": args.arch, "to": args.to, "ema": "true" if args.ema else None,
        "list_all": "true" if args.list else None})
    if output is None:
        raise ConvertError("give the output file: visiontune convert IN OUT (or -o OUT)")
    direction = options.to or ("mindspore" if output.lower().endswith(MINDSPORE_SUFFIX) else "pytorch")
    if direction == "mindspore":
        _print_export(export_mindspore_checkpoint(args.source, output, arch=options.arch, use_ema=options.ema))
        return 0
    if options.ema:
        raise ConvertError("--ema applies to --to mindspore (exporting a visiontune checkpoint)")
    if options.arch is None:
        from visiontune.interop.mindspore import list_mindspore_architectures

        names = ", ".join(list_mindspore_architectures())
        raise ConvertError(f"converting {args.source} needs --arch (one of {names})")
    report = convert_mindspore_checkpoint(args.source, output, arch=options.arch)
    _print_conversion(report, output=Path(output), list_all=options.list_all)
    return 0


def _print_conversion(report: ConversionReport, *, output: Path, list_all: bool) -> None:
    from visiontune.interop.mindspore import get_mindspore_architecture

    architecture = get_mindspore_architecture(report.architecture)
    print(report.summary())
    print(f"mapped {len(report.renamed)}:")
    shown = list(report.renamed.items()) if list_all else list(report.renamed.items())[:_NAMES_SHOWN]
    for mindspore_name, torch_name in shown:
        print(f"  {mindspore_name} -> {torch_name}")
    if len(shown) < len(report.renamed):
        print(f"  ... (+{len(report.renamed) - len(shown)} more; --list prints all)")
    print(f"skipped {len(report.skipped)}:")
    for name, reason in report.skipped.items():
        print(f"  {name}: {reason}")
    if report.stripped_prefixes:
        print(f"stripped training-wrapper prefixes {sorted(set(report.stripped_prefixes.values()))} from "
              f"{len(report.stripped_prefixes)} names")
    if report.added:
        print(f"added {len(report.added)} BatchNorm num_batches_tracked counters (0)")
    for name, (before, after) in report.reshaped.items():
        print(f"reshaped {name}: {list(before)} -> {list(after)}")
    if architecture.depthwise_same_padding:
        if output.suffix.lower() == ".safetensors":
            print(f"metadata mindspore_arch={architecture.name}: model.checkpoint={output} gives the model MindSpore's "
                  "'same' padding of the strided depthwise convolutions (as MindSpore computes; "
                  "model.mindspore_padding=false keeps timm's)")
        else:
            print(f"note: {output.suffix} files keep no metadata: the model loading {output} keeps timm's padding and "
                  f"its outputs differ from MindSpore's; write .safetensors (or load the .ckpt) to get MindSpore's "
                  "padding")
    elif architecture.notes:
        print(f"note: {architecture.notes}")
    model_name = (architecture.target_name if architecture.target_library == "timm"
                  else f"retinaface_{architecture.target_name}")
    print(f"wrote {output}; fine-tune from it with model.name={model_name} model.checkpoint={output}")


def _print_export(export: MindSporeExport) -> None:
    kinds = {"model": "its model weights", "ema": "its EMA weights"}
    origin = (f"a visiontune {export.task} checkpoint, {kinds.get(export.weights, export.weights)}" if export.task
              else "plain weights (a state dict)")
    print(f"read {export.source} ({origin})")
    print(f"exported {export.exported} tensors with the parameter names of {export.mindspore_model}, "
          f"arch {export.architecture}")
    counters = [name for name, reason in export.dropped.items() if name.endswith("num_batches_tracked")]
    others = {name: reason for name, reason in export.dropped.items() if name not in counters}
    if counters:
        print(f"dropped {len(counters)} BatchNorm num_batches_tracked counters (MindSpore has none)")
    for name, reason in others.items():
        print(f"dropped {name}: {reason}")
    if export.num_classes is not None and export.num_classes != _MINDCV_IMAGENET_CLASSES:
        print(f"classifier: {export.num_classes} classes (MindCV's ImageNet model has {_MINDCV_IMAGENET_CLASSES}): "
              f"create the MindCV model with num_classes={export.num_classes} before loading")
    if export.num_classes is None and export.mindspore_model.startswith("MindFace"):
        print("note: MindFace's backbone classifier is not part of the detector, so MindSpore's load_param_into_net "
              "lists it as not loaded")
    if export.notes:
        print(f"note: {export.notes}")
    print(f"wrote {export.output}")


def configure_import_config(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``visiontune import-config IN [OUT] [family=mindface|mindcv]``."""
    _add_paths(parser, source_help="MindFace RetinaFace (configs/RetinaFace_*.yaml) or MindCV YAML config",
               output_help="the visiontune YAML to write (default: print it)")
    legacy = parser.add_argument_group("the options as flags (the same as the key=value options)")
    legacy.add_argument("--family", choices=("mindface", "mindcv"), help="family=...")
    add_verbose(parser)
    parser.set_defaults(handler=run_import_config)


def run_import_config(args: argparse.Namespace) -> int:
    """``visiontune import-config``: translate, report the untranslated keys, write or print the YAML."""
    from visiontune.interop.mindspore_configs import import_mindspore_config

    output, options = _paths_and_options(args, ("family",), {"family": args.family})
    if output is not None:
        from visiontune.engine.run_dir import check_output_path

        check_output_path(output, command=args.command, writes="file", key="-o", inputs={"input": args.source})
    imported = import_mindspore_config(args.source, family=options.family)
    if output is None:
        print(imported.to_yaml(), end="")
        return 0
    path = imported.write(output)
    total = len(imported.translated) + len(imported.untranslated)
    print(f"{imported.family_label} config {imported.source}: translated {len(imported.translated)} of {total} keys")
    print(f"not translated ({len(imported.untranslated)}):")
    for key, reason in imported.untranslated.items():
        print(f"  {key}: {reason}")
    if imported.defaults:
        print(f"{imported.family_label} defaults used: "
              + ", ".join(f"{key}={value}" for key, value in imported.defaults.items()))
    if imported.notes:
        print("notes:")
        for note in imported.notes:
            print(f"  {note}")
    print(f"wrote {path}; train with: visiontune train -c {path}")
    return 0


COMMANDS = (
    Command(
        "convert",
        "convert weights between MindSpore .ckpt (MindCV / MindFace names) and PyTorch .safetensors / .pth",
        "  visiontune convert mobilenet_v2_100.ckpt mobilenet_v2_100.safetensors arch=mobilenet_v2_100\n"
        "  visiontune convert retinaface.ckpt retinaface.pth arch=retinaface_mobilenet025 list_all=true\n"
        "  visiontune convert runs/classification/exp/best.pt model.ckpt     # to MindSpore, arch from the checkpoint\n"
        "  visiontune convert runs/classification/exp/best.pt model_ema.ckpt to=mindspore ema=true\n"
        "  visiontune convert mobilenet_v2_100.ckpt --arch mobilenet_v2_100 -o mobilenet_v2_100.pth   # flags work too",
        configure_convert,
    ),
    Command(
        "import-config",
        "translate a MindFace RetinaFace or MindCV YAML config into a visiontune config",
        "  visiontune import-config RetinaFace_mobilenet025.yaml retinaface.yaml\n"
        "  visiontune import-config mobilenet_v2_1.0_gpu.yaml family=mindcv      # print the YAML",
        configure_import_config,
    ),
)
