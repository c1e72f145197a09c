"""Instance segmentation: Mask R-CNN fine-tuning on COCO-format data, COCO box and mask AP, mask prediction.

The task wires the Mask R-CNN components into the shared engine:

* data: :class:`~visiontune.data.coco_dataset.CocoInstanceDataset` (``data.format: coco``); ``data.train_split`` and
  ``data.val_split`` are COCO instances files relative to ``data.root``, the images live in ``data.images_dir``
  (``data.val_images_dir`` for the validation split). ``data.categories`` keeps a subset of the categories, remapped
  to labels ``1..K`` in the given order (all categories by ascending id when unset). Training applies
  ``data.empty_images`` and the detection augmentation (flip ``data.hflip``, resize to ``segmentation.min_size`` /
  ``max_size``, photometric distortion when ``data.color_jitter`` is set); evaluation keeps every image.
* model: torchvision Mask R-CNN ResNet-50-FPN (``maskrcnn_resnet50_fpn`` = v1, ``maskrcnn_resnet50_fpn_v2`` = v2)
  from :func:`~visiontune.models.maskrcnn.create_maskrcnn`. ``model.init``: ``coco`` loads a COCO-trained detector
  (``model.checkpoint``, or torchvision's download with ``model.pretrained: true``) and re-initialises the box and
  mask predictors; ``backbone`` loads an ImageNet ResNet-50 (``model.backbone_checkpoint``) into the body; ``none``
  starts from random weights. ``finetune.trainable_backbone_layers`` (0-5) trains the top ResNet stages only.
* evaluation (:class:`~visiontune.evaluation.instance_segmentation.InstanceSegmentationEvaluator`): COCO box and
  mask AP with pycocotools (``bbox_*`` and ``segm_*`` keys, fractions in [0, 1]); the artifacts are the COCO
  results JSON (original category ids, RLE masks) and a few PNG overlays.
* prediction: ``results.json`` (COCO results, RLE masks, original category ids), ``images.json`` (the matching
  ``images`` / ``categories`` header) and one PNG overlay per image at ``segmentation.vis_thresh``.

``self.meta`` holds what rebuilding the trained model needs, as plain JSON-like values: ``class_names``,
``label_to_category`` (``[{"label": 1, "id": 84, "name": "book"}, ...]``), ``variant``, ``frozen_batchnorm``,
``frozen_batchnorm_eps`` and ``trainable_backbone_layers``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from visiontune.config import Config, ModelConfig, load_config
from visiontune.data.coco_check import check_coco_data
from visiontune.data.coco_dataset import CocoInstanceDataset
from visiontune.data.coco_format import parse_coco_instances
from visiontune.data.detection_transforms import (
    collate_detection,
    create_aspect_ratio_groups,
    make_detection_eval_transforms,
    make_detection_train_transforms,
)
from visiontune.data.samplers import imbalance_summary
from visiontune.data.sources import collect_images
from visiontune.evaluation.coco import results_to_coco_json
from visiontune.evaluation.instance_segmentation import InstanceSegmentationEvaluator, with_category_ids
from visiontune.models.maskrcnn import (
    InitMode,
    MaskRCNNVariant,
    create_maskrcnn,
    drop_preset_weights,
    load_initial_weights,
    resolve_batchnorm,
)
from visiontune.models.parts import ModelParts
from visiontune.tasks.base import DataCheck, Task, lookup_model_name, split_images_dir
from visiontune.tasks.instance_segmentation_predict import (
    PredictItem,
    coco_prediction_source,
    has_instances,
    write_coco_results,
)
from visiontune.utils.drawing import draw_instances
from visiontune.utils.image import open_rgb
from visiontune.utils.image_tensors import rgb_to_tensor, tensor_to_rgb
from visiontune.utils.paths import output_names, safe_output_names

__all__ = ["MASKRCNN_MODELS", "InstanceSegmentationTask"]

logger = logging.getLogger(__name__)

MASKRCNN_MODELS: dict[str, str] = {"maskrcnn_resnet50_fpn": "v1", "maskrcnn_resnet50_fpn_v2": "v2"}
"""``model.name`` -> variant of :func:`~visiontune.models.maskrcnn.create_maskrcnn`."""

HEAD_PREFIXES: tuple[str, ...] = ("roi_heads.box_predictor", "roi_heads.mask_predictor")
"""The class-specific layers: re-initialised for a new class count, the only trainable part of a linear probe.
The RPN is class-agnostic and keeps its COCO weights, so it is not part of the head."""

SEGMENTATION_KWARGS: tuple[str, ...] = ("min_size", "max_size", "box_score_thresh", "box_detections_per_img")
"""MaskRCNN arguments set from the ``segmentation`` section; ``model.kwargs`` may not repeat them."""

_STRUCTURE_KEYS = ("variant", "frozen_batchnorm", "frozen_batchnorm_eps", "trainable_backbone_layers")
"""Meta entries that rebuild the trained modules (BatchNorm kind and eps, frozen stages)."""
_META_KEYS = ("class_names", "label_to_category", *_STRUCTURE_KEYS)


def preset_model_config(config: Config) -> ModelConfig | None:
    """The ``model`` section of the ``-c`` preset file of ``config`` alone (what the command line changed shows
    against it), or None without a readable preset."""
    preset = config.preset_file
    if preset is None or not Path(preset).is_file():
        return None
    try:
        return load_config(preset).model
    except ValueError:
        return None


class InstanceSegmentationTask(Task):
    """Mask R-CNN (ResNet-50-FPN v1 / v2) fine-tuning on COCO-format instance segmentation data."""

    name = "instance_segmentation"
    default_metric = "segm_AP"
    metric_mode = "max"
    metric_names = tuple(f"{kind}_{name}" for kind in ("segm", "bbox")
                         for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AP_*"))  # AP_*: per category

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._removed_boxes = 0

    # ------------------------------------------------------------------ data
    def _annotation_path(self, split: str) -> Path:
        data = self.config.data
        if data.root is None:
            raise ValueError("data.root is not set: point it at the COCO folder (e.g. data.root=coco2017)")
        if data.format != "coco":
            raise ValueError(f"data.format: {data.format!r} is not an instance segmentation format; use coco "
                             "(a COCO instances JSON per split)")
        return Path(data.root) / split

    def images_root(self, *, train: bool, split: str | None = None) -> Path:
        """Folder the ``file_name`` entries are relative to (``data.images_dir``, or ``data.val_images_dir`` /
        ``data.test_images_dir``: :func:`~visiontune.tasks.base.split_images_dir`)."""
        data = self.config.data
        return Path(data.root or ".") / split_images_dir(data, split, train=train)

    def _categories(self) -> list[str] | None:
        """Category names to keep: the trained classes once known, else ``data.categories`` (None: all)."""
        requested = list(self.config.data.categories) if self.config.data.categories is not None else None
        known = self.meta.get("class_names")
        if known is None:
            return requested
        if requested is not None and requested != list(known):
            raise ValueError(f"data.categories={requested} differs from the model's classes {list(known)} "
                             "(labels 1..K in this order); leave data.categories unset or give the same list")
        return list(known)

    def train_group_ids(self, dataset: Dataset) -> list[int] | None:
        """Aspect-ratio bins of the training images (``segmentation.aspect_ratio_grouping``), as torchvision's
        detection reference groups them: batches of like-shaped images need less padding."""
        if not self.config.segmentation.aspect_ratio_grouping:
            return None
        return create_aspect_ratio_groups(cast(CocoInstanceDataset, dataset).aspect_ratios())

    def build_dataset(self, split: str, *, train: bool) -> Dataset:
        """A :class:`~visiontune.data.coco_dataset.CocoInstanceDataset` of the annotation file ``data.root / split``.

        The first training split sets ``meta["class_names"]`` and ``meta["label_to_category"]``; every later split
        is read with the same category names, so a category missing from it is an error naming the file.
        """
        data, segmentation = self.config.data, self.config.segmentation
        annotation_file = self._annotation_path(split)
        if train:
            transforms: Callable = make_detection_train_transforms(
                min_size=segmentation.min_size, max_size=segmentation.max_size, horizontal_flip_prob=data.hflip,
                photometric=bool(data.color_jitter))
        else:
            transforms = make_detection_eval_transforms()
        dataset = CocoInstanceDataset(self.images_root(train=train, split=split), annotation_file,
                                      categories=self._categories(),
                                      empty_images=data.empty_images if train else "keep", transforms=transforms)
        if len(dataset) == 0:
            raise ValueError(f"{annotation_file}: the split has no image to {'train' if train else 'evaluate'} on")
        num_instances = sum(len(records) for records in dataset.annotations.instances.values())
        if train and num_instances == 0:
            raise ValueError(f"{annotation_file}: no training instance of the categories {dataset.class_names}")
        if "class_names" not in self.meta:
            self.meta["class_names"] = dataset.class_names
            self.meta["label_to_category"] = [{"label": label, "id": int(info["id"]), "name": str(info["name"])}
                                              for label, info in sorted(dataset.label_to_category.items())]
        logger.info("%s: %d images, %d instances of %d categories %s (%s)", annotation_file, len(dataset),
                    num_instances, len(dataset.class_names), dataset.class_names,
                    "training augmentation" if train else "no augmentation")
        return dataset

    def collate_fn(self, *, train: bool) -> Callable:
        return collate_detection

    def prepare_train_batch(self, images: Any, targets: Any) -> tuple[Any, Any]:
        """Count the boxes the augmentation removed as degenerate (warned once per run, then logged at debug)."""
        removed = sum(int(target.get("num_removed_boxes", 0)) for target in targets)
        if removed:
            if self._removed_boxes == 0:
                ids = [target.get("image_id") for target in targets if target.get("num_removed_boxes")]
                logger.warning("augmentation left %d box(es) under 1 pixel in image id(s) %s; they were removed with "
                               "their masks (further removals are logged at debug level)", removed, ids)
            else:
                logger.debug("augmentation removed %d more degenerate box(es) (%d so far)", removed,
                             self._removed_boxes + removed)
            self._removed_boxes += removed
        return images, targets

    # ------------------------------------------------------------------ model
    @property
    def variant(self) -> str:
        """Mask R-CNN variant (``v1`` / ``v2``) of ``model.name``."""
        return lookup_model_name(self.config.model.name, MASKRCNN_MODELS, "an instance segmentation model")

    @property
    def class_names(self) -> list[str]:
        if "class_names" not in self.meta:
            raise ValueError("the classes are unknown: build the training dataset first (or load a checkpoint's meta)")
        return list(self.meta["class_names"])

    @property
    def num_classes(self) -> int:
        """Model classes including the background: ``K + 1``."""
        return len(self.class_names) + 1

    @property
    def label_to_category_id(self) -> dict[int, int]:
        """Model label ``1..K`` -> original COCO category id."""
        return {int(entry["label"]): int(entry["id"]) for entry in self.meta["label_to_category"]}

    def _check_model_config(self) -> None:
        model_config = self.config.model
        if model_config.num_classes not in (None, self.num_classes):
            raise ValueError(f"model.num_classes={model_config.num_classes}, but the data has {len(self.class_names)} "
                             f"categories ({self.num_classes} classes with the background); leave it unset")
        repeated = sorted(set(model_config.kwargs) & {*SEGMENTATION_KWARGS, "num_classes", "weights",
                                                      "weights_backbone", "trainable_backbone_layers"})
        if repeated:
            raise ValueError(f"model.kwargs sets {repeated}: use the segmentation section (min_size, max_size, "
                             "box_score_thresh, detections_per_img), finetune.trainable_backbone_layers and model.init")
        if model_config.checkpoint_key is not None:
            raise ValueError("model.checkpoint_key is not used by instance segmentation: the Mask R-CNN reader "
                             "unwraps 'model', 'state_dict' and 'model_state_dict' itself")

    def _initial_weights(self) -> tuple[str, str | None, str | None]:
        """``(init, checkpoint, backbone_checkpoint)`` from the ``model`` section, checked for consistency."""
        model_config = self.config.model
        init = model_config.init
        preset = preset_model_config(self.config)
        checkpoint, backbone = drop_preset_weights(
            init, model_config.checkpoint, model_config.backbone_checkpoint,
            preset_init=preset.init if preset else None, preset_checkpoint=preset.checkpoint if preset else None,
            preset_backbone_checkpoint=preset.backbone_checkpoint if preset else None)
        if checkpoint and init != "coco":
            raise ValueError(f"model.checkpoint is a Mask R-CNN state dict and needs model.init=coco (got "
                             f"model.init={init}): to start without {checkpoint}, add model.checkpoint=null; ImageNet "
                             "ResNet-50 weights (.pth, or a MindSpore .ckpt) go in model.backbone_checkpoint")
        if backbone and init != "backbone":
            raise ValueError(f"model.backbone_checkpoint needs model.init=backbone (got model.init={init}): to start "
                             f"without {backbone}, add model.backbone_checkpoint=null")
        if init == "coco" and not checkpoint and not model_config.pretrained:
            raise ValueError("model.init=coco: set model.checkpoint to a local COCO Mask R-CNN file (e.g. "
                             "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth), or model.pretrained=true to download it")
        if init == "backbone" and not backbone and not model_config.pretrained:
            raise ValueError("model.init=backbone: set model.backbone_checkpoint to a local ImageNet ResNet-50 file "
                             "(e.g. resnet50-0676ba61.pth), or model.pretrained=true to download it")
        if init == "none" and model_config.pretrained:
            raise ValueError("model.pretrained=true with model.init=none: choose model.init=coco (COCO detector) or "
                             "model.init=backbone (ImageNet ResNet-50)")
        return init, checkpoint, backbone

    def _structure(self, *, load_weights: bool) -> dict[str, Any]:
        """BatchNorm and freezing settings of the model: from the config for new weights, else from the meta."""
        if not load_weights and all(key in self.meta for key in _STRUCTURE_KEYS):
            if self.meta["variant"] != self.variant:
                raise ValueError(f"model.name={self.config.model.name} ({self.variant}) but the checkpoint holds a "
                                 f"{self.meta['variant']} Mask R-CNN")
            return {key: self.meta[key] for key in _STRUCTURE_KEYS}
        init = self.config.model.init
        frozen, eps = resolve_batchnorm(cast(MaskRCNNVariant, self.variant), init)
        layers = self.config.finetune.trainable_backbone_layers
        return {"variant": self.variant, "frozen_batchnorm": frozen, "frozen_batchnorm_eps": eps,
                "trainable_backbone_layers": (5 if init == "none" else 3) if layers is None else layers}

    def build_model(self, *, load_weights: bool = True) -> nn.Module:
        """The Mask R-CNN for ``meta``'s classes; with ``load_weights`` the ``model.init`` weights are loaded.

        Without ``load_weights`` (evaluation, prediction, resume) the stored BatchNorm and freezing settings rebuild
        exactly the trained modules, so the checkpoint's state dict loads with ``strict=True``.
        """
        self._check_model_config()
        init, checkpoint, backbone_checkpoint = self._initial_weights() if load_weights else ("none", None, None)
        structure = self._structure(load_weights=load_weights)
        segmentation = self.config.segmentation
        model = create_maskrcnn(
            structure["variant"], num_classes=self.num_classes, init="none",
            trainable_backbone_layers=structure["trainable_backbone_layers"], min_size=segmentation.min_size,
            max_size=segmentation.max_size, frozen_batchnorm=structure["frozen_batchnorm"],
            frozen_batchnorm_eps=structure["frozen_batchnorm_eps"], box_score_thresh=segmentation.box_score_thresh,
            box_detections_per_img=segmentation.detections_per_img, **self.config.model.kwargs,
        )
        self.meta.update(structure)
        if load_weights:
            report = load_initial_weights(model, structure["variant"], cast(InitMode, init), checkpoint=checkpoint,
                                          backbone_checkpoint=backbone_checkpoint)
            if report is None:
                logger.warning("%s starts from random weights (model.init=none): set model.init=coco with "
                               "model.checkpoint, or model.init=backbone with model.backbone_checkpoint",
                               self.config.model.name)
                self.meta.pop("load_report", None)
            else:
                self.meta["load_report"] = report.as_dict()
        return model

    def model_parts(self, model: nn.Module) -> ModelParts:
        """Head: the box and mask predictors. Layer groups, input side first: stem (``conv1``/``bn1``), ``layer1`` ..
        ``layer4``, FPN, RPN, ROI heads (box and mask heads without the predictors)."""
        parts = ModelParts(head=list(HEAD_PREFIXES))
        names = [name for name, _ in model.named_parameters()]
        prefixes: list[tuple[str, ...]] = [("backbone.body.conv1.", "backbone.body.bn1.")]
        prefixes += [(f"backbone.body.layer{index}.",) for index in range(1, 5)]
        prefixes += [("backbone.fpn.",), ("rpn.",), ("roi_heads.",)]
        groups = [[name for name in names if name.startswith(group) and not parts.is_head(name)] for group in prefixes]
        parts.layer_groups = [group for group in groups if group]
        return parts

    # ------------------------------------------------------------------ meta
    def load_meta(self, meta: dict[str, Any]) -> None:
        """Restore the classes and model settings of a checkpoint (validated)."""
        missing = [key for key in _META_KEYS if key not in meta]
        if missing:
            raise ValueError(f"the checkpoint's meta lacks {missing}: is it an instance segmentation checkpoint? "
                             f"(meta keys: {sorted(meta)})")
        names = meta["class_names"]
        entries = meta["label_to_category"]
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise ValueError(f"checkpoint meta: class_names must be a list of names, got {names!r}")
        valid = isinstance(entries, list) and all(isinstance(entry, Mapping) for entry in entries)
        if not valid or [entry.get("label") for entry in entries] != list(range(1, len(names) + 1)) \
                or [entry.get("name") for entry in entries] != names:
            raise ValueError(f"checkpoint meta: label_to_category {entries!r} does not list labels 1..{len(names)} "
                             f"with the class names {names}")
        super().load_meta(meta)

    # ------------------------------------------------------------------ evaluation
    def build_evaluator(self, dataset: Dataset) -> InstanceSegmentationEvaluator:
        if not isinstance(dataset, CocoInstanceDataset):
            raise TypeError(f"instance segmentation evaluates a CocoInstanceDataset, got {type(dataset).__name__}")
        segmentation = self.config.segmentation
        return InstanceSegmentationEvaluator(dataset, label_to_category_id=self.label_to_category_id,
                                             class_names=self.class_names, mask_threshold=segmentation.mask_thresh,
                                             vis_threshold=segmentation.vis_thresh)

    # ------------------------------------------------------------------ check-data
    def check_data(self) -> DataCheck:
        """Parse each split's COCO file, decode every image and count instances per category.

        Errors: broken annotations, missing/undecodable/wrongly sized images, a category of the training split that
        the validation split lacks, or a training split without any instance.
        """
        data = self.config.data
        splits = [(data.train_split, True)] + [(split, False) for split in dict.fromkeys((data.val_split,
                                                                                      data.test_split)) if split]
        lines: list[str] = []
        has_errors = False
        categories = list(data.categories) if data.categories is not None else None
        check = DataCheck("", False)
        for split, train in splits:
            report = check_coco_data(self.images_root(train=train, split=split), self._annotation_path(split),
                                     categories=categories)
            role = "train" if train else "val" if split == data.val_split else "test"
            lines.append(f"[{role}] {report.format_report()}")
            self._report_samples(check, split, train=train, categories=categories, unreadable=report.unreadable_images)
            if not report.ok:
                has_errors = True
            if train:
                empty = [name for name, count in report.instances_per_category.items() if count == 0]
                if report.ok and len(empty) == len(report.instances_per_category):
                    lines.append(f"  error: the training split {split} has no instance to train on")
                    has_errors = True
                elif empty:
                    lines.append(f"  warning: categories without a training instance: {empty}")
                for counts, what in ((report.instances_per_category, "instances"),
                                     (report.images_per_category, "images")):
                    balance, imbalanced = imbalance_summary(counts, what=what)
                    lines.extend([f"  {balance}", *([f"  warning: {imbalanced}"] if imbalanced else [])])
                if report.ok and categories is None:
                    categories = list(report.instances_per_category)  # the validation split must have them too
        duplicates = self.check_duplicates(check)
        if duplicates is not None:
            lines.extend([duplicates[0], *(f"  warning: {warning}" for warning in duplicates[1])])
        lines.append("errors found" if has_errors else "no errors found")
        check.text, check.has_errors = "\n".join(lines), has_errors
        return check

    def _report_samples(self, check: DataCheck, split: str, *, train: bool, categories: list[str] | None,
                        unreadable: list[str]) -> None:
        """The images of ``split`` with their boxes and labels, and its unreadable images, for the data report."""
        try:
            annotations = parse_coco_instances(self._annotation_path(split), categories=categories)
        except (ValueError, FileNotFoundError):
            return  # a broken file is in the text report; nothing to draw
        if check.class_names is None:
            check.class_names = [entry["name"] for _, entry in sorted(annotations.label_to_category.items())]
        images_root = self.images_root(train=train, split=split)
        check.samples[split] = [
            {"path": str(images_root / record.file_name), "width": record.width, "height": record.height,
             "boxes": [list(instance.box) for instance in annotations.instances.get(image_id, [])],
             "labels": [instance.label for instance in annotations.instances.get(image_id, [])]}
            for image_id, record in annotations.images.items()]
        for entry in unreadable:
            path, _, reason = entry.partition(": ")
            check.flagged.append({"path": path, "reason": reason, "split": split})

    # ------------------------------------------------------------------ prediction
    def predict(self, model: nn.Module, source: str, output_dir: Path, *, device: torch.device) -> list[Path]:
        """Segment the images of ``source``: an image, a folder, a text list of images, or a COCO JSON file.

        A COCO file is read as training reads it, images from ``data.root / data.val_images_dir`` (or
        ``data.images_dir``), else from ``<root>/<split>`` beside ``<root>/annotations/instances_<split>.json``, else
        from ``images/`` next to the file, else next to the file; its image ids and file names are kept. When it
        carries annotations (of the model's categories) the COCO box and mask AP of the predictions are computed by
        the validation evaluator, logged, written to ``metrics.json`` and kept in ``self.predict_metrics``. A COCO
        file without an ``annotations`` list (an image info file) is only predicted.

        Writes ``results.json`` (every detection of the model in the COCO results format: ``image_id``,
        ``category_id`` with the original COCO ids, ``bbox`` ``[x, y, w, h]`` in pixels, ``score``, ``segmentation``
        RLE with str ``counts``), ``images.json`` (``images`` with ``id``/``file_name``/``height``/``width``,
        ``categories``, empty ``annotations``: together they load with ``COCO(images.json).loadRes(results.json)``;
        for a COCO source ``results.json`` also loads against the source file) and ``overlays/<image>.png`` with the
        detections scoring at least ``segmentation.vis_thresh`` (a ``file_name`` that would leave ``output_dir`` is
        flattened, see :func:`~visiontune.utils.paths.safe_output_names`).
        """
        output_dir = Path(output_dir)
        candidates = [self.images_root(train=False), self.images_root(train=True)] if self.config.data.root else []
        coco_source = coco_prediction_source(Path(source), candidates, self.class_names)
        if coco_source is None:
            images = collect_images(source)
            items = [PredictItem(image_id, path, str(name), name) for image_id, (path, name)
                     in enumerate(zip(images, output_names(images, Path(source))), start=1)]
            dataset = None
        else:
            items, dataset = coco_source
        overlay_names = safe_output_names(output_dir, [item.output_name for item in items], source=source,
                                          suffixes=(".png",), folder="overlays")
        output_dir.mkdir(parents=True, exist_ok=True)
        self.predict_metrics = {}
        evaluator = None
        if dataset is not None and has_instances(dataset, source):
            evaluator = self.build_evaluator(dataset)
            evaluator.reset()
        label_to_category_id = self.label_to_category_id
        results: list[dict[str, Any]] = []
        records: list[dict[str, Any]] = []
        overlays: list[Path] = []
        was_training = model.training
        model.eval()
        started = time.perf_counter()
        with torch.no_grad():
            for index, item in enumerate(items):
                if dataset is not None:
                    tensor = dataset.load_image(index).as_subclass(torch.Tensor)
                    image = tensor_to_rgb(tensor)
                else:
                    image = open_rgb(item.path, exif_transpose=True)
                    tensor = rgb_to_tensor(image)
                overlay_path = output_dir / f"{overlay_names[index]}.png"
                output, detections = self._predict_image(model, image, tensor, item, overlay_path, device=device)
                if evaluator is not None:
                    evaluator.update([output], [{"image_id": item.image_id}])
                results.extend(with_category_ids(detections, label_to_category_id))
                records.append({"id": item.image_id, "file_name": item.file_name, "path": str(item.path),
                                "height": image.height, "width": image.width})
                overlays.append(overlay_path)
        model.train(was_training)
        seconds = time.perf_counter() - started
        written = write_coco_results(output_dir, results, records, self.meta["label_to_category"])
        vis_thresh = self.config.segmentation.vis_thresh
        logger.info("predicted %d images into %s: %d detections (%d at or above segmentation.vis_thresh=%.2f); "
                    "%.1f ms per image", len(items), output_dir, len(results),
                    sum(item["score"] >= vis_thresh for item in results), vis_thresh, 1e3 * seconds / len(items))
        if evaluator is not None:
            written.append(self.save_predict_metrics(evaluator.compute(), output_dir, source,
                                                     mask_thresh=self.config.segmentation.mask_thresh))
        return [*written, *overlays]

    def _predict_image(self, model: nn.Module, image: Image.Image, tensor: torch.Tensor, item: PredictItem,
                       overlay_path: Path, *, device: torch.device) -> tuple[dict[str, torch.Tensor],
                                                                             list[dict[str, Any]]]:
        """Segment one image and draw its overlay: the model's output (on the CPU) and its COCO results (model
        labels)."""
        segmentation = self.config.segmentation
        (output,) = model([tensor.to(device)])
        output = {key: value.detach().cpu() for key, value in output.items()}
        detections = results_to_coco_json([output], [item.image_id], mask_threshold=segmentation.mask_thresh)
        overlay_path.parent.mkdir(parents=True, exist_ok=True)
        draw_instances(image, detections, class_names=self.class_names,
                       score_threshold=segmentation.vis_thresh).save(overlay_path)
        logger.debug("%s: %d detections, %d at or above %.2f", item.path, len(detections),
                     sum(detection["score"] >= segmentation.vis_thresh for detection in detections),
                     segmentation.vis_thresh)
        return output, detections
