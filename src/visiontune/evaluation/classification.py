"""Classification metrics accumulated over batches: top-k accuracy, macro precision/recall/F1, confusion matrix.

All accuracy-like values are fractions in 0-1, including precision, recall and F1: the convention of every
visiontune metric (WIDER FACE AP and COCO AP are fractions too), so every column of ``metrics.csv`` reads on one
scale whatever the task. Tables for people may print them as percentages.

Zero-division rule (sklearn's ``zero_division=0``): the precision of a class that is never predicted, and the
recall of a class without samples, are 0; F1 is 0 when precision + recall is 0. Macro averages run over the
classes that occur in the labels or the predictions (sklearn's default label set), so a class absent from the
evaluation data and never predicted does not drag the averages down.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.distributed as dist

from visiontune.evaluation.widerface_predictions import NonFinitePredictionError
from visiontune.utils.paths import relative_posix
from visiontune.utils.plots import plot_confusion_matrix

logger = logging.getLogger(__name__)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ``numerator / denominator`` with 0 where the denominator is 0."""
    numerator = numerator.astype(np.float64)
    denominator = denominator.astype(np.float64)
    result = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=result, where=denominator != 0)
    return result


@dataclass(frozen=True)
class ClassificationPerImage:
    """The true and predicted class of every evaluated image: top-1 accuracy and macro F1 of any resample of them
    (:mod:`visiontune.evaluation.bootstrap`), with the evaluator's definitions (macro over the classes present in the
    resample's labels or predictions).

    Attributes:
        labels: ``int64 [N]`` true classes.
        predictions: ``int64 [N]`` predicted classes (argmax).
        num_classes: ``C``.
    """

    labels: np.ndarray
    predictions: np.ndarray
    num_classes: int
    kind: ClassVar[str] = "classification"
    metric_names: ClassVar[tuple[str, ...]] = ("top1", "macro_f1")

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def metrics_for_counts(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """``top1`` and ``macro_f1`` (``float64 [B]``) of ``B`` resamples given as image multiplicities ``[B, N]``."""
        counts = np.asarray(counts, dtype=np.float64)
        resamples, classes = counts.shape[0], self.num_classes
        correct = self.labels == self.predictions
        offsets = (np.arange(resamples) * classes)[:, None]

        def per_class(classes_of_images: np.ndarray, weights: np.ndarray) -> np.ndarray:
            flat = np.bincount((offsets + classes_of_images[None, :]).ravel(), weights=weights.ravel(),
                               minlength=resamples * classes)
            return flat.reshape(resamples, classes)

        support = per_class(self.labels, counts)
        predicted = per_class(self.predictions, counts)
        true_positives = per_class(self.labels, counts * correct[None, :])
        precision = _safe_divide(true_positives, predicted)
        recall = _safe_divide(true_positives, support)
        f1 = _safe_divide(2 * precision * recall, precision + recall)
        present = (support > 0) | (predicted > 0)
        top1 = true_positives.sum(axis=1) / counts.sum(axis=1)
        return {"top1": top1, "macro_f1": (f1 * present).sum(axis=1) / present.sum(axis=1)}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"labels": self.labels, "predictions": self.predictions, "num_classes": np.array(self.num_classes)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ClassificationPerImage:
        return cls(labels=np.asarray(arrays["labels"], dtype=np.int64),
                   predictions=np.asarray(arrays["predictions"], dtype=np.int64),
                   num_classes=int(arrays["num_classes"]))


class ClassificationEvaluator:
    """Accumulates predictions of a classifier and computes its metrics.

    Besides the counts it keeps every sample's true class, predicted class and score (the predicted class's
    softmax probability) in the order :meth:`update` receives them. With ``samples`` (the evaluated split's
    ``(image path, label)`` pairs in dataset order) :meth:`save_artifacts` also writes ``predictions.csv``, one row
    per image. That needs the samples to arrive in dataset order: in one process a non-shuffling loader over the
    whole split; under ``torch.distributed`` rank ``r`` evaluating indices ``r, r + W, r + 2W, ...`` in order (the
    engine's evaluation sampler), which :meth:`synchronize` interleaves back. The labels received must equal those
    of ``samples`` at the matched positions (and the count the split's size: no corrupt image skipped); otherwise
    the file is not written, with a warning.

    Args:
        num_classes: Number of classes ``C``.
        class_names: Name of each class (``C`` names); default ``"0"`` ... ``"C-1"``.
        topk: The ``k`` of the top-k accuracies reported (``top{k}``); ``k >= num_classes`` is not reported, as it is
            always 1 (``top5`` needs at least 6 classes).
        samples: ``(image path, label index)`` of every sample of the evaluated split, in dataset order (e.g.
            ``ClassificationDataset.source.samples``); None: no ``predictions.csv``, and NaN logits name the
            sample's position instead of its file.
        root: The folder (``data.root``) that messages name image files relative to.

    Raises:
        ValueError: ``num_classes`` < 1, ``class_names`` has the wrong length, or a ``k`` is < 1.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        topk: Sequence[int] = (1, 5),
        *,
        samples: Sequence[tuple[str | Path, int]] | None = None,
        root: str | Path | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for num_classes={num_classes}")
        if any(k < 1 for k in topk):
            raise ValueError(f"topk values must be >= 1, got {tuple(topk)}")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.topk = tuple(sorted({k for k in topk if k == 1 or k < num_classes}))  # top-k of k classes is always 1
        self.samples = [(str(path), int(label)) for path, label in samples] if samples is not None else None
        self.root = root
        self.reset()

    def reset(self) -> None:
        """Clear all accumulated counts and per-sample records."""
        self._confusion = torch.zeros((self.num_classes, self.num_classes), dtype=torch.int64)
        self._topk_correct = torch.zeros(len(self.topk), dtype=torch.int64)
        self._records: list[torch.Tensor] = []  # per batch: [B, 3] float64 (true, predicted, score)
        self._in_dataset_order = True
        self._synchronized = False

    @property
    def num_samples(self) -> int:
        """Samples accumulated so far (all processes after :meth:`synchronize`)."""
        return int(self._confusion.sum())

    def update(
        self,
        outputs: torch.Tensor | Sequence[Mapping[str, torch.Tensor]],
        labels: torch.Tensor | Sequence[int],
    ) -> None:
        """Add one batch.

        Args:
            outputs: ``Tensor[B, C]`` logits (or any scores ordered like them), or the eval-mode model output
                ``list[dict]`` with one ``"logits": Tensor[C]`` per image.
            labels: ``Tensor[B]`` int64 class indices in ``[0, C)`` (or a sequence of ints).

        Raises:
            ValueError: Shapes disagree, or a label is outside ``[0, C)``.
            NonFinitePredictionError: The logits of an image hold NaN or infinite values (named by its file
                relative to ``root`` when ``samples`` are given and arrive in dataset order).
            RuntimeError: Called after :meth:`synchronize` without :meth:`reset`.
        """
        if self._synchronized:
            raise RuntimeError("update() after synchronize() would mix per-process and global counts; reset() first")
        logits = self._as_logits(outputs).detach()
        labels = torch.as_tensor(labels).detach().to(device=logits.device)
        if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
            raise ValueError(f"labels must have shape [{logits.shape[0]}] to match logits {tuple(logits.shape)}, "
                             f"got {tuple(labels.shape)}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
        if labels.numel() == 0:
            return
        labels = labels.long()
        out_of_range = labels[(labels < 0) | (labels >= self.num_classes)]
        if out_of_range.numel():
            raise ValueError(f"label {int(out_of_range[0])} is outside [0, {self.num_classes}) "
                             f"({out_of_range.numel()} such labels in the batch)")
        self._check_finite(logits, labels)

        predictions = logits.argmax(dim=1)
        scores = logits.softmax(dim=1).gather(1, predictions[:, None])[:, 0]
        self._records.append(torch.stack([labels.double(), predictions.double(), scores.double()], dim=1).cpu())
        pair_index = labels * self.num_classes + predictions
        counts = torch.bincount(pair_index, minlength=self.num_classes * self.num_classes)
        self._confusion += counts.reshape(self.num_classes, self.num_classes).cpu()
        if self.topk:
            top_indices = logits.topk(max(self.topk), dim=1).indices  # [B, max k], best first
            hits = top_indices == labels[:, None]
            correct = [hits[:, :k].any(dim=1).sum() for k in self.topk]
            self._topk_correct += torch.stack(correct).cpu()

    def _check_finite(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Refuse NaN / infinite logits, naming the image (:meth:`sample_file`) and the first such class."""
        broken = ~torch.isfinite(logits)
        if not bool(broken.any()):
            return
        row = int(broken.any(dim=1).nonzero()[0])
        column = int(broken[row].nonzero()[0])
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() \
            else (0, 1)
        index = (sum(len(part) for part in self._records) + row) * world + rank  # dataset order, rank r: r, r + W...
        image = self.sample_file(index, int(labels[row]))
        raise NonFinitePredictionError(
            f"predictions of image {f'{image!r}' if image else f'#{index} of the evaluated split'} have a NaN or "
            f"infinite value: logits of class {column} of {self.num_classes} is {float(logits[row, column])}",
            image=image or "")

    def sample_file(self, index: int, label: int) -> str | None:
        """The image file of the evaluated split's sample ``index`` relative to ``root`` (``/``-separated), or
        None without ``samples`` or when the sample there is not of class ``label`` (samples not in dataset
        order, or a corrupt image skipped)."""
        if self.samples is None or not 0 <= index < len(self.samples) or self.samples[index][1] != label:
            return None
        return relative_posix(self.samples[index][0], self.root)

    def _as_logits(self, outputs: torch.Tensor | Sequence[Mapping[str, torch.Tensor]]) -> torch.Tensor:
        """``Tensor[B, C]`` from logits or a list of per-image ``{"logits": Tensor[C]}`` dicts."""
        if isinstance(outputs, torch.Tensor):
            logits = outputs
        else:
            rows = []
            for index, output in enumerate(outputs):
                if not isinstance(output, Mapping) or "logits" not in output:
                    raise ValueError(f"outputs[{index}] must be a dict with key 'logits', got {type(output).__name__}"
                                     + (f" with keys {sorted(output)}" if isinstance(output, Mapping) else ""))
                rows.append(torch.as_tensor(output["logits"]).reshape(-1))
            if not rows:
                return torch.zeros((0, self.num_classes))
            logits = torch.stack(rows)
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must have shape [B, {self.num_classes}], got {tuple(logits.shape)}")
        return logits.float()

    def synchronize(self) -> None:
        """Sum the counts of all processes (``all_reduce`` SUM) when ``torch.distributed`` is initialised.

        Every process then holds the global counts. A no-op without a process group, and on a second call
        before :meth:`reset`.
        """
        if self._synchronized or not (dist.is_available() and dist.is_initialized()):
            return
        device = torch.device("cpu")
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        packed = torch.cat([self._confusion.reshape(-1), self._topk_correct]).to(device)
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        packed = packed.cpu()
        size = self.num_classes * self.num_classes
        self._confusion = packed[:size].reshape(self.num_classes, self.num_classes).clone()
        self._topk_correct = packed[size:].clone()
        gathered: list[torch.Tensor | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self._sample_records())
        self._records, self._in_dataset_order = _interleave([part for part in gathered if part is not None])
        self._synchronized = True

    def _sample_records(self) -> torch.Tensor:
        """``[N, 3]`` float64: true class, predicted class and score of every sample received, in order."""
        return torch.cat(self._records) if self._records else torch.zeros((0, 3), dtype=torch.float64)

    def sample_predictions(self) -> list[tuple[int, int, float]]:
        """``(true class, predicted class, score)`` of every accumulated sample, in dataset order when the samples
        arrived as the class docstring describes (all processes after :meth:`synchronize`)."""
        return [(int(true), int(predicted), float(score)) for true, predicted, score in self._sample_records().tolist()]

    def per_image_results(self) -> ClassificationPerImage:
        """The true and predicted class of every accumulated sample (for bootstrap intervals; all processes after
        :meth:`synchronize`)."""
        records = self._sample_records().numpy()
        return ClassificationPerImage(labels=records[:, 0].astype(np.int64), predictions=records[:, 1].astype(np.int64),
                                      num_classes=self.num_classes)

    def confusion_matrix(self) -> np.ndarray:
        """``np.ndarray[C, C]`` int64 counts; rows are true classes, columns predicted classes."""
        return self._confusion.numpy().copy()

    def _per_class(self) -> dict[str, np.ndarray]:
        """Per-class ``support``, ``precision``, ``recall`` and ``f1`` (the last three in 0-1)."""
        matrix = self.confusion_matrix()
        true_positives = np.diag(matrix)
        support = matrix.sum(axis=1)
        predicted = matrix.sum(axis=0)
        precision = _safe_divide(true_positives, predicted)
        recall = _safe_divide(true_positives, support)
        f1 = _safe_divide(2 * precision * recall, precision + recall)
        return {"support": support, "predicted": predicted, "precision": precision, "recall": recall, "f1": f1}

    def compute(self) -> dict[str, float]:
        """The metrics, all fractions in 0-1.

        Returns:
            ``top{k}`` for each reported ``k`` (``top1``, and ``top5`` with more than 5 classes), ``macro_precision``,
            ``macro_recall`` and ``macro_f1`` (unweighted means over the classes present in labels or
            predictions; ``macro_recall`` is the balanced accuracy).

        Raises:
            ValueError: No samples were accumulated.
        """
        total = self.num_samples
        if total == 0:
            raise ValueError("ClassificationEvaluator.compute() called before any samples were added with update()")
        metrics = {f"top{k}": int(correct) / total for k, correct in zip(self.topk, self._topk_correct)}
        per_class = self._per_class()
        present = (per_class["support"] > 0) | (per_class["predicted"] > 0)
        for name in ("precision", "recall", "f1"):
            metrics[f"macro_{name}"] = float(per_class[name][present].mean())
        return metrics

    def per_class_accuracy(self) -> dict[str, float]:
        """Class name -> accuracy on that class's samples (its recall) in 0-1; 0 for a class without samples."""
        recall = self._per_class()["recall"]
        return {name: float(value) for name, value in zip(self.class_names, recall)}

    def save_artifacts(self, out_dir: str | Path) -> list[Path]:
        """Write ``confusion_matrix.csv``, ``confusion_matrix.png`` and ``per_class.csv`` into ``out_dir``, and
        ``predictions.csv`` when the evaluator knows the split's ``samples``.

        ``confusion_matrix.csv``: header ``true\\predicted,<class names>``, then one row of counts per true class.
        ``per_class.csv``: columns ``class,support,accuracy,precision,recall,f1`` (fractions, 4 decimals).
        The PNG shows the row-normalised matrix. ``predictions.csv``: columns ``path,true,predicted,score`` (class
        names; the predicted class's probability, 4 decimals), one row per sample in dataset order.

        Returns:
            The written paths.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        matrix = self.confusion_matrix()

        matrix_csv = out_dir / "confusion_matrix.csv"
        with matrix_csv.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["true\\predicted", *self.class_names])
            for name, row in zip(self.class_names, matrix):
                writer.writerow([name, *(int(value) for value in row)])

        per_class = self._per_class()
        per_class_csv = out_dir / "per_class.csv"
        with per_class_csv.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["class", "support", "accuracy", "precision", "recall", "f1"])
            for index, name in enumerate(self.class_names):
                recall = per_class["recall"][index]
                writer.writerow([name, int(per_class["support"][index]), f"{recall:.4f}",
                                 f"{per_class['precision'][index]:.4f}", f"{recall:.4f}",
                                 f"{per_class['f1'][index]:.4f}"])

        matrix_png = plot_confusion_matrix(matrix, self.class_names, out_dir / "confusion_matrix.png", normalize=True)
        written = [matrix_csv, matrix_png, per_class_csv]
        predictions_csv = self._save_predictions(out_dir / "predictions.csv")
        if predictions_csv is not None:
            written.append(predictions_csv)
        logger.info("wrote classification artifacts to %s", out_dir)
        return written

    def _save_predictions(self, path: Path) -> Path | None:
        """``predictions.csv`` when the received samples match ``samples`` one to one (else a warning, None)."""
        if self.samples is None:
            return None
        records = self.sample_predictions()
        problem = None
        if not self._in_dataset_order:
            problem = "the processes evaluated shards other than every world_size-th sample"
        elif len(records) != len(self.samples):
            problem = (f"{len(records)} samples were evaluated but the split has {len(self.samples)} (corrupt images "
                       "skipped?)")
        else:
            wrong = next((index for index, ((_, label), (true, _, _)) in enumerate(zip(self.samples, records))
                          if label != true), None)
            if wrong is not None:
                problem = (f"sample {wrong} ({self.samples[wrong][0]}) has label {self.samples[wrong][1]} but the "
                           f"evaluated sample at that position has {records[wrong][0]}: not in dataset order")
        if problem is not None:
            logger.warning("not writing %s: %s", path.name, problem)
            return None
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "true", "predicted", "score"])
            for (sample_path, _), (true, predicted, score) in zip(self.samples, records):
                writer.writerow([sample_path, self.class_names[true], self.class_names[predicted], f"{score:.4f}"])
        return path


def _interleave(parts: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], bool]:
    """Merge the per-rank sample records of a strided evaluation (rank ``r``: samples ``r, r + W, ...``).

    Returns the records in dataset order and True, or concatenated by rank and False when the shard sizes do not
    fit that layout.
    """
    world_size, total = len(parts), sum(len(part) for part in parts)
    if any(len(part) != len(range(rank, total, world_size)) for rank, part in enumerate(parts)):
        return [torch.cat(list(parts))] if parts else [], False
    merged = torch.zeros((total, 3), dtype=torch.float64)
    for rank, part in enumerate(parts):
        merged[rank::world_size] = part
    return [merged], True
