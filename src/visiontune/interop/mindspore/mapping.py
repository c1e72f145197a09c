"""Convert MindSpore parameter dicts to PyTorch state dicts and back, per architecture.

Supported architectures (``arch``; the timm / visiontune names are accepted as aliases):

* ``mobilenet_v2_100``: MindCV ``mobilenet_v2_100`` -> timm ``mobilenetv2_100``
* ``mobilenet_v3_small_100``: MindCV ``mobilenet_v3_small_100`` -> timm ``mobilenetv3_small_100``
* ``mobilenet_v3_large_100``: MindCV ``mobilenet_v3_large_100`` -> timm ``mobilenetv3_large_100``
* ``resnet50``: MindCV ``resnet50`` -> timm ``resnet50``
* ``convnext_tiny``: MindCV ``convnext_tiny`` -> timm ``convnext_tiny``
* ``retinaface_mobilenet025``: MindFace RetinaFace with ``mobilenet025`` -> visiontune RetinaFace ``mobilenet0.25``
* ``retinaface_resnet50``: MindFace RetinaFace with ``resnet50`` -> visiontune RetinaFace ``resnet50``

Training checkpoints are accepted: wrapper prefixes (``network.``, ``network.network.``,
``_backbone.``) are stripped and optimizer / training state (``moments.*``, ``accum.*``, ``adam_m.*``,
``learning_rate``, ``global_step``, ``momentum``, ...) is skipped; the :class:`ConversionReport` lists
both with reasons.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

import numpy as np
import torch

from visiontune.interop.mindspore._rules import (
    NUM_BATCHES_TRACKED,
    FamilyRules,
    Layout,
    RenamePlan,
    Shape,
    plan_to_mindspore,
    plan_to_torch,
    split_parameter_name,
)
from visiontune.interop.mindspore.checkpoint_reader import read_mindspore_checkpoint
from visiontune.interop.mindspore.errors import ArchitectureMismatchError, UnknownArchitectureError
from visiontune.interop.mindspore.mindcv import (
    MindCvConvNextRules,
    MindCvMobileNetRules,
    ModelZooDetectionBackboneRules,
    ResNetRules,
)
from visiontune.interop.mindspore.mindface import (
    MindFaceMobileNetV1Rules,
    MindFaceRetinaFaceRules,
    mindface_resnet50_rules,
)

__all__ = [
    "ConversionReport",
    "MindSporeArchitecture",
    "check_state_dict_shapes",
    "convert_mindspore_state_dict",
    "get_mindspore_architecture",
    "list_mindspore_architectures",
    "load_mindspore_state_dict",
    "to_mindspore_state_dict",
]

logger = logging.getLogger(__name__)

TensorLike = np.ndarray | torch.Tensor
ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)

_MAX_NAMES_SHOWN = 5

# Cells that wrap the network in MindSpore training (TrainOneStepCell.network, WithLossCell._backbone).
_WRAPPER_PREFIXES = ("network.", "_backbone.")

# Optimizer state: "<prefix><parameter name>".
_OPTIMIZER_STATE_PREFIXES: Mapping[str, str] = MappingProxyType(
    {
        "moments.": "Momentum optimizer state",
        "moment1.": "Adam first-moment estimate",
        "moment2.": "Adam second-moment estimate",
        "adam_m.": "AdamWeightDecay first-moment estimate",
        "adam_v.": "AdamWeightDecay second-moment estimate",
        "accum.": "Adagrad / FTRL accumulator",
        "linear.": "FTRL linear state",
        "mean_grad.": "RMSProp mean gradient",
        "mean_square.": "RMSProp mean square",
        "moment.": "RMSProp momentum",
        "ema.": "EMA copy of a weight (the raw weights are converted)",
    }
)

# Training scalars saved next to the weights by MindSpore's Model / TrainOneStepCell / callbacks.
_TRAINING_SCALARS: Mapping[str, str] = MappingProxyType(
    {
        name: "training state, not a model weight"
        for name in (
            "learning_rate",
            "global_step",
            "momentum",
            "beta1_power",
            "beta2_power",
            "scale_sense",
            "loss_scale",
            "current_iterator_step",
            "last_overflow_iterator_step",
            "epoch_num",
            "step_num",
        )
    }
    | {"random_op": "MindSpore random-number generator state"}
)


@dataclass(frozen=True)
class MindSporeArchitecture:
    """One supported MindSpore -> PyTorch conversion.

    Attributes:
        name: canonical name (the MindCV model name, or ``retinaface_<MindFace backbone>``).
        source: what the MindSpore checkpoint comes from.
        target_library: ``"timm"`` or ``"visiontune.retinaface"``.
        target_name: the timm model name, or the visiontune RetinaFace backbone name.
        build_rules: returns the family's name rules.
        aliases: other accepted spellings (e.g. the timm name).
        notes: known functional differences between the MindSpore and PyTorch models.
        depthwise_same_padding: the MindSpore model pads strided depthwise convolutions with
            ``pad_mode="same"`` (see :func:`visiontune.interop.mindspore.adapt.match_mindspore_padding`).
    """

    name: str
    source: str
    target_library: str
    target_name: str
    build_rules: Callable[[], FamilyRules]
    aliases: tuple[str, ...] = ()
    notes: str = ""
    depthwise_same_padding: bool = False

    @property
    def target(self) -> str:
        """Human-readable target, e.g. ``"timm mobilenetv2_100"``."""
        return f"{self.target_library} {self.target_name}"


_PADDING_NOTE = (
    "MindCV pads stride-2 depthwise convolutions with pad_mode='same' (bottom/right only) where timm pads "
    "symmetrically, so logits differ from timm's unless the model is adapted with "
    "visiontune.interop.mindspore.match_mindspore_padding()"
)

_MODEL_ZOO_RESNET_NOTE = (
    "the model zoo's ResNet-50 pads the stem max-pool input at the top/left only; after the ReLU this equals "
    "torchvision's padding=1 when the stem output has even height and width (input sizes divisible by 4)"
)

_ARCHITECTURES: tuple[MindSporeArchitecture, ...] = (
    MindSporeArchitecture(
        name="mobilenet_v2_100",
        source="MindCV mobilenet_v2_100",
        target_library="timm",
        target_name="mobilenetv2_100",
        build_rules=MindCvMobileNetRules,
        aliases=("mobilenetv2_100", "mobilenet_v2_100_224"),
    ),
    MindSporeArchitecture(
        name="mobilenet_v3_small_100",
        source="MindCV mobilenet_v3_small_100",
        target_library="timm",
        target_name="mobilenetv3_small_100",
        build_rules=MindCvMobileNetRules,
        aliases=("mobilenetv3_small_100",),
        notes=_PADDING_NOTE,
        depthwise_same_padding=True,
    ),
    MindSporeArchitecture(
        name="mobilenet_v3_large_100",
        source="MindCV mobilenet_v3_large_100",
        target_library="timm",
        target_name="mobilenetv3_large_100",
        build_rules=MindCvMobileNetRules,
        aliases=("mobilenetv3_large_100",),
        notes=_PADDING_NOTE,
        depthwise_same_padding=True,
    ),
    MindSporeArchitecture(
        name="resnet50",
        source="MindCV resnet50",
        target_library="timm",
        target_name="resnet50",
        build_rules=ResNetRules,
        notes=(
            "MindCV's stem max-pool uses pad_mode='same' (bottom/right padding only) where timm pads one pixel on "
            "every side (read from the MindCV source; no logits fixture to measure it)"
        ),
    ),
    MindSporeArchitecture(
        name="resnet50_modelzoo",
        source="MindSpore model zoo ResNet-50 (ImageNet; also MindFace's ResNet-50 pretrain file)",
        target_library="timm",
        target_name="resnet50",
        build_rules=lambda: ResNetRules(downsample="down_sample_layer", classifier="end_point"),
        notes=_MODEL_ZOO_RESNET_NOTE,
    ),
    MindSporeArchitecture(
        name="resnet50_maskrcnn_backbone",
        source="MindSpore model zoo Mask R-CNN backbone file (ImageNet ResNet-50 renamed by convert_checkpoint.py)",
        target_library="timm",
        target_name="resnet50",
        build_rules=ModelZooDetectionBackboneRules,
        notes=_MODEL_ZOO_RESNET_NOTE,
    ),
    MindSporeArchitecture(
        name="convnext_tiny",
        source="MindCV convnext_tiny",
        target_library="timm",
        target_name="convnext_tiny",
        build_rules=MindCvConvNextRules,
        notes="MindSpore nn.GELU() defaults to the tanh approximation; timm uses the exact GELU",
    ),
    MindSporeArchitecture(
        name="retinaface_mobilenet025",
        source="MindFace RetinaFace (backbone mobilenet025)",
        target_library="visiontune.retinaface",
        target_name="mobilenet0.25",
        build_rules=lambda: MindFaceRetinaFaceRules(MindFaceMobileNetV1Rules()),
        aliases=("retinaface_mobilenet0.25", "mobilenet0.25"),
    ),
    MindSporeArchitecture(
        name="retinaface_resnet50",
        source="MindFace RetinaFace (backbone resnet50)",
        target_library="visiontune.retinaface",
        target_name="resnet50",
        build_rules=lambda: MindFaceRetinaFaceRules(mindface_resnet50_rules()),
        notes=(
            "MindFace's ResNet-50 pads the stem max-pool input with one zero row/column at the top/left only; after "
            "the ReLU this equals torchvision's padding=1 when ceil(H/2) and ceil(W/2) are even (e.g. sizes divisible "
            "by 4), otherwise the feature maps differ"
        ),
    ),
)


@dataclass
class ConversionReport:
    """What :func:`convert_mindspore_state_dict` did with every checkpoint entry.

    Attributes:
        architecture: canonical architecture name.
        target: the PyTorch model the names were mapped to.
        renamed: checkpoint name -> PyTorch name, for every converted tensor.
        skipped: checkpoint name -> reason, for optimizer/training state and unused layers.
        stripped_prefixes: checkpoint name -> training-wrapper prefix removed from it.
        added: PyTorch name -> reason, for tensors created (BatchNorm ``num_batches_tracked`` = 0).
        reshaped: PyTorch name -> (checkpoint shape, new shape), for layout changes.
    """

    architecture: str
    target: str
    renamed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    stripped_prefixes: dict[str, str] = field(default_factory=dict)
    added: dict[str, str] = field(default_factory=dict)
    reshaped: dict[str, tuple[Shape, Shape]] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: counts of converted, skipped (by reason), prefix-stripped, added and reshaped tensors."""
        parts = [f"converted {len(self.renamed)} tensors of {self.architecture} to {self.target}"]
        if self.skipped:
            reasons: dict[str, int] = {}
            for reason in self.skipped.values():
                reasons[reason] = reasons.get(reason, 0) + 1
            parts.append("skipped " + ", ".join(f"{count} ({reason})" for reason, count in reasons.items()))
        if self.stripped_prefixes:
            prefixes = sorted(set(self.stripped_prefixes.values()))
            parts.append(f"stripped prefixes {prefixes} from {len(self.stripped_prefixes)} names")
        if self.added:
            parts.append(f"added {len(self.added)} BatchNorm num_batches_tracked counters")
        if self.reshaped:
            parts.append(f"reshaped {', '.join(self.reshaped)}")
        return "; ".join(parts)


RESNET50_ARCHITECTURES: tuple[str, ...] = ("resnet50", "resnet50_modelzoo", "resnet50_maskrcnn_backbone")
"""The MindSpore namings of an ImageNet ResNet-50 that :func:`detect_resnet50_naming` tells apart."""


def detect_resnet50_naming(names: Sequence[str]) -> str:
    """Which ResNet-50 naming a MindSpore checkpoint uses, from its parameter names.

    Returns:
        ``"resnet50_maskrcnn_backbone"`` (``backbone.`` prefix, ``conv_down_sample`` / ``bn_down_sample``: the model
        zoo's Mask R-CNN backbone file), ``"resnet50_modelzoo"`` (``down_sample_layer``, ``end_point``: the model
        zoo's and MindFace's ImageNet ResNet-50) or ``"resnet50"`` (MindCV: ``down_sample``, ``classifier``).
    """
    if any(name.startswith("backbone.") or "_down_sample." in name for name in names):
        return "resnet50_maskrcnn_backbone"
    if any(".down_sample_layer." in name or name.startswith("end_point.") for name in names):
        return "resnet50_modelzoo"
    return "resnet50"


def list_mindspore_architectures() -> list[str]:
    """Canonical names of the supported architectures, sorted."""
    return sorted(architecture.name for architecture in _ARCHITECTURES)


def get_mindspore_architecture(arch: str) -> MindSporeArchitecture:
    """Look up an architecture by canonical name or alias (case-insensitive).

    Raises:
        UnknownArchitectureError: unknown name; the message suggests close matches and lists all names.
    """
    known = {
        name.lower(): architecture
        for architecture in _ARCHITECTURES
        for name in (architecture.name, *architecture.aliases)
    }
    architecture = known.get(arch.strip().lower())
    if architecture is not None:
        return architecture
    suggestions = difflib.get_close_matches(arch.strip().lower(), list(known), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(name) for name in suggestions)}?" if suggestions else ""
    raise UnknownArchitectureError(
        f"unknown MindSpore architecture {arch!r}{hint} Supported: {', '.join(list_mindspore_architectures())}"
    )


def convert_mindspore_state_dict(
    tensors: Mapping[str, np.ndarray],
    arch: str,
    *,
    expected_shapes: Mapping[str, Sequence[int]] | None = None,
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Rename (and where needed reshape) MindSpore parameters to the PyTorch model's state-dict keys.

    Args:
        tensors: MindSpore name -> array, e.g. from :func:`read_mindspore_checkpoint`.
        arch: architecture name (see :func:`list_mindspore_architectures`; timm names are accepted).
        expected_shapes: optional PyTorch name -> shape of the target model (e.g. from
            ``{k: v.shape for k, v in model.state_dict().items()}``); when given, the result must match
            it exactly (same names, same shapes) or :class:`ArchitectureMismatchError` is raised.

    Returns:
        ``(state_dict, report)``: PyTorch name -> tensor (sharing memory with the arrays where they are
        writable; dtype unchanged), loadable with ``model.load_state_dict(state_dict, strict=True)``;
        and the report of renamed / skipped / added / reshaped entries.

    Raises:
        UnknownArchitectureError: ``arch`` is not supported.
        ArchitectureMismatchError: some names do not fit ``arch`` (the message counts them and shows a
            few), nothing but training state is left, or the result does not match ``expected_shapes``.
        ValueError: two entries map to the same name (e.g. ``network.x`` and ``x``).
    """
    architecture = get_mindspore_architecture(arch)
    report = ConversionReport(architecture=architecture.name, target=architecture.target)
    model_tensors = _strip_training_state(tensors, report)
    if not model_tensors:
        raise ArchitectureMismatchError(
            f"no model parameters to convert for '{architecture.name}': the checkpoint has {len(tensors)} entries, "
            f"{len(report.skipped)} of them optimizer/training state"
        )
    shapes = {name: tuple(array.shape) for name, (_, array) in model_tensors.items()}
    plan = plan_to_torch(shapes, architecture.build_rules())
    if plan.unmatched:
        original_names = [model_tensors[name][0] for name in plan.unmatched]
        raise _mismatch_error(original_names, total=len(model_tensors), architecture=architecture, shapes=shapes)
    _check_unique_targets(plan)

    state_dict: dict[str, torch.Tensor] = {}
    for name, (original_name, array) in model_tensors.items():
        if name in plan.skipped:
            report.skipped[original_name] = plan.skipped[name]
            continue
        rename = plan.renames[name]
        tensor = _apply_layout(_to_torch(array), rename.layout, name=original_name)
        if tuple(tensor.shape) != tuple(array.shape):
            report.reshaped[rename.target] = (tuple(array.shape), tuple(tensor.shape))
        state_dict[rename.target] = tensor
        report.renamed[original_name] = rename.target
    _add_batch_norm_counters(state_dict, report)
    if expected_shapes is not None:
        check_state_dict_shapes(
            {name: tuple(tensor.shape) for name, tensor in state_dict.items()}, expected_shapes, arch=architecture.name
        )
    logger.debug("%s", report.summary())  # callers show it: the CLI prints it, training logs its load report
    return state_dict, report


def load_mindspore_state_dict(
    path: str | os.PathLike[str],
    arch: str,
    *,
    expected_shapes: Mapping[str, Sequence[int]] | None = None,
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Read a MindSpore ``.ckpt`` file and convert it for ``arch`` (see :func:`convert_mindspore_state_dict`)."""
    return convert_mindspore_state_dict(read_mindspore_checkpoint(path), arch, expected_shapes=expected_shapes)


def to_mindspore_state_dict(state_dict: Mapping[str, TensorLike], arch: str) -> dict[str, np.ndarray]:
    """Rename a PyTorch state dict to MindSpore's parameter names, for :func:`save_mindspore_checkpoint`.

    BatchNorm ``num_batches_tracked`` counters are dropped (MindSpore has none). The backbone classifier
    of a RetinaFace (``base.fc`` / ``base.end_point`` in MindFace) does not exist in the PyTorch model, so
    MindFace reports it as not loaded; the detector does not use it.

    Args:
        state_dict: PyTorch name -> tensor or array (e.g. ``model.state_dict()``).
        arch: architecture name (see :func:`list_mindspore_architectures`).

    Returns:
        MindSpore name -> NumPy array (a copy on the CPU; ``torch.bfloat16`` becomes float32), in the
        order of ``state_dict``.

    Raises:
        UnknownArchitectureError: ``arch`` is not supported.
        ArchitectureMismatchError: some names do not fit ``arch``.
    """
    architecture = get_mindspore_architecture(arch)
    shapes = {name: tuple(value.shape) for name, value in state_dict.items()}
    plan = plan_to_mindspore(shapes, architecture.build_rules())
    if plan.unmatched:
        raise _mismatch_error(plan.unmatched, total=len(shapes), architecture=architecture, shapes=None)
    _check_unique_targets(plan)
    arrays: dict[str, np.ndarray] = {}
    for name, value in state_dict.items():
        if name in plan.skipped:
            logger.debug("not exported to MindSpore: %s (%s)", name, plan.skipped[name])
            continue
        rename = plan.renames[name]
        arrays[rename.target] = _apply_layout(_to_numpy(value), rename.layout, name=name)
    return arrays


def check_state_dict_shapes(
    shapes: Mapping[str, Sequence[int]],
    expected_shapes: Mapping[str, Sequence[int]],
    *,
    arch: str,
) -> None:
    """Require that ``shapes`` has exactly the names of ``expected_shapes``, with the same shapes.

    Raises:
        ArchitectureMismatchError: lists (a few of) the missing names, unexpected names and shape mismatches.
    """
    missing = [name for name in expected_shapes if name not in shapes]
    unexpected = [name for name in shapes if name not in expected_shapes]
    different = [
        f"{name} {list(shapes[name])} vs expected {list(expected_shapes[name])}"
        for name in shapes
        if name in expected_shapes and tuple(shapes[name]) != tuple(expected_shapes[name])
    ]
    problems = [
        f"{len(items)} {what} ({_preview(items)})"
        for items, what in ((missing, "missing"), (unexpected, "unexpected"), (different, "with a different shape"))
        if items
    ]
    if problems:
        raise ArchitectureMismatchError(f"converted state dict does not match the {arch} model: " + "; ".join(problems))


def _strip_training_state(
    tensors: Mapping[str, np.ndarray], report: ConversionReport
) -> dict[str, tuple[str, np.ndarray]]:
    """Drop optimizer/training state and strip wrapper prefixes: stripped name -> (original name, array)."""
    kept: dict[str, tuple[str, np.ndarray]] = {}
    for original_name, array in tensors.items():
        reason = _training_state_reason(original_name)
        name = original_name
        while reason is None and name.startswith(_WRAPPER_PREFIXES):
            prefix = next(prefix for prefix in _WRAPPER_PREFIXES if name.startswith(prefix))
            name = name[len(prefix) :]
            reason = _training_state_reason(name)
        if reason is not None:
            report.skipped[original_name] = reason
            continue
        if name != original_name:
            report.stripped_prefixes[original_name] = original_name[: len(original_name) - len(name)]
        if name in kept:
            raise ValueError(
                f"checkpoint entries {kept[name][0]!r} and {original_name!r} both give parameter {name!r} "
                "after removing training-wrapper prefixes"
            )
        kept[name] = (original_name, array)
    return kept


def _training_state_reason(name: str) -> str | None:
    if name in _TRAINING_SCALARS:
        return _TRAINING_SCALARS[name]
    for prefix, reason in _OPTIMIZER_STATE_PREFIXES.items():
        if name.startswith(prefix):
            return reason
    return None


def _mismatch_error(
    names: Sequence[str],
    *,
    total: int,
    architecture: MindSporeArchitecture,
    shapes: Mapping[str, Shape] | None,
) -> ArchitectureMismatchError:
    message = (
        f"{len(names)} of {total} parameter names do not fit architecture '{architecture.name}' "
        f"({architecture.source} -> {architecture.target}), e.g. {_preview(names)}"
    )
    if shapes is not None:
        candidates = [
            candidate.name
            for candidate in _ARCHITECTURES
            if candidate.build_rules is not architecture.build_rules
            and not plan_to_torch(shapes, candidate.build_rules()).unmatched
        ]
        if candidates:
            fitting = " / ".join(repr(name) for name in candidates)
            message += f". The names fit the rules of {fitting}: is it a checkpoint of another model?"
    return ArchitectureMismatchError(message)


def _check_unique_targets(plan: RenamePlan) -> None:
    seen: dict[str, str] = {}
    for name, rename in plan.renames.items():
        if rename.target in seen:
            raise ValueError(f"{seen[rename.target]!r} and {name!r} both map to {rename.target!r}")
        seen[rename.target] = name


def _preview(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    return shown + (f", ... ({len(names) - _MAX_NAMES_SHOWN} more)" if len(names) > _MAX_NAMES_SHOWN else "")


def _to_torch(array: np.ndarray) -> torch.Tensor:
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"cannot convert an array of dtype {array.dtype} to a torch tensor")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if array.flags.writeable and array.flags.c_contiguous:
        return torch.from_numpy(array)
    return torch.from_numpy(np.array(array, order="C", copy=True))


def _to_numpy(value: TensorLike) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu")
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return tensor.numpy().copy()
    return np.array(value, copy=True)


def _apply_layout(value: ArrayOrTensor, layout: Layout, *, name: str) -> ArrayOrTensor:
    """Reshape a weight between a Dense layout ``[out, in]`` and a 1x1 conv layout ``[out, in, 1, 1]``."""
    shape = tuple(value.shape)
    if layout is Layout.SAME:
        return value
    if layout is Layout.DENSE_TO_CONV1X1:
        if len(shape) != 2:
            raise ArchitectureMismatchError(f"{name}: expected a Dense weight [out, in], got shape {list(shape)}")
        return value.reshape(*shape, 1, 1)
    if len(shape) != 4 or shape[2:] != (1, 1):
        raise ArchitectureMismatchError(f"{name}: expected a 1x1 convolution weight [out, in, 1, 1], got {list(shape)}")
    return value.reshape(shape[:2])


def _add_batch_norm_counters(state_dict: dict[str, torch.Tensor], report: ConversionReport) -> None:
    """Add ``num_batches_tracked = 0`` next to every BatchNorm's running statistics, as PyTorch expects."""
    names = list(state_dict)
    for name in names:
        module, leaf = split_parameter_name(name)
        if leaf == "running_mean":
            counter = f"{module}.{NUM_BATCHES_TRACKED}"
            if counter not in state_dict:
                state_dict[counter] = torch.zeros((), dtype=torch.int64)
                report.added[counter] = "MindSpore BatchNorm has no step counter; set to 0"
