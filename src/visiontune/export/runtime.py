"""Inference on an exported model with ONNX Runtime, with the pre- and post-processing of the PyTorch path.

The ONNX file carries the checkpoint's config and task metadata (:mod:`visiontune.export.metadata`), so the task is
rebuilt from it and prediction writes the same files as ``visiontune predict checkpoint=...``:

* classification: the task's own ``predict`` runs with :class:`OnnxClassifier` in place of the PyTorch model
  (same eval transform, same ``predictions.csv`` / ``pred.txt``);
* face detection: the same eval transform, score threshold, top-k, NMS and keep limits
  (``face.conf_thresh``, ``face.top_k``, ``face.nms_thresh``, ``face.keep_top_k``) and the same JSON per image and
  drawn copy; raw graphs are decoded with the config's priors, decoded graphs go straight to thresholding and NMS;
* instance segmentation: the task's own ``predict`` with :class:`OnnxMaskRCNN` in place of the model (the masks
  pasted on the host with the PyTorch model's paste).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from visiontune.export._dependencies import import_onnxruntime
from visiontune.export.metadata import (
    MASKRCNN_OUTPUTS,
    MASKRCNN_PASTED_MASKS,
    MASKRCNN_ROI_MASKS,
    ExportMetadata,
)

if TYPE_CHECKING:
    from visiontune.config import FaceConfig
    from visiontune.models.retinaface import RetinaFacePostprocessConfig
    from visiontune.tasks.base import Task

__all__ = ["OnnxClassifier", "OnnxFaceDetector", "OnnxMaskRCNN", "OnnxModel", "predict_onnx", "select_face_detections"]

logger = logging.getLogger(__name__)

_NUMPY_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}

FIXED_BY_GRAPH: dict[str, tuple[str, ...]] = {
    "classification": ("data.image_size",),
    "face_detection": ("face.min_sizes", "face.steps", "face.variance", "face.clip", "face.rgb_mean",
                       "face.in_channel", "face.out_channel"),
    "instance_segmentation": ("segmentation.min_size", "segmentation.max_size", "segmentation.box_score_thresh",
                              "segmentation.detections_per_img"),
}
"""Config keys (besides ``task`` and ``model``) whose values are part of an exported graph, so that prediction
options may not change them."""


def execution_providers(device: str, available: list[str]) -> list[Any]:
    """ONNX Runtime providers for ``device``: ``cpu``, ``cuda`` / ``cuda:N``, or ``auto`` (CUDA when available).

    Raises:
        ValueError: an unknown device, or CUDA asked for but not available in this onnxruntime build.
    """
    device = str(device)
    if device == "auto":
        device = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    if device == "cpu":
        return ["CPUExecutionProvider"]
    kind, _, index = device.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ValueError(f"device: expected cpu, cuda, cuda:N or auto, got {device!r}")
    if "CUDAExecutionProvider" not in available:
        raise ValueError(f"device={device!r}: this onnxruntime has no CUDAExecutionProvider (available: "
                         f"{', '.join(available)}); install onnxruntime-gpu or use device=cpu")
    return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]


class OnnxModel:
    """An exported visiontune model in an ONNX Runtime session, with its metadata.

    Args:
        path: the ``.onnx`` file written by :func:`visiontune.export.export_checkpoint`.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a visiontune export (no metadata) or its metadata is inconsistent.
    """

    def __init__(self, path: str | Path, *, device: str = "cpu") -> None:
        ort = import_onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.path}")
        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), sess_options=session_options,
                                            providers=execution_providers(device, ort.get_available_providers()))
        self.metadata = ExportMetadata.from_props(self.session.get_modelmeta().custom_metadata_map,
                                                  source=str(self.path))
        graph_input = self.session.get_inputs()[0]
        if graph_input.type not in _NUMPY_DTYPES:
            raise ValueError(f"{self.path}: input {graph_input.name!r} has type {graph_input.type}; expected float32 "
                             "or float16")
        self.input_name: str = graph_input.name
        self.input_shape: list[int | str | None] = list(graph_input.shape)
        self.input_dtype = _NUMPY_DTYPES[graph_input.type]
        self.output_names: list[str] = [output.name for output in self.session.get_outputs()]

    @property
    def task(self) -> str:
        return self.metadata.task

    def build_task(self, overrides: Mapping[str, Any] | None = None) -> Task:
        """The task of the stored config (pre- and post-processing), with its class names.

        Args:
            overrides: dotted config keys and values (``{"face.vis_thresh": 0.3, "topk": "3"}``; strings are
                parsed as CLI override values); ``task``, the ``model`` section and the keys of
                :data:`FIXED_BY_GRAPH` are part of the graph.

        Raises:
            ValueError: an override changes something the graph fixes, or is not a valid config key/value.
        """
        from visiontune.config import config_from_dict, load_config
        from visiontune.tasks import create_task

        fixed = ("task", "model", *FIXED_BY_GRAPH.get(self.metadata.task, ()))
        texts = []
        for key, value in (overrides or {}).items():
            if any(key == name or key.startswith(f"{name}.") for name in fixed):
                raise ValueError(f"{key}: fixed by the exported graph {self.path} (with task, model.* and "
                                 f"{', '.join(fixed[2:])}); export the checkpoint again with the new value")
            # strings are parsed like CLI override values (YAML); other values are written as JSON (valid YAML)
            texts.append(f"{key}={value if isinstance(value, str) else json.dumps(value, default=str)}")
        config = load_config(None, texts, base=config_from_dict(self.metadata.config))
        task = create_task(config)
        task.load_meta(self.metadata.task_meta)
        return task

    def run(self, inputs: np.ndarray | Tensor) -> list[np.ndarray]:
        """Run the graph; a batch larger than a fixed batch axis is run in chunks.

        Args:
            inputs: the graph input (any float dtype; cast to the graph's).

        Returns:
            The outputs, in :attr:`output_names` order.

        Raises:
            ValueError: the input's rank or a fixed axis does not fit the graph.
        """
        array = inputs.detach().cpu().numpy() if isinstance(inputs, Tensor) else np.asarray(inputs)
        array = np.ascontiguousarray(array, dtype=self.input_dtype)
        if array.ndim != len(self.input_shape):
            raise ValueError(f"{self.path}: expected an input of rank {len(self.input_shape)} "
                             f"({self.metadata.input_shape}), got shape {list(array.shape)}")
        for axis, (expected, size) in enumerate(zip(self.input_shape, array.shape)):
            if isinstance(expected, int) and expected != size and not (axis == 0 and len(self.input_shape) == 4):
                raise ValueError(f"{self.path} was exported for a fixed input of {self.metadata.input_shape}; this "
                                 f"input is {list(array.shape)} (axis {axis}). Export with dynamic=true to run other "
                                 "sizes")
        batch_axis = self.input_shape[0] if len(self.input_shape) == 4 else None
        if not isinstance(batch_axis, int) or batch_axis == array.shape[0]:
            return self.session.run(self.output_names, {self.input_name: array})
        if array.shape[0] % batch_axis:
            raise ValueError(f"{self.path} has a fixed batch size of {batch_axis}; got a batch of {array.shape[0]}")
        chunks = [self.session.run(self.output_names, {self.input_name: array[start:start + batch_axis]})
                  for start in range(0, array.shape[0], batch_axis)]
        return [np.concatenate(parts, axis=0) for parts in zip(*chunks)]


class OnnxClassifier(nn.Module):
    """A classification graph behind the classification model contract (eval mode).

    ``model(images: Tensor[B, 3, S, S])`` returns ``[{"logits": Tensor[C]}, ...]``. A graph exported with
    ``softmax=true`` returns probabilities; their logarithm is returned as logits (the softmax of log-probabilities is
    the probabilities again).
    """

    def __init__(self, model: OnnxModel) -> None:
        super().__init__()
        self.onnx_model = model
        self.returns_probabilities = model.metadata.output_kind == "probabilities"
        self.eval()

    def forward(self, images: Tensor, targets: Any = None) -> list[dict[str, Tensor]]:
        if self.training:
            raise ValueError("an ONNX model cannot be trained; call .eval()")
        (scores,) = self.onnx_model.run(images)
        logits = torch.from_numpy(scores).float()
        if self.returns_probabilities:
            logits = logits.log()
        return [{"logits": row} for row in logits]


class OnnxMaskRCNN(nn.Module):
    """A Mask R-CNN graph behind torchvision's detection contract (eval mode).

    ``model(images: list[Tensor[3, H, W]])`` returns one dict per image with ``boxes`` float32 ``[N, 4]`` xyxy
    pixels, ``labels`` int64 ``[N]``, ``scores`` float32 ``[N]`` and ``masks`` float32 ``[N, 1, H, W]``. A graph of
    :data:`~visiontune.export.metadata.MASKRCNN_ROI_MASKS` returns each detection's mask probabilities in its box
    frame, pasted here with :func:`~visiontune.models.maskrcnn.paste_masks` (the PyTorch model's paste); an older
    graph of :data:`~visiontune.export.metadata.MASKRCNN_PASTED_MASKS` pasted them itself (a warning says so).

    Raises:
        ValueError: the graph's ``output_kind`` or outputs are not a Mask R-CNN layout this version reads.
    """

    def __init__(self, model: OnnxModel) -> None:
        super().__init__()
        kind, names = model.metadata.output_kind, model.output_names
        if MASKRCNN_OUTPUTS.get(kind) != names:
            raise ValueError(f"{model.path}: output_kind {kind!r} with outputs {names} is not a Mask R-CNN layout "
                             f"this visiontune reads ({MASKRCNN_ROI_MASKS!r} with outputs "
                             f"{', '.join(MASKRCNN_OUTPUTS[MASKRCNN_ROI_MASKS])}); export the checkpoint again with "
                             "`visiontune export checkpoint=...`")
        if kind == MASKRCNN_PASTED_MASKS:
            logger.warning("%s pastes its masks in the graph (an export of an older visiontune), so mask edges may "
                           "lie a pixel off PyTorch's; export the checkpoint again for PyTorch's masks", model.path)
        self.onnx_model = model
        self.pastes_masks = kind == MASKRCNN_ROI_MASKS
        self.eval()

    def forward(self, images: list[Tensor] | Tensor, targets: Any = None) -> list[dict[str, Tensor]]:
        if self.training:
            raise ValueError("an ONNX model cannot be trained; call .eval()")
        from visiontune.models.maskrcnn import paste_masks

        detections = []
        for image in images:
            boxes, labels, scores, masks = (torch.from_numpy(array) for array in self.onnx_model.run(image))
            if self.pastes_masks:
                masks = paste_masks(masks, boxes, (int(image.shape[-2]), int(image.shape[-1])))
            detections.append({"boxes": boxes, "labels": labels, "scores": scores, "masks": masks})
        return detections


def select_face_detections(boxes: Tensor, scores: Tensor, landmarks: Tensor, *,
                           config: RetinaFacePostprocessConfig) -> dict[str, Tensor]:
    """Threshold, top-k, NMS and keep on decoded per-prior outputs of one image (the decoded-graph counterpart of
    :func:`~visiontune.models.retinaface.postprocess.postprocess_detections`, same steps in the same order).

    Args:
        boxes: ``Tensor[P, 4]`` float xyxy pixels.
        scores: ``Tensor[P]`` face probability.
        landmarks: ``Tensor[P, 10]`` ``(x0, y0, ..., x4, y4)`` pixels.
        config: thresholds.

    Returns:
        ``boxes: Tensor[K, 4]``, ``scores: Tensor[K]`` (decreasing), ``landmarks: Tensor[K, 5, 2]``,
        ``labels: Tensor[K]`` int64 ones.
    """
    from torchvision.ops import nms

    candidates = torch.nonzero(scores > config.score_threshold).squeeze(1)
    candidate_scores = scores[candidates]
    order = candidate_scores.argsort(descending=True)[: config.pre_nms_top_k]
    candidates, candidate_scores = candidates[order], candidate_scores[order]
    candidate_boxes = boxes[candidates]
    nms_boxes = candidate_boxes
    if config.nms_inclusive_pixels:
        nms_boxes = torch.cat([candidate_boxes[:, :2], candidate_boxes[:, 2:] + 1.0], dim=1)
    keep = nms(nms_boxes, candidate_scores, config.nms_iou_threshold)[: config.max_detections]
    return {"boxes": candidate_boxes[keep], "scores": candidate_scores[keep],
            "landmarks": landmarks[candidates[keep]].reshape(-1, 5, 2),
            "labels": torch.ones(len(keep), dtype=torch.int64)}


class OnnxFaceDetector:
    """Runs a RetinaFace graph (raw or decoded) on one preprocessed image and post-processes as the PyTorch model.

    An instance is a :data:`~visiontune.tasks.face_detection.FaceDetector` (the callable the face task's prediction
    loop takes), like the PyTorch model's.

    Args:
        model: the ONNX model.
        face: the ``face`` config section (priors, variances).
        postprocess: score threshold, NMS and detection limits (the face task's :meth:`postprocess_config`, so the
            graph's detections are post-processed exactly as the PyTorch path's).
    """

    def __init__(self, model: OnnxModel, face: FaceConfig, postprocess: RetinaFacePostprocessConfig) -> None:
        from visiontune.models.retinaface import BoxCoder, PriorCache, PriorConfig

        if model.metadata.output_kind not in ("retinaface_raw", "retinaface_decoded"):
            raise ValueError(f"{model.path}: output_kind {model.metadata.output_kind!r} is not a RetinaFace graph")
        self.model = model
        self.decoded = model.metadata.output_kind == "retinaface_decoded"
        self.prior_config = PriorConfig(min_sizes=tuple(tuple(sizes) for sizes in face.min_sizes),
                                        steps=tuple(face.steps), clip=face.clip)
        self.prior_cache = PriorCache(self.prior_config)
        self.box_coder = BoxCoder(variances=(face.variance[0], face.variance[1]))
        self.postprocess = postprocess

    def __call__(self, image: Tensor) -> tuple[dict[str, Tensor], float, float]:
        """Detect faces in ``image: Tensor[3, H, W]`` (BGR minus mean).

        Returns:
            The detections in pixels of ``image`` (``boxes``, ``scores``, ``landmarks [K, 5, 2]``, ``labels``), and
            the seconds spent in the graph and in post-processing.
        """
        from visiontune.models.retinaface import postprocess_detections

        start = time.perf_counter()
        outputs = [torch.from_numpy(array).float() for array in self.model.run(image[None])]
        network_end = time.perf_counter()
        image_size = (int(image.shape[-2]), int(image.shape[-1]))
        if self.decoded:
            boxes, scores, landmarks = outputs
            detections = select_face_detections(boxes[0], scores[0], landmarks[0], config=self.postprocess)
        else:
            box_deltas, class_scores, landmark_deltas = outputs
            (detections,) = postprocess_detections(
                box_deltas, class_scores, landmark_deltas,
                priors=self.prior_cache.get(image_size, device=torch.device("cpu")),
                image_size=image_size, config=self.postprocess, box_coder=self.box_coder,
            )
        end = time.perf_counter()
        return detections, network_end - start, end - network_end


def _predict_classification(model: OnnxModel, task: Task, source: str, output_dir: Path) -> list[Path]:
    return task.predict(OnnxClassifier(model), source, output_dir, device=torch.device("cpu"))


def _predict_instance_segmentation(model: OnnxModel, task: Task, source: str, output_dir: Path) -> list[Path]:
    return task.predict(OnnxMaskRCNN(model), source, output_dir, device=torch.device("cpu"))


def _predict_faces(model: OnnxModel, task: Task, source: str, output_dir: Path) -> list[Path]:
    """The face-detection prediction loop of the PyTorch path, with the graph in place of the network.

    Writes per image ``<name>.json`` and ``<name>.<suffix>`` with the faces drawn
    (:meth:`~visiontune.tasks.face_detection.FaceDetectionTask.predict_image`).
    """
    from visiontune.tasks.face_detection import FaceDetectionTask

    if not isinstance(task, FaceDetectionTask):
        raise TypeError(f"{model.path}: a face detection graph needs the face detection task, got {task.name!r}")
    detector = OnnxFaceDetector(model, task.config.face, task.postprocess_config())  # the PyTorch path's settings
    return task.predict_with(detector, source, output_dir, detector_name=str(model.path))


PREDICTORS: dict[str, Callable[[OnnxModel, Task, str, Path], list[Path]]] = {
    "classification": _predict_classification,
    "face_detection": _predict_faces,
    "instance_segmentation": _predict_instance_segmentation,
}
"""Task name -> prediction loop on an :class:`OnnxModel`."""


def predict_onnx(onnx_path: str | Path, source: str | Path, output_dir: str | Path | None = None, *,
                 device: str = "cpu", overrides: Iterable[str] = (), **options: Any) -> list[Path]:
    """Predict with an exported model and write the same files as the PyTorch ``predict``.

    Args:
        onnx_path: a ``.onnx`` file written by ``visiontune export``.
        source: an image, a folder, or a list file, as for ``visiontune predict``.
        output_dir: where to write the prediction files; None: a new ``<project>/<task>/predict[-N]`` folder, as
            ``visiontune predict``.
        device: ``cpu`` (default), ``cuda``, ``cuda:N`` or ``auto`` (ONNX Runtime execution provider).
        overrides: config overrides as written on a command line (``["topk=3", "face.vis_thresh=0.3"]``), checked
            against the config schema like every ``visiontune`` command's.
        **options: the same with dotted keys as Python keywords, e.g. ``topk=3`` or ``**{"face.vis_thresh": 0.3}``
            (applied after ``overrides``). Keys the graph fixes (``model.*``, :data:`FIXED_BY_GRAPH`) are refused.

    Returns:
        The written files.

    Raises:
        ValueError: the file is not a visiontune export, an option is invalid (``ConfigError``, naming the key),
            or an input does not fit a graph exported with fixed sizes.
        MissingExportDependencyError: onnxruntime is not installed.
    """
    from visiontune.config.overrides import parse_override

    values: dict[str, Any] = dict(parse_override(text) for text in overrides)
    values.update(options)
    model = OnnxModel(onnx_path, device=device)
    task = model.build_task(values)
    predictor = PREDICTORS.get(task.name)
    if predictor is None:
        raise ValueError(f"{onnx_path}: no ONNX prediction for task {task.name!r}; supported: {', '.join(PREDICTORS)}")
    logger.info("predicting with %s (%s, %s, exported by visiontune %s, config %s)", model.path, task.name,
                model.metadata.output_kind, model.metadata.visiontune_version, model.metadata.config_sha256[:12])
    if output_dir is None:
        from visiontune.engine.run_dir import new_run_dir

        output_dir = new_run_dir(Path(task.config.project) / task.name, "predict")
    return predictor(model, task, str(source), Path(output_dir))
