"""A small synthetic classification dataset ("shapes") for ``visiontune demo`` and tests.

Each image shows one large light shape (the class: circle, square, triangle, ...) at a random position, size and
rotation, with a random tint, on a dark random-colour, textured, noisy background with a few small distractor blobs
and lines. The task is easy for a person but has to be learned by a network: in development runs of ``visiontune demo``
(resnet10t trained from scratch, 6 epochs over the default 300 training images, CPU) validation top-1 rose from
28 % after the first epoch to 59 % after the sixth (5 classes, chance 20 %).

The data is written as an ImageFolder tree that :func:`visiontune.data.classification.scan_image_folder` reads::

    out_dir/train/<class>/<class>_0000.png ...
    out_dir/val/<class>/<class>_0000.png ...
    out_dir/manifest.json   (generator parameters; marks a complete dataset)
    out_dir/README.txt

Every image is seeded from ``(seed, split, class, index)``, so the dataset is identical for equal parameters.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
GENERATOR_VERSION = 2  # bump when the images change for equal parameters, so stale datasets are regenerated
SPLITS = ("train", "val")
_SUPERSAMPLE = 2  # shapes are drawn at this scale and box-filtered down for anti-aliased edges

Point = tuple[float, float]


def _regular_polygon(corners: int, *, phase: float = 0.0) -> list[Point]:
    return [
        (math.cos(phase + 2 * math.pi * corner / corners), math.sin(phase + 2 * math.pi * corner / corners))
        for corner in range(corners)
    ]


def _star(points: int = 5, *, inner: float = 0.45) -> list[Point]:
    outline = []
    for vertex in range(2 * points):
        radius = 1.0 if vertex % 2 == 0 else inner
        angle = -math.pi / 2 + math.pi * vertex / points
        outline.append((radius * math.cos(angle), radius * math.sin(angle)))
    return outline


def _cross(*, half_width: float = 0.3) -> list[Point]:
    w = half_width
    return [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]


def _transform(points: list[Point], *, cx: float, cy: float, radius: float, angle: float) -> list[Point]:
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + radius * (x * cos - y * sin), cy + radius * (x * sin + y * cos)) for x, y in points]


def _draw_polygon(points: list[Point]) -> Callable[[ImageDraw.ImageDraw, float, float, float, float], None]:
    def draw(canvas: ImageDraw.ImageDraw, cx: float, cy: float, radius: float, angle: float) -> None:
        canvas.polygon(_transform(points, cx=cx, cy=cy, radius=radius, angle=angle), fill=255)

    return draw


def _draw_circle(canvas: ImageDraw.ImageDraw, cx: float, cy: float, radius: float, angle: float) -> None:
    canvas.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)


def _draw_ring(canvas: ImageDraw.ImageDraw, cx: float, cy: float, radius: float, angle: float) -> None:
    inner = 0.55 * radius
    canvas.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
    canvas.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)


def _draw_crescent(canvas: ImageDraw.ImageDraw, cx: float, cy: float, radius: float, angle: float) -> None:
    canvas.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
    ox, oy = cx + 0.5 * radius * math.cos(angle), cy + 0.5 * radius * math.sin(angle)
    cut = 0.85 * radius
    canvas.ellipse((ox - cut, oy - cut, ox + cut, oy + cut), fill=0)


SHAPES: dict[str, Callable[[ImageDraw.ImageDraw, float, float, float, float], None]] = {
    "circle": _draw_circle,
    "square": _draw_polygon(_regular_polygon(4, phase=math.pi / 4)),
    "triangle": _draw_polygon(_regular_polygon(3, phase=-math.pi / 2)),
    "cross": _draw_polygon(_cross()),
    "star": _draw_polygon(_star()),
    "ring": _draw_ring,
    "hexagon": _draw_polygon(_regular_polygon(6)),
    "crescent": _draw_crescent,
}
"""Shape kinds in class order; ``make_shapes_dataset(num_classes=k)`` uses the first ``k``."""


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Float32 ``[size, size, 3]`` background, roughly 0-150: a dark colour gradient plus low-frequency texture."""
    base = rng.uniform(0, 120, size=3)  # dark, any hue: the light shapes always stand out the same way
    tilt = rng.uniform(-60, 60, size=3)
    direction = rng.uniform(0, 2 * math.pi)
    coords = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    ramp = math.cos(direction) * coords[None, :] + math.sin(direction) * coords[:, None]
    image = base[None, None, :] + ramp[:, :, None] * tilt[None, None, :]
    cells = int(rng.integers(3, 9))
    texture = rng.normal(0, rng.uniform(5, 15), size=(cells, cells, 3)).astype(np.float32)
    texture_image = Image.fromarray(np.clip(texture + 128, 0, 255).astype(np.uint8))
    texture = np.asarray(texture_image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) - 128
    return (image + texture).astype(np.float32)


def _paint(image: np.ndarray, mask: Image.Image, colour: np.ndarray) -> None:
    """Alpha-blend ``colour`` into ``image`` (in place) through an anti-aliased, supersampled ``mask``."""
    size = image.shape[0]
    alpha = np.asarray(mask.resize((size, size), Image.Resampling.BOX), dtype=np.float32)[:, :, None] / 255.0
    image *= 1.0 - alpha
    image += alpha * colour[None, None, :]


def _new_mask(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    mask = Image.new("L", (size * _SUPERSAMPLE, size * _SUPERSAMPLE), 0)
    return mask, ImageDraw.Draw(mask)


def _foreground_colour(rng: np.random.Generator, *, tint: float = 25.0) -> np.ndarray:
    """A light colour: grey 225 with a random tint of up to ``tint`` per channel.

    Light shapes on dark backgrounds (one contrast polarity) keep the task learnable from scratch within a minute;
    with random shape and background colours a small CNN barely beat chance in that budget.
    """
    return np.clip(225.0 + rng.uniform(-tint, tint, size=3), 0, 255)


def render_shape_image(shape: str, *, image_size: int, rng: np.random.Generator) -> Image.Image:
    """Draw one RGB image of ``shape`` (a key of :data:`SHAPES`) with random appearance from ``rng``.

    Returns:
        ``PIL.Image`` in mode RGB, ``image_size x image_size`` pixels.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")
    scale = image_size * _SUPERSAMPLE
    image = _background(rng, image_size)

    # Distractors: a few thin lines and small blobs (smaller than any main shape).
    mask, canvas = _new_mask(image_size)
    for _ in range(int(rng.integers(0, 3))):
        x0, y0, x1, y1 = rng.uniform(0, scale, size=4)
        canvas.line((x0, y0, x1, y1), fill=255, width=max(1, int(rng.integers(1, 3)) * _SUPERSAMPLE))
    for _ in range(int(rng.integers(0, 3))):
        cx, cy = rng.uniform(0, scale, size=2)
        radius = rng.uniform(0.04, 0.08) * scale
        if rng.random() < 0.5:
            canvas.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
        else:
            canvas.rectangle((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
    _paint(image, mask, rng.uniform(0, 255, size=3))

    # The main shape: radius 25-42 % of the image, fully inside it, any rotation.
    radius = rng.uniform(0.25, 0.42) * scale
    cx, cy = rng.uniform(radius, scale - radius, size=2)
    angle = rng.uniform(0, 2 * math.pi)
    mask, canvas = _new_mask(image_size)
    SHAPES[shape](canvas, float(cx), float(cy), float(radius), float(angle))
    _paint(image, mask, _foreground_colour(rng))

    image += rng.normal(0, rng.uniform(3, 10), size=image.shape).astype(np.float32)
    return Image.fromarray(np.clip(image, 0, 255).round().astype(np.uint8))


def _parameters(
    num_classes: int, train_per_class: int, val_per_class: int, image_size: int, seed: int
) -> dict[str, int]:
    return {
        "num_classes": num_classes,
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "image_size": image_size,
        "seed": seed,
    }


def _expected_files(out_dir: Path, classes: list[str], counts: dict[str, int]) -> list[Path]:
    return [
        out_dir / split / name / f"{name}_{index:04d}.png"
        for split in SPLITS
        for name in classes
        for index in range(counts[split])
    ]


def _read_manifest(out_dir: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("generator") == __name__ else None


def _check_shapes_arguments(num_classes: int, train_per_class: int, val_per_class: int, image_size: int) -> None:
    """Raise ``ValueError`` naming the first argument of :func:`make_shapes_dataset` that is out of range."""
    if not 2 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be between 2 and {len(SHAPES)} ({', '.join(SHAPES)}), got {num_classes}")
    for name, value in (("train_per_class", train_per_class), ("val_per_class", val_per_class)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16 pixels, got {image_size}")


def _reusable(out_dir: Path, parameters: dict[str, int], files: list[Path]) -> bool:
    """Whether ``out_dir`` holds the complete dataset of ``parameters``; a stale shapes dataset there is removed.

    Raises:
        ValueError: ``out_dir`` is a non-empty folder without a shapes manifest (never overwritten).
    """
    manifest = _read_manifest(out_dir)
    if manifest is not None:
        if (
            manifest.get("complete")
            and manifest.get("version") == GENERATOR_VERSION
            and manifest.get("parameters") == parameters
            and all(path.is_file() for path in files)
        ):
            return True
        logger.info("regenerating shapes dataset in %s (parameters or generator version changed)", out_dir)
        for split in SPLITS:
            shutil.rmtree(out_dir / split, ignore_errors=True)
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(
            f"{out_dir} is not empty and holds no shapes dataset ({MANIFEST_NAME} missing); "
            "choose an empty or new folder"
        )
    return False


def _write_images(out_dir: Path, classes: list[str], counts: dict[str, int], *, image_size: int, seed: int) -> None:
    """Render and save every image; each is seeded from ``(seed, split index, class index, image index)``."""
    for split_index, split in enumerate(SPLITS):
        for class_index, name in enumerate(classes):
            class_dir = out_dir / split / name
            class_dir.mkdir(parents=True, exist_ok=True)
            for index in range(counts[split]):
                rng = np.random.default_rng([seed, split_index, class_index, index])
                image = render_shape_image(name, image_size=image_size, rng=rng)
                image.save(class_dir / f"{name}_{index:04d}.png")


def _write_readme(out_dir: Path, classes: list[str], counts: dict[str, int], *, image_size: int, seed: int) -> None:
    """``out_dir/README.txt``: what the dataset is and the parameters it was made with."""
    (out_dir / "README.txt").write_text(
        "Synthetic shapes classification dataset written by visiontune.data.synthetic.make_shapes_dataset.\n"
        f"Classes ({len(classes)}): {', '.join(classes)}.\n"
        f"train: {counts['train']} images per class, val: {counts['val']} images per class, "
        f"{image_size}x{image_size} RGB PNG, seed {seed}.\n"
        "Each image shows one large light shape (the label) with random position, size, rotation and tint on a\n"
        "dark random-colour textured noisy background with small distractor blobs and lines.\n",
        encoding="utf-8",
    )


def make_shapes_dataset(
    out_dir: str | Path,
    *,
    num_classes: int = 5,
    train_per_class: int = 60,
    val_per_class: int = 20,
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    """Write (or reuse) the synthetic shapes dataset as an ImageFolder tree of PNG files.

    A folder holding a complete dataset made with the same parameters is reused as is. A folder holding an older
    or different shapes dataset (recognised by its ``manifest.json``) is regenerated; any other non-empty folder is
    refused, so user data is never overwritten.

    Args:
        out_dir: Destination folder; ``out_dir/train`` and ``out_dir/val`` are the splits.
        num_classes: Number of shape classes, 2 to ``len(SHAPES)``; the first ``num_classes`` of :data:`SHAPES`.
        train_per_class: Training images per class.
        val_per_class: Validation images per class.
        image_size: Image width and height in pixels (at least 16).
        seed: Seed of the whole dataset.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ValueError: A parameter is out of range, or ``out_dir`` is a non-empty folder that holds no shapes dataset.
    """
    _check_shapes_arguments(num_classes, train_per_class, val_per_class, image_size)
    out_dir = Path(out_dir)
    classes = list(SHAPES)[:num_classes]
    counts = {"train": train_per_class, "val": val_per_class}
    parameters = _parameters(num_classes, train_per_class, val_per_class, image_size, seed)
    files = _expected_files(out_dir, classes, counts)
    if _reusable(out_dir, parameters, files):
        logger.info("reusing shapes dataset in %s", out_dir)
        return out_dir

    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"generator": __name__, "version": GENERATOR_VERSION, "parameters": parameters, "classes": classes,
              "counts": counts, "complete": False}
    (out_dir / MANIFEST_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    _write_images(out_dir, classes, counts, image_size=image_size, seed=seed)
    _write_readme(out_dir, classes, counts, image_size=image_size, seed=seed)
    record["complete"] = True
    (out_dir / MANIFEST_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote shapes dataset to %s (%d images)", out_dir, len(files))
    return out_dir
