"""Face detection with five landmarks, evaluated: WIDER FACE average precision and landmark NME over one split.

:class:`FacePredictions` holds the detections of one image in original pixels (the record both evaluation and
prediction write); :class:`FaceDetectionEvaluator` accumulates them over a split and computes the metrics with the
official matching code of :mod:`visiontune.evaluation.widerface`.

Image ids are the annotation paths without extension (``0--Parade/0_Parade_marchingband_1_465``). The official
ground truth and prediction layout key images as ``<event>/<image name>``
(:func:`~visiontune.evaluation.widerface_ground_truth.widerface_image_key`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from visiontune.evaluation.widerface import (
    WiderFacePerImage,
    WiderFaceResult,
    evaluate_widerface,
    landmark_nme,
    plot_widerface_pr_curves,
)
from visiontune.evaluation.widerface_ground_truth import DIFFICULTIES, WiderFaceGroundTruth, widerface_image_keys
from visiontune.evaluation.widerface_predictions import (
    NonFinitePredictionError,
    check_box_mode,
    wider_xywh,
    write_widerface_predictions,
)
from visiontune.utils.boxes import box_iou, xyxy_to_xywh
from visiontune.utils.comm import all_gather_objects
from visiontune.utils.files import atomic_write_json
from visiontune.utils.timing import InferenceTimer

__all__ = ["MATCH_IOU", "AnnotatedFaces", "FaceDetectionEvaluator", "FacePredictions"]

logger = logging.getLogger(__name__)

MATCH_IOU = 0.5
"""IoU for a detection to match an annotated face (official WIDER FACE threshold)."""


class AnnotatedFaces(Protocol):
    """The annotation of one evaluated image (:class:`~visiontune.data.widerface.WiderFaceRecord`)."""

    boxes: np.ndarray
    """``[N, 4]`` xyxy, original pixels."""
    landmarks: np.ndarray
    """``[N, 5, 2]`` (x, y), original pixels."""
    landmarks_valid: np.ndarray
    """``bool [N]``."""

    @property
    def image_id(self) -> str: ...

    @property
    def num_faces(self) -> int: ...


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

    def xywh_scores(self, boxes: str = "int") -> np.ndarray:
        """``float64 [K, 5]`` ``x, y, w, h, score`` (the WIDER FACE prediction format).

        ``boxes="int"``: whole pixels as the reference tools write them
        (:func:`~visiontune.evaluation.widerface_predictions.wider_xywh`); ``"decimal"``: unchanged.
        """
        return np.concatenate([wider_xywh(self.boxes, boxes), self.scores[:, None]], axis=1)

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
        wider_boxes: ``"int"`` (default): AP and the prediction files use whole-pixel boxes, ``x = int(x1)``,
            ``w = int(x2) - int(x1)``, as the reference tools that computed the published WIDER FACE AP;
            ``"decimal"``: the detections' decimal boxes (``face.wider_boxes``). Logged by :meth:`compute`.
        image_folder: the folder of the records' images relative to ``data.root``: messages name an image
            ``<image_folder>/<relative_path>``.

    Raises:
        NonFinitePredictionError: from :meth:`update`, when an image's detections hold NaN or infinite values.

    ``update`` takes the model outputs (one dict per image, pixels of the network input) and the targets of
    :class:`~visiontune.data.widerface_dataset.WiderFaceDataset` (``image_id``, ``scale``).
    """

    def __init__(
        self,
        records: Sequence[AnnotatedFaces],
        *,
        ground_truth: WiderFaceGroundTruth | None = None,
        ground_truth_source: str = "face.gt_dir",
        landmark_score_threshold: float = 0.5,
        timer: InferenceTimer | None = None,
        wider_boxes: str = "int",
        image_folder: str = "",
    ) -> None:
        self.wider_boxes = check_box_mode(wider_boxes)
        self.image_folder = image_folder
        self.records = {record.image_id: record for record in records}
        if len(self.records) != len(records):
            raise ValueError("the evaluated split lists an image id twice")
        self.ground_truth = ground_truth
        self.ground_truth_source = ground_truth_source
        self.landmark_score_threshold = landmark_score_threshold
        self.timer = timer
        self.predictions: dict[str, FacePredictions] = {}
        self.results: dict[str, WiderFaceResult] = {}
        self._official_image_ids: tuple[str, ...] = ()
        self.has_faces = any(record.num_faces for record in records)
        self.has_landmarks = any(bool(record.landmarks_valid.any()) for record in records)
        if ground_truth is None and not self.has_faces:
            raise ValueError("the evaluated split has no annotated face and face.gt_dir is not set: there is nothing "
                             "to compute AP against (give annotations, or the official ground truth in face.gt_dir)")

    def reset(self) -> None:
        self.predictions = {}
        self.results = {}
        self._official_image_ids = ()
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
            predictions = FacePredictions.from_output(output, scale=float(target.get("scale", 1.0)))
            self._check_finite(predictions, image_id)
            self.predictions[image_id] = predictions

    def _check_finite(self, predictions: FacePredictions, image_id: str) -> None:
        """Refuse NaN / infinite detections, naming the image file (relative to ``data.root``) and the first one."""
        for field_name in ("boxes", "scores", "landmarks"):
            values = getattr(predictions, field_name).reshape(len(predictions), -1)
            broken = np.flatnonzero(~np.isfinite(values).all(axis=1))
            if len(broken):
                record = self.records[image_id]
                image = str(PurePosixPath(self.image_folder, getattr(record, "relative_path", image_id)))
                raise NonFinitePredictionError(
                    f"predictions of image '{image}' have a NaN or infinite value: {field_name} of detection "
                    f"{int(broken[0])} of {len(predictions)} is {values[broken[0]].tolist()}", image=image)

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
        if self.has_faces or self.ground_truth is not None:
            logger.info("WIDER FACE AP from %s (face.wider_boxes=%s)", "whole-pixel boxes x=int(x1), "
                        "w=int(x2)-int(x1), as the reference tools" if self.wider_boxes == "int" else "decimal boxes",
                        self.wider_boxes)
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

    def per_image_results(self) -> WiderFacePerImage | None:
        """The per-image counts behind ``ap`` and ``ap_easy`` / ``ap_medium`` / ``ap_hard`` of the last
        :meth:`compute`, images in the split's order (for bootstrap intervals); None before it or without AP."""
        parts: list[WiderFacePerImage] = []
        annotation, official = self.results.get("all"), self.results.get("official")
        if annotation is not None and annotation.per_image is not None:
            parts.append(annotation.per_image.select({"ap_easy": "ap"}))
        if official is not None and official.per_image is not None:
            keys = widerface_image_keys(self.records)
            position: dict[str, int] = {}
            for index, image_id in enumerate(self.records):
                position.setdefault(keys[image_id], index)
            order = np.array([position[key] for key in self._official_image_ids], dtype=np.int64)
            names = {f"ap_{difficulty}": f"ap_{difficulty}" for difficulty in DIFFICULTIES}
            parts.append(official.per_image.select(names, image_order=order, num_images=len(self.records)))
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else parts[0].merged(parts[1])

    def _annotation_ap(self) -> WiderFaceResult:
        """AP against the split's annotations, every face counting; the result is keyed ``"all"``."""
        image_ids = list(self.records)
        keys = [f"split/{index:07d}" for index in range(len(image_ids))]
        boxes = tuple(xyxy_to_xywh(self.records[image_id].boxes) for image_id in image_ids)
        every_face = tuple(np.ones(len(box_array), dtype=bool) for box_array in boxes)
        ground_truth = WiderFaceGroundTruth(image_ids=tuple(keys), boxes=boxes,
                                            counted={difficulty: every_face for difficulty in DIFFICULTIES})
        predictions = {key: self.predictions[image_id].xywh_scores(self.wider_boxes)
                       for key, image_id in zip(keys, image_ids) if image_id in self.predictions}
        result = evaluate_widerface(predictions, ground_truth, iou_threshold=MATCH_IOU)
        return WiderFaceResult(ap={"all": result.ap["easy"]}, precision={"all": result.precision["easy"]},
                               recall={"all": result.recall["easy"]}, thresholds=result.thresholds,
                               num_faces={"all": result.num_faces["easy"]}, num_predictions=result.num_predictions,
                               num_images_without_predictions=result.num_images_without_predictions,
                               per_image=result.per_image)

    def _official_ap(self) -> WiderFaceResult:
        assert self.ground_truth is not None
        keys = widerface_image_keys(self.records)
        ground_truth = _restrict_ground_truth(self.ground_truth, list(keys.values()), source=self.ground_truth_source)
        self._official_image_ids = ground_truth.image_ids
        predictions = {keys[image_id]: predictions.xywh_scores(self.wider_boxes)
                       for image_id, predictions in self.predictions.items()}
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
            iou = box_iou(record.boxes[faces], detections.boxes)
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
          (:func:`~visiontune.evaluation.widerface_ground_truth.widerface_image_key` names the files), boxes as
          ``wider_boxes`` says (whole pixels by default, as the reference tools write them);
        * ``detections.json``: the detections scoring at least ``landmark_score_threshold``, with landmarks:
          ``{"score_threshold": t, "images": {key: [{"box": xyxy, "score": s, "landmarks": [[x, y] x 5]}]}}`` in
          original pixels (what the run report draws);
        * ``pr_curve.png``: precision / recall against the annotations (``ap``), when computed;
        * ``pr_curves_widerface.png``: official easy / medium / hard curves, when computed.

        Returns:
            The written paths.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if not self.results:
            self.compute()
        keys = widerface_image_keys(self.records)
        written = write_widerface_predictions(
            out_dir / "widerface_predictions",
            {keys[image_id]: predictions.xywh_scores(self.wider_boxes)
             for image_id, predictions in sorted(self.predictions.items())},
        )
        detections = {"score_threshold": self.landmark_score_threshold,
                      "images": {keys[image_id]: predictions.above(self.landmark_score_threshold).as_json()
                                 for image_id, predictions in sorted(self.predictions.items())}}
        written.append(atomic_write_json(detections, out_dir / "detections.json"))
        if "all" in self.results:
            written.append(plot_widerface_pr_curves(self.results["all"], out_dir / "pr_curve.png",
                                                    title="Faces of the split", difficulties=("all",)))
        if "official" in self.results:
            written.append(plot_widerface_pr_curves(self.results["official"], out_dir / "pr_curves_widerface.png",
                                                    title="WIDER FACE"))
        return written
