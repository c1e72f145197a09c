"""Read weight files of any supported format and load them into a model with a load report.

The report lists loaded, re-initialised (shape mismatch, e.g. a new classifier), missing and unexpected
tensors, and loading fails loudly when too few non-head tensors were loaded: the most common silent
fine-tuning failure is a checkpoint of another architecture that loads "fine" with ``strict=False``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

STRIPPED_PREFIXES = ("module.", "_orig_mod.")
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "model_ema", "state_dict_ema", "net", "network")


class WeightLoadError(ValueError):
    """Weights could not be read, or do not fit the model."""


class WeightFileNotFoundError(WeightLoadError, FileNotFoundError):
    """The weights file does not exist."""


class WeightValuesError(WeightLoadError):
    """Tensors that fit the model by name and shape hold what cannot be weights: integers for floating-point
    weights, NaN or infinite values (:func:`check_tensors_fit`)."""


def strip_prefixes(state_dict: Mapping[str, Any], prefixes: Iterable[str] = STRIPPED_PREFIXES) -> dict[str, Any]:
    """Remove DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) prefixes, repeatedly, from every key.

    This is the one place that strips them: ``module._orig_mod.x`` becomes ``x``.

    Raises:
        WeightLoadError: two keys become equal after stripping (e.g. ``module.a`` and ``a``).
    """
    prefixes = tuple(prefixes)
    cleaned: dict[str, Any] = {}
    for key, value in state_dict.items():
        new_key = key
        while new_key.startswith(prefixes):
            new_key = new_key[len(next(prefix for prefix in prefixes if new_key.startswith(prefix))):]
        if new_key in cleaned:
            raise WeightLoadError(f"state dict keys collide after removing prefixes {prefixes}: {key!r} -> {new_key!r}")
        cleaned[new_key] = value
    return cleaned


def select_state_dict(obj: Any, path: str | Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint object: a state dict, or one held under ``key`` or a usual wrapper key.

    Args:
        obj: What ``torch.load`` returned (or any mapping).
        path: Where it came from, named in errors.
        key: The entry holding the weights (``model.checkpoint_key``); None tries :data:`STATE_DICT_KEYS`.

    Returns:
        ``{name: tensor}`` with ``module.`` / ``_orig_mod.`` prefixes removed.

    Raises:
        WeightLoadError: no state dict found; the message names ``path`` and what the entries hold.
    """
    if not isinstance(obj, Mapping):
        raise WeightLoadError(f"{path}: expected a dict of tensors (a state dict), got {type(obj).__name__}")
    if key is not None:
        if key not in obj:
            raise WeightLoadError(f"{path}: no entry {key!r} (model.checkpoint_key); entries: {list(obj)[:10]}")
        obj = obj[key]
    elif not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for candidate in STATE_DICT_KEYS:
            if isinstance(obj.get(candidate), Mapping):
                obj = obj[candidate]
                break
        else:
            holds = "; ".join(f"key {name!r} holds {type(value).__name__}" for name, value in list(obj.items())[:5]
                              if not isinstance(value, torch.Tensor))
            raise WeightLoadError(
                f"{path}: cannot find the weights: expected a state dict (mapping of names to tensors) or a dict "
                f"holding one under {', '.join(STATE_DICT_KEYS)}; {holds} (entries found: {list(obj)[:10]})"
            )
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightLoadError(f"{path}: the state dict holds no tensors")
    return strip_prefixes(tensors)


def read_weights(path: str | Path, *, key: str | None = None, arch: str | None = None) -> dict[str, torch.Tensor]:
    """Read a weight file into a flat ``{name: tensor}`` dict.

    Supports ``.pth``/``.pt``/``.bin``/``.tar`` (``torch.load(weights_only=True)``; a plain state dict or a
    dict holding one under ``state_dict``/``model``/``model_ema``), ``.safetensors``, and MindSpore ``.ckpt``
    (converted to PyTorch names for ``arch``). ``module.``/``_orig_mod.`` prefixes are stripped.

    Raises:
        WeightLoadError: missing file, unreadable file, no tensors found, or a visiontune checkpoint whose
            tensors differ from the SHA-256 checksums stored in it; the message names the file (and the tensor).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightFileNotFoundError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return strip_prefixes(load_file(str(path)))
        except Exception as error:  # noqa: BLE001
            raise WeightLoadError(f"cannot read safetensors file {path}: {error}") from None
    if suffix == ".ckpt":
        return _read_mindspore(path, arch)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise WeightLoadError(
            f"cannot read {path}: it is {describe_torch_load_failure(path, error)}; expected weights: a PyTorch "
            f"state dict (.pth/.pt), .safetensors or a MindSpore .ckpt"
        ) from None
    if isinstance(obj, Mapping) and "model" in obj and "config" in obj and "version" in obj:
        from visiontune.utils.checksums import ChecksumError, verify_checksums

        try:  # a visiontune checkpoint: its tensors against the SHA-256 stored when it was written (if any)
            verify_checksums(obj, path)
        except ChecksumError as error:
            raise WeightLoadError(str(error)) from None
        obj = obj["model"]
        key = None
    return select_state_dict(obj, path, key)


_UNPICKLING_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def describe_torch_load_failure(path: str | Path, error: BaseException) -> str:
    """What the file is that ``torch.load(path, weights_only=True)`` could not read, as words after "it is".

    ``"an ONNX model"``, ``"a safetensors file"``, ``"a MindSpore checkpoint"``, ``"a PyTorch file holding pickled
    Python objects (argparse.Namespace; not unpickled, as that can run code)"``, ``"a damaged PyTorch file (...)"``
    or ``"not a PyTorch file (it starts with b'...')"``. torch's advice to load with
    ``weights_only=False`` is never passed on: such a file is no visiontune checkpoint nor plain weights.
    """
    from visiontune.interop.mindspore import describe_file_format

    try:
        with open(path, "rb") as stream:
            head = stream.read(16)
    except OSError as os_error:
        return f"an unreadable file ({os_error.strerror or os_error})"
    if Path(path).suffix.lower() == ".onnx":
        return "an ONNX model"
    message = str(error)
    if head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        names = list(dict.fromkeys(_UNPICKLING_GLOBAL.findall(message)))
        if names:
            return (f"a PyTorch file holding pickled Python objects ({', '.join(names)}; not unpickled, as that can "
                    "run code)")
        detail = message.split("WeightsUnpickler error:", 1)[-1].split(" Check the documentation", 1)[0]
        return f"a damaged PyTorch file ({type(error).__name__}: {detail.strip().splitlines()[0][:200]})"
    return describe_file_format(head, mindspore=True) or f"not a PyTorch file (it starts with {head[:8]!r})"


MINDSPORE_ARCH_METADATA = "mindspore_arch"
"""The safetensors metadata key (written by ``visiontune convert``) naming the MindSpore architecture the tensors
were converted from; :func:`mindspore_source` reads it."""


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata in a ``.safetensors`` header (empty for other files, or an unreadable header)."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return {}
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception:  # noqa: BLE001 - read_weights names the file when it cannot read it
        return {}


def mindspore_source(path: str | Path, arch: str | None = None) -> str | None:
    """The canonical MindSpore architecture whose weights ``path`` holds, or ``None`` for PyTorch weights.

    A MindSpore ``.ckpt`` read for ``arch`` gives that architecture; a ``.safetensors`` written by ``visiontune
    convert`` gives the one in its metadata (``mindspore_arch``; files converted before that key existed: ``arch``
    with ``converted_by: visiontune convert``). Unknown names give ``None``.
    """
    from visiontune.interop.mindspore import UnknownArchitectureError, get_mindspore_architecture

    path = Path(path)
    name: str | None = None
    if path.suffix.lower() == ".ckpt":
        name = arch
    else:
        metadata = safetensors_metadata(path)
        name = metadata.get(MINDSPORE_ARCH_METADATA)
        if name is None and metadata.get("converted_by") == "visiontune convert":
            name = metadata.get("arch")
    if not name:
        return None
    try:
        return get_mindspore_architecture(name).name
    except UnknownArchitectureError:
        return None


def _read_mindspore(path: Path, arch: str | None) -> dict[str, torch.Tensor]:
    """A MindSpore ``.ckpt`` converted to PyTorch names for ``arch``.

    For a ResNet-50 (``arch`` in :data:`~visiontune.interop.mindspore.RESNET50_ARCHITECTURES`) the naming is read
    from the file: MindCV's, the model zoo's ImageNet ResNet-50 (MindFace's too), or the model zoo's Mask R-CNN
    backbone file.
    """
    from visiontune.interop.mindspore import (
        RESNET50_ARCHITECTURES,
        MindSporeCheckpointError,
        convert_mindspore_state_dict,
        detect_resnet50_naming,
        read_mindspore_checkpoint,
    )

    if arch is None:
        raise WeightLoadError(f"{path}: a MindSpore .ckpt needs the architecture name to map its tensor names")
    try:
        tensors = read_mindspore_checkpoint(path)
        if arch in RESNET50_ARCHITECTURES:
            arch = detect_resnet50_naming(list(tensors))
        state_dict, report = convert_mindspore_state_dict(tensors, arch)
    except (MindSporeCheckpointError, ValueError) as error:
        raise WeightLoadError(f"{path}: {error}") from None
    logger.info("%s: %s", path, report.summary())
    return state_dict


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype_kind(dtype: torch.dtype) -> str:
    if dtype.is_floating_point:
        return "floating-point"
    if dtype.is_complex:
        return "complex"
    return "boolean" if dtype == torch.bool else "integer"


def check_finite(tensors: Mapping[str, torch.Tensor], *, source: str, limit: int = 3) -> None:
    """Refuse weights holding NaN or infinite values, naming the first tensors and how many values.

    Raises:
        WeightValuesError: one line, e.g. ``w.pth: 1 tensor holds NaN or infinite values: 'conv1.weight' (8 NaN of
            432 values); ...``.
    """
    broken = []
    for name, tensor in tensors.items():
        if not (tensor.is_floating_point() or tensor.is_complex()) or bool(torch.isfinite(tensor.sum()).all()):
            continue  # NaN and inf propagate into the sum (fast); a sum that overflowed is counted exactly
        finite = int(torch.isfinite(tensor).sum())
        if finite == tensor.numel():
            continue
        nan = int(torch.isnan(tensor).sum())
        counts = [f"{count} {kind}" for count, kind in ((nan, "NaN"), (tensor.numel() - finite - nan, "inf")) if count]
        broken.append(f"{name!r} ({' and '.join(counts)} of {tensor.numel()} values)")
    if broken:
        more = f", ... (+{len(broken) - limit})" if len(broken) > limit else ""
        raise WeightValuesError(
            f"{source}: {len(broken)} tensor{'s hold' if len(broken) > 1 else ' holds'} NaN or infinite values: "
            f"{', '.join(broken[:limit])}{more}; these weights are broken (a diverged training run?): not loading them"
        )


def check_tensors_fit(to_load: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], *,
                      source: str) -> list[str]:
    """Check the tensors about to be copied into a model, beyond names and shapes; shared by every task's loader.

    Args:
        to_load: ``{name: tensor}`` from the file, each name in ``target`` with the same shape.
        target: The model's state dict (or the part being loaded).
        source: The file, named in errors.

    Returns:
        ``"name float16->float32"`` for every tensor stored with another dtype of the same kind as the model's
        (another floating-point precision, ``int32`` for ``int64``), which loading converts; the load reports list
        them.

    Raises:
        WeightValuesError: one line naming the tensor and both dtypes when a tensor is of another kind than the
            model's (integers or booleans for floating-point weights, or the reverse): its values cannot be the
            weights, so nothing is converted; or (:func:`check_finite`) tensors holding NaN or infinite values.
    """
    converted, wrong = [], []
    for name, tensor in to_load.items():
        stored, wanted = tensor.dtype, target[name].dtype
        if stored == wanted:
            continue
        if _dtype_kind(stored) != _dtype_kind(wanted):
            wrong.append(name)
        else:
            converted.append(f"{name} {_dtype_name(stored)}->{_dtype_name(wanted)}")
    if wrong:
        first = wrong[0]
        stored, wanted = to_load[first].dtype, target[first].dtype
        more = f" ({len(wrong) - 1} more tensor(s) like it: {', '.join(wrong[1:4])}{', ...' if len(wrong) > 4 else ''})"
        raise WeightValuesError(
            f"{source}: tensor {first!r} is {_dtype_name(stored)} in the file but {_dtype_name(wanted)} in the model"
            f"{more if len(wrong) > 1 else ''}: {_dtype_kind(stored)} values cannot be {_dtype_kind(wanted)} weights "
            f"(a wrongly converted file?); not converting them"
        )
    check_finite(to_load, source=source)
    return converted


ShapeChange = tuple[str, tuple[int, ...], tuple[int, ...]]
"""``(name, shape in the file, shape in the model)`` of a tensor left at the model's initialisation."""


def _preview(items: list[str], limit: int = 5) -> str:
    """`` ['a', 'b'] ...``: the first ``limit`` names (empty for none)."""
    return f" {items[:limit]}{' ...' if len(items) > limit else ''}" if items else ""


@dataclass
class LoadReport:
    """What happened to every tensor when loading weights into a model (or a part of it); every loader returns one.

    Attributes:
        source: Where the weights came from: a file path, a weights name, or ``"<state dict>"``.
        loaded: Model keys that received a tensor.
        reinitialized: ``(name, file shape, model shape)`` of tensors in both whose shapes differ (a head for another
            class count); the model keeps its fresh initialisation.
        missing: Model keys (within the loaded part) that received nothing.
        unexpected: File keys that match nothing in the model.
        skipped: File keys deliberately not loaded (an ImageNet classifier given for a backbone).
        backbone_total: Non-head model tensors (``num_batches_tracked`` excepted); 0 when not counted.
        backbone_loaded: How many of those received a tensor.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    reinitialized: list[ShapeChange] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    backbone_total: int = 0
    backbone_loaded: int = 0
    converted: list[str] = field(default_factory=list)
    """``"name float16->float32"``: tensors stored with another dtype of the same kind, converted to the model's
    (:func:`check_tensors_fit`)."""
    mindspore_padding: str | None = None
    """The MindSpore architecture whose ``pad_mode="same"`` padding the model was given after loading (MindCV
    MobileNetV3 weights), else ``None``."""

    @property
    def backbone_fraction(self) -> float:
        """``backbone_loaded / backbone_total`` (1.0 when nothing was counted)."""
        return self.backbone_loaded / self.backbone_total if self.backbone_total else 1.0

    @property
    def reinitialized_names(self) -> list[str]:
        """The names of :attr:`reinitialized`."""
        return [name for name, _, _ in self.reinitialized]

    def count_backbone(self, model_keys: Iterable[str], is_head: Callable[[str], bool] = lambda name: False) -> None:
        """Set :attr:`backbone_total` / :attr:`backbone_loaded` from the model's keys and :attr:`loaded`."""
        loaded = set(self.loaded)
        countable = [name for name in model_keys if not is_head(name) and not name.endswith("num_batches_tracked")]
        self.backbone_total = len(countable)
        self.backbone_loaded = sum(1 for name in countable if name in loaded)

    def format(self, limit: int = 5) -> str:
        """Human-readable summary, a few names per category (several lines)."""

        def names(items: list[Any]) -> str:
            shown = [item if isinstance(item, str) else f"{item[0]} {list(item[1])}->{list(item[2])}"
                     for item in items[:limit]]
            more = f", ... (+{len(items) - limit})" if len(items) > limit else ""
            return ", ".join(shown) + more

        lines = [
            f"load report for {self.source}:",
            f"  loaded          {len(self.loaded):5d}   (backbone {self.backbone_loaded}/{self.backbone_total}"
            f" = {100 * self.backbone_fraction:.1f}%)",
            f"  re-initialised  {len(self.reinitialized):5d}   {names(self.reinitialized)}",
            f"  missing         {len(self.missing):5d}   {names(self.missing)}",
            f"  unexpected      {len(self.unexpected):5d}   {names(self.unexpected)}",
        ]
        if self.skipped:
            lines.append(f"  skipped         {len(self.skipped):5d}   {names(self.skipped)}")
        if self.converted:
            lines.append(f"  converted       {len(self.converted):5d}   {names(self.converted)}"
                         "   (stored dtype -> the model's)")
        if self.mindspore_padding:
            lines.append(f"  MindSpore 'same' padding of {self.mindspore_padding} on the strided depthwise "
                         "convolutions "
                         "(model.mindspore_padding)")
        return "\n".join(lines)

    def summary(self) -> str:
        """One line with the counts and the first few keys of each non-empty category."""
        parts = [f"loaded {len(self.loaded)}"]
        for name, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                           ("re-initialised (shape differs)", self.reinitialized_names)):
            parts.append(f"{name} {len(keys)}{_preview(keys)}")
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)}{_preview(self.skipped)}")
        if self.converted:
            parts.append(f"converted to the model's dtype {len(self.converted)}{_preview(self.converted)}")
        return f"{self.source}: " + ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """The report as stored in a checkpoint's ``meta`` and in ``run_info.json``: counts and the names that did
        not load."""
        return {
            "source": self.source,
            "loaded": len(self.loaded),
            "reinitialized": self.reinitialized_names,
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "backbone_fraction": self.backbone_fraction,
            **({"skipped": list(self.skipped)} if self.skipped else {}),
            **({"converted": list(self.converted)} if self.converted else {}),
            **({"mindspore_padding": self.mindspore_padding} if self.mindspore_padding else {}),
        }


def load_weights_with_report(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str,
    is_head: Callable[[str], bool] = lambda name: False,
    min_loaded_fraction: float = 0.9,
) -> LoadReport:
    """Copy matching tensors into ``model``; keep the model's own init where shapes differ.

    Args:
        model: Target module.
        state_dict: Flat ``{name: tensor}`` (prefixes already stripped).
        source: Where the weights came from (for messages).
        is_head: Predicate for head parameter/buffer names; they may be re-initialised without counting
            against ``min_loaded_fraction``.
        min_loaded_fraction: Minimum fraction of non-head model tensors that must load.

    Raises:
        WeightLoadError: fewer than ``min_loaded_fraction`` of the non-head tensors loaded (the message shows
            example names from both sides, to spot an architecture mismatch or a prefix problem); a tensor of
            another dtype kind than the model's, or holding NaN / inf (:func:`check_tensors_fit`). Nothing is
            copied then.
    """
    report = LoadReport(source=source)
    target = model.state_dict()
    to_load = {}
    for name, tensor in state_dict.items():
        if name not in target:
            report.unexpected.append(name)
        elif tuple(tensor.shape) != tuple(target[name].shape):
            report.reinitialized.append((name, tuple(tensor.shape), tuple(target[name].shape)))
        else:
            to_load[name] = tensor
    report.loaded = sorted(to_load)
    reinit_names = set(report.reinitialized_names)
    report.missing = [name for name in target if name not in to_load and name not in reinit_names]
    report.count_backbone(target, is_head)
    if report.backbone_fraction < min_loaded_fraction:
        raise WeightLoadError(
            f"only {report.backbone_loaded}/{report.backbone_total} ({100 * report.backbone_fraction:.1f}%) of the "
            f"model's non-head tensors could be loaded from {source} (model.min_loaded_fraction="
            f"{min_loaded_fraction}); is it a checkpoint of a different architecture? "
            f"model expects e.g. {list(target)[:3]}, file has e.g. {list(state_dict)[:3]}\n{report.format()}"
        )
    report.converted = check_tensors_fit(to_load, target, source=source)
    with torch.no_grad():
        for name, tensor in to_load.items():
            target[name].copy_(tensor.to(dtype=target[name].dtype))
    logger.info("%s", report.format())
    return report
