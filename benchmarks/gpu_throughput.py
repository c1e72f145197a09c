"""Training throughput on the device users train on: visiontune's Trainer vs a bare PyTorch loop, per task.

Both sides train the same model (``task.build_model()``) on the same JPEG files, written on the fly and decoded by
the task's own dataset class and transforms (``task.build_dataset(split, train=True)``) and collated by the task's
``collate_fn``, with the same batch size, DataLoader settings (workers, pin_memory, persistent workers, prefetch:
copied from the trainer's loader), optimizer type and learning rate, and autocast dtype (a GradScaler with fp16);
the bare loop does nothing else: ``loss = sum(model(images, targets).values())``, backward, step. Epochs alternate
(trainer, bare, trainer, bare, ...) so that machine load affects both alike; each side's images/s is the median
over the epochs after its first (warm-up: worker start, cuDNN autotuning, allocator, compilation). One line per
task::

    classification: trainer 123.4 img/s, bare 125.0 img/s, ratio 0.987 (resnet50 @224, batch 256, bf16, cuda)

Default shapes are the GPU ones (ResNet-50 @224 batch 256; RetinaFace ResNet-50 @840 batch 24; Mask R-CNN R50-FPN
on 640x480 images, batch 8). ``--tiny`` picks tiny models and sizes that run in seconds on a CPU (the test suite
runs ``--device cpu --tiny`` so that this script cannot rot).

    python benchmarks/gpu_throughput.py --task all [--device cuda] [--amp auto] [--epochs 3] [--json results.json]
    python benchmarks/gpu_throughput.py --task classification --device cpu --tiny
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from _common import (
    format_rates,
    make_jpeg_coco,
    make_jpeg_shapes,
    make_wider_faces,
    median_rate,
    synchronize,
    trainer_epoch,
)
from torch.utils.data import DataLoader

from visiontune.config import load_config
from visiontune.engine.trainer import Trainer
from visiontune.tasks import create_task

TASKS = ("classification", "face_detection", "instance_segmentation")


@dataclass(frozen=True)
class Shape:
    """What one task trains in the benchmark."""

    model: str
    height: int
    width: int
    batch_size: int
    batches: int
    """Batches per epoch (the dataset holds ``batches * batch_size`` images)."""
    unique: int
    """Distinct images rendered; the rest are copies (still decoded and augmented per epoch)."""
    workers: int

    @property
    def images(self) -> int:
        return self.batch_size * self.batches

    def size_text(self) -> str:
        return f"@{self.height}" if self.height == self.width else f"@{self.width}x{self.height}"


GPU_SHAPES = {
    "classification": Shape("resnet50", 224, 224, batch_size=256, batches=8, unique=500, workers=12),
    # source photos 1024x768, random square crops resized to 840 (RetinaFaceTrainTransform)
    "face_detection": Shape("retinaface_resnet50", 840, 840, batch_size=24, batches=8, unique=96, workers=12),
    "instance_segmentation": Shape("maskrcnn_resnet50_fpn", 480, 640, batch_size=8, batches=10, unique=40, workers=8),
}
TINY_SHAPES = {
    "classification": Shape("resnet10t", 48, 48, batch_size=8, batches=3, unique=20, workers=1),
    "face_detection": Shape("retinaface_mobilenet0.25", 160, 160, batch_size=4, batches=2, unique=8, workers=1),
    "instance_segmentation": Shape("maskrcnn_resnet50_fpn", 96, 128, batch_size=2, batches=2, unique=4, workers=1),
}
TINY_OVERRIDES = {
    # fewer RPN proposals and sampled RoIs: a random Mask R-CNN's thousands of proposals cost seconds on a CPU
    "instance_segmentation": ["model.kwargs={rpn_pre_nms_top_n_train: 200, rpn_post_nms_top_n_train: 100, "
                              "box_batch_size_per_image: 64, rpn_batch_size_per_image: 64}"],
}
FACE_SOURCE_SIZE = {False: (768, 1024), True: (192, 256)}
"""(height, width) of the face photos, GPU and tiny (the training crop is ``Shape.height``)."""

COMMON_OVERRIDES = [
    "data.val_split=null", "optim.name=sgd", "optim.lr=0.01", "optim.momentum=0.9", "optim.weight_decay=0.0001",
    "sched.name=constant", "train.progress=false", "train.plots=false", "train.report=false", "seed=0",
    "data.persistent_workers=true", "data.pin_memory=true",
]


def task_overrides(task: str, shape: Shape, root: Path, tiny: bool) -> list[str]:
    """The data files (written under ``root``) and the task's config keys."""
    if task == "classification":
        data_root = make_jpeg_shapes(root, shape.images, shape.height, unique=shape.unique)
        return [f"data.root={data_root}", f"data.image_size={shape.height}", "data.crop_pct=1.0",
                "data.auto_augment=null", "data.color_jitter=0.4"]
    if task == "face_detection":
        height, width = FACE_SOURCE_SIZE[tiny]
        make_wider_faces(root, shape.images, height, width, unique=shape.unique)
        return [f"data.root={root}", "data.format=retinaface", "data.train_split=label.txt", "data.images_dir=images",
                f"data.image_size={shape.height}"]
    annotation_file = make_jpeg_coco(root, shape.images, shape.height, shape.width, unique=shape.unique)
    return [f"data.root={root}", "data.format=coco", f"data.train_split={annotation_file.relative_to(root)}",
            "data.images_dir=train", "model.init=none", f"segmentation.min_size={min(shape.height, shape.width)}",
            f"segmentation.max_size={max(shape.height, shape.width)}", "data.color_jitter=null"]


def to_device(value: Any, device: torch.device) -> Any:
    """Tensors in (nested) lists, tuples and dicts moved to ``device``; anything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(item, device) for item in value)
    if isinstance(value, dict):
        return {key: to_device(item, device) for key, item in value.items()}
    return value


class BareLoop:
    """The plain PyTorch loop: the task's dataset, collate and model; a DataLoader; SGD; autocast; nothing else."""

    def __init__(self, config: Any, trainer: Trainer) -> None:
        self.device = trainer.device
        self.dtype = trainer.autocast_dtype
        self.channels_last = config.train.channels_last
        task = create_task(config)
        dataset = task.build_dataset(config.data.train_split, train=True)
        torch.manual_seed(0)
        model = task.build_model().to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.forward: Callable[..., Any] = torch.compile(model) if config.train.compile else model
        reference = trainer.train_loader  # the same loader settings as the trainer's
        self.loader = DataLoader(
            dataset, batch_size=config.data.batch_size, shuffle=True, drop_last=True,
            collate_fn=task.collate_fn(train=True), num_workers=reference.num_workers,
            pin_memory=reference.pin_memory, persistent_workers=reference.persistent_workers,
            prefetch_factor=reference.prefetch_factor if reference.num_workers else None,
        )
        self.optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=config.optim.lr,
                                         momentum=config.optim.momentum, weight_decay=config.optim.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)

    def epoch(self) -> tuple[int, float]:
        """One epoch: the images and the seconds, device work included."""
        self.model.train()
        synchronize(self.device)
        started = time.perf_counter()
        seen = 0
        for images, targets in self.loader:
            images, targets = to_device(images, self.device), to_device(targets, self.device)
            if self.channels_last and isinstance(images, torch.Tensor):
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
                loss = sum(self.forward(images, targets).values())
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            seen += len(images)
        synchronize(self.device)
        return seen, time.perf_counter() - started


@dataclass
class Result:
    task: str
    model: str
    size: str
    batch_size: int
    precision: str
    device: str
    trainer_img_s: float
    bare_img_s: float
    trainer_epochs: list[float]
    bare_epochs: list[float]

    @property
    def ratio(self) -> float:
        return self.trainer_img_s / self.bare_img_s

    def line(self) -> str:
        return (f"{self.task}: trainer {self.trainer_img_s:.1f} img/s, bare {self.bare_img_s:.1f} img/s, ratio "
                f"{self.ratio:.3f} ({self.model} {self.size}, batch {self.batch_size}, {self.precision}, "
                f"{self.device})")


PRECISION_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}


def run_task(task: str, shape: Shape, args: argparse.Namespace) -> Result:
    with tempfile.TemporaryDirectory(prefix=f"vt-bench-{task}-") as tmp:
        root = Path(tmp) / "data"
        overrides = [
            f"task={task}", f"project={tmp}/runs", f"device={args.device}", f"model.name={shape.model}",
            f"data.batch_size={shape.batch_size}", f"data.num_workers={shape.workers}", f"train.amp={args.amp}",
            f"train.epochs={args.epochs + 2}", f"train.channels_last={str(args.channels_last).lower()}",
            f"train.compile={str(args.compile).lower()}", *COMMON_OVERRIDES,
            *task_overrides(task, shape, root, args.tiny), *(TINY_OVERRIDES.get(task, []) if args.tiny else []),
            *args.set,
        ]
        config = load_config(None, overrides)
        trainer = Trainer(config)
        trainer.setup()
        bare = BareLoop(load_config(None, overrides), trainer)
        trainer_rates, bare_rates = [], []
        for _ in range(args.epochs + 1):  # the first epoch of each side is its warm-up
            images, seconds = trainer_epoch(trainer)
            trainer_rates.append(images / seconds)
            images, seconds = bare.epoch()
            bare_rates.append(images / seconds)
        result = Result(task=task, model=shape.model, size=shape.size_text(), batch_size=shape.batch_size,
                        precision=PRECISION_NAMES.get(trainer.autocast_dtype, str(trainer.autocast_dtype)),
                        device=str(trainer.device), trainer_img_s=median_rate(trainer_rates),
                        bare_img_s=median_rate(bare_rates), trainer_epochs=trainer_rates, bare_epochs=bare_rates)
        del bare, trainer
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", nargs="+", default=["all"], choices=[*TASKS, "all"])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--tiny", action="store_true", help="tiny models, sizes and datasets (seconds on a CPU)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="timed epochs per side after the warm-up epoch (default 3; 1 with --tiny)")
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"], help="train.amp")
    parser.add_argument("--batch-size", type=int, default=None, help="override the task's batch size")
    parser.add_argument("--batches", type=int, default=None, help="override the batches per epoch")
    parser.add_argument("--workers", type=int, default=None, help="override data.num_workers")
    parser.add_argument("--model", default=None, help="override the model (one task only)")
    parser.add_argument("--channels-last", action="store_true", help="train.channels_last on both sides")
    parser.add_argument("--compile", action="store_true", help="train.compile / torch.compile on both sides")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; 1 with --tiny, quick even on a busy machine)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config overrides")
    parser.add_argument("--json", type=Path, default=None, help="append the results to this JSON-lines file")
    args = parser.parse_args(argv)
    args.tasks = list(TASKS) if "all" in args.task else list(dict.fromkeys(args.task))
    if args.model and len(args.tasks) != 1:
        parser.error("--model needs exactly one --task")
    if args.epochs is None:
        args.epochs = 1 if args.tiny else 3
    if args.threads is None and args.tiny:
        args.threads = 1
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    return args


def shape_for(task: str, args: argparse.Namespace) -> Shape:
    shape = (TINY_SHAPES if args.tiny else GPU_SHAPES)[task]
    changes = {"model": args.model, "batch_size": args.batch_size, "batches": args.batches, "workers": args.workers}
    return replace(shape, **{key: value for key, value in changes.items() if value is not None})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_throughput: no CUDA device (use --device cpu --tiny for the CPU check)", file=sys.stderr)
        return 2
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}, "
          f"torch threads {torch.get_num_threads()}", flush=True)
    for task in args.tasks:
        shape = shape_for(task, args)
        started = time.perf_counter()
        result = run_task(task, shape, args)
        print(result.line(), flush=True)
        print(f"  epochs (first = warm-up): trainer {format_rates(result.trainer_epochs)}; bare "
              f"{format_rates(result.bare_epochs)}; {shape.images} JPEGs, {shape.workers} workers, "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        if args.json is not None:
            with args.json.open("a", encoding="utf-8") as stream:
                stream.write(json.dumps({**asdict(result), "ratio": result.ratio, "line": result.line(),
                                         "channels_last": args.channels_last, "compile": args.compile,
                                         "workers": shape.workers, "images": shape.images}) + "\n")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
