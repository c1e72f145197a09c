"""Face detection with five landmarks: RetinaFace fine-tuning, WIDER FACE evaluation and prediction.

The task wires the RetinaFace components into the shared engine:

* data: :class:`~visiontune.data.widerface.WiderFaceDataset` in the ``retinaface`` (``label.txt``), ``official``
  (``wider_face_*_bbx_gt.txt``) or ``list`` layout; training uses the reference augmentation at
  ``data.image_size``, evaluation the original size (``face.origin_size``) or the reference 1600 / ``face.max_size``
  rescale, one image per batch unless every evaluated image has the same size.
* model: :func:`~visiontune.models.retinaface.create_retinaface` with the ``face`` section's prior, loss and
  post-processing settings; ``model.checkpoint`` (reference ``mobilenet0.25_Final.pth``, a visiontune checkpoint or
  a MindSpore ``.ckpt``) and ``model.backbone_checkpoint`` (ImageNet weights of the body) load with a load report.
* evaluation (:class:`FaceDetectionEvaluator`): the official WIDER FACE ``ap_easy`` / ``ap_medium`` / ``ap_hard``
  when ``face.gt_dir`` holds the official ``.mat`` files, ``ap`` over every annotated face of the split (same
  matching code, every face counts), and ``nme`` for annotated landmarks.
* prediction: one JSON per image (boxes, scores, five landmarks in original pixels) plus a drawn copy.

Image ids are the annotation paths without extension (``0--Parade/0_Parade_marchingband_1_465``). The official
ground truth and prediction layout key images as ``<event>/<image name>``: :func:`widerface_image_key` maps an id
with one component to ``images/<name>`` and an id with more than two components to its last two.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn
from torch.utils.data import Dataset
from torch.utils.hooks import RemovableHandle

from visiontune.config import Config
from visiontune.data.face_transforms import (
    FaceEvalTransform,
    FaceInstances,
    RetinaFaceTrainTransform,
    compute_eval_scale,
)
from visiontune.data.widerface import (
    ANNOTATION_FORMATS,
    WiderFaceDataset,
    WiderFaceRecord,
    collate_faces,
    load_annotations,
    load_bgr_image,
)
from visiontune.data.sources import collect_images
from visiontune.utils.comm import all_gather_objects
from visiontune.models.parts import ModelParts
from visiontune.evaluation.widerface import (
    DIFFICULTIES,
    WiderFaceGroundTruth,
    WiderFaceResult,
    evaluate_widerface,
    landmark_nme,
    load_widerface_ground_truth,
    plot_widerface_pr_curves,
    write_widerface_predictions,
)
from visiontune.models.loading import LoadReport, load_weights_with_report, read_weights
from visiontune.models.retinaface import (
    RETINAFACE_BACKBONES,
    PriorConfig,
    RetinaFace,
    RetinaFaceLoss,
    RetinaFacePostprocessConfig,
    create_retinaface,
    postprocess_detections,
)
from visiontune.registry import suggest
from visiontune.tasks.base import Task

__all__ = [
    "RETINAFACE_MODELS",
    "FaceDetectionEvaluator",
    "FaceDetectionTask",
    "FacePredictions",
    "InferenceTimer",
    "collect_images",
    "draw_faces",
    "widerface_image_key",
]

logger = logging.getLogger(__name__)

RETINAFACE_MODELS: dict[str, str] = {
    "retinaface_mobilenet0.25": "mobilenet0.25",
    "retinaface_resnet50": "resnet50",
}
"""``model.name`` -> backbone name of :func:`~visiontune.models.retinaface.create_retinaface`."""

HEAD_MODULES: tuple[str, ...] = ("ClassHead", "BboxHead", "LandmarkHead")
"""Top-level RetinaFace modules that form the task head."""

DEFAULT_EVENT = "images"
"""Event folder of image ids that have no folder component (official layout ``<event>/<image>``)."""
MATCH_IOU = 0.5
"""IoU for a detection to match an annotated face (official WIDER FACE threshold)."""
LANDMARK_COLORS: tuple[tuple[int, int, int], ...] = ((255, 0, 0), (255, 255, 0), (255, 0, 255), (0, 255, 0),
                                                     (0, 0, 255))
"""RGB colour per landmark (left eye, right eye, nose, left and right mouth corner), as the reference drawing."""
BOX_COLOR: tuple[int, int, int] = (255, 0, 0)
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


# ---------------------------------------------------------------------------------------------------------------
# Image ids and predictions
# ---------------------------------------------------------------------------------------------------------------


def widerface_image_key(image_id: str) -> str:
    """The official ``<event>/<image name>`` key of an image id (a relative path without extension).

    ``event/name`` is kept, ``name`` becomes ``images/name`` and ``a/b/event/name`` becomes ``event/name``
    (e.g. ids relative to a folder above ``WIDER_val/images``).

    Raises:
        ValueError: the id is empty or has an empty component.
    """
    parts = PurePosixPath(image_id).parts
    if not parts or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"image id {image_id!r} is not a relative path without '.' or '..' components")
    if len(parts) == 1:
        return f"{DEFAULT_EVENT}/{parts[0]}"
    return f"{parts[-2]}/{parts[-1]}"


def _unique_keys(image_ids: Iterable[str]) -> dict[str, str]:
    """``image id -> widerface_image_key``; raises ``ValueError`` when two ids share a key."""
    keys: dict[str, str] = {}
    owner: dict[str, str] = {}
    for image_id in image_ids:
        key = widerface_image_key(image_id)
        if key in owner and owner[key] != image_id:
            raise ValueError(f"images {owner[key]!r} and {image_id!r} both map to the WIDER FACE key {key!r} "
                             "('<event>/<image name>'); rename one of them")
        owner[key] = image_id
        keys[image_id] = key
    return keys


@dataclass
class FacePredictions:
    """Detections of one image in pixels of the original image.

    Attributes:
        boxes: ``float64 [K, 4]`` xyxy.
        scores: ``float64 [K]`` face probability.
        landmarks: ``float64 [K, 5, 2]`` (x, y) of left eye, right eye, nose, left and right mouth corner.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    @classmethod
    def from_output(cls, output: Mapping[str, Tensor], *, scale: float) -> FacePredictions:
        """Convert a model output (pixels of the network input) to original pixels by dividing by ``scale``."""
        if scale <= 0:
            raise ValueError(f"the evaluation scale must be positive, got {scale}")
        boxes = output["boxes"].detach().to("cpu", torch.float64).numpy() / scale
        scores = output["scores"].detach().to("cpu", torch.float64).numpy()
        landmarks = output["landmarks"].detach().to("cpu", torch.float64).numpy().reshape(-1, 5, 2) / scale
        return cls(boxes=boxes.reshape(-1, 4), scores=scores.reshape(-1), landmarks=landmarks)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def xywh_scores(self) -> np.ndarray:
        """``float64 [K, 5]`` ``x, y, w, h, score`` (the WIDER FACE prediction format)."""
        xywh = np.concatenate([self.boxes[:, :2], self.boxes[:, 2:] - self.boxes[:, :2]], axis=1)
        return np.concatenate([xywh, self.scores[:, None]], axis=1)

    def above(self, threshold: float) -> FacePredictions:
        """The detections scoring at least ``threshold``."""
        keep = self.scores >= threshold
        return FacePredictions(boxes=self.boxes[keep], scores=self.scores[keep], landmarks=self.landmarks[keep])

    def as_json(self) -> list[dict[str, Any]]:
        """``[{"box": [x1, y1, x2, y2], "score": s, "landmarks": [[x, y] x 5]}]`` rounded to 1/100 pixel."""
        return [
            {"box": [round(float(value), 2) for value in box], "score": round(float(score), 5),
             "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in points]}
            for box, score, points in zip(self.boxes, self.scores, self.landmarks)
        ]


# ---------------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------------


def _synchronize(tensor: Tensor) -> None:
    if tensor.is_cuda:
        torch.cuda.synchronize(tensor.device)


class InferenceTimer:
    """Network and post-processing time of a RetinaFace in eval mode, per image, measured with module hooks.

    :meth:`attach` registers a pre-hook on the model (start), a hook on its last landmark head (end of the network)
    and a hook on the model (end of decoding, thresholding and NMS). Calls in train mode are not measured. On CUDA
    each mark synchronises the device, so the times are wall-clock times of the work, not of kernel launches.
    """

    def __init__(self) -> None:
        self.images = 0
        self.forward_seconds = 0.0
        self.postprocess_seconds = 0.0
        self._start: float | None = None
        self._network_end: float | None = None
        self._batch_size = 0

    def reset(self) -> None:
        """Forget the accumulated times."""
        self.images = 0
        self.forward_seconds = 0.0
        self.postprocess_seconds = 0.0
        self._start = None
        self._network_end = None

    def attach(self, model: RetinaFace) -> list[RemovableHandle]:
        """Register the hooks on ``model``; returns their handles (``handle.remove()`` detaches)."""
        return [
            model.register_forward_pre_hook(self._on_start),
            model.LandmarkHead[-1].register_forward_hook(self._on_network_end),
            model.register_forward_hook(self._on_end),
        ]

    def _on_start(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._start = None
        self._network_end = None
        images = args[0] if args else None
        if module.training or not isinstance(images, Tensor):
            return
        _synchronize(images)
        self._batch_size = int(images.shape[0])
        self._start = time.perf_counter()

    def _on_network_end(self, module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
        if self._start is None:
            return
        _synchronize(output)
        self._network_end = time.perf_counter()

    def _on_end(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self._start is None or self._network_end is None:
            return
        if isinstance(output, list) and output and isinstance(output[0], Mapping):
            _synchronize(output[0]["scores"])
        end = time.perf_counter()
        self.forward_seconds += self._network_end - self._start
        self.postprocess_seconds += end - self._network_end
        self.images += self._batch_size
        self._start = None
        self._network_end = None

    def add(self, *, forward_seconds: float, postprocess_seconds: float, images: int = 1) -> None:
        """Add a measurement taken outside the hooks (prediction times the two parts itself)."""
        self.forward_seconds += forward_seconds
        self.postprocess_seconds += postprocess_seconds
        self.images += images

    def summary(self) -> str:
        """``"N images: forward X ms, post-processing Y ms per image (Z images/s)"``."""
        if not self.images:
            return "no image timed"
        forward_ms = 1e3 * self.forward_seconds / self.images
        post_ms = 1e3 * self.postprocess_seconds / self.images
        total = self.forward_seconds + self.postprocess_seconds
        rate = self.images / total if total > 0 else float("inf")
        return (f"{self.images} images: forward {forward_ms:.1f} ms, post-processing {post_ms:.2f} ms per image "
                f"({rate:.1f} images/s)")


# ---------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _restrict_ground_truth(ground_truth: WiderFaceGroundTruth, keys: Sequence[str], *,
                           source: str) -> WiderFaceGroundTruth:
    """The official ground truth of the images ``keys`` only (in the official order)."""
    position = {image_id: index for index, image_id in enumerate(ground_truth.image_ids)}
    missing = [key for key in keys if key not in position]
    if missing:
        raise ValueError(f"{len(missing)} of {len(keys)} evaluated images are not in the official ground truth "
                         f"{source}, e.g. {missing[:3]}; the keys are '<event>/<image name>' such as "
                         f"{ground_truth.image_ids[:1]} (unset face.gt_dir to evaluate against the annotations)")
    order = sorted(position[key] for key in set(keys))
    if len(order) < ground_truth.num_images:
        logger.info("official WIDER FACE ground truth restricted to the %d evaluated images (of %d)", len(order),
                    ground_truth.num_images)
    return WiderFaceGroundTruth(
        image_ids=tuple(ground_truth.image_ids[index] for index in order),
        boxes=tuple(ground_truth.boxes[index] for index in order),
        counted={difficulty: tuple(ground_truth.counted[difficulty][index] for index in order)
                 for difficulty in DIFFICULTIES},
    )


class FaceDetectionEvaluator:
    """WIDER FACE average precision and landmark NME of a face detector over one split.

    Metrics (fractions in [0, 1]):

    * ``ap``: WIDER-style AP against the split's own annotated boxes, every face counting (what a model fine-tuned
      on its own faces is judged by). Computed with the official matching code (IoU >= 0.5 with inclusive pixels,
      min-max normalised scores, 1000 thresholds); images without annotated faces are skipped, as in the official
      tool, so their detections are not counted as false positives. Present when the split has annotated faces.
    * ``ap_easy``, ``ap_medium``, ``ap_hard``: the official WIDER FACE AP, when ``ground_truth`` is given (the
      official ``.mat`` files), restricted to the evaluated images (identical to the official numbers on the whole
      val set).
    * ``nme``: mean landmark error normalised by ``sqrt(w * h)`` of the face box (see
      :func:`~visiontune.evaluation.widerface.landmark_nme`), over annotated faces with landmarks that a detection
      scoring at least ``landmark_score_threshold`` overlaps with IoU >= 0.5 (the highest-IoU detection). NaN when
      no such face was detected. Present when the split has landmark annotations.

    Args:
        records: the split's annotations (original pixels), defining the evaluated images.
        ground_truth: official WIDER FACE ground truth, or None.
        ground_truth_source: where ``ground_truth`` came from (for messages).
        landmark_score_threshold: minimum detection score for the landmark NME.
        timer: inference timer whose per-image times are logged by :meth:`compute` (reset by :meth:`reset`).

    ``update`` takes the model outputs (one dict per image, pixels of the network input) and the targets of
    :class:`~visiontune.data.widerface.WiderFaceDataset` (``image_id``, ``scale``).
    """

    def __init__(
        self,
        records: Sequence[WiderFaceRecord],
        *,
        ground_truth: WiderFaceGroundTruth | None = None,
        ground_truth_source: str = "face.gt_dir",
        landmark_score_threshold: float = 0.5,
        timer: InferenceTimer | None = None,
    ) -> None:
        self.records = {record.image_id: record for record in records}
        if len(self.records) != len(records):
            raise ValueError("the evaluated split lists an image id twice")
        self.ground_truth = ground_truth
        self.ground_truth_source = ground_truth_source
        self.landmark_score_threshold = landmark_score_threshold
        self.timer = timer
        self.predictions: dict[str, FacePredictions] = {}
        self.results: dict[str, WiderFaceResult] = {}
        self.has_faces = any(record.num_faces for record in records)
        self.has_landmarks = any(bool(record.landmarks_valid.any()) for record in records)
        if ground_truth is None and not self.has_faces:
            raise ValueError("the evaluated split has no annotated face and face.gt_dir is not set: there is nothing "
                             "to compute AP against (give annotations, or the official ground truth in face.gt_dir)")

    def reset(self) -> None:
        self.predictions = {}
        self.results = {}
        if self.timer is not None:
            self.timer.reset()

    def update(self, outputs: Sequence[Mapping[str, Tensor]], targets: Sequence[Mapping[str, Any]]) -> None:
        """Store one batch of detections, mapped back to original pixels (divided by ``target["scale"]``)."""
        if len(outputs) != len(targets):
            raise ValueError(f"got {len(outputs)} outputs for {len(targets)} targets")
        for output, target in zip(outputs, targets):
            image_id = target["image_id"]
            if image_id not in self.records:
                raise ValueError(f"image {image_id!r} is not part of the evaluated split")
            self.predictions[image_id] = FacePredictions.from_output(output, scale=float(target.get("scale", 1.0)))

    def synchronize(self) -> None:
        """Gather the predictions of every rank (each image kept once)."""
        merged: dict[str, FacePredictions] = {}
        for part in all_gather_objects(self.predictions):
            for image_id, predictions in part.items():
                merged.setdefault(image_id, predictions)
        self.predictions = merged

    def compute(self) -> dict[str, float]:
        missing = len(self.records) - len(self.predictions)
        if missing:
            logger.warning("%d of %d images of the split were not evaluated (counted as no detections)", missing,
                           len(self.records))
        metrics: dict[str, float] = {}
        self.results = {}
        if self.has_faces:
            self.results["all"] = self._annotation_ap()
            metrics["ap"] = float(self.results["all"].ap["all"])
        if self.ground_truth is not None:
            self.results["official"] = self._official_ap()
            metrics.update(self.results["official"].as_dict())
        if self.has_landmarks:
            metrics["nme"] = self._landmark_nme()
        if self.timer is not None and self.timer.images:
            logger.info("evaluation timing: %s", self.timer.summary())
        return metrics

    def _annotation_ap(self) -> WiderFaceResult:
        """AP against the split's annotations, every face counting; the result is keyed ``"all"``."""
        image_ids = list(self.records)
        keys = [f"split/{index:07d}" for index in range(len(image_ids))]
        boxes = tuple(_xyxy_to_xywh(self.records[image_id].boxes) for image_id in image_ids)
        every_face = tuple(np.ones(len(box_array), dtype=bool) for box_array in boxes)
        ground_truth = WiderFaceGroundTruth(image_ids=tuple(keys), boxes=boxes,
                                            counted={difficulty: every_face for difficulty in DIFFICULTIES})
        predictions = {key: self.predictions[image_id].xywh_scores()
                       for key, image_id in zip(keys, image_ids) if image_id in self.predictions}
        result = evaluate_widerface(predictions, ground_truth, iou_threshold=MATCH_IOU)
        return WiderFaceResult(ap={"all": result.ap["easy"]}, precision={"all": result.precision["easy"]},
                               recall={"all": result.recall["easy"]}, thresholds=result.thresholds,
                               num_faces={"all": result.num_faces["easy"]}, num_predictions=result.num_predictions,
                               num_images_without_predictions=result.num_images_without_predictions)

    def _official_ap(self) -> WiderFaceResult:
        assert self.ground_truth is not None
        keys = _unique_keys(self.records)
        ground_truth = _restrict_ground_truth(self.ground_truth, list(keys.values()), source=self.ground_truth_source)
        predictions = {keys[image_id]: predictions.xywh_scores() for image_id, predictions in self.predictions.items()}
        return evaluate_widerface(predictions, ground_truth, iou_threshold=MATCH_IOU)

    def _landmark_nme(self) -> float:
        predicted, annotated, boxes = [], [], []
        for image_id, record in self.records.items():
            faces = np.flatnonzero(record.landmarks_valid)
            predictions = self.predictions.get(image_id)
            if predictions is None or not len(faces):
                continue
            detections = predictions.above(self.landmark_score_threshold)
            if not len(detections):
                continue
            iou = _box_iou(record.boxes[faces].astype(np.float64), detections.boxes)
            best = iou.argmax(axis=1)
            matched = iou[np.arange(len(faces)), best] >= MATCH_IOU
            predicted.append(detections.landmarks[best[matched]])
            annotated.append(record.landmarks[faces[matched]].astype(np.float64))
            boxes.append(record.boxes[faces[matched]].astype(np.float64))
        if not predicted or not sum(len(part) for part in predicted):
            logger.warning("no face with annotated landmarks was detected with score >= %g: nme is NaN",
                           self.landmark_score_threshold)
            return float("nan")
        stacked_boxes = np.concatenate(boxes)
        return landmark_nme(np.concatenate(predicted), np.concatenate(annotated), stacked_boxes,
                            np.ones(len(stacked_boxes), dtype=bool), box_format="xyxy")

    def save_artifacts(self, out_dir: Path) -> list[Path]:
        """Write the predictions in the official layout and the PR curves.

        * ``widerface_predictions/<event>/<image>.txt``: every detection, ``x y w h score`` in original pixels
          (:func:`widerface_image_key` names the files);
        * ``pr_curve.png``: precision / recall against the annotations (``ap``), when computed;
        * ``pr_curves_widerface.png``: official easy / medium / hard curves, when computed.

        Returns:
            The written paths.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if not self.results:
            self.compute()
        keys = _unique_keys(self.records)
        written = write_widerface_predictions(
            out_dir / "widerface_predictions",
            {keys[image_id]: predictions.xywh_scores() for image_id, predictions in sorted(self.predictions.items())},
        )
        if "all" in self.results:
            written.append(plot_widerface_pr_curves(self.results["all"], out_dir / "pr_curve.png",
                                                    title="Faces of the split", difficulties=("all",)))
        if "official" in self.results:
            written.append(plot_widerface_pr_curves(self.results["official"], out_dir / "pr_curves_widerface.png",
                                                    title="WIDER FACE"))
        return written


def _box_iou(boxes: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Plain IoU of xyxy boxes ``[N, 4]`` and ``[K, 4]`` -> ``[N, K]`` (0 for empty unions)."""
    top_left = np.maximum(boxes[:, None, :2], other[None, :, :2])
    bottom_right = np.minimum(boxes[:, None, 2:], other[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0.0, None).prod(axis=2)
    areas = (boxes[:, 2:] - boxes[:, :2]).prod(axis=1)
    other_areas = (other[:, 2:] - other[:, :2]).prod(axis=1)
    union = areas[:, None] + other_areas[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


# ---------------------------------------------------------------------------------------------------------------
# Prediction helpers
# ---------------------------------------------------------------------------------------------------------------


def _output_names(images: Sequence[Path], source: Path) -> list[PurePosixPath]:
    """Output path (relative, without suffix) per image: relative to the source folder, else the file name."""
    base = source if source.is_dir() else source.parent
    names = []
    for image in images:
        try:
            relative = PurePosixPath(image.resolve().relative_to(base.resolve()).as_posix())
        except ValueError:
            relative = PurePosixPath(image.name)
        names.append(relative.with_suffix(""))
    seen: dict[PurePosixPath, Path] = {}
    for name, image in zip(names, images):
        if name in seen:
            raise ValueError(f"{seen[name]} and {image} would both be written as {name}.*; predict them separately")
        seen[name] = image
    return names


def draw_faces(image: Image.Image, faces: FacePredictions) -> Image.Image:
    """Draw boxes, scores and the five landmarks of ``faces`` (original pixels) on a copy of an RGB image."""
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(min(canvas.size) / 300))
    radius = max(1.5, width * 1.5)
    for box, score, points in zip(faces.boxes, faces.scores, faces.landmarks):
        x1, y1, x2, y2 = (float(value) for value in box)
        draw.rectangle((x1, y1, x2, y2), outline=BOX_COLOR, width=width)
        draw.text((x1, max(0.0, y1 - 11 - width)), f"{score:.2f}", fill=BOX_COLOR)
        for (x, y), color in zip(points, LANDMARK_COLORS):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=color)
    return canvas


def _oriented_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image after its EXIF orientation, from the file header."""
    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSING_ORIENTATIONS:
            width, height = height, width
    return height, width


class _DroppedFaceCounter(logging.Handler):
    """Counts the faces the WIDER FACE parser drops; it reports them in one warning per file."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "dropped %d face(s)" in str(record.msg) and isinstance(record.args, tuple) and len(record.args) > 1:
            self.dropped += int(record.args[1])


def _parse_with_dropped_count(path: Path, annotation_format: str) -> tuple[list[WiderFaceRecord], int]:
    """Parse an annotation file and count the degenerate boxes the parser dropped."""
    parser_logger = logging.getLogger("visiontune.data.widerface")
    counter = _DroppedFaceCounter()
    parser_logger.addHandler(counter)
    try:
        records = load_annotations(path, annotation_format)
    finally:
        parser_logger.removeHandler(counter)
    return records, counter.dropped


# ---------------------------------------------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------------------------------------------


class FaceDetectionTask(Task):
    """RetinaFace (MobileNet-0.25 / ResNet-50) face detection with five landmarks.

    ``default_metric`` is ``ap_hard`` when ``face.gt_dir`` is set (official WIDER FACE evaluation), else ``ap``.
    """

    name = "face_detection"
    metric_mode = "max"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.timer = InferenceTimer()
        self._ground_truth: WiderFaceGroundTruth | None = None

    @property
    def default_metric(self) -> str:  # type: ignore[override]
        return "ap_hard" if self.config.face.gt_dir else "ap"

    # ------------------------------------------------------------------ data
    def _annotation_path(self, split: str) -> Path:
        data = self.config.data
        if data.root is None:
            raise ValueError("data.root is not set: point it at the dataset folder (e.g. data.root=path/to/widerface)")
        if data.format not in ANNOTATION_FORMATS:
            raise ValueError(f"data.format: {data.format!r} is not a face detection format; use one of "
                             f"{', '.join(ANNOTATION_FORMATS)}{suggest(data.format, ANNOTATION_FORMATS)}")
        return Path(data.root) / split

    def images_root(self, *, train: bool) -> Path:
        """Folder the annotation paths are relative to (``data.images_dir``, or ``data.val_images_dir``)."""
        data = self.config.data
        folder = data.images_dir if train or not data.val_images_dir else data.val_images_dir
        return Path(data.root or ".") / folder

    def eval_transform(self) -> FaceEvalTransform:
        """Original size (``face.origin_size``) or the 1600 / ``face.max_size`` rescale, minus ``face.rgb_mean``."""
        face = self.config.face
        target_size = None if face.origin_size else face.target_size
        return FaceEvalTransform(target_size, max_size=face.max_size, mean=tuple(face.rgb_mean))

    def build_dataset(self, split: str, *, train: bool) -> Dataset:
        annotation_file = self._annotation_path(split)
        face = self.config.face
        if train:
            if self.config.data.format == "list":
                raise ValueError(f"data.format=list has no annotations and cannot be trained on ({annotation_file}); "
                                 "use retinaface or official")
            transform: Any = RetinaFaceTrainTransform(self.config.data.image_size, mean=tuple(face.rgb_mean))
        else:
            transform = self.eval_transform()
        dataset = WiderFaceDataset(self.images_root(train=train), annotation_file,
                                   annotation_format=self.config.data.format, transform=transform)
        num_faces = sum(record.num_faces for record in dataset.records)
        if train and num_faces == 0:
            raise ValueError(f"{annotation_file}: the training split has no face")
        logger.info("%s: %d images, %d faces (%s)", annotation_file, len(dataset), num_faces,
                    "training augmentation" if train else repr(dataset.transform))
        if not train:
            self._resolve_eval_batch_size(dataset)
        return dataset

    def _resolve_eval_batch_size(self, dataset: WiderFaceDataset) -> None:
        """Evaluate one image per batch unless every image has the same evaluated size.

        An unset ``data.eval_batch_size`` becomes 1 when the sizes differ (logged); an explicit size > 1 with
        differing sizes is an error, since the images cannot be stacked.
        """
        data = self.config.data
        batch_size = data.eval_batch_size or data.batch_size
        if batch_size == 1:
            return
        transform = self.eval_transform()
        sizes: dict[tuple[int, int], str] = {}
        for index, record in enumerate(dataset.records):
            height, width = _oriented_size(dataset.image_path(index))
            scale = compute_eval_scale(height, width, target_size=transform.target_size, max_size=transform.max_size)
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            sizes.setdefault(size, record.relative_path)
            if len(sizes) > 1:
                break
        if len(sizes) <= 1:
            return
        examples = ", ".join(f"{path} -> {height}x{width}" for (height, width), path in sizes.items())
        if data.eval_batch_size is not None:
            raise ValueError(f"data.eval_batch_size={data.eval_batch_size}: the evaluated images differ in size "
                             f"({examples}) and cannot be batched; set data.eval_batch_size=1")
        logger.info("evaluating one image per batch (data.eval_batch_size=1): the images differ in size (%s)",
                    examples)
        data.eval_batch_size = 1

    def collate_fn(self, *, train: bool) -> Callable:
        return collate_faces

    # ------------------------------------------------------------------ model
    @property
    def backbone_name(self) -> str:
        """RetinaFace backbone of ``model.name``."""
        name = self.config.model.name
        if name not in RETINAFACE_MODELS:
            raise ValueError(f"model.name: {name!r} is not a face detection model"
                             f"{suggest(name, list(RETINAFACE_MODELS))}; valid: {', '.join(RETINAFACE_MODELS)}")
        return RETINAFACE_MODELS[name]

    def _check_model_config(self, model: RetinaFace) -> None:
        model_config, face = self.config.model, self.config.face
        if model_config.num_classes not in (None, 2):
            raise ValueError(f"model.num_classes={model_config.num_classes}: RetinaFace detects one class (face); "
                             "leave model.num_classes unset (or 2, counting the background)")
        if model_config.pretrained:
            raise ValueError("model.pretrained: there is no hub download for RetinaFace; set model.checkpoint (trained "
                             "RetinaFace, e.g. mobilenet0.25_Final.pth) or model.backbone_checkpoint (ImageNet body)")
        if model_config.kwargs:
            raise ValueError(f"model.kwargs={model_config.kwargs!r} is not used by face detection; RetinaFace settings "
                             "live in the face section")
        in_channel = model.body.feature_channels[0] // 2
        if face.in_channel is not None and face.in_channel != in_channel:
            raise ValueError(f"face.in_channel={face.in_channel}, but {model_config.name} has in_channel {in_channel} "
                             f"(body features {list(model.body.feature_channels)}); leave it unset")
        out_channel = RETINAFACE_BACKBONES[self.backbone_name].out_channels
        if face.out_channel is not None and face.out_channel != out_channel:
            raise ValueError(f"face.out_channel={face.out_channel}, but {model_config.name} has out_channel "
                             f"{out_channel}; leave it unset")

    def build_model(self, *, load_weights: bool = True) -> nn.Module:
        model_config, face = self.config.model, self.config.face
        if len(face.variance) != 2:
            raise ValueError(f"face.variance: expected two numbers (centre, size), got {face.variance}")
        prior_config = PriorConfig(min_sizes=tuple(tuple(sizes) for sizes in face.min_sizes), steps=tuple(face.steps),
                                   clip=face.clip)
        loss = RetinaFaceLoss(loc_weight=face.loc_weight, class_weight=face.class_weight,
                              landm_weight=face.landm_weight, match_thresh=face.match_thresh,
                              neg_pos_ratio=face.neg_pos_ratio, variances=(face.variance[0], face.variance[1]))
        postprocess = RetinaFacePostprocessConfig(score_threshold=face.conf_thresh, pre_nms_top_k=face.top_k,
                                                  nms_iou_threshold=face.nms_thresh, max_detections=face.keep_top_k)
        model = create_retinaface(self.backbone_name, prior_config=prior_config, loss=loss, postprocess=postprocess)
        self._check_model_config(model)
        if load_weights:
            self._load_initial_weights(model)
        self.timer.attach(model)
        return model

    def _load_initial_weights(self, model: RetinaFace) -> None:
        model_config = self.config.model
        if model_config.backbone_checkpoint:
            report = self.load_backbone_weights(model, model_config.backbone_checkpoint)
            self.meta["backbone_load_report"] = report.as_dict()
        if model_config.checkpoint:
            if model_config.backbone_checkpoint:
                logger.info("model.checkpoint replaces the backbone weights of model.backbone_checkpoint")
            report = self.load_weights(model, model_config.checkpoint)
            self.meta["load_report"] = report.as_dict()
        if not model_config.checkpoint and not model_config.backbone_checkpoint:
            logger.warning("%s starts from random weights: set model.checkpoint (trained RetinaFace) or "
                           "model.backbone_checkpoint (ImageNet body)", model_config.name)

    def load_weights(self, model: RetinaFace, path: str | Path) -> LoadReport:
        """Load a trained RetinaFace (reference ``*_Final.pth``, visiontune checkpoint, MindSpore ``.ckpt``).

        Head tensors (class, box and landmark heads) of another shape are re-initialised; fewer than
        ``model.min_loaded_fraction`` of the other tensors loaded is an error.
        """
        model_config = self.config.model
        state_dict = read_weights(path, key=model_config.checkpoint_key, arch=model_config.name)
        parts = self.model_parts(model)
        return load_weights_with_report(model, state_dict, source=str(path), is_head=parts.is_head,
                                        min_loaded_fraction=model_config.min_loaded_fraction)

    def load_backbone_weights(self, model: RetinaFace, path: str | Path) -> LoadReport:
        """Load ImageNet weights into ``model.body`` (``mobilenetV1X0.25_pretrain.tar``, torchvision ResNet-50);
        the ImageNet classifier (``fc.*``) is left out."""
        state_dict = read_weights(path, key=self.config.model.checkpoint_key)
        classifier = [key for key in state_dict if key.startswith("fc.")]
        if classifier:
            logger.info("%s: not loading the ImageNet classifier %s", path, classifier)
        body_weights = {key: value for key, value in state_dict.items() if not key.startswith("fc.")}
        return load_weights_with_report(model.body, body_weights, source=str(path),
                                        min_loaded_fraction=self.config.model.min_loaded_fraction)

    def model_parts(self, model: nn.Module) -> ModelParts:
        """Head: class, box and landmark heads. Layer groups: the body's stem and stages, then the FPN, then SSH."""
        parts = ModelParts(head=list(HEAD_MODULES))
        groups: list[list[str]] = []
        for child_name, child in model.body.named_children():
            names = [f"body.{child_name}.{name}" for name, _ in child.named_parameters()]
            if not names:
                continue
            is_stage = child_name.startswith(("stage", "layer"))
            if is_stage or not groups:
                groups.append(names)
            else:
                groups[-1].extend(names)
        groups.append([f"fpn.{name}" for name, _ in model.fpn.named_parameters()])
        groups.append([f"{module}.{name}" for module in ("ssh1", "ssh2", "ssh3")
                       for name, _ in getattr(model, module).named_parameters()])
        parts.layer_groups = [group for group in groups if group]
        return parts

    # ------------------------------------------------------------------ evaluation
    def ground_truth(self) -> WiderFaceGroundTruth | None:
        """The official WIDER FACE ground truth of ``face.gt_dir`` (loaded once), or None."""
        gt_dir = self.config.face.gt_dir
        if not gt_dir:
            return None
        if self._ground_truth is None:
            self._ground_truth = load_widerface_ground_truth(gt_dir)
        return self._ground_truth

    def build_evaluator(self, dataset: Dataset) -> FaceDetectionEvaluator:
        if not isinstance(dataset, WiderFaceDataset):
            raise TypeError(f"face detection evaluates a WiderFaceDataset, got {type(dataset).__name__}")
        return FaceDetectionEvaluator(dataset.records, ground_truth=self.ground_truth(),
                                      ground_truth_source=f"face.gt_dir={self.config.face.gt_dir}",
                                      landmark_score_threshold=self.config.face.vis_thresh, timer=self.timer)

    # ------------------------------------------------------------------ check-data
    def data_problems(self) -> tuple[str, bool]:
        """Parse the annotation files, decode every image and count faces, empty images and missing landmarks."""
        from visiontune.data.image_check import scan_images

        data = self.config.data
        splits = [(data.train_split, True)] + ([(data.val_split, False)] if data.val_split else [])
        lines = [f"face detection data in {data.root} (format {data.format})"]
        has_errors = False
        for split, train in splits:
            annotation_file = self._annotation_path(split)
            try:
                records, dropped = _parse_with_dropped_count(annotation_file, data.format)
            except (ValueError, FileNotFoundError) as error:
                lines.append(f"{split}: error: {error}")
                has_errors = True
                continue
            images_root = self.images_root(train=train)
            findings = scan_images((images_root / record.relative_path for record in records), desc=split,
                                   num_workers=data.num_workers, progress=self.config.train.progress)
            faces = sum(record.num_faces for record in records)
            empty = sum(1 for record in records if record.num_faces == 0)
            without_landmarks = sum(int((~record.landmarks_valid).sum()) for record in records)
            lines.append(f"{split}: {len(records)} images in {images_root}, {faces} faces; {empty} images without "
                         f"faces; {without_landmarks} faces without landmarks; {dropped} degenerate boxes dropped "
                         "(width or height <= 0)")
            errors = [finding for finding in findings if finding.level == "error"]
            warnings = [finding for finding in findings if finding.level == "warning"]
            for finding in errors[:20] + warnings[:20]:
                lines.append(f"  {finding.level}: {finding.format()}")
            if len(errors) > 20 or len(warnings) > 20:
                lines.append(f"  ... {len(errors)} errors and {len(warnings)} warnings in all")
            if errors:
                has_errors = True
            if train and faces == 0 and data.format != "list":
                lines.append(f"  error: the training split {split} has no face")
                has_errors = True
            if train and data.format == "list":
                lines.append("  error: data.format=list has no annotations; the training split needs faces")
                has_errors = True
        lines.append("errors found" if has_errors else "no errors found")
        return "\n".join(lines), has_errors

    # ------------------------------------------------------------------ prediction
    def predict(self, model: nn.Module, source: str, output_dir: Path, *, device: torch.device) -> list[Path]:
        """Detect faces in ``source`` (image, folder, or text list of images / video frames).

        Writes per image ``<name>.json`` (``image``, ``width``, ``height``, ``forward_ms``, ``postprocess_ms`` and
        ``faces``: ``box`` xyxy, ``score``, ``landmarks`` five ``[x, y]``, in original pixels, scores >=
        ``face.vis_thresh``) and ``<name>.<suffix>`` with the faces drawn. Logs the per-image times.
        """
        if not isinstance(model, RetinaFace):
            raise TypeError(f"face detection predicts with a RetinaFace, got {type(model).__name__}")
        images = collect_images(source)
        names = _output_names(images, Path(source))
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        transform = self.eval_transform()
        threshold = self.config.face.vis_thresh
        timer = InferenceTimer()
        written: list[Path] = []
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for image_path, name in zip(images, names):
                bgr = load_bgr_image(image_path)
                tensor, target = transform(bgr, FaceInstances.empty())
                detections, forward_seconds, post_seconds = _timed_detect(model, tensor[None].to(device))
                timer.add(forward_seconds=forward_seconds, postprocess_seconds=post_seconds)
                faces = FacePredictions.from_output(detections, scale=float(target["scale"])).above(threshold)
                logger.debug("%s: %d faces, forward %.1f ms, post-processing %.2f ms", image_path, len(faces),
                             1e3 * forward_seconds, 1e3 * post_seconds)
                json_path = output_dir / f"{name}.json"
                json_path.parent.mkdir(parents=True, exist_ok=True)
                record = {"image": str(image_path), "width": int(bgr.shape[1]), "height": int(bgr.shape[0]),
                          "scale": float(target["scale"]), "forward_ms": round(1e3 * forward_seconds, 3),
                          "postprocess_ms": round(1e3 * post_seconds, 3), "score_threshold": threshold,
                          "faces": faces.as_json()}
                json_path.write_text(json.dumps(record, indent=1), encoding="utf-8")
                suffix = image_path.suffix.lower() if image_path.suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
                drawn_path = output_dir / f"{name}{suffix}"
                rgb = Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))
                draw_faces(rgb, faces).save(drawn_path)
                written.extend([json_path, drawn_path])
        model.train(was_training)
        logger.info("predicted %d images into %s; %s", len(images), output_dir, timer.summary())
        return written


def _timed_detect(model: RetinaFace, images: Tensor) -> tuple[dict[str, Tensor], float, float]:
    """Detections of one image and the seconds spent in the network and in post-processing."""
    _synchronize(images)
    start = time.perf_counter()
    box_deltas, class_scores, landmark_deltas = model.forward_raw(images)
    _synchronize(box_deltas)
    network_end = time.perf_counter()
    image_size = (int(images.shape[-2]), int(images.shape[-1]))
    (detections,) = postprocess_detections(
        box_deltas.float(), class_scores.float(), landmark_deltas.float(),
        priors=model.priors(image_size, device=images.device), image_size=image_size, config=model.postprocess,
        box_coder=model.loss.box_coder,
    )
    _synchronize(detections["scores"])
    end = time.perf_counter()
    return detections, network_end - start, end - network_end

