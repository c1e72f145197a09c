"""Face detection with five landmarks: RetinaFace fine-tuning, WIDER FACE evaluation and prediction.

The task wires the RetinaFace components into the shared engine:

* data: :class:`~visiontune.data.widerface_dataset.WiderFaceDataset` in the ``retinaface`` (``label.txt``), ``official``
  (``wider_face_*_bbx_gt.txt``) or ``list`` layout; training uses the reference augmentation at
  ``data.image_size``, evaluation the original size (``face.origin_size``) or the reference 1600 / ``face.max_size``
  rescale, one image per batch unless every evaluated image has the same size.
* model: :func:`~visiontune.models.retinaface.create_retinaface` with the ``face`` section's prior, loss and
  post-processing settings; ``model.checkpoint`` (reference ``mobilenet0.25_Final.pth``, a visiontune checkpoint or
  a MindSpore ``.ckpt``) and ``model.backbone_checkpoint`` (ImageNet weights of the body) load with a load report.
* evaluation: :class:`~visiontune.evaluation.face_detection.FaceDetectionEvaluator` (WIDER FACE ``ap``,
  ``ap_easy`` / ``ap_medium`` / ``ap_hard`` with ``face.gt_dir``, landmark ``nme``), timed by the task's
  :class:`~visiontune.utils.timing.InferenceTimer`.
* prediction: one JSON per image (boxes, scores, five landmarks in original pixels) plus a drawn copy;
  :meth:`FaceDetectionTask.predict_with` runs the same loop with any detector (the ONNX Runtime one included).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import Dataset

from visiontune.config import Config
from visiontune.data.face_instances import FaceInstances
from visiontune.data.face_transforms import FaceEvalTransform, RetinaFaceTrainTransform
from visiontune.data.sources import collect_images
from visiontune.data.validation import read_utf8_text
from visiontune.data.widerface_annotations import ANNOTATION_FORMATS, read_annotations
from visiontune.data.widerface_dataset import WiderFaceDataset, collate_faces, faces_outside_images, load_bgr_image
from visiontune.evaluation.face_detection import FaceDetectionEvaluator, FacePredictions
from visiontune.evaluation.widerface_ground_truth import WiderFaceGroundTruth, load_widerface_ground_truth
from visiontune.models.loading import LoadReport, load_weights_with_report, read_weights
from visiontune.models.parts import ModelParts
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
from visiontune.tasks.base import DataCheck, Task, lookup_model_name, split_images_dir
from visiontune.utils.drawing import draw_faces
from visiontune.utils.paths import output_names, relative_posix, safe_output_names
from visiontune.utils.timing import InferenceTimer, synchronize_device

__all__ = ["RETINAFACE_MODELS", "FaceDetectionTask", "FaceDetector"]

logger = logging.getLogger(__name__)

RETINAFACE_MODELS: dict[str, str] = {
    "retinaface_mobilenet0.25": "mobilenet0.25",
    "retinaface_resnet50": "resnet50",
}
"""``model.name`` -> backbone name of :func:`~visiontune.models.retinaface.create_retinaface`."""

HEAD_MODULES: tuple[str, ...] = ("ClassHead", "BboxHead", "LandmarkHead")
"""Top-level RetinaFace modules that form the task head."""

DRAWN_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")
"""Image suffixes a drawn copy keeps; other images are drawn as ``.png``."""

FaceDetector = Callable[[Tensor], tuple[dict[str, Tensor], float, float]]
"""Detects faces in one preprocessed image ``Tensor[3, H, W]``: the detections in pixels of that image (``boxes``,
``scores``, ``landmarks [K, 5, 2]``) and the seconds spent in the network and in post-processing."""


class FaceDetectionTask(Task):
    """RetinaFace (MobileNet-0.25 / ResNet-50) face detection with five landmarks.

    ``default_metric`` is ``ap_hard`` when ``face.gt_dir`` is set (official WIDER FACE evaluation), else ``ap``.
    """

    name = "face_detection"
    metric_mode = "max"
    metric_names = ("ap", "ap_easy", "ap_medium", "ap_hard", "nme")  # ap_*: with face.gt_dir; nme: with landmarks

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

    def images_root(self, *, train: bool, split: str | None = None) -> Path:
        """Folder the annotation paths are relative to (``data.images_dir``, or ``data.val_images_dir`` /
        ``data.test_images_dir``: :func:`~visiontune.tasks.base.split_images_dir`)."""
        data = self.config.data
        return Path(data.root or ".") / split_images_dir(data, split, train=train)

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
        dataset = WiderFaceDataset(self.images_root(train=train, split=split), annotation_file,
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
        sizes = dataset.eval_sizes(self.eval_transform())
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
        return lookup_model_name(self.config.model.name, RETINAFACE_MODELS, "a face detection model")

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
        body: Any = model.body  # a RetinaFace body: feature_channels lists its output channels
        in_channel = body.feature_channels[0] // 2
        if face.in_channel is not None and face.in_channel != in_channel:
            raise ValueError(f"face.in_channel={face.in_channel}, but {model_config.name} has in_channel {in_channel} "
                             f"(body features {list(body.feature_channels)}); leave it unset")
        out_channel = RETINAFACE_BACKBONES[self.backbone_name].out_channels
        if face.out_channel is not None and face.out_channel != out_channel:
            raise ValueError(f"face.out_channel={face.out_channel}, but {model_config.name} has out_channel "
                             f"{out_channel}; leave it unset")

    def build_model(self, *, load_weights: bool = True) -> nn.Module:
        face = self.config.face
        if len(face.variance) != 2:
            raise ValueError(f"face.variance: expected two numbers (centre, size), got {face.variance}")
        prior_config = PriorConfig(min_sizes=tuple(tuple(sizes) for sizes in face.min_sizes), steps=tuple(face.steps),
                                   clip=face.clip)
        loss = RetinaFaceLoss(loc_weight=face.loc_weight, class_weight=face.class_weight,
                              landm_weight=face.landm_weight, match_thresh=face.match_thresh,
                              neg_pos_ratio=face.neg_pos_ratio, variances=(face.variance[0], face.variance[1]))
        model = create_retinaface(self.backbone_name, prior_config=prior_config, loss=loss,
                                  postprocess=self.postprocess_config())
        self._check_model_config(model)
        if load_weights:
            self._load_initial_weights(model)
        self.timer.attach(model, model.LandmarkHead[-1])
        return model

    def postprocess_config(self) -> RetinaFacePostprocessConfig:
        """The reference test settings of the ``face`` section: score > ``face.conf_thresh``, the ``face.top_k``
        best, NMS at ``face.nms_thresh`` with the reference's ``py_cpu_nms`` geometry (inclusive pixels, width
        ``x2 - x1 + 1``), the first ``face.keep_top_k``. The inclusive NMS reproduces the reference's low-score
        detections, on which the published WIDER FACE AP depends (plain NMS keeps ~7% more boxes on crowded photos
        and moves hard AP by ~1.5e-3 on the fixture photos)."""
        face = self.config.face
        return RetinaFacePostprocessConfig(score_threshold=face.conf_thresh, pre_nms_top_k=face.top_k,
                                           nms_iou_threshold=face.nms_thresh, max_detections=face.keep_top_k,
                                           nms_inclusive_pixels=True)

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
        body: Any = model.body
        fpn: Any = model.fpn
        for child_name, child in body.named_children():
            names = [f"body.{child_name}.{name}" for name, _ in child.named_parameters()]
            if not names:
                continue
            is_stage = child_name.startswith(("stage", "layer"))
            if is_stage or not groups:
                groups.append(names)
            else:
                groups[-1].extend(names)
        groups.append([f"fpn.{name}" for name, _ in fpn.named_parameters()])
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
                                      landmark_score_threshold=self.config.face.vis_thresh, timer=self.timer,
                                      wider_boxes=self.config.face.wider_boxes,
                                      image_folder=relative_posix(dataset.root, self.config.data.root))

    # ------------------------------------------------------------------ check-data
    def check_data(self) -> DataCheck:
        """Parse the annotation files, decode every image and count faces, empty images and missing landmarks."""
        data = self.config.data
        splits = [(data.train_split, True)] + [(split, False) for split in dict.fromkeys((data.val_split,
                                                                                      data.test_split)) if split]
        check = DataCheck(f"face detection data in {data.root} (format {data.format})", False, class_names=["face"])
        lines = [check.text]
        for split, train in splits:
            split_lines, split_errors = self._split_problems(split, train=train, check=check)
            lines.extend(split_lines)
            check.has_errors = check.has_errors or split_errors
        duplicates = self.check_duplicates(check)
        if duplicates is not None:
            lines.extend([duplicates[0], *(f"  warning: {warning}" for warning in duplicates[1])])
        lines.append("errors found" if check.has_errors else "no errors found")
        check.text = "\n".join(lines)
        return check

    def _split_problems(self, split: str, *, train: bool, check: DataCheck) -> tuple[list[str], bool]:
        """The check-data lines of one split and whether they report an error; its images go into ``check``."""
        from visiontune.data.image_check import scan_images
        from visiontune.data.validation import orientation_note

        data = self.config.data
        try:
            annotations = read_annotations(self._annotation_path(split), data.format)
        except (ValueError, FileNotFoundError) as error:
            return [f"{split}: error: {error}"], True
        images_root = self.images_root(train=train, split=split)
        check.samples[split] = [{"path": str(images_root / record.relative_path), "boxes": record.boxes.tolist(),
                                 "labels": ["face"] * len(record.boxes),
                                 "landmarks": [points.tolist() if valid else None  # 5 [x, y] or None per face
                                               for points, valid in zip(record.landmarks, record.landmarks_valid)]}
                                for record in annotations.records]
        orientations: dict[Path, int] = {}
        findings = scan_images((images_root / record.relative_path for record in annotations.records), desc=split,
                               num_workers=data.num_workers, progress=self.config.train.progress,
                               orientations=orientations)
        check.flagged.extend({"path": str(finding.path), "reason": finding.message, "split": split}
                             for finding in findings)
        lines = [f"{split}: {len(annotations.records)} images in {images_root}, {annotations.counts()}"]
        errors = [finding for finding in findings if finding.level == "error"]
        warnings = [finding for finding in findings if finding.level == "warning"]
        lines.extend(f"  {finding.level}: {finding.format()}" for finding in errors[:20] + warnings[:20])
        outside = faces_outside_images(annotations, images_root, skip={finding.path for finding in errors})
        lines.extend(f"  warning: {message}" for _, message in outside[:20])
        check.flagged.extend({"path": str(path), "reason": "face box outside the image", "split": split}
                             for path, _ in outside)
        if len(errors) > 20 or len(warnings) > 20:
            lines.append(f"  ... {len(errors)} errors and {len(warnings)} warnings in all")
        note = orientation_note(orientations)
        lines.extend([f"  note: {note}"] if note else [])
        training_error = None
        if train and data.format == "list":
            training_error = "data.format=list has no annotations; the training split needs faces"
        elif train and annotations.num_faces == 0:
            training_error = f"the training split {split} has no face"
        if training_error:
            lines.append(f"  error: {training_error}")
        return lines, bool(errors) or training_error is not None

    # ------------------------------------------------------------------ prediction
    def predict(self, model: nn.Module, source: str, output_dir: Path, *, device: torch.device) -> list[Path]:
        """Detect faces in ``source`` (image, folder, or text list of images / video frames) with ``model``.

        Writes the files of :meth:`predict_image` per image and logs the per-image times.
        """
        if not isinstance(model, RetinaFace):
            raise TypeError(f"face detection predicts with a RetinaFace, got {type(model).__name__}")
        was_training = model.training
        model.eval()
        with torch.no_grad():
            written = self.predict_with(lambda image: _timed_detect(model, image[None].to(device)), source,
                                        output_dir)
        model.train(was_training)
        return written

    def predict_with(self, detect: FaceDetector, source: str, output_dir: Path, *,
                     detector_name: str = "") -> list[Path]:
        """The prediction loop with any :data:`FaceDetector` (the PyTorch model, an ONNX Runtime session).

        Args:
            detect: runs on each preprocessed image.
            source: an image, a folder, a text list of images / video frames, or an annotation file the training
                reads: a WIDER / RetinaFace ``label.txt`` (``# <image path>`` lines) or an official
                ``wider_face_*_bbx_gt.txt``. Annotated images are looked up in ``data.root / data.val_images_dir``
                (or ``data.images_dir``), else in ``images/`` next to the file, else next to the file.
            output_dir: where :meth:`predict_image` writes, mirroring the source folder (image names that would
                leave it are flattened, see :func:`~visiontune.utils.paths.safe_output_names`).
            detector_name: named in the closing log line (e.g. the ONNX file).

        Returns:
            The written files, two per image; for an annotation file also ``metrics.json`` (``ap``, ``nme``, and
            ``ap_easy`` / ``ap_medium`` / ``ap_hard`` with ``face.gt_dir``, as the evaluation computes them, kept in
            ``self.predict_metrics``) and the evaluation artifacts (WIDER prediction files, PR curves).
        """
        output_dir = Path(output_dir)
        annotations = self._annotated_source(Path(source))
        if annotations is None:
            images = collect_images(source)
            wanted: list[str | PurePosixPath] = list(output_names(images, Path(source)))
            records = None
        else:
            images_root, records = annotations
            images = [images_root / record.relative_path for record in records]
            wanted = [record.relative_path for record in records]
        names = safe_output_names(output_dir, wanted, source=source, suffixes=(".json", *DRAWN_SUFFIXES))
        output_dir.mkdir(parents=True, exist_ok=True)
        timer = InferenceTimer()
        written: list[Path] = []
        detections: dict[str, FacePredictions] = {}
        self.predict_metrics = {}
        for index, (image_path, name) in enumerate(zip(images, names)):
            keep = None if records is None else (detections, records[index].image_id)
            written.extend(self.predict_image(detect, image_path, output_dir, name, timer=timer, keep=keep))
        logger.info("predicted %d images%s into %s; %s", len(images), f" with {detector_name}" if detector_name else "",
                    output_dir, timer.summary())
        if records is not None:
            written.extend(self._predict_metrics(records, detections, output_dir, source))
        return written

    def _annotated_source(self, path: Path) -> tuple[Path, list[Any]] | None:
        """``(images root, records)`` when ``path`` is a label.txt / official annotation file, else None."""
        if not path.is_file() or path.suffix.lower() != ".txt":
            return None
        lines = [line.strip() for line in read_utf8_text(path).splitlines() if line.strip()][:2]
        if lines and lines[0].startswith("#"):
            annotation_format = "retinaface"
        elif len(lines) == 2 and lines[0].lower().endswith((".jpg", ".jpeg", ".png")) and lines[1].isdigit():
            annotation_format = "official"
        else:
            return None
        records = read_annotations(path, annotation_format).records
        if not records:
            raise ValueError(f"{path}: the annotation file lists no image")
        candidates = ([self.images_root(train=False)] if self.config.data.root else []) + [path.parent / "images",
                                                                                              path.parent]
        for root in candidates:
            if (root / records[0].relative_path).is_file():
                logger.info("predicting the %d annotated images of %s (%s layout, images in %s)", len(records), path,
                            annotation_format, root)
                return root, records
        raise ValueError(f"{path}: image {records[0].relative_path} not found in "
                         f"{', '.join(str(root) for root in candidates)} (set data.root and data.val_images_dir)")

    def _predict_metrics(self, records: list[Any], detections: dict[str, FacePredictions], output_dir: Path,
                         source: str) -> list[Path]:
        """The evaluation metrics of the annotated source's detections: logged, ``metrics.json`` and artifacts."""
        if not any(record.num_faces for record in records) and self.ground_truth() is None:
            logger.warning("%s has no annotated face and face.gt_dir is not set: no metrics", source)
            return []
        evaluator = FaceDetectionEvaluator(records, ground_truth=self.ground_truth(),
                                           ground_truth_source=f"face.gt_dir={self.config.face.gt_dir}",
                                           landmark_score_threshold=self.config.face.vis_thresh,
                                           wider_boxes=self.config.face.wider_boxes)
        evaluator.predictions = detections
        metrics_path = self.save_predict_metrics(evaluator.compute(), output_dir, source,
                                                 wider_boxes=self.config.face.wider_boxes)
        return [metrics_path, *evaluator.save_artifacts(output_dir)]

    def predict_image(self, detect: FaceDetector, image_path: Path, output_dir: Path, name: PurePosixPath | str, *,
                      timer: InferenceTimer | None = None,
                      keep: tuple[dict[str, FacePredictions], str] | None = None) -> list[Path]:
        """Detect the faces of one image file and write its prediction files.

        ``keep=(store, image_id)`` also stores every detection (all scores, original pixels) as ``store[image_id]``
        for the metrics of an annotated source.

        Writes ``<name>.json`` (``image``, ``width``, ``height``, ``scale``, ``forward_ms``, ``postprocess_ms``,
        ``score_threshold`` and ``faces``: ``box`` xyxy, ``score``, ``landmarks`` five ``[x, y]``, in original
        pixels, scores >= ``face.vis_thresh``) and ``<name>.<suffix>`` with the faces drawn, under ``output_dir``.

        Returns:
            The JSON and the drawn image.
        """
        bgr = load_bgr_image(image_path)
        tensor, target = self.eval_transform()(bgr, FaceInstances.empty())
        detections, forward_seconds, post_seconds = detect(tensor)
        if timer is not None:
            timer.add(forward_seconds=forward_seconds, postprocess_seconds=post_seconds)
        threshold = self.config.face.vis_thresh
        every_face = FacePredictions.from_output(detections, scale=float(target["scale"]))
        if keep is not None:
            keep[0][keep[1]] = every_face
        faces = every_face.above(threshold)
        logger.debug("%s: %d faces, forward %.1f ms, post-processing %.2f ms", image_path, len(faces),
                     1e3 * forward_seconds, 1e3 * post_seconds)
        json_path = output_dir / f"{name}.json"
        json_path.parent.mkdir(parents=True, exist_ok=True)
        record = {"image": str(image_path), "width": int(bgr.shape[1]), "height": int(bgr.shape[0]),
                  "scale": float(target["scale"]), "forward_ms": round(1e3 * forward_seconds, 3),
                  "postprocess_ms": round(1e3 * post_seconds, 3), "score_threshold": threshold,
                  "faces": faces.as_json()}
        json_path.write_text(json.dumps(record, indent=1), encoding="utf-8")
        suffix = image_path.suffix.lower() if image_path.suffix.lower() in DRAWN_SUFFIXES else ".png"
        drawn_path = output_dir / f"{name}{suffix}"
        rgb = Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))
        draw_faces(rgb, faces.boxes, faces.scores, faces.landmarks).save(drawn_path)
        return [json_path, drawn_path]


def _timed_detect(model: RetinaFace, images: Tensor) -> tuple[dict[str, Tensor], float, float]:
    """Detections of one image and the seconds spent in the network and in post-processing."""
    synchronize_device(images)
    start = time.perf_counter()
    box_deltas, class_scores, landmark_deltas = model.forward_raw(images)
    synchronize_device(box_deltas)
    network_end = time.perf_counter()
    image_size = (int(images.shape[-2]), int(images.shape[-1]))
    (detections,) = postprocess_detections(
        box_deltas.float(), class_scores.float(), landmark_deltas.float(),
        priors=model.priors(image_size, device=images.device), image_size=image_size, config=model.postprocess,
        box_coder=model.loss.box_coder,
    )
    synchronize_device(detections["scores"])
    end = time.perf_counter()
    return detections, network_end - start, end - network_end

