"""COCO instances files: reading, validating and filtering the annotations of the kept categories.

A COCO instances file (``annotations/instances_<split>.json``) holds three lists: ``images`` (``id``,
``file_name``, ``height``, ``width``), ``categories`` (``id``, ``name``) and ``annotations`` (``id``,
``image_id``, ``category_id``, ``bbox`` as ``[x, y, width, height]`` in pixels, ``segmentation`` as
polygons or run-length encoding (RLE), ``area`` and ``iscrowd``).

Conventions (as in torchvision's detection references):

* Kept categories are remapped to contiguous labels ``1..K`` (``0`` is the background).
* Crowd annotations (``iscrowd: 1``) are not training targets; they are kept apart
  (:attr:`CocoAnnotations.crowd_instances`) for the ground truth used in evaluation, where COCO ignores detections
  on them.
* Annotations whose box is degenerate (width or height below 1 pixel, also after clamping to the image)
  or whose mask is empty are dropped and counted (:meth:`CocoAnnotations.dropped_summary`).
* Broken entries (unknown image or category id, malformed ``bbox`` or ``segmentation``, duplicate ids)
  raise :class:`CocoFormatError` naming the file and the annotation id, or, with ``collect_errors=True``, are
  collected in :attr:`CocoAnnotations.errors` (what :func:`visiontune.data.coco_check.check_coco_data` reports).

The torch ``Dataset`` over such a file is :class:`visiontune.data.coco_dataset.CocoInstanceDataset`; segmentations
are validated by :mod:`visiontune.data.coco_rle`.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_utils

from visiontune.data.coco_rle import SegmentationFormatError, segmentation_to_rle
from visiontune.data.validation import is_json_int, is_json_number, read_utf8_text, repeated_names

__all__ = [
    "CocoAnnotations",
    "CocoFormatError",
    "CocoImageRecord",
    "CocoInstanceRecord",
    "parse_coco_instances",
    "read_coco_json",
]

_REQUIRED_TOP_LEVEL_KEYS = ("images", "annotations", "categories")
_MAX_LISTED_IDS = 10


class CocoFormatError(ValueError):
    """A COCO annotation file, or one of its entries, does not follow the COCO format."""


class _EntryError(ValueError):
    """Internal: one entry is malformed; the caller adds the file name and the entry id."""


@dataclass(frozen=True)
class CocoImageRecord:
    """One entry of ``images``.

    Attributes:
        image_id: COCO image id.
        file_name: Path of the image file, relative to the images folder.
        height: Image height in pixels, as declared in the annotation file.
        width: Image width in pixels, as declared in the annotation file.
    """

    image_id: int
    file_name: str
    height: int
    width: int


@dataclass(frozen=True)
class CocoInstanceRecord:
    """One validated annotation of a kept category.

    Attributes:
        annotation_id: COCO annotation id.
        image_id: COCO id of the image the annotation belongs to.
        category_id: COCO category id as in the file.
        label: Contiguous training label in ``1..K``.
        box: ``(x1, y1, x2, y2)`` in pixels of the original image, clamped to the image.
        segmentation: The annotation's ``segmentation`` as in the file (polygons or RLE).
        area: The annotation's ``area`` (pixels), or the mask area when the file has none.
        iscrowd: Whether the annotation is a crowd region.
    """

    annotation_id: int
    image_id: int
    category_id: int
    label: int
    box: tuple[float, float, float, float]
    segmentation: list[list[float]] | dict[str, Any]
    area: float
    iscrowd: bool


@dataclass
class CocoAnnotations:
    """The validated content of a COCO instances file, restricted to the kept categories.

    Attributes:
        annotation_file: The file that was parsed.
        images: Every valid image entry, by image id, in file order.
        label_to_category: ``{label: {"id": category_id, "name": name}}`` for labels ``1..K``.
        available_categories: ``{category_id: name}`` of every category in the file.
        instances: Non-crowd training instances per image id (only images that have some).
        crowd_instances: Crowd instances per image id (only images that have some).
        degenerate_box_ids: Ids of dropped annotations whose box is smaller than 1 pixel.
        empty_mask_ids: Ids of dropped annotations whose mask has no pixel.
        clamped_box_ids: Ids of annotations whose box extended beyond the image and was clamped.
        errors: Messages of broken entries (only filled when parsing with ``collect_errors=True``).
        num_annotations: Number of entries in ``annotations``.
    """

    annotation_file: Path
    images: dict[int, CocoImageRecord]
    label_to_category: dict[int, dict[str, Any]]
    available_categories: dict[int, str]
    instances: dict[int, list[CocoInstanceRecord]] = field(default_factory=dict)
    crowd_instances: dict[int, list[CocoInstanceRecord]] = field(default_factory=dict)
    degenerate_box_ids: list[int] = field(default_factory=list)
    empty_mask_ids: list[int] = field(default_factory=list)
    clamped_box_ids: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    num_annotations: int = 0

    def dropped_summary(self) -> str | None:
        """One sentence describing dropped or clamped annotations, or None when there are none."""
        parts = []
        if self.degenerate_box_ids:
            parts.append(
                f"dropped {len(self.degenerate_box_ids)} annotation(s) with a degenerate box (width or height "
                f"< 1 pixel) {_format_ids(self.degenerate_box_ids)}"
            )
        if self.empty_mask_ids:
            parts.append(
                f"dropped {len(self.empty_mask_ids)} annotation(s) with an empty mask "
                f"{_format_ids(self.empty_mask_ids)}"
            )
        if self.clamped_box_ids:
            parts.append(
                f"clamped {len(self.clamped_box_ids)} box(es) that extended beyond the image "
                f"{_format_ids(self.clamped_box_ids)}"
            )
        if not parts:
            return None
        return f"{self.annotation_file}: " + "; ".join(parts)


def _format_ids(ids: Sequence[int]) -> str:
    shown = ", ".join(str(value) for value in ids[:_MAX_LISTED_IDS])
    more = f", ... ({len(ids) - _MAX_LISTED_IDS} more)" if len(ids) > _MAX_LISTED_IDS else ""
    return f"(annotation ids {shown}{more})"


def read_coco_json(annotation_file: str | Path) -> dict[str, Any]:
    """Read a COCO instances JSON file and check its top-level structure.

    Args:
        annotation_file: Path of the JSON file.

    Returns:
        The decoded JSON object, with list-valued ``images``, ``annotations`` and ``categories``.

    Raises:
        FileNotFoundError: The file does not exist.
        CocoFormatError: The file is not a regular file, not UTF-8 (the message gives the line; a byte-order mark
            is accepted), not valid JSON (the message gives line and column) or lacks one of the three lists.
    """
    path = Path(annotation_file)
    try:
        data = json.loads(read_utf8_text(path, "COCO annotation file"))
    except json.JSONDecodeError as error:
        raise CocoFormatError(
            f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from error
    except FileNotFoundError:
        raise
    except ValueError as error:  # not a regular file, or not UTF-8 (naming the line)
        raise CocoFormatError(str(error)) from None
    if not isinstance(data, dict):
        raise CocoFormatError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    for key in _REQUIRED_TOP_LEVEL_KEYS:
        if key not in data:
            raise CocoFormatError(
                f"{path}: missing top-level key '{key}' (a COCO instances file has 'images', 'annotations' "
                "and 'categories')"
            )
        if not isinstance(data[key], list):
            raise CocoFormatError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")
    return data


class _ErrorSink:
    """Raises the first broken-entry error, or collects every message when ``collect`` is set."""

    def __init__(self, source: Path, *, collect: bool) -> None:
        self.source = source
        self.collect = collect
        self.messages: list[str] = []

    def report(self, message: str) -> None:
        full_message = f"{self.source}: {message}"
        if not self.collect:
            raise CocoFormatError(full_message)
        self.messages.append(full_message)


def _parse_categories(entries: list[Any], sink: _ErrorSink) -> dict[int, str]:
    categories: dict[int, str] = {}
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or not is_json_int(entry.get("id")) or not isinstance(entry.get("name"), str):
            sink.report(f"category #{position} must be an object with an int 'id' and a str 'name', got {entry!r}")
            continue
        if entry["id"] in categories:
            sink.report(f"duplicate category id {entry['id']}")
            continue
        categories[entry["id"]] = entry["name"]
    if not categories:
        sink.report("'categories' is empty: nothing to train on")
    return categories


def _select_categories(
    available: dict[int, str], names: Sequence[str] | None, sink: _ErrorSink
) -> dict[int, dict[str, Any]]:
    """Map labels ``1..K`` to categories: all by ascending id, or the named ones in the given order."""
    if names is None:
        for name, ids in repeated_names(available.items()).items():
            sink.report(f"category name {name!r} is used by category ids {', '.join(map(str, ids))}: they would "
                        "train as separate classes of one name (merge them or rename one)")
        return {label: {"id": category_id, "name": available[category_id]}
                for label, category_id in enumerate(sorted(available), start=1)}
    if isinstance(names, str):
        raise TypeError(f"categories must be a list of names, got the string {names!r}")
    ids_by_name: dict[str, list[int]] = {}
    for category_id, name in available.items():
        ids_by_name.setdefault(name, []).append(category_id)
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(f"categories lists {duplicates} more than once")
    label_to_category: dict[int, dict[str, Any]] = {}
    for name in names:
        if name not in ids_by_name:
            close = difflib.get_close_matches(name, list(ids_by_name), n=3)
            hint = f" (did you mean {' or '.join(repr(match) for match in close)}?)" if close else ""
            sink.report(
                f"unknown category name {name!r}{hint}; available names: {', '.join(sorted(ids_by_name))}"
            )
            continue
        if len(ids_by_name[name]) > 1:
            sink.report(f"category name {name!r} is used by several category ids {sorted(ids_by_name[name])}")
            continue
        label_to_category[len(label_to_category) + 1] = {"id": ids_by_name[name][0], "name": name}
    return label_to_category


def _parse_images(entries: list[Any], sink: _ErrorSink) -> dict[int, CocoImageRecord]:
    images: dict[int, CocoImageRecord] = {}
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or not is_json_int(entry.get("id")):
            sink.report(f"image #{position} must be an object with an int 'id', got {entry!r}")
            continue
        image_id = entry["id"]
        file_name, height, width = entry.get("file_name"), entry.get("height"), entry.get("width")
        if not isinstance(file_name, str) or not file_name:
            sink.report(f"image id {image_id}: 'file_name' must be a non-empty string, got {file_name!r}")
        elif not (is_json_int(height) and is_json_int(width) and height > 0 and width > 0):
            sink.report(f"image id {image_id}: 'height' and 'width' must be positive ints, got {height!r}, {width!r}")
        elif image_id in images:
            sink.report(f"duplicate image id {image_id}")
        else:
            images[image_id] = CocoImageRecord(image_id, file_name, height, width)
    for name, ids in repeated_names((record.image_id, record.file_name) for record in images.values()).items():
        sink.report(f"file_name {name!r} is listed by image ids {', '.join(map(str, ids))}: one picture as several "
                    "images (an entry without its annotations would train as an empty negative)")
    return images


@dataclass(frozen=True)
class _CheckedAnnotation:
    annotation_id: int
    image: CocoImageRecord
    category_id: int
    bbox: tuple[float, float, float, float]
    segmentation: Any
    rle: dict[str, Any]
    area: float | None
    iscrowd: bool


def _check_annotation(
    entry: Any,
    position: int,
    images: Mapping[int, CocoImageRecord],
    categories: Mapping[int, str],
) -> _CheckedAnnotation:
    """Validate one annotation entry; raise ``_EntryError`` with a message naming its id."""
    if not isinstance(entry, dict) or not is_json_int(entry.get("id")):
        raise _EntryError(f"annotation #{position} must be an object with an int 'id', got {entry!r}"[:300])
    prefix = f"annotation id {entry['id']}"
    image_id = entry.get("image_id")
    if not is_json_int(image_id) or image_id not in images:
        raise _EntryError(f"{prefix}: unknown image_id {image_id!r} (no such id in 'images')")
    category_id = entry.get("category_id")
    if not is_json_int(category_id) or category_id not in categories:
        known = ", ".join(str(value) for value in sorted(categories))
        raise _EntryError(f"{prefix}: unknown category_id {category_id!r} (known ids: {known})")
    bbox = entry.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_json_number(value) for value in bbox)):
        raise _EntryError(f"{prefix}: malformed bbox {bbox!r}; expected [x, y, width, height] (4 finite numbers)")
    if bbox[2] < 0 or bbox[3] < 0:
        raise _EntryError(f"{prefix}: malformed bbox {bbox!r}; width and height must be >= 0")
    iscrowd = entry.get("iscrowd", 0)
    if iscrowd not in (0, 1) or not isinstance(iscrowd, (int, bool)):
        raise _EntryError(f"{prefix}: 'iscrowd' must be 0 or 1, got {iscrowd!r}")
    area = entry.get("area")
    if area is not None and not (is_json_number(area) and area >= 0):
        raise _EntryError(f"{prefix}: 'area' must be a non-negative number, got {area!r}")
    if "segmentation" not in entry:
        raise _EntryError(f"{prefix}: malformed segmentation: missing 'segmentation'")
    image = images[image_id]
    try:
        rle = segmentation_to_rle(entry["segmentation"], height=image.height, width=image.width)
    except SegmentationFormatError as error:
        raise _EntryError(f"{prefix}: malformed segmentation: {error}") from None
    return _CheckedAnnotation(
        annotation_id=entry["id"],
        image=image,
        category_id=category_id,
        bbox=(float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])),
        segmentation=entry["segmentation"],
        rle=rle,
        area=None if area is None else float(area),
        iscrowd=bool(iscrowd),
    )


def parse_coco_instances(
    annotation_file: str | Path,
    *,
    categories: Sequence[str] | None = None,
    collect_errors: bool = False,
) -> CocoAnnotations:
    """Parse and validate a COCO instances file, keeping the requested categories.

    Args:
        annotation_file: Path of the COCO JSON file.
        categories: Category names to keep, in label order (label ``i`` is ``categories[i - 1]``); None
            keeps every category, ordered by ascending category id.
        collect_errors: If True, broken entries are skipped and their messages collected in
            :attr:`CocoAnnotations.errors`; if False, the first one raises.

    Returns:
        The validated annotations.

    Raises:
        FileNotFoundError: The file does not exist.
        CocoFormatError: The file is not a COCO instances file, or (unless ``collect_errors``) an entry is
            broken: the message names the file and the annotation, image or category id.
    """
    path = Path(annotation_file)
    data = read_coco_json(path)
    sink = _ErrorSink(path, collect=collect_errors)
    available = _parse_categories(data["categories"], sink)
    label_to_category = _select_categories(available, categories, sink)
    label_by_category_id = {info["id"]: label for label, info in label_to_category.items()}
    images = _parse_images(data["images"], sink)
    parsed = CocoAnnotations(
        annotation_file=path,
        images=images,
        label_to_category=label_to_category,
        available_categories=available,
        num_annotations=len(data["annotations"]),
    )
    seen_ids: set[int] = set()
    for position, entry in enumerate(data["annotations"]):
        try:
            checked = _check_annotation(entry, position, images, available)
        except _EntryError as error:
            sink.report(str(error))
            continue
        if checked.annotation_id in seen_ids:
            sink.report(f"duplicate annotation id {checked.annotation_id}")
            continue
        seen_ids.add(checked.annotation_id)
        if checked.category_id in label_by_category_id:
            _add_instance(parsed, checked, label=label_by_category_id[checked.category_id])
    parsed.errors = sink.messages
    return parsed


def _add_instance(parsed: CocoAnnotations, checked: _CheckedAnnotation, *, label: int) -> None:
    """Clamp the box, drop degenerate or empty instances, and file the record by image id."""
    image = checked.image
    x, y, box_width, box_height = checked.bbox
    if box_width < 1 or box_height < 1:
        parsed.degenerate_box_ids.append(checked.annotation_id)
        return
    box = (max(x, 0.0), max(y, 0.0), min(x + box_width, float(image.width)), min(y + box_height, float(image.height)))
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        parsed.degenerate_box_ids.append(checked.annotation_id)
        return
    mask_area = float(mask_utils.area(checked.rle))
    if mask_area == 0:
        parsed.empty_mask_ids.append(checked.annotation_id)
        return
    if box != (x, y, x + box_width, y + box_height):
        parsed.clamped_box_ids.append(checked.annotation_id)
    record = CocoInstanceRecord(
        annotation_id=checked.annotation_id,
        image_id=image.image_id,
        category_id=checked.category_id,
        label=label,
        box=box,
        segmentation=checked.segmentation,
        area=mask_area if checked.area is None else checked.area,
        iscrowd=checked.iscrowd,
    )
    target = parsed.crowd_instances if checked.iscrowd else parsed.instances
    target.setdefault(image.image_id, []).append(record)
