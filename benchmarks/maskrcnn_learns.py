"""Does Mask R-CNN learn through visiontune? Train on generated COCO data on the CPU, print mask AP before/after.

A synthetic COCO set (``make_synthetic_coco``: rectangles, polygons and ellipses of three categories with their own
colours on textured backgrounds, some empty images, one crowd region; 96x128 px) is written to a temporary folder.
The instance segmentation task trains a Mask R-CNN through the shared engine (``Trainer`` with a hook) from random
weights (no pretrained file is available offline) and evaluates it on a held-out split before the first step and
after the last. A random detector scores AP 0; the script exits with status 1 when the final ``segm_AP`` stays below
``--min-ap``. It also prints seconds per training iteration (median of the intervals between optimizer steps, data
loading included, evaluations excluded).

    python benchmarks/maskrcnn_learns.py [--model maskrcnn_resnet50_fpn_v2] [--epochs 8] [--batch-size 2]

Measured with the defaults (v2, 64 train / 16 val images, model input 64 px, batch 2, AdamW 3e-4 with 1 warmup
epoch and cosine decay, 8 epochs = 256 iterations) on a shared 2-core CPU: segm_AP 0.000 -> 0.414 (AP50 0.707),
bbox_AP 0.000 -> 0.306, 11.4 s per iteration (the machine was loaded by other jobs; 55 minutes in all).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from visiontune.config import load_config
from visiontune.data.synthetic_coco import make_synthetic_coco
from visiontune.engine.hooks import HookBase
from visiontune.engine.trainer import Trainer

SAMPLING = ("{rpn_pre_nms_top_n_train: 300, rpn_post_nms_top_n_train: 100, rpn_batch_size_per_image: 64, "
            "box_batch_size_per_image: 16, rpn_pre_nms_top_n_test: 150, rpn_post_nms_top_n_test: 50}")
"""Smaller RPN/ROI budgets than torchvision's defaults (a 96x128 image holds at most 3 objects); the mask head,
which runs on every positive ROI, dominates the cost of a step."""


class LearningProbe(HookBase):
    """Evaluates the initial model before the first step and times every optimizer step."""

    def __init__(self, *, log_every: int = 0) -> None:
        self.log_every = log_every
        self.before: dict[str, float] | None = None
        self.step_ends: list[float] = []
        self.excluded: list[int] = []

    def before_step(self, trainer: Trainer) -> None:
        if self.before is None:
            self.before = trainer.evaluate()
            trainer.train_step.train_model.train()

    def after_step(self, trainer: Trainer, losses: dict[str, float]) -> None:
        self.step_ends.append(time.perf_counter())
        if self.log_every and trainer.state.step % self.log_every == 0:
            print(f"step {trainer.state.step}: " + ", ".join(f"{key} {value:.3f}" for key, value in losses.items()),
                  flush=True)

    def on_eval(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.excluded.append(len(self.step_ends))  # the interval after an evaluation includes it

    def seconds_per_step(self) -> float:
        intervals = [end - start for index, (start, end) in enumerate(zip(self.step_ends, self.step_ends[1:]), 1)
                     if index not in self.excluded]
        return statistics.median(intervals) if intervals else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="maskrcnn_resnet50_fpn_v2",
                        choices=("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"))
    parser.add_argument("--train-images", type=int, default=64)
    parser.add_argument("--val-images", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--optimizer", default="adamw", help="optim.name (any timm optimizer)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--min-size", type=int, default=64, help="shorter side the model resizes to (images: 96x128)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--min-ap", type=float, default=0.2, help="exit 1 when the final segm_AP is lower")
    parser.add_argument("--log-every", type=int, default=16, help="print the losses every N steps (0: never)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data and run here (default: temporary)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as temporary:
        root = args.workdir or Path(temporary)
        make_synthetic_coco(root / "coco", num_images=args.train_images, split="train", seed=0)
        make_synthetic_coco(root / "coco", num_images=args.val_images, split="val", seed=1)
        config = load_config(None, [
            "task=instance_segmentation", f"model.name={args.model}", "model.init=none",
            "finetune.trainable_backbone_layers=5", f"model.kwargs={SAMPLING}", "data.format=coco",
            f"data.root={root / 'coco'}", "data.train_split=annotations/instances_train.json",
            "data.val_split=annotations/instances_val.json", "data.images_dir=train", "data.val_images_dir=val",
            "data.color_jitter=null", f"data.batch_size={args.batch_size}", "data.num_workers=1",
            f"segmentation.min_size={args.min_size}", f"segmentation.max_size={args.min_size * 4 // 3}",
            "segmentation.aspect_ratio_grouping=false", "segmentation.detections_per_img=20",
            f"optim.name={args.optimizer}", f"optim.lr={args.lr}", "optim.weight_decay=0.0001", "sched.name=cosine",
            "sched.warmup_epochs=1", "sched.warmup_factor=0.01",
            f"train.epochs={args.epochs}", f"train.eval_every={args.epochs}", "train.clip_grad=10.0",
            "train.progress=false", "train.plots=false", f"project={root / 'runs'}", "name=maskrcnn_learns",
        ])
        probe = LearningProbe(log_every=args.log_every)
        started = time.perf_counter()
        result = Trainer(config, hooks=[probe]).fit()
        minutes = (time.perf_counter() - started) / 60

    before, after = probe.before or {}, result.metrics
    print(f"\n{args.model} from random weights, {args.train_images} train / {args.val_images} val images of "
          f"96x128 px (min_size {args.min_size}), batch {args.batch_size}, {args.epochs} epochs = "
          f"{len(probe.step_ends)} iterations, {torch.get_num_threads()} CPU threads, {minutes:.1f} min in all")
    print(f"{'metric':<18} {'before':>8} {'after':>8}")
    for key in ("segm_AP", "segm_AP50", "bbox_AP", "bbox_AP50", "segm_AP_book", "segm_AP_cup", "segm_AP_ball"):
        print(f"{key:<18} {before.get(f'val_{key}', float('nan')):>8.3f} {after.get(f'val_{key}', float('nan')):>8.3f}")
    print(f"seconds per iteration: {probe.seconds_per_step():.2f} (median; batch {args.batch_size})")
    final = after.get("val_segm_AP", float("nan"))
    if not final >= args.min_ap:
        print(f"FAILED: final segm_AP {final:.3f} < --min-ap {args.min_ap}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
