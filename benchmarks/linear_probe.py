"""The MobileNetV2 tutorial's linear probe with and without cached backbone features, side by side.

The recipe of ``configs/classification/mobilenetv2_100_linear_probe.yaml`` (frozen ``mobilenetv2_100`` backbone,
momentum SGD at a constant lr 0.03, weight decay 4e-5, label smoothing 0.1, deterministic transform) trains on the
generated shapes dataset (:func:`visiontune.data.synthetic.make_shapes_dataset`, a few hundred images saved as JPEG) for
``--epochs`` epochs with validation every epoch, once with ``finetune.cache_features=false`` (the whole network runs
on every image in every epoch) and once with ``true`` (the backbone runs once per split). Random weights: the time
does not depend on them, and both runs start from the same ones (same seed), so their validation accuracies must
agree (within 1 point: the cached features are computed in other batches, so float rounding differs).

Prints the wall time of each run (setup, feature caching and every hook included), ``speed-up N.Nx`` and the final
validation top-1 of both. Both runs use the preset's ``train.checkpoint_interval_s`` (checkpoints at most once a
minute). The default 128 px keeps the run on images under two minutes on 2 CPU cores; the speed-up grows with the
image size (the backbone's share of an epoch) up to about the epoch count.

    python benchmarks/linear_probe.py [--epochs 50] [--image-size 128] [--batch-size 50] [--workers 2]
                                      [--per-class 40] [--threads N]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from visiontune.api import train
from visiontune.config import load_config
from visiontune.data.synthetic import make_shapes_dataset


def run(root: Path, project: Path, args: argparse.Namespace, *, cache: bool) -> tuple[float, float, int]:
    """Wall time, final validation top-1 and epochs of one run."""
    preset = Path(__file__).resolve().parents[1] / "configs/classification/mobilenetv2_100_linear_probe.yaml"
    config = load_config(preset, [
        f"data.root={root}", f"project={project}", f"name={'cached' if cache else 'uncached'}",
        "model.pretrained=false", f"data.image_size={args.image_size}", f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}", f"train.epochs={args.epochs}", "train.eval_every=1",
        f"finetune.cache_features={'true' if cache else 'false'}", "train.save_head_only=false",
        "train.progress=false", "train.plots=false", "train.report=false", "device=cpu", "seed=0",
    ])
    started = time.perf_counter()
    result = train(config)
    elapsed = time.perf_counter() - started
    return elapsed, result.history[-1]["val_top1"], result.history[-1]["epoch"]


def to_jpeg(source: Path, target: Path) -> Path:
    """A copy of an ImageFolder tree of PNG files as JPEG files (quality 90), as photos would be stored."""
    from PIL import Image

    for png in sorted(source.rglob("*.png")):
        destination = (target / png.relative_to(source)).with_suffix(".jpg")
        destination.parent.mkdir(parents=True, exist_ok=True)
        Image.open(png).convert("RGB").save(destination, quality=90)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (both runs)")
    parser.add_argument("--per-class", type=int, default=40, help="training images per class (5 classes; val 1/3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        shapes = make_shapes_dataset(Path(folder) / "shapes", num_classes=5, train_per_class=args.per_class,
                                     val_per_class=max(1, args.per_class // 3), image_size=max(64, args.image_size))
        root = to_jpeg(shapes, Path(folder) / "shapes_jpeg")
        print(f"mobilenetv2_100 linear probe, {5 * args.per_class} training / {5 * max(1, args.per_class // 3)} "
              f"validation images at {args.image_size} px, batch {args.batch_size}, {args.epochs} epochs, "
              f"validation every epoch, {torch.get_num_threads()} threads", flush=True)
        results = {}
        for cache in (False, True):
            results[cache] = run(root, Path(folder) / "runs", args, cache=cache)
            seconds, top1, epochs = results[cache]
            print(f"{'cached features' if cache else 'images (no cache)':<18} {seconds:8.1f} s  "
                  f"({epochs} epochs)  final val top-1 {100 * top1:.2f}%", flush=True)
    (plain, plain_top1, _), (cached, cached_top1, _) = results[False], results[True]
    print(f"speed-up {plain / cached:.1f}x; val top-1 difference {100 * abs(plain_top1 - cached_top1):.2f} points")


if __name__ == "__main__":
    main()
