"""Time the WIDER FACE evaluation on the full val ground truth with synthetic predictions.

Predictions are the ground-truth faces, detected with a probability that grows with face size, jittered
in proportion to their size and scored by size plus noise, together with random false positives at low
scores: about 100k boxes in all (``--num-boxes``).

    python benchmarks/widerface_eval.py [GT_DIR] [--repeats 5] [--num-boxes 100000] [--files]

``GT_DIR`` defaults to ``../shared/fixtures/widerface_gt`` next to the repository root. ``--files`` also
times writing and reading the predictions in the official text layout.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from visiontune.evaluation.widerface import evaluate_widerface
from visiontune.evaluation.widerface_ground_truth import WiderFaceGroundTruth, load_widerface_ground_truth
from visiontune.evaluation.widerface_predictions import read_widerface_predictions, write_widerface_predictions

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GT_DIR = REPO_ROOT.parent / "shared" / "fixtures" / "widerface_gt"


def synthetic_predictions(ground_truth: WiderFaceGroundTruth, *, num_boxes: int, seed: int) -> dict[str, np.ndarray]:
    """Jittered ground truth plus false positives, ``[N, 5]`` x, y, w, h, score per image, ~``num_boxes`` in all."""
    rng = np.random.default_rng(seed)
    detections: list[np.ndarray] = []
    for faces in ground_truth.boxes:
        sizes = np.sqrt(np.clip(faces[:, 2], 1, None) * np.clip(faces[:, 3], 1, None))
        found = faces[rng.random(len(faces)) < np.clip(sizes / 25.0, 0.15, 0.97)]
        found_sizes = np.sqrt(np.clip(found[:, 2], 1, None) * np.clip(found[:, 3], 1, None))
        jitter = rng.normal(0.0, 0.08, found.shape) * found_sizes[:, None]
        scores = np.clip(0.35 + 0.35 * np.tanh(found_sizes / 40.0) + rng.normal(0.0, 0.15, len(found)), 0.02, 1.0)
        detections.append(np.c_[found + jitter, scores])
    num_false = max(num_boxes - sum(len(boxes) for boxes in detections), 0)
    per_image = rng.multinomial(num_false, np.full(ground_truth.num_images, 1.0 / ground_truth.num_images))
    predictions: dict[str, np.ndarray] = {}
    for image_id, found, count in zip(ground_truth.image_ids, detections, per_image):
        corners = rng.uniform(0.0, 1000.0, (count, 2))
        sides = np.exp(rng.uniform(np.log(4.0), np.log(300.0), (count, 1))) * rng.uniform(0.8, 1.25, (count, 2))
        scores = np.clip(rng.beta(1.2, 6.0, count), 0.02, 1.0)
        predictions[image_id] = np.concatenate([found, np.c_[corners, sides, scores]])
    return predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gt_dir", nargs="?", type=Path, default=DEFAULT_GT_DIR,
                        help="folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat")
    parser.add_argument("--num-boxes", type=int, default=100_000, help="approximate number of predicted boxes")
    parser.add_argument("--repeats", type=int, default=5, help="timed evaluation runs (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--files", action="store_true", help="also time writing and reading prediction files")
    args = parser.parse_args()

    start = time.perf_counter()
    ground_truth = load_widerface_ground_truth(args.gt_dir)
    load_seconds = time.perf_counter() - start
    predictions = synthetic_predictions(ground_truth, num_boxes=args.num_boxes, seed=args.seed)
    num_boxes = sum(len(boxes) for boxes in predictions.values())
    print(f"ground truth: {ground_truth.num_images} images, {len(ground_truth.events)} events, "
          f"{ground_truth.num_faces()} faces; loaded in {load_seconds:.2f} s")
    print(f"predictions: {num_boxes} boxes")

    timings = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = evaluate_widerface(predictions, ground_truth)
        timings.append(time.perf_counter() - start)
    print(f"evaluate_widerface: median {statistics.median(timings):.3f} s, min {min(timings):.3f} s "
          f"over {args.repeats} runs (1000 thresholds, 3 difficulties)")
    print("AP: " + ", ".join(f"{name} {value:.4f}" for name, value in result.as_dict().items()))

    if args.files:
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            write_widerface_predictions(folder, predictions)
            write_seconds = time.perf_counter() - start
            start = time.perf_counter()
            loaded = read_widerface_predictions(folder)
            read_seconds = time.perf_counter() - start
        same = evaluate_widerface(loaded, ground_truth).as_dict() == result.as_dict()
        print(f"files: write {write_seconds:.2f} s, read {read_seconds:.2f} s, same APs after reading: {same}")


if __name__ == "__main__":
    main()
