"""A deterministic synthetic COCO instance-segmentation dataset for tests and benchmarks.

Objects are filled shapes on a textured background: category ``i`` is drawn as a rotated rectangle
(``i % 3 == 0``), an irregular polygon (``i % 3 == 1``) or an ellipse (``i % 3 == 2``) in its own base
colour. Every object is annotated with its polygon, and the pixels painted for it are exactly the
pixels of that polygon's mask as pycocotools rasterises it, so boxes, masks and image agree. Objects do
not overlap. Some images hold no object, and one image holds a crowd region (a cluster of small
discs of the last category) annotated as a compressed RLE with ``iscrowd: 1``.

Layout written under ``out_dir`` (the COCO layout)::

    out_dir/<split>/000001.png ...
    out_dir/annotations/instances_<split>.json
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from pycocotools import mask as mask_utils

__all__ = ["make_synthetic_coco", "synthetic_images_dir"]

_BASE_COLORS = (
    (220, 60, 50),
    (40, 170, 70),
    (50, 90, 220),
    (230, 200, 40),
    (170, 60, 200),
    (40, 200, 210),
)
_SHAPE_KINDS = ("rectangle", "polygon", "ellipse")
_MIN_IMAGE_SIDE = 48
_PLACEMENT_TRIES = 200


def synthetic_images_dir(annotation_file: str | Path) -> Path:
    """Image folder that belongs to an annotation file written by :func:`make_synthetic_coco`.

    Args:
        annotation_file: ``out_dir/annotations/instances_<split>.json``.

    Returns:
        ``out_dir/<split>``.
    """
    path = Path(annotation_file)
    split = path.stem.removeprefix("instances_")
    return path.parent.parent / split


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured background: a few random sinusoidal gratings plus noise, uint8 ``[H, W, 3]``."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    texture = np.zeros((height, width), dtype=np.float64)
    for _ in range(3):
        angle = rng.uniform(0, math.pi)
        frequency = rng.uniform(0.05, 0.25)
        phase = rng.uniform(0, 2 * math.pi)
        texture += np.sin(frequency * (cols * math.cos(angle) + rows * math.sin(angle)) + phase)
    texture = (texture - texture.min()) / max(float(np.ptp(texture)), 1e-6)
    tint = rng.uniform(0.6, 1.0, size=3)
    base = 60.0 + 80.0 * texture[..., None] * tint[None, None, :]
    noise = rng.normal(0.0, 6.0, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _shape_polygon(
    rng: np.random.Generator, kind: str, center: tuple[float, float], radius: tuple[float, float]
) -> list[float]:
    """Vertices ``[x0, y0, x1, y1, ...]`` (pixels) of a shape inside the ellipse ``center`` +- ``radius``."""
    center_x, center_y = center
    radius_x, radius_y = radius
    if kind == "rectangle":
        angle = rng.uniform(-0.4, 0.4)
        corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        half_x, half_y = radius_x * 0.7, radius_y * 0.7
        points = [(cx * half_x, cy * half_y) for cx, cy in corners]
        points = [(x * math.cos(angle) - y * math.sin(angle), x * math.sin(angle) + y * math.cos(angle))
                  for x, y in points]
    elif kind == "polygon":
        count = int(rng.integers(5, 8))
        angles = np.sort(rng.uniform(0, 2 * math.pi, size=count))
        scales = rng.uniform(0.6, 1.0, size=count)
        points = [(radius_x * s * math.cos(a), radius_y * s * math.sin(a)) for a, s in zip(angles, scales)]
    elif kind == "ellipse":
        angles = np.linspace(0, 2 * math.pi, num=24, endpoint=False)
        points = [(radius_x * math.cos(a), radius_y * math.sin(a)) for a in angles]
    else:
        raise ValueError(f"unknown shape kind {kind!r}; expected one of {_SHAPE_KINDS}")
    return [round(value, 2) for x, y in points for value in (center_x + x, center_y + y)]


def _mask_box(mask: np.ndarray) -> list[float]:
    """Tight ``[x, y, width, height]`` box (pixels) of a non-empty uint8 mask ``[H, W]``."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]


def _overlaps(box: Sequence[float], others: Sequence[Sequence[float]], margin: float = 2.0) -> bool:
    x, y, width, height = box
    for other_x, other_y, other_width, other_height in others:
        if (x < other_x + other_width + margin and other_x < x + width + margin
                and y < other_y + other_height + margin and other_y < y + height + margin):
            return True
    return False


def _paint(image: np.ndarray, mask: np.ndarray, color: np.ndarray, rng: np.random.Generator) -> None:
    """Fill the mask's pixels with ``color`` plus a little noise (in place)."""
    pixels = int(mask.sum())
    noise = rng.normal(0.0, 8.0, size=(pixels, 3))
    image[mask.astype(bool)] = np.clip(color[None, :] + noise, 0, 255).astype(np.uint8)


def _place_objects(
    rng: np.random.Generator,
    image: np.ndarray,
    count: int,
    num_categories: int,
    occupied: list[list[float]],
) -> list[dict[str, Any]]:
    """Draw up to ``count`` non-overlapping objects; return their partial annotations."""
    height, width = image.shape[:2]
    objects = []
    for _ in range(count):
        for _ in range(_PLACEMENT_TRIES):
            category_index = int(rng.integers(0, num_categories))
            radius = (rng.uniform(0.08, 0.2) * width, rng.uniform(0.08, 0.2) * height)
            center = (rng.uniform(radius[0], width - radius[0]), rng.uniform(radius[1], height - radius[1]))
            polygon = _shape_polygon(rng, _SHAPE_KINDS[category_index % len(_SHAPE_KINDS)], center, radius)
            mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([polygon], height, width)))
            if mask.sum() == 0:
                continue
            box = _mask_box(mask)
            if box[2] < 4 or box[3] < 4 or _overlaps(box, occupied):
                continue
            color = np.array(_BASE_COLORS[category_index % len(_BASE_COLORS)], dtype=np.float64)
            _paint(image, mask, color, rng)
            occupied.append(box)
            objects.append({"category_index": category_index, "segmentation": [polygon], "bbox": box,
                            "area": float(mask.sum()), "iscrowd": 0})
            break
    return objects


def _place_crowd(
    rng: np.random.Generator, image: np.ndarray, category_index: int, occupied: list[list[float]]
) -> dict[str, Any] | None:
    """Draw a cluster of small discs and return its crowd annotation (compressed RLE), or None if no room."""
    height, width = image.shape[:2]
    region_width, region_height = max(12, width // 4), max(12, height // 4)
    rows, cols = np.mgrid[0:height, 0:width]
    for _ in range(_PLACEMENT_TRIES):
        left = int(rng.integers(0, width - region_width + 1))
        top = int(rng.integers(0, height - region_height + 1))
        if _overlaps([left, top, region_width, region_height], occupied):
            continue
        mask = np.zeros((height, width), dtype=np.uint8)
        for _ in range(int(rng.integers(4, 7))):
            disc_x = rng.uniform(left + 3, left + region_width - 3)
            disc_y = rng.uniform(top + 3, top + region_height - 3)
            mask[(cols - disc_x) ** 2 + (rows - disc_y) ** 2 <= 2.5**2] = 1
        color = np.array(_BASE_COLORS[category_index % len(_BASE_COLORS)], dtype=np.float64)
        _paint(image, mask, color, rng)
        box = _mask_box(mask)
        occupied.append(box)
        rle = mask_utils.encode(np.asfortranarray(mask))
        return {"category_index": category_index, "bbox": box, "area": float(mask.sum()), "iscrowd": 1,
                "segmentation": {"size": [height, width], "counts": rle["counts"].decode("utf-8")}}
    return None


def _checked_empty_count(
    num_images: int,
    image_size: tuple[int, int],
    categories: Sequence[str],
    num_empty_images: int | None,
    max_objects_per_image: int,
) -> int:
    """Check the arguments of :func:`make_synthetic_coco`; return the number of empty images (None resolved).

    Raises:
        ValueError: An argument is out of range.
    """
    height, width = image_size
    if height < _MIN_IMAGE_SIDE or width < _MIN_IMAGE_SIDE:
        raise ValueError(f"image_size must be at least {_MIN_IMAGE_SIDE} pixels per side, got {image_size}")
    if not categories or len(set(categories)) != len(categories):
        raise ValueError(f"categories must be non-empty and unique, got {list(categories)}")
    if num_images < 1 or max_objects_per_image < 1:
        raise ValueError(f"num_images and max_objects_per_image must be >= 1, got {num_images}, "
                         f"{max_objects_per_image}")
    if num_empty_images is None:
        num_empty_images = max(1, num_images // 4) if num_images > 1 else 0
    if not 0 <= num_empty_images < num_images:
        raise ValueError(f"num_empty_images must be in [0, num_images), got {num_empty_images}")
    return num_empty_images


def _draw_objects(
    rng: np.random.Generator, image: np.ndarray, *, max_objects: int, num_categories: int, with_crowd: bool
) -> list[dict[str, Any]]:
    """Paint the objects of one non-empty image (in place) and return their partial annotations.

    A crowd image holds one object plus the crowd region (of the last category); any other image 1 to
    ``max_objects`` objects.

    Raises:
        RuntimeError: The crowd region finds no room beside the object.
    """
    occupied: list[list[float]] = []
    count = 1 if with_crowd else int(rng.integers(1, max_objects + 1))
    objects = _place_objects(rng, image, count, num_categories, occupied)
    if with_crowd:
        crowd = _place_crowd(rng, image, num_categories - 1, occupied)
        if crowd is None:
            height, width = image.shape[:2]
            raise RuntimeError(f"no room for the crowd region in a {width}x{height} image")
        objects.append(crowd)
    return objects


def _annotation_entry(annotation_id: int, image_id: int, category_id: int, item: dict[str, Any]) -> dict[str, Any]:
    """The COCO ``annotations`` entry of one drawn object (``item`` from :func:`_draw_objects`)."""
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": item["bbox"],
        "area": item["area"],
        "iscrowd": item["iscrowd"],
        "segmentation": item["segmentation"],
    }


def make_synthetic_coco(
    out_dir: str | Path,
    *,
    num_images: int = 8,
    image_size: tuple[int, int] = (96, 128),
    categories: Sequence[str] = ("book", "cup", "ball"),
    num_empty_images: int | None = None,
    max_objects_per_image: int = 3,
    with_crowd: bool = True,
    split: str = "train",
    seed: int = 0,
) -> Path:
    """Write a small synthetic COCO instance-segmentation dataset.

    The output is a pure function of the arguments (same seed, same bytes). Category ids are
    ``10, 20, 30, ...`` (not contiguous, as in COCO) and image ids ``1..num_images``.

    Args:
        out_dir: Root folder; images go to ``out_dir/<split>/`` and the annotations to
            ``out_dir/annotations/instances_<split>.json``.
        num_images: Number of images.
        image_size: ``(height, width)`` of every image in pixels (each at least 48).
        categories: Category names (at least one).
        num_empty_images: Images without any object; None picks ``max(1, num_images // 4)``.
        max_objects_per_image: Each non-empty image holds 1 to this many objects.
        with_crowd: Add one crowd annotation (compressed RLE) to the first non-empty image.
        split: Split name used in the file and folder names.
        seed: Random seed.

    Returns:
        Path of the written annotation JSON file.

    Raises:
        ValueError: An argument is out of range.
    """
    height, width = image_size
    num_empty_images = _checked_empty_count(num_images, image_size, categories, num_empty_images,
                                            max_objects_per_image)
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    images_dir = out_dir / split
    annotation_dir = out_dir / "annotations"
    images_dir.mkdir(parents=True, exist_ok=True)
    annotation_dir.mkdir(parents=True, exist_ok=True)
    category_ids = [10 * (index + 1) for index in range(len(categories))]
    empty_indices = set(rng.choice(num_images, size=num_empty_images, replace=False).tolist())
    crowd_index = min((index for index in range(num_images) if index not in empty_indices), default=None)

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in range(num_images):
        image_id = index + 1
        image = _background(rng, height, width)
        objects: list[dict[str, Any]] = []
        if index not in empty_indices:
            objects = _draw_objects(rng, image, max_objects=max_objects_per_image, num_categories=len(categories),
                                    with_crowd=with_crowd and index == crowd_index)
        file_name = f"{image_id:06d}.png"
        PILImage.fromarray(image).save(images_dir / file_name)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for item in objects:
            annotations.append(_annotation_entry(len(annotations) + 1, image_id, category_ids[item["category_index"]],
                                                 item))
    document = {
        "info": {"description": f"visiontune synthetic COCO ({split}, seed {seed})"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": category_id, "name": name, "supercategory": "shape"}
                       for category_id, name in zip(category_ids, categories)],
    }
    annotation_file = annotation_dir / f"instances_{split}.json"
    annotation_file.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return annotation_file
