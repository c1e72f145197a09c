"""Training throughput: visiontune's Trainer vs a bare PyTorch loop, same timm model, data and batch size.

Both read JPEG files from disk and decode them in DataLoader workers with the same timm transform, then run
forward/backward/SGD step. Each side gets one warm-up epoch, then ``--epochs`` timed epochs; the two are
interleaved (bare, trainer, bare, trainer, ...) so that machine load affects both alike. Prints images/s
of each and the ratio trainer / bare (target >= 0.9 on CPU).

    python benchmarks/train_throughput.py [--model resnet18] [--image-size 128] [--images 256] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import timm
import torch
from _common import format_rates, make_jpeg_shapes, median_rate, trainer_epoch
from torch.utils.data import DataLoader

from visiontune.config import load_config
from visiontune.data.classification import ClassificationDataset, scan_image_folder
from visiontune.engine.trainer import Trainer


def bare_epoch(model, loader, optimizer, criterion) -> tuple[int, float]:
    model.train()
    started = time.perf_counter()
    seen = 0
    for images, labels in loader:
        loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(images)
    return seen, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = make_jpeg_shapes(Path(tmp), args.images, args.image_size)
        config = load_config(None, [
            "task=classification", f"data.root={root}", "data.val_split=null", f"project={tmp}/runs",
            f"model.name={args.model}", f"data.image_size={args.image_size}", f"data.batch_size={args.batch_size}",
            f"data.num_workers={args.workers}", "data.auto_augment=null", "optim.name=sgd", "optim.lr=0.01",
            "optim.momentum=0.9", "optim.weight_decay=0", "sched.name=constant", f"train.epochs={args.epochs + 1}",
            "train.progress=false", "train.plots=false",
        ])
        trainer = Trainer(config)
        trainer.setup()

        torch.manual_seed(0)
        model = timm.create_model(args.model, num_classes=5)
        transform = trainer.task.build_transform(train=True)
        dataset = ClassificationDataset(scan_image_folder(root / "train"), transform)
        loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                            persistent_workers=args.workers > 0, prefetch_factor=4 if args.workers else None)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        criterion = torch.nn.CrossEntropyLoss()

        bare_rates, trainer_rates = [], []
        for _ in range(args.epochs + 1):  # the first epoch is a warm-up: worker start, allocator, first touches
            seen, seconds = bare_epoch(model, loader, optimizer, criterion)
            bare_rates.append(seen / seconds)
            images, seconds = trainer_epoch(trainer)
            trainer_rates.append(images / seconds)
        bare, ours = median_rate(bare_rates), median_rate(trainer_rates)
        bare_rates, trainer_rates = bare_rates[1:], trainer_rates[1:]
        print(f"model {args.model}, {len(dataset)} JPEGs at {args.image_size}px, batch {args.batch_size}, "
              f"{args.workers} workers, torch threads {torch.get_num_threads()}")
        print(f"bare PyTorch loop : {bare:8.1f} images/s  (epochs: {format_rates(bare_rates)})")
        print(f"visiontune Trainer: {ours:8.1f} images/s  (epochs: {format_rates(trainer_rates)})")
        print(f"ratio trainer / bare: {ours / bare:.3f}")


if __name__ == "__main__":
    main()
