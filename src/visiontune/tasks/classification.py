"""Image classification with timm models (MindCV / MobileNetV2 fine-tuning guides on PyTorch)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from visiontune.config import ConfigError
from visiontune.data.classification import (
    ClassificationDataset,
    ClassificationSource,
    collate_skip_none,
    read_annotation_list,
    read_csv_list,
    scan_image_folder,
    too_few_classes,
)
from visiontune.data.samplers import class_loss_weights
from visiontune.evaluation.classification import ClassificationEvaluator
from visiontune.models.classification import (
    ImageClassifier,
    apply_mindspore_padding,
    classes_in_weights,
    classifier_head_prefixes,
    create_timm_model,
    load_classifier_weights,
    transfer_pretrained,
)
from visiontune.models.parts import ModelParts
from visiontune.tasks.base import DataCheck, Task, split_images_dir
from visiontune.tasks.classification_features import feature_datasets
from visiontune.tasks.classification_predict import (
    PredictionRow,
    collect_prediction_inputs,
    write_pred_txt,
    write_predictions_csv,
)
from visiontune.tasks.classification_transforms import (
    create_classification_transform,
    normalization_settings,
    random_train_transform_keys,
)
from visiontune.utils.image import open_rgb

logger = logging.getLogger(__name__)

class ClassificationTask(Task):
    """Fine-tune any timm model on ImageFolder trees, annotation lists or CSV files."""

    name = "classification"
    default_metric = "top1"
    metric_mode = "max"
    metric_names = ("top1", "top5", "macro_precision", "macro_recall", "macro_f1")  # top5: with more than 5 classes

    def available_metrics(self) -> tuple[str, ...]:
        """Without ``top5`` once the classes are known to be 5 or fewer (top-5 would always be 1)."""
        names = self.meta.get("class_names")
        if names is not None and len(names) <= 5:
            return tuple(name for name in self.metric_names if name != "top5")
        return self.metric_names

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._mixup: Callable | None = None
        self._weights_classes: int | None = None
        self._train_class_counts: list[int] | None = None
        """Training images per class index, once the training dataset is built (``loss.class_weights``)."""

    # ------------------------------------------------------------------ data
    def read_source(self, split: str, *, classes: list[str] | None) -> ClassificationSource:
        """Samples of ``split`` in the configured ``data.format``."""
        data = self.config.data
        if data.root is None:
            raise ValueError("data.root is not set: point it at the dataset folder (e.g. data.root=path/to/data)")
        root = Path(data.root)
        if data.format == "folder":
            setting = {data.test_split: "data.test_split", data.val_split: "data.val_split",
                       data.train_split: "data.train_split"}.get(split)
            other = [name for name in (data.train_split, data.val_split, data.test_split) if name and name != split]
            hint = f"data.root + {setting}" if setting else f"data.root + split {split!r}"
            return scan_image_folder(root / split, classes=classes, hint=hint, setting=setting, split=split,
                                     exclude=other)
        if data.format == "list":
            images = root / split_images_dir(data, split, train=classes is None)
            return read_annotation_list(root / split, images, image_ext=data.image_ext, classes=classes)
        if data.format == "csv":
            return read_csv_list(root / split, root=root, classes=classes)
        raise ValueError(f"data.format: {data.format!r} is not a classification format; use folder, list or csv")

    def build_transform(self, *, train: bool, uint8: bool = False) -> Callable:
        """timm's ``create_transform`` with the ``data`` section's options
        (:func:`~visiontune.tasks.classification_transforms.create_classification_transform`).

        ``uint8``: the pipeline of the device prefetcher (:meth:`device_train_dataset`): the same steps up to a
        uint8 ``Tensor[3, H, W]``; normalisation and random erasing run on the device. A training transform without
        any augmentation is the deterministic evaluation transform (cacheable features).
        """
        return create_classification_transform(self.config, train=train, uint8=uint8)

    def device_train_dataset(self, dataset: Dataset, *, device: torch.device) -> Dataset:
        """The training images as uint8 for the device prefetcher (:meth:`device_prefetcher`): on CUDA with
        ``train.gpu_prefetch`` for an image dataset (not cached features); else ``dataset`` unchanged (the CPU
        path: float32 batches normalised in the workers)."""
        self._device_prefetch = False
        if device.type != "cuda" or not self.config.train.gpu_prefetch or type(dataset) is not ClassificationDataset:
            return dataset
        self._device_prefetch = True
        return ClassificationDataset(dataset.source, self.build_transform(train=True, uint8=True),
                                     on_corrupt=self.config.data.on_corrupt)

    def device_prefetcher(self, loader: Any, *, device: torch.device, train: bool,
                          channels_last: bool = False) -> Any:
        """A :class:`~visiontune.data.prefetch.DevicePrefetcher` over ``loader`` (normalisation, random erasing
        and channels-last on ``device``) when :meth:`device_train_dataset` chose uint8 batches, else ``None``."""
        if not (train and getattr(self, "_device_prefetch", False)):
            return None
        from visiontune.data.prefetch import DevicePrefetcher

        data, resolved = self.config.data, normalization_settings(self.config)
        random = bool(random_train_transform_keys(data))  # no augmentation: the evaluation transform, no erasing
        return DevicePrefetcher(loader, device=device, mean=resolved["mean"], std=resolved["std"],
                                channels_last=channels_last, re_prob=data.reprob if random else 0.0,
                                re_mode=data.remode)

    def build_dataset(self, split: str, *, train: bool) -> Dataset:
        classes = self.meta.get("class_names")
        source = self.read_source(split, classes=classes)
        if classes is None:
            refusal = too_few_classes(source)
            if refusal is not None:
                raise ValueError(refusal)
            self.meta["class_names"] = list(source.classes)
            logger.info("%d classes from %s: %s", len(source.classes), source.origin,
                        ", ".join(source.classes[:10]) + (" ..." if len(source.classes) > 10 else ""))
        if train:
            self._train_class_counts = list(source.class_counts().values())
        return ClassificationDataset(source, self.build_transform(train=train), on_corrupt=self.config.data.on_corrupt)

    def collate_fn(self, *, train: bool) -> Callable:
        return collate_skip_none

    # ------------------------------------------------------------------ model
    @property
    def num_classes(self) -> int:
        if self.config.model.num_classes is not None:
            return self.config.model.num_classes
        if "class_names" not in self.meta:
            checkpoint = self.config.model.checkpoint
            if checkpoint and self._weights_classes is None:
                # plain weights without data (``predict``): the class count of the file's classifier
                self._weights_classes = classes_in_weights(checkpoint, self.config.model.name,
                                                           key=self.config.model.checkpoint_key,
                                                           arch=self.config.model.name)
            if checkpoint and self._weights_classes is not None:
                return self._weights_classes
            raise ValueError("the number of classes is unknown: build the training dataset first or set "
                             "model.num_classes")
        return len(self.meta["class_names"])

    def build_criterion(self) -> nn.Module:
        data = self.config.data
        weight = self.class_weights()
        if data.mixup > 0 or data.cutmix > 0:
            from timm.loss import SoftTargetCrossEntropy

            if weight is not None:
                raise ConfigError(f"loss.class_weights={self.config.loss.class_weights} weighs hard labels: not with "
                                  f"data.mixup={data.mixup} / data.cutmix={data.cutmix} (set loss.class_weights=none "
                                  "or turn mixup and CutMix off)")
            return SoftTargetCrossEntropy()
        if weight is None:
            return nn.CrossEntropyLoss(label_smoothing=data.label_smoothing)
        return ClassWeightedCrossEntropy(weight, label_smoothing=data.label_smoothing)

    def class_weights(self) -> torch.Tensor | None:
        """``loss.class_weights`` from the training split's class counts (:func:`~visiontune.data.samplers.
        class_loss_weights`; average 1), logged in one line naming each class; None for ``none`` or before the
        training dataset is built (evaluation, prediction: the loss is not used)."""
        loss = self.config.loss
        if loss.class_weights == "none" or self._train_class_counts is None:
            return None
        weights = class_loss_weights(self._train_class_counts, loss.class_weights, beta=loss.class_weights_beta)
        names = self.meta.get("class_names") or [str(index) for index in range(len(weights))]
        beta = f", beta {loss.class_weights_beta:g}" if loss.class_weights == "effective" else ""
        logger.info("loss.class_weights=%s%s (class: weight, average 1): %s", loss.class_weights, beta,
                    ", ".join(f"{name} {weight:.3f}" for name, weight in zip(names, weights)))
        return torch.tensor(weights, dtype=torch.float32)

    def build_model(self, *, load_weights: bool = True) -> nn.Module:
        model_config = self.config.model
        class_names = self.meta.get("class_names")
        if class_names is not None and model_config.num_classes not in (None, len(class_names)):
            raise ValueError(f"model.num_classes={model_config.num_classes} but the data has {len(class_names)} "
                             "classes")
        net = create_timm_model(model_config.name, num_classes=self.num_classes, pretrained=False,
                                drop_rate=model_config.drop_rate, drop_path_rate=model_config.drop_path_rate,
                                **model_config.kwargs)
        model = ImageClassifier(net, self.build_criterion())
        if not load_weights and self.meta.get("mindspore_padding"):
            # weights fine-tuned from MindCV weights (eval, predict, resume, export): the same padding as in training
            apply_mindspore_padding(model, self.meta["mindspore_padding"])
        if load_weights:
            self.meta.pop("mindspore_padding", None)
            if model_config.checkpoint:
                report = load_classifier_weights(model, model_config.checkpoint, key=model_config.checkpoint_key,
                                                 min_loaded_fraction=model_config.min_loaded_fraction,
                                                 arch=model_config.name, backbone=model_config.backbone_checkpoint,
                                                 mindspore_padding=model_config.mindspore_padding)
                self.meta["load_report"] = report.as_dict()
                if report.mindspore_padding:
                    self.meta["mindspore_padding"] = report.mindspore_padding
            elif model_config.pretrained:
                report = transfer_pretrained(model, model_config.name,
                                             min_loaded_fraction=model_config.min_loaded_fraction)
                self.meta["load_report"] = report.as_dict()
        data = self.config.data
        if data.mixup > 0 or data.cutmix > 0:
            from timm.data import Mixup

            self._mixup = Mixup(mixup_alpha=data.mixup, cutmix_alpha=data.cutmix, prob=data.mixup_prob,
                                switch_prob=data.mixup_switch_prob, label_smoothing=data.label_smoothing,
                                num_classes=self.num_classes)
        return model

    def model_parts(self, model: nn.Module) -> ModelParts:
        from timm.models import group_parameters

        net: Any = model.net  # a timm model
        heads = [f"net.{prefix}" for prefix in classifier_head_prefixes(net)]
        parts = ModelParts(head=heads)
        try:
            grouped = group_parameters(net, net.group_matcher(coarse=False))
        except (AttributeError, NotImplementedError):
            grouped = {}
        for names in grouped.values():
            group = [f"net.{name}" for name in names if not parts.is_head(f"net.{name}")]
            if group:
                parts.layer_groups.append(group)
        return parts

    def prepare_train_batch(self, images: Any, targets: Any) -> tuple[Any, Any]:
        if self._mixup is None:
            return images, targets
        from timm.data.mixup import mixup_target

        even = len(images) - len(images) % 2
        if even == len(images):
            return self._mixup(images, targets)
        # timm's Mixup needs an even batch: mix the even part, keep the last sample as a smoothed one-hot
        mixed_images, mixed_targets = self._mixup(images[:even], targets[:even]) if even else (images[:0], None)
        last_target = mixup_target(targets[even:], self.num_classes, lam=1.0,
                                   smoothing=self.config.data.label_smoothing)
        if mixed_targets is None:
            return images, last_target
        return torch.cat([mixed_images, images[even:]]), torch.cat([mixed_targets, last_target])

    # ------------------------------------------------------------------ cached backbone features
    def prepare_training(self, model: nn.Module, train_dataset: Dataset, val_dataset: Dataset | None, *,
                         device: torch.device, autocast_dtype: torch.dtype | None,
                         run_dir: Path) -> tuple[Dataset, Dataset | None]:
        """``finetune.cache_features``: replace the image datasets with the frozen backbone's pooled features
        (:func:`~visiontune.tasks.classification_features.feature_datasets`)."""
        return feature_datasets(self.config, model, train_dataset, val_dataset, device=device,
                                autocast_dtype=autocast_dtype, run_dir=run_dir)

    # ------------------------------------------------------------------ evaluation and prediction
    def build_evaluator(self, dataset: Dataset) -> ClassificationEvaluator:
        names = self.meta.get("class_names")
        samples = dataset.source.samples if isinstance(dataset, ClassificationDataset) else None  # predictions.csv
        return ClassificationEvaluator(num_classes=self.num_classes, class_names=names, samples=samples,
                                       root=self.config.data.root)

    def check_data(self) -> DataCheck:
        """Decode every image of the splits; classes, counts, duplicates and train/val leakage."""
        from visiontune.data.image_check import check_classification_sources

        data = self.config.data
        splits = {data.train_split: self.read_source(data.train_split, classes=None)}
        for split in (data.val_split, data.test_split):
            if split and split not in splits:
                try:
                    splits[split] = self.read_source(split, classes=None)
                except ValueError as error:
                    return DataCheck(f"{split}: {error}", True)
        report = check_classification_sources(splits, progress=self.config.train.progress)
        check = DataCheck(
            "", report.has_errors, class_names=splits[data.train_split].classes,
            samples={split: [{"path": str(path), "label": source.classes[label]} for path, label in source.samples]
                     for split, source in splits.items()},
            flagged=[{"path": str(finding.path), "reason": finding.message, "split": split}
                     for split, findings in report.image_findings.items() for finding in findings])
        duplicates = self.check_duplicates(check)
        if duplicates is not None:
            report.notes.append(duplicates[0])
            report.warnings.extend(duplicates[1])
        check.text = report.format()
        return check

    def predict(self, model: nn.Module, source: str, output_dir: Path, *, device: torch.device) -> list[Path]:
        """Top-k labels and probabilities per image to ``predictions.csv``; with known labels also ``pred.txt``.

        ``source`` is an image, a folder (a class-folder tree gives known labels), a ``.txt`` list of image
        paths, a ``.txt`` annotation list in the ``list`` layout (``<image id> <label words>`` lines, images at
        ``data.root/<data.val_images_dir or data.images_dir>/<id><data.image_ext>``, as FGVC-Aircraft's
        ``images_variant_test.txt``), or a ``.csv`` with ``path[,label]``. When the source carries labels, the
        top-1 (and top-5) accuracy is logged, written to ``metrics.json`` and kept in ``self.predict_metrics``.
        """
        names = self.meta.get("class_names") or [str(i) for i in range(self.num_classes)]
        data = self.config.data
        images_dir = None
        if data.root is not None:
            images_dir = Path(data.root) / (data.val_images_dir or data.images_dir or "")
        items = collect_prediction_inputs(source, names, images_dir=images_dir, image_ext=data.image_ext)
        self.predict_metrics = {}
        topk_all = 5 if len(names) > 5 else 1  # as in evaluation: top-k of k classes (always 1) is not reported
        output_dir.mkdir(parents=True, exist_ok=True)
        topk = min(self.config.topk, len(names))
        rows, hits = self._predict_rows(model, items, names, topk=topk, topk_all=topk_all, device=device)
        written = [write_predictions_csv(rows, output_dir, topk=topk)]
        if any(label is not None for _, label, _ in rows):
            pred_path = write_pred_txt(rows, output_dir, names, source)
            labelled = sum(1 for _, label, _ in rows if label is not None)
            metrics = {"top1": hits[1] / labelled, f"top{topk_all}": hits[topk_all] / labelled,
                       "num_images": labelled}
            written.extend([pred_path, self.save_predict_metrics(metrics, output_dir, source)])
        return written

    def _predict_rows(self, model: nn.Module, items: list[tuple[Path, str | None]], names: list[str], *, topk: int,
                      topk_all: int, device: torch.device) -> tuple[list[PredictionRow], dict[int, int]]:
        """The top-``topk`` classes of every image of ``items`` and, over the labelled ones, the top-1 and
        top-``topk_all`` hit counts (``{1: hits, topk_all: hits}``)."""
        from tqdm import tqdm

        hits = {1: 0, topk_all: 0}
        transform = self.build_transform(train=False)
        rows: list[PredictionRow] = []
        batch_size = self.config.data.eval_batch_size or self.config.data.batch_size
        model.eval()
        with torch.no_grad():
            for start in tqdm(range(0, len(items), batch_size), desc="predict", disable=not self.config.train.progress):
                chunk = items[start:start + batch_size]
                images = torch.stack([transform(open_rgb(path, exif_transpose=True)) for path, _ in chunk]).to(device)
                logits = torch.stack([output["logits"] for output in model(images)])
                probabilities = logits.float().softmax(dim=1).cpu()
                values, indices = probabilities.topk(topk, dim=1)
                best = probabilities.topk(topk_all, dim=1).indices
                for (path, label), top_values, top_indices, ranked in zip(chunk, values, indices, best):
                    rows.append((path, label, [(names[i], float(v)) for v, i in zip(top_values, top_indices)]))
                    if label is not None:
                        ranked_names = [names[i] for i in ranked.tolist()]
                        hits[1] += int(ranked_names[0] == label)
                        if topk_all > 1:
                            hits[topk_all] += int(label in ranked_names)
        return rows, hits


class ClassWeightedCrossEntropy(nn.Module):
    """Cross-entropy with per-class weights (``loss.class_weights``) that are not saved in the model's state dict
    (checkpoints stay loadable without them).

    Args:
        weight: ``(num_classes,)`` float32 weight per class.
        label_smoothing: As :class:`torch.nn.CrossEntropyLoss`.
    """

    weight: torch.Tensor

    def __init__(self, weight: torch.Tensor, *, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Weighted mean loss of ``logits`` ``(B, C)`` for class indices ``targets`` ``(B,)`` int64."""
        return nn.functional.cross_entropy(logits, targets, weight=self.weight, label_smoothing=self.label_smoothing)
