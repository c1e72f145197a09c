"""Per-task export recipes: which module is traced, its inputs and outputs, and the parity inputs.

A recipe turns a task and its model into an :class:`ExportSpec`; :mod:`visiontune.export.exporter` does the rest
(tracing, metadata, parity, writing) the same way for every task.

=====================  ========================  ==================================================================
task                   input                     outputs
=====================  ========================  ==================================================================
classification         ``images [B, 3, S, S]``   ``logits [B, C]`` (``softmax=true``: ``probabilities [B, C]``)
face_detection         ``images [B, 3, H, W]``   ``loc [B, P, 4]``, ``conf [B, P, 2]``, ``landmarks [B, P, 10]``;
                                                 ``decode=true``: ``boxes [B, P, 4]``, ``scores [B, P]``,
                                                 ``landmarks [B, P, 10]`` in pixels
instance_segmentation  ``image [3, H, W]``       ``boxes [N, 4]``, ``labels [N]``, ``scores [N]``,
                                                 ``mask_probabilities [N, 1, 28, 28]`` (pasted on the host)
=====================  ========================  ==================================================================
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from visiontune.export.metadata import MASKRCNN_OUTPUTS, MASKRCNN_ROI_MASKS
from visiontune.export.options import ExportOptions
from visiontune.export.parity import DetectionOutputs
from visiontune.export.samples import sample_photos
from visiontune.registry import suggest

if TYPE_CHECKING:
    from visiontune.tasks.base import Task

logger = logging.getLogger(__name__)

DEFAULT_DETECTION_SIZE: tuple[int, int] = (480, 640)
"""``(height, width)`` of the example input for the detection tasks when ``input_size`` is not given."""


@dataclass
class ExportSpec:
    """Everything the exporter needs to know about one model.

    Attributes:
        module: the module to trace (float16 when exporting with ``half=true``).
        reference: the float32 module the graph is checked against.
        input_name: name of the graph input.
        output_names: names of the graph outputs, in order.
        example_input: float32 input used for tracing (cast to float16 for ``half=true``).
        parity_inputs: float32 inputs of the parity check (two sizes when dynamic).
        dynamic_axes: ``{tensor name: {axis: symbolic name}}`` when exporting with dynamic shapes.
        output_kind: what the outputs mean (stored in the metadata).
        class_names: names of the model's classes (stored in the metadata), without the background.
        preprocessing: how an image becomes the input (stored in the metadata).
        detections: for outputs that form a set of detections, which outputs they are and the score from which
            detections must match (see :mod:`visiontune.export.parity`); None for plain tensors.
        at_graph_detections: ``(input, graph outputs) -> {output name: PyTorch's values for the graph's
            detections}`` for outputs that depend on each detection's box (Mask R-CNN mask probabilities), compared
            in place of the reference's; None for none.
    """

    module: nn.Module
    reference: nn.Module
    input_name: str
    output_names: list[str]
    example_input: Tensor
    parity_inputs: list[Tensor]
    dynamic_axes: dict[str, dict[int, str]]
    output_kind: str
    class_names: list[str] | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    detections: DetectionOutputs | None = None
    at_graph_detections: Callable[[Tensor, list[np.ndarray]], dict[str, np.ndarray]] | None = None

    def input_shape(self, *, dynamic: bool) -> list[int | str]:
        """Shape of the graph input, a name for each dynamic axis."""
        axes = self.dynamic_axes.get(self.input_name, {}) if dynamic else {}
        return [axes.get(axis, int(size)) for axis, size in enumerate(self.example_input.shape)]


SpecBuilder = Callable[["Task", nn.Module, ExportOptions, Sequence[Path]], ExportSpec]


def fold_sequential_batch_norms(module: nn.Module) -> int:
    """Fold every ``Conv2d`` directly followed by a plain ``BatchNorm2d`` inside an ``nn.Sequential`` (in place).

    Inside a ``Sequential`` the BatchNorm is the convolution's only consumer, so folding is exact; the BatchNorm is
    replaced by ``nn.Identity``. Subclasses such as timm's ``BatchNormAct2d`` are left alone. Must run in eval mode.

    Returns:
        The number of folded pairs.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for container in module.modules():
        if not isinstance(container, nn.Sequential):
            continue
        names = list(container._modules)
        for name, next_name in itertools.pairwise(names):
            convolution, batch_norm = container._modules[name], container._modules[next_name]
            if type(convolution) is nn.Conv2d and type(batch_norm) is nn.BatchNorm2d:
                container._modules[name] = fuse_conv_bn_eval(convolution, batch_norm)
                container._modules[next_name] = nn.Identity()
                folded += 1
    return folded


def _half_copy(module: nn.Module, *, half: bool) -> nn.Module:
    """``module`` itself, or for ``half`` a float16 copy whose Conv-BN pairs were folded in float32 first.

    Folding before the cast matters for inputs on a 0-255 scale (RetinaFace): a first convolution's output in the
    hundreds loses its fractional part in float16 before its BatchNorm subtracts a mean of similar size.
    """
    if not half:
        return module
    copied = copy.deepcopy(module).eval()
    folded = fold_sequential_batch_norms(copied)
    logger.debug("folded %d Conv2d-BatchNorm2d pairs in float32 before the float16 cast", folded)
    return copied.half()


def _check_options(task_name: str, options: ExportOptions, *, softmax: bool, decode: bool) -> None:
    if options.softmax and not softmax:
        raise ValueError(f"softmax=true applies to classification only, not to task {task_name!r}")
    if options.decode and not decode:
        raise ValueError(f"decode=true applies to face_detection only, not to task {task_name!r}")


def classification_spec(task: Task, model: nn.Module, options: ExportOptions, samples: Sequence[Path]) -> ExportSpec:
    """``images [B, 3, S, S]`` (the eval transform's output, ``S = data.image_size``) -> logits or probabilities."""
    _check_options(task.name, options, softmax=True, decode=False)
    size = task.config.data.image_size
    if options.image_size is not None and options.image_size != (size, size):
        raise ValueError(f"input_size={options.image_size[0]}x{options.image_size[1]}: classification exports at the "
                         f"checkpoint's data.image_size ({size}x{size}), which its eval transform produces")
    net = getattr(model, "net", None)
    if not isinstance(net, nn.Module):
        raise ValueError(f"classification export expects an ImageClassifier with a timm network at .net, got "
                         f"{type(model).__name__}")
    from visiontune.export.wrappers import ClassifierExport

    transform = cast(Any, task).build_transform(train=False)  # the classification task's eval transform
    photos = sample_photos(samples, 3, height=size * 5 // 4, width=size * 3 // 2)
    batch = torch.stack([transform(photo) for photo in photos])
    output_name = "probabilities" if options.softmax else "logits"
    return ExportSpec(
        module=ClassifierExport(_half_copy(net, half=options.half), softmax=options.softmax),
        reference=ClassifierExport(net, softmax=options.softmax),
        input_name="images",
        output_names=[output_name],
        example_input=batch[:1],
        parity_inputs=[batch[:1], batch[1:]] if options.dynamic else [batch[:1]],
        dynamic_axes={"images": {0: "batch"}, output_name: {0: "batch"}},
        output_kind=output_name,
        class_names=task.meta.get("class_names"),
        preprocessing=_classification_preprocessing(transform),
    )


def _classification_preprocessing(transform: Any) -> dict[str, Any]:
    """Mean/std of the eval transform's ``Normalize`` and the transform itself, as text."""
    from torchvision.transforms import Normalize

    steps = getattr(transform, "transforms", [transform])
    normalize = next((step for step in steps if isinstance(step, Normalize)), None)
    description: dict[str, Any] = {"color": "RGB", "value_range": [0.0, 1.0], "layout": "NCHW",
                                   "transform": " -> ".join(repr(step).replace("\n", "") for step in steps)}
    if normalize is not None:
        description["mean"] = [float(value) for value in torch.as_tensor(normalize.mean).flatten()]
        description["std"] = [float(value) for value in torch.as_tensor(normalize.std).flatten()]
    return description


def second_size(height: int, width: int) -> tuple[int, int]:
    """A second parity size with another aspect ratio, not a multiple of the largest stride (32)."""
    return max(33, round(height * 0.75) + 5), max(33, round(width * 1.2) + 3)


def face_detection_spec(task: Task, model: nn.Module, options: ExportOptions, samples: Sequence[Path]) -> ExportSpec:
    """RetinaFace: ``images [B, 3, H, W]`` BGR minus mean -> raw head outputs, or decoded pixels (``decode``)."""
    from visiontune.data.face_transforms import to_normalized_tensor
    from visiontune.export.wrappers import RetinaFaceDecodedExport, RetinaFaceRawExport
    from visiontune.models.retinaface import RetinaFace

    _check_options(task.name, options, softmax=False, decode=True)
    if not isinstance(model, RetinaFace):
        raise ValueError(f"face detection export expects a RetinaFace, got {type(model).__name__}")
    face = task.config.face
    height, width = options.image_size or DEFAULT_DETECTION_SIZE
    sizes = [(height, width), second_size(height, width)] if options.dynamic else [(height, width)]
    photos = sample_photos(samples, 3, height=height, width=width)

    def batch(photo_indices: Sequence[int], size: tuple[int, int]) -> Tensor:
        images = []
        for index in photo_indices:
            rgb = np.asarray(photos[index].resize((size[1], size[0]), resample=Image.Resampling.BILINEAR))
            images.append(to_normalized_tensor(np.ascontiguousarray(rgb[:, :, ::-1]), tuple(face.rgb_mean)))
        return torch.stack(images)

    parity_inputs = [batch([0], sizes[0])] + ([batch([1, 2], sizes[1])] if options.dynamic else [])
    export_model = cast(RetinaFace, _half_copy(model, half=options.half))  # a copy of the same class
    if options.decode:
        box_coder = model.loss.box_coder
        module: nn.Module = RetinaFaceDecodedExport(export_model, box_coder)
        reference: nn.Module = RetinaFaceDecodedExport(model, box_coder)
        output_names, kind = ["boxes", "scores", "landmarks"], "retinaface_decoded"
    else:
        module, reference = RetinaFaceRawExport(export_model), RetinaFaceRawExport(model)
        output_names, kind = ["loc", "conf", "landmarks"], "retinaface_raw"
    dynamic_axes = {"images": {0: "batch", 2: "height", 3: "width"}}
    dynamic_axes.update({name: {0: "batch", 1: "priors"} for name in output_names})
    return ExportSpec(
        module=module, reference=reference, input_name="images", output_names=output_names,
        example_input=parity_inputs[0], parity_inputs=parity_inputs, dynamic_axes=dynamic_axes, output_kind=kind,
        class_names=["face"],
        preprocessing={"color": "BGR", "value_range": [0.0, 255.0], "layout": "NCHW",
                       "subtract_mean": [float(value) for value in face.rgb_mean],
                       "resize": ("none (original size)" if face.origin_size else
                                  f"short side to {face.target_size}, long side at most {face.max_size}"),
                       "priors": {"min_sizes": [list(sizes) for sizes in model.prior_config.min_sizes],
                                  "steps": list(model.prior_config.steps), "clip": model.prior_config.clip,
                                  "variances": list(model.loss.box_coder.variances)}},
    )


def instance_segmentation_spec(task: Task, model: nn.Module, options: ExportOptions,
                               samples: Sequence[Path]) -> ExportSpec:
    """torchvision Mask R-CNN: ``image [3, H, W]`` RGB in [0, 1] -> boxes, labels, scores and the unpasted mask
    probabilities of one image (:class:`~visiontune.export.wrappers.MaskRCNNExport`).

    Detections scoring at least ``segmentation.vis_thresh`` must match in the parity check; their mask probabilities
    are compared with PyTorch's mask head applied at the graph's boxes (the tolerance is absolute for them: 1e-3 by
    default; a ResNet-50 at 480x640 differs by ~1e-4, a wrong graph by 0.1 and more).
    """
    from visiontune.export.wrappers import MaskRCNNExport, MaskRCNNReference, mask_probabilities_at

    _check_options(task.name, options, softmax=False, decode=False)
    if options.half:
        raise ValueError("half=true is not supported for instance_segmentation (torchvision's RoIAlign runs in "
                         "float32); export in float32")
    transform = getattr(model, "transform", None)
    if transform is None or not hasattr(model, "roi_heads"):
        raise ValueError(f"instance segmentation export expects a torchvision Mask R-CNN, got {type(model).__name__}")
    height, width = options.image_size or DEFAULT_DETECTION_SIZE
    sizes = [(height, width), second_size(height, width)] if options.dynamic else [(height, width)]
    photos = sample_photos(samples, len(sizes), height=height, width=width)
    parity_inputs = [
        torch.from_numpy(np.asarray(photo.resize((size[1], size[0]), resample=Image.Resampling.BILINEAR),
                                    dtype=np.float32) / 255.0)
        .permute(2, 0, 1).contiguous()
        for photo, size in zip(photos, sizes)
    ]
    output_names = list(MASKRCNN_OUTPUTS[MASKRCNN_ROI_MASKS])
    masks = output_names[-1]  # each detection's unpasted mask probabilities
    dynamic_axes = {"image": {1: "height", 2: "width"}, **{name: {0: "detections"} for name in output_names}}
    return ExportSpec(
        module=MaskRCNNExport(model), reference=MaskRCNNReference(model), input_name="image",
        output_names=output_names, example_input=parity_inputs[0], parity_inputs=parity_inputs,
        dynamic_axes=dynamic_axes, output_kind=MASKRCNN_ROI_MASKS, class_names=task.meta.get("class_names"),
        detections=DetectionOutputs(boxes="boxes", labels="labels", scores="scores", masks=masks,
                                    min_score=float(task.config.segmentation.vis_thresh)),
        at_graph_detections=lambda image, outputs: {masks: mask_probabilities_at(
            model, image, torch.from_numpy(outputs[0]), torch.from_numpy(outputs[1])).numpy()},
        preprocessing={"color": "RGB", "value_range": [0.0, 1.0], "layout": "CHW (one image)",
                       "inside_graph": "resize to min_size/max_size and normalisation",
                       "image_mean": [float(value) for value in transform.image_mean],
                       "image_std": [float(value) for value in transform.image_std],
                       "min_size": list(transform.min_size), "max_size": int(transform.max_size)},
    )


SPEC_BUILDERS: dict[str, SpecBuilder] = {
    "classification": classification_spec,
    "face_detection": face_detection_spec,
    "instance_segmentation": instance_segmentation_spec,
}
"""Task name -> export recipe."""


def build_export_spec(task: Task, model: nn.Module, options: ExportOptions, samples: Sequence[Path] = ()) -> ExportSpec:
    """The export recipe of ``task`` applied to ``model``.

    Raises:
        ValueError: the task has no export recipe, or an option does not apply to it.
    """
    builder = SPEC_BUILDERS.get(task.name)
    if builder is None:
        raise ValueError(f"task {task.name!r} cannot be exported{suggest(task.name, list(SPEC_BUILDERS))}; "
                         f"exportable: {', '.join(SPEC_BUILDERS)}")
    return builder(task, model, options, samples)
