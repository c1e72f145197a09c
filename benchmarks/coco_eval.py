"""COCO evaluation time: pycocotools' COCOeval vs faster-coco-eval's (``pip install visiontune[coco-fast]``), through
visiontune's :class:`~visiontune.evaluation.coco.CocoEvaluator`, on a synthetic COCO set with noisy detections
(ground-truth boxes and masks jittered, plus random false positives). Prints both times and whether every metric
agrees.

    python benchmarks/coco_eval.py [--images 300] [--detections 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from visiontune.data.coco_dataset import CocoInstanceDataset
from visiontune.data.synthetic_coco import make_synthetic_coco, synthetic_images_dir
from visiontune.evaluation.coco import CocoEvaluator


def make_outputs(dataset: CocoInstanceDataset, detections: int, seed: int = 0) -> list[tuple[dict, dict]]:
    """Per image: every ground-truth object jittered by a few pixels, topped up with random boxes to ``detections``."""
    rng = np.random.default_rng(seed)
    pairs = []
    for index in range(len(dataset)):
        image, target = dataset[index]
        height, width = image.shape[-2:]
        boxes = [list(map(float, box)) for box in target["boxes"].as_subclass(torch.Tensor).tolist()]
        labels = target["labels"].tolist()
        num_classes = max(1, len(dataset.class_names))
        while len(boxes) < detections:
            x1, y1 = rng.uniform(0, width - 8), rng.uniform(0, height - 8)
            x2, y2 = min(width, x1 + rng.uniform(6, width / 2)), min(height, y1 + rng.uniform(6, height / 2))
            boxes.append([x1, y1, x2, y2])
            labels.append(int(rng.integers(1, num_classes + 1)))
        boxes_t = torch.tensor(boxes) + torch.from_numpy(rng.normal(0, 2, size=(len(boxes), 4))).float()
        boxes_t[:, 0::2] = boxes_t[:, 0::2].clamp(0, width - 1)
        boxes_t[:, 1::2] = boxes_t[:, 1::2].clamp(0, height - 1)
        boxes_t[:, 2:] = torch.maximum(boxes_t[:, 2:], boxes_t[:, :2] + 1)
        masks = torch.zeros(len(boxes), 1, height, width)
        for row, (x1, y1, x2, y2) in enumerate(boxes_t.round().int().tolist()):
            masks[row, 0, y1:y2, x1:x2] = 0.9
        scores = torch.from_numpy(rng.uniform(0.01, 1.0, size=len(boxes))).float()
        pairs.append(({"boxes": boxes_t, "labels": torch.tensor(labels), "scores": scores, "masks": masks}, target))
    return pairs


def timed_compute(ground_truth: dict, pairs: list, repeats: int) -> tuple[float, dict[str, float]]:
    evaluator = CocoEvaluator(ground_truth)
    for output, target in pairs:
        evaluator.update([output], [target])
    times, metrics = [], {}
    for _ in range(repeats):
        started = time.perf_counter()
        metrics = evaluator.compute()
        times.append(time.perf_counter() - started)
    return statistics.median(times), metrics


def same(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-12) for k in a)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--detections", type=int, default=30, help="detections per image")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        import faster_coco_eval
    except ImportError:
        faster_coco_eval = None
    with tempfile.TemporaryDirectory() as tmp:
        annotation_file = make_synthetic_coco(Path(tmp), num_images=args.images, image_size=(120, 160),
                                              categories=("book", "cup", "ball"), max_objects_per_image=5, seed=0)
        dataset = CocoInstanceDataset(synthetic_images_dir(annotation_file), annotation_file)
        pairs = make_outputs(dataset, args.detections)
        ground_truth = dataset.coco_ground_truth()
        fast_time = fast_metrics = None
        if faster_coco_eval is not None:
            fast_time, fast_metrics = timed_compute(ground_truth, pairs, args.repeats)
        sys.modules["faster_coco_eval"] = None  # type: ignore[assignment]  # the import fails: pycocotools
        slow_time, slow_metrics = timed_compute(ground_truth, pairs, args.repeats)
    print(f"{args.images} images, {args.images * args.detections} detections, bbox + segm, median of {args.repeats}")
    print(f"pycocotools COCOeval      : {slow_time:.3f} s  (segm_AP {slow_metrics['segm_AP']:.4f}, bbox_AP "
          f"{slow_metrics['bbox_AP']:.4f})")
    if fast_metrics is None:
        print("faster-coco-eval          : not installed (pip install visiontune[coco-fast])")
        return 0
    print(f"faster-coco-eval {faster_coco_eval.__version__:<8} : {fast_time:.3f} s  (segm_AP "
          f"{fast_metrics['segm_AP']:.4f}, bbox_AP {fast_metrics['bbox_AP']:.4f})"
          f"; speed-up {slow_time / fast_time:.1f}x; every metric equal: "
          f"{same(slow_metrics, fast_metrics)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
