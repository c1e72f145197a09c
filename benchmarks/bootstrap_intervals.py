"""The cost of bootstrap intervals (``eval.intervals``): WIDER FACE easy / medium / hard AP on the full val ground truth
with the synthetic predictions of ``widerface_eval.py`` (3226 images, ~100k boxes), and COCO box + mask AP on the
synthetic Mask R-CNN set of ``coco_eval.py``. Each prints the evaluator's time, the per-image results' time, the
time of the resamples, and whether the full-sample recomputation equals the evaluator's value.

    python benchmarks/bootstrap_intervals.py [GT_DIR] [--resamples 1000] [--coco-images 100] [--coco-detections 20]

Pin the cores with ``taskset -c 0,1`` to measure on 2 cores (the target: 1000 WIDER resamples in at most 10 s).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

from coco_eval import make_outputs
from widerface_eval import DEFAULT_GT_DIR, synthetic_predictions

from visiontune.data.coco_dataset import CocoInstanceDataset
from visiontune.data.synthetic_coco import make_synthetic_coco, synthetic_images_dir
from visiontune.evaluation.bootstrap import PerImageResults, bootstrap_intervals, full_sample_metrics
from visiontune.evaluation.coco import CocoEvaluator
from visiontune.evaluation.widerface import evaluate_widerface
from visiontune.evaluation.widerface_ground_truth import load_widerface_ground_truth


def report(name: str, results: PerImageResults, reported: dict[str, float], resamples: int) -> None:
    """Time ``resamples`` resamples of ``results`` and print the intervals next to the reported values."""
    started = time.perf_counter()
    intervals = bootstrap_intervals(results, resamples=resamples, seed=0)
    seconds = time.perf_counter() - started
    recomputed = full_sample_metrics(results)
    equal = all(math.isclose(recomputed[key], reported[key], rel_tol=1e-12, abs_tol=1e-15) for key in recomputed)
    print(f"{name}: {resamples} resamples of {results.num_images} images in {seconds:.2f} s; full-sample "
          f"recomputation equals the evaluator: {equal}")
    for key, (low, high) in intervals.items():
        print(f"  {key}: {reported[key]:.4f} [{low:.4f}, {high:.4f}]")


def widerface(gt_dir: Path, resamples: int) -> None:
    ground_truth = load_widerface_ground_truth(gt_dir)
    predictions = synthetic_predictions(ground_truth, num_boxes=100_000, seed=0)
    started = time.perf_counter()
    result = evaluate_widerface(predictions, ground_truth)
    print(f"WIDER FACE: evaluate_widerface {time.perf_counter() - started:.2f} s "
          f"({sum(len(boxes) for boxes in predictions.values())} boxes; per-image counts included)")
    assert result.per_image is not None
    report("WIDER FACE easy/medium/hard AP", result.per_image, result.as_dict(), resamples)


def coco(images: int, detections: int, resamples: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        annotation_file = make_synthetic_coco(Path(folder), num_images=images, image_size=(120, 160),
                                              categories=("book", "cup", "ball"), max_objects_per_image=5, seed=0)
        dataset = CocoInstanceDataset(synthetic_images_dir(annotation_file), annotation_file)
        evaluator = CocoEvaluator(dataset.coco_ground_truth())
        for output, target in make_outputs(dataset, detections):
            evaluator.update([output], [target])
        started = time.perf_counter()
        metrics = evaluator.compute()
        evaluated = time.perf_counter() - started
        started = time.perf_counter()
        per_image = evaluator.per_image_results()
        print(f"COCO: compute {evaluated:.2f} s, per-image matches (pycocotools evaluateImg, area all) "
              f"{time.perf_counter() - started:.2f} s ({images * detections} detections)")
    report("COCO bbox/segm AP", per_image, metrics, resamples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gt_dir", nargs="?", type=Path, default=DEFAULT_GT_DIR,
                        help="folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--coco-images", type=int, default=100)
    parser.add_argument("--coco-detections", type=int, default=20, help="detections per image")
    args = parser.parse_args()
    if (args.gt_dir / "wider_face_val.mat").exists():
        widerface(args.gt_dir, args.resamples)
    else:
        print(f"WIDER FACE: skipped, no wider_face_val.mat in {args.gt_dir}")
    coco(args.coco_images, args.coco_detections, args.resamples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
