"""Training throughput: visiontune's Trainer vs a bare PyTorch loop, same timm model, data and batch size.

Both read JPEG files from disk and decode them in DataLoader workers with the same timm transform, then run
forward/backward/SGD step. Each side gets one warm-up epoch, then ``--epochs`` timed epochs; the two are
interleaved (bare, trainer, bare, trainer, ...) so that machine load affects both alike. Prints images/s
of each and the ratio trainer / bare (target >= 0.9 on CPU).

    python benchmarks/train_throughput.py [--model resnet18] [--image-size 128] [--images 256] [--workers 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import timm
import torch
from timm.data import create_transform
from torch.utils.data import DataLoader

from visiontune.config import load_config
from visiontune.data.classification import ClassificationDataset, scan_image_folder
from visiontune.data.synthetic import make_shapes_dataset
from visiontune.engine.trainer import Trainer


def make_jpeg_dataset(root: Path, images: int, image_size: int) -> Path:
    """Shapes dataset re-encoded as JPEG at ``image_size`` (so decoding costs like real photos)."""
    from PIL import Image

    per_class = max(1, images // 5)
    make_shapes_dataset(root / "png", num_classes=5, train_per_class=per_class, val_per_class=1,
                        image_size=image_size, seed=0)
    for path in (root / "png" / "train").rglob("*.png"):
        target = root / "jpg" / "train" / path.parent.name / (path.stem + ".jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("RGB").save(target, quality=90)
    return root / "jpg"


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
        root = make_jpeg_dataset(Path(tmp), args.images, args.image_size)
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
        for epoch in range(args.epochs + 1):
            seen, seconds = bare_epoch(model, loader, optimizer, criterion)
            stats = trainer.train_one_epoch()
            trainer.state.epoch += 1
            trainer.state.batch_in_epoch = 0
            if epoch == 0:
                continue  # warm-up: worker start, allocator, first-touch costs
            bare_rates.append(seen / seconds)
            trainer_rates.append(stats["images_per_s"])
        bare, ours = statistics.median(bare_rates), statistics.median(trainer_rates)
        print(f"model {args.model}, {len(dataset)} JPEGs at {args.image_size}px, batch {args.batch_size}, "
              f"{args.workers} workers, torch threads {torch.get_num_threads()}")
        print(f"bare PyTorch loop : {bare:8.1f} images/s  (epochs: {', '.join(f'{r:.1f}' for r in bare_rates)})")
        print(f"visiontune Trainer: {ours:8.1f} images/s  (epochs: {', '.join(f'{r:.1f}' for r in trainer_rates)})")
        print(f"ratio trainer / bare: {ours / bare:.3f}")


if __name__ == "__main__":
    main()
