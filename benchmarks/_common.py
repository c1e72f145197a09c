"""Pieces shared by the training benchmarks (``train_throughput.py``, ``gpu_throughput.py``).

* JPEG datasets written on the fly, so that the loaders decode real files: the shapes ImageFolder
  (:func:`make_jpeg_shapes`), a COCO instance-segmentation set (:func:`make_jpeg_coco`) and a WIDER FACE set in the
  RetinaFace ``label.txt`` layout (:func:`make_wider_faces`). A few distinct images are rendered and then copied to
  the requested count (decoding and augmentation still happen per file and per epoch).
* :func:`trainer_epoch`: one epoch of a set-up :class:`~visiontune.engine.trainer.Trainer`, timed from outside.
* :func:`synchronize`, :func:`median_rate`, :func:`format_rates`.

The scripts run as ``python benchmarks/<name>.py``, which puts this folder first on ``sys.path``.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from visiontune.data.synthetic import make_shapes_dataset
from visiontune.data.synthetic_coco import make_synthetic_coco

JPEG_QUALITY = 90


def _copy_to_count(files: Sequence[Path], count: int, name_for: Any) -> list[Path]:
    """``count`` files: ``files`` then copies of them (``name_for(source, copy_index)`` names a copy)."""
    result = list(files[:count])
    index = 0
    while len(result) < count:
        source = files[index % len(files)]
        target = name_for(source, index // len(files) + 1)
        shutil.copyfile(source, target)
        result.append(target)
        index += 1
    return result


def make_jpeg_shapes(root: Path, images: int, image_size: int, *, num_classes: int = 5,
                     unique: int | None = None) -> Path:
    """The shapes dataset re-encoded as JPEG at ``image_size`` (decoding costs like real photos): ``root/jpg/train``
    holds about ``images`` files (a multiple of ``num_classes``); at most ``unique`` of them are distinct renderings.
    Returns ``root/jpg`` (an ImageFolder root with a ``train`` split)."""
    per_class = max(1, images // num_classes)
    rendered = per_class if unique is None else max(1, min(per_class, unique // num_classes))
    make_shapes_dataset(root / "png", num_classes=num_classes, train_per_class=rendered, val_per_class=1,
                        image_size=image_size, seed=0)
    for class_dir in sorted((root / "png" / "train").iterdir()):
        if not class_dir.is_dir():
            continue
        target_dir = root / "jpg" / "train" / class_dir.name
        target_dir.mkdir(parents=True, exist_ok=True)
        jpegs = []
        for path in sorted(class_dir.glob("*.png")):
            target = target_dir / (path.stem + ".jpg")
            Image.open(path).convert("RGB").save(target, quality=JPEG_QUALITY)
            jpegs.append(target)
        _copy_to_count(jpegs, per_class, lambda source, n: source.with_name(f"{source.stem}_copy{n}.jpg"))
    return root / "jpg"


def make_jpeg_coco(root: Path, images: int, height: int, width: int, *, unique: int | None = None,
                   categories: Sequence[str] = ("book", "cup", "ball")) -> Path:
    """A synthetic COCO instance-segmentation training split of ``images`` JPEG files of ``height`` x ``width``
    (every image has objects; one crowd region): ``root/train/*.jpg`` and ``root/annotations/instances_train.json``.
    Returns the annotation file."""
    rendered = images if unique is None else max(1, min(images, unique))
    annotation_file = make_synthetic_coco(root, num_images=rendered, image_size=(height, width),
                                          categories=tuple(categories), num_empty_images=0, split="train", seed=0)
    document = json.loads(annotation_file.read_text(encoding="utf-8"))
    images_dir = root / "train"
    for info in document["images"]:
        png = images_dir / info["file_name"]
        jpeg = png.with_suffix(".jpg")
        Image.open(png).convert("RGB").save(jpeg, quality=JPEG_QUALITY)
        png.unlink()
        info["file_name"] = jpeg.name
    annotations = list(document["annotations"])
    next_image_id, next_annotation_id = len(document["images"]) + 1, len(annotations) + 1
    for copy_index in range(images - rendered):
        source = document["images"][copy_index % rendered]
        image_id = next_image_id + copy_index
        file_name = f"{image_id:06d}.jpg"
        shutil.copyfile(images_dir / source["file_name"], images_dir / file_name)
        document["images"].append({**source, "id": image_id, "file_name": file_name})
        for annotation in annotations:
            if annotation["image_id"] == source["id"]:
                document["annotations"].append({**annotation, "id": next_annotation_id, "image_id": image_id})
                next_annotation_id += 1
    annotation_file.write_text(json.dumps(document), encoding="utf-8")
    return annotation_file


def _face_line(x: float, y: float, w: float, h: float) -> str:
    """A RetinaFace ``label.txt`` face line: box, five landmarks (eyes, nose, mouth corners) with flag 0, blur 1."""
    points = [(0.3, 0.35), (0.7, 0.35), (0.5, 0.55), (0.35, 0.75), (0.65, 0.75)]
    values = [x, y, w, h]
    for px, py in points:
        values += [x + px * w, y + py * h, 0.0]
    return " ".join(f"{value:.1f}" for value in values) + " 1.0"


def make_wider_faces(root: Path, images: int, height: int, width: int, *, unique: int | None = None,
                     faces_per_image: tuple[int, int] = (2, 8), seed: int = 0) -> Path:
    """A WIDER FACE-like training set in the RetinaFace layout: ``root/images/synthetic/*.jpg`` (noisy backgrounds
    with skin-coloured ellipse "faces" of 16 px to a third of the short side) and ``root/label.txt`` listing every
    face with its box and five landmarks. Returns ``root``."""
    rng = np.random.default_rng(seed)
    rendered = images if unique is None else max(1, min(images, unique))
    image_dir = root / "images" / "synthetic"
    image_dir.mkdir(parents=True, exist_ok=True)
    blocks: list[tuple[str, list[str]]] = []
    for index in range(rendered):
        base = rng.integers(40, 200, size=3)
        noise = rng.normal(0.0, 25.0, size=(height // 8 + 1, width // 8 + 1, 3))
        background = np.clip(base + np.kron(noise, np.ones((8, 8, 1)))[:height, :width], 0, 255).astype(np.uint8)
        image = Image.fromarray(background)
        canvas = ImageDraw.Draw(image)
        lines = []
        for _ in range(int(rng.integers(faces_per_image[0], faces_per_image[1] + 1))):
            size = float(rng.uniform(16, max(17, min(height, width) / 3)))
            w, h = size, size * float(rng.uniform(1.1, 1.35))
            x, y = float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h))
            skin = tuple(int(v) for v in rng.integers((150, 100, 80), (240, 190, 160)))
            canvas.ellipse((x, y, x + w, y + h), fill=skin)
            for px, py in ((0.3, 0.35), (0.7, 0.35)):
                r = max(1.0, w * 0.06)
                canvas.ellipse((x + px * w - r, y + py * h - r, x + px * w + r, y + py * h + r), fill=(30, 30, 30))
            canvas.line((x + 0.35 * w, y + 0.75 * h, x + 0.65 * w, y + 0.75 * h), fill=(120, 40, 40),
                        width=max(1, int(w * 0.04)))
            lines.append(_face_line(x, y, w, h))
        name = f"face_{index:05d}.jpg"
        image.save(image_dir / name, quality=JPEG_QUALITY)
        blocks.append((name, lines))
    for copy_index in range(images - rendered):
        source, lines = blocks[copy_index % rendered]
        name = f"face_{rendered + copy_index:05d}.jpg"
        shutil.copyfile(image_dir / source, image_dir / name)
        blocks.append((name, lines))
    text = "".join(f"# synthetic/{name}\n" + "".join(line + "\n" for line in lines) for name, lines in blocks)
    (root / "label.txt").write_text(text, encoding="utf-8")
    return root


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously), so that a timer measures it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def trainer_epoch(trainer: Any) -> tuple[int, float]:
    """One training epoch of a set-up ``Trainer`` (``trainer.setup()`` done; its hooks are the user's only): the
    images trained on and the seconds, device work included. Advances the epoch counter as ``fit`` does."""
    synchronize(trainer.device)
    started = time.perf_counter()
    trainer.train_epoch()
    synchronize(trainer.device)
    seconds = time.perf_counter() - started
    images = trainer.storage.epoch_images
    trainer.state.epoch += 1
    trainer.state.batch_in_epoch = 0
    return images, seconds


def median_rate(rates: Sequence[float], *, warmup: int = 1) -> float:
    """The median of ``rates`` after the first ``warmup`` (worker start, allocator, autotuning, compilation)."""
    timed = list(rates[warmup:]) or list(rates)
    return statistics.median(timed)


def format_rates(rates: Sequence[float]) -> str:
    return ", ".join(f"{rate:.1f}" for rate in rates)
