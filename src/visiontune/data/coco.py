"""COCO instance-segmentation data: parsing and validation, a torch ``Dataset`` and a data checker.

A COCO instances file (``annotations/instances_<split>.json``) holds three lists: ``images`` (``id``,
``file_name``, ``height``, ``width``), ``categories`` (``id``, ``name``) and ``annotations`` (``id``,
``image_id``, ``category_id``, ``bbox`` as ``[x, y, width, height]`` in pixels, ``segmentation`` as
polygons or run-length encoding (RLE), ``area`` and ``iscrowd``).

Conventions (as in torchvision's detection references):

* Kept categories are remapped to contiguous labels ``1..K`` (``0`` is the background).
* Crowd annotations (``iscrowd: 1``) are not training targets; they stay in the ground truth used for
  evaluation (:meth:`CocoInstanceDataset.coco_ground_truth`), where COCO ignores detections on them.
* Annotations whose box is degenerate (width or height below 1 pixel, also after clamping to the image)
  or whose mask is empty are dropped and counted in a single warning per dataset.
* Broken entries (unknown image or category id, malformed ``bbox`` or ``segmentation``, duplicate ids)
  raise :class:`CocoFormatError` naming the file and the annotation id; :func:`check_coco_data` collects
  them all in a report instead.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeGuard

import numpy as np
import torch
from PIL import Image as PILImage
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset
from torchvision import tv_tensors

from visiontune.data.validation import file_problem, fits_float32, orientation_note, read_utf8_text, repeated_names
from visiontune.utils.image import DECODE_ERRORS, TRANSPOSING_ORIENTATIONS, exif_orientation, open_rgb

__all__ = [
    "CocoAnnotations",
    "CocoDataReport",
    "CocoFormatError",
    "CocoImageRecord",
    "CocoInstanceDataset",
    "CocoInstanceRecord",
    "check_coco_data",
    "decode_compressed_rle_counts",
    "decode_instance_masks",
    "parse_coco_instances",
    "read_coco_json",
    "segmentation_to_rle",
]

logger = logging.getLogger(__name__)

EmptyImagePolicy = Literal["keep", "drop"]
DetectionTransform = Callable[[tv_tensors.Image, dict[str, Any]], tuple[Any, dict[str, Any]]]

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


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float that stays finite as float32 (``1e39`` does not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and fits_float32(value)


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


def decode_compressed_rle_counts(counts: str) -> list[int]:
    """Decode the run lengths of a compressed COCO RLE string (the format of ``pycocotools.mask.encode``).

    Each run length is stored as 5-bit groups in characters offset by 48, with a continuation bit
    (``0x20``) and a sign bit (``0x10``) in the last group; from the third run on, values are stored as
    differences to the run two places earlier. Decoding in Python lets a corrupt string be rejected
    before pycocotools, which does no bounds checking, decodes it.

    Args:
        counts: The ``counts`` string of a compressed RLE.

    Returns:
        The run lengths, alternating background and foreground, starting with background, in
        column-major (Fortran) pixel order.

    Raises:
        ValueError: The string has a character outside the encoding, ends inside a value or decodes to a
            negative run length.
    """
    run_lengths: list[int] = []
    position = 0
    while position < len(counts):
        value = 0
        group_index = 0
        more = True
        while more:
            if position >= len(counts):
                raise _EntryError("compressed RLE 'counts' ends in the middle of a run length")
            group = ord(counts[position]) - 48
            if not 0 <= group < 64:
                raise _EntryError(
                    f"compressed RLE 'counts' has an invalid character {counts[position]!r} at position {position}"
                )
            value |= (group & 0x1F) << (5 * group_index)
            more = bool(group & 0x20)
            position += 1
            group_index += 1
            if not more and group & 0x10:
                value |= -1 << (5 * group_index)
        if len(run_lengths) > 2:
            value += run_lengths[-2]
        if value < 0:
            raise _EntryError(f"compressed RLE 'counts' decodes to a negative run length at run {len(run_lengths)}")
        run_lengths.append(value)
    return run_lengths


def segmentation_to_rle(segmentation: Any, *, height: int, width: int) -> dict[str, Any]:
    """Validate a COCO ``segmentation`` and convert it to a single compressed RLE.

    Args:
        segmentation: Polygons (``[[x0, y0, x1, y1, ...], ...]`` in pixels), an uncompressed RLE
            (``{"size": [height, width], "counts": [int, ...]}``) or a compressed RLE
            (``{"size": [height, width], "counts": str}``).
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        A pycocotools RLE ``{"size": [height, width], "counts": bytes}``; an empty polygon list gives an
        empty mask.

    Raises:
        ValueError: The segmentation is malformed; the message says what was expected.
    """
    if isinstance(segmentation, list):
        for index, polygon in enumerate(segmentation):
            if not isinstance(polygon, list) or not all(_is_number(value) for value in polygon):
                raise _EntryError(f"segmentation polygon {index} must be a list of finite numbers")
            if len(polygon) < 6 or len(polygon) % 2:
                raise _EntryError(
                    f"segmentation polygon {index} has {len(polygon)} coordinates; expected an even number >= 6 "
                    "(x, y pairs of at least 3 points)"
                )
        if not segmentation:
            return mask_utils.encode(np.zeros((height, width, 1), dtype=np.uint8, order="F"))[0]
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        counts = segmentation.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(value) for value in size)):
            raise _EntryError(f"RLE 'size' must be [height, width] (two ints), got {size!r}")
        if size != [height, width]:
            raise _EntryError(f"RLE 'size' {size} does not match the image's [height, width] = [{height}, {width}]")
        if isinstance(counts, list):
            if not all(_is_int(value) and value >= 0 for value in counts):
                raise _EntryError("uncompressed RLE 'counts' must be a list of non-negative ints")
            run_lengths = counts
        elif isinstance(counts, str):
            run_lengths = decode_compressed_rle_counts(counts)
        else:
            raise _EntryError(
                "RLE 'counts' must be a list of ints (uncompressed) or a string (compressed), "
                f"got {type(counts).__name__}"
            )
        if sum(run_lengths) != height * width:
            raise _EntryError(
                f"RLE 'counts' cover {sum(run_lengths)} pixels; expected height * width = {height * width}"
            )
        if isinstance(counts, list):
            return mask_utils.frPyObjects({"size": size, "counts": counts}, height, width)
        return {"size": [height, width], "counts": counts.encode("ascii")}
    raise _EntryError(
        f"segmentation must be a list of polygons or an RLE dict, got {type(segmentation).__name__}"
    )


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
        if not isinstance(entry, dict) or not _is_int(entry.get("id")) or not isinstance(entry.get("name"), str):
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
        if not isinstance(entry, dict) or not _is_int(entry.get("id")):
            sink.report(f"image #{position} must be an object with an int 'id', got {entry!r}")
            continue
        image_id = entry["id"]
        file_name, height, width = entry.get("file_name"), entry.get("height"), entry.get("width")
        if not isinstance(file_name, str) or not file_name:
            sink.report(f"image id {image_id}: 'file_name' must be a non-empty string, got {file_name!r}")
        elif not (_is_int(height) and _is_int(width) and height > 0 and width > 0):
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
    if not isinstance(entry, dict) or not _is_int(entry.get("id")):
        raise _EntryError(f"annotation #{position} must be an object with an int 'id', got {entry!r}"[:300])
    prefix = f"annotation id {entry['id']}"
    image_id = entry.get("image_id")
    if not _is_int(image_id) or image_id not in images:
        raise _EntryError(f"{prefix}: unknown image_id {image_id!r} (no such id in 'images')")
    category_id = entry.get("category_id")
    if not _is_int(category_id) or category_id not in categories:
        known = ", ".join(str(value) for value in sorted(categories))
        raise _EntryError(f"{prefix}: unknown category_id {category_id!r} (known ids: {known})")
    bbox = entry.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(value) for value in bbox)):
        raise _EntryError(f"{prefix}: malformed bbox {bbox!r}; expected [x, y, width, height] (4 finite numbers)")
    if bbox[2] < 0 or bbox[3] < 0:
        raise _EntryError(f"{prefix}: malformed bbox {bbox!r}; width and height must be >= 0")
    iscrowd = entry.get("iscrowd", 0)
    if iscrowd not in (0, 1) or not isinstance(iscrowd, (int, bool)):
        raise _EntryError(f"{prefix}: 'iscrowd' must be 0 or 1, got {iscrowd!r}")
    area = entry.get("area")
    if area is not None and not (_is_number(area) and area >= 0):
        raise _EntryError(f"{prefix}: 'area' must be a non-negative number, got {area!r}")
    if "segmentation" not in entry:
        raise _EntryError(f"{prefix}: malformed segmentation: missing 'segmentation'")
    image = images[image_id]
    try:
        rle = segmentation_to_rle(entry["segmentation"], height=image.height, width=image.width)
    except _EntryError as error:
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


def decode_instance_masks(
    records: Sequence[CocoInstanceRecord], *, height: int, width: int
) -> torch.Tensor:
    """Rasterise the masks of ``records``.

    Args:
        records: Instances of one image.
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        ``Tensor[N, height, width]`` uint8 with values 0/1.
    """
    if not records:
        return torch.zeros((0, height, width), dtype=torch.uint8)
    rles = [segmentation_to_rle(record.segmentation, height=height, width=width) for record in records]
    masks = mask_utils.decode(rles)  # [H, W, N] uint8, Fortran order
    return torch.from_numpy(np.ascontiguousarray(masks.transpose(2, 0, 1)))


class CocoInstanceDataset(Dataset):
    """Instance-segmentation samples from a COCO JSON file and an image folder.

    Each item is ``(image, target)`` in the format of torchvision's detection references:

    * ``image``: ``tv_tensors.Image`` float32 ``[3, H, W]`` in ``[0, 1]`` (RGB).
    * ``target["boxes"]``: ``tv_tensors.BoundingBoxes`` float32 ``[N, 4]``, XYXY, pixels.
    * ``target["labels"]``: int64 ``[N]`` in ``1..K``.
    * ``target["masks"]``: ``tv_tensors.Mask`` uint8 ``[N, H, W]`` with values 0/1.
    * ``target["image_id"]``: int, the COCO image id.
    * ``target["area"]``: float32 ``[N]``, COCO ``area`` in pixels of the original image.
    * ``target["iscrowd"]``: int64 ``[N]``, all zeros (crowd regions are not training targets).

    ``transforms``, if given, is called as ``transforms(image, target)`` and must return the pair.

    Args:
        images_dir: Folder that ``file_name`` entries are relative to.
        annotation_file: COCO instances JSON file.
        categories: Category names to keep, in label order; None keeps all, ordered by category id.
        empty_images: What to do with images that have no training instance after filtering: ``"keep"``
            them as negatives, or ``"drop"`` them.
        transforms: Optional joint transform of image and target.

    Raises:
        FileNotFoundError: The annotation file or the images folder does not exist.
        CocoFormatError: The annotation file is broken (see :func:`parse_coco_instances`).
        ValueError: ``empty_images`` is not "keep" or "drop", or ``categories`` names a category twice.
    """

    def __init__(
        self,
        images_dir: str | Path,
        annotation_file: str | Path,
        *,
        categories: Sequence[str] | None = None,
        empty_images: EmptyImagePolicy = "keep",
        transforms: DetectionTransform | None = None,
    ) -> None:
        if empty_images not in ("keep", "drop"):
            raise ValueError(f"empty_images must be 'keep' or 'drop', got {empty_images!r}")
        self.images_dir = Path(images_dir)
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"images folder not found: {self.images_dir}")
        self.annotations = parse_coco_instances(annotation_file, categories=categories)
        self.transforms = transforms
        self.empty_images = empty_images
        image_ids = list(self.annotations.images)
        if empty_images == "drop":
            image_ids = [image_id for image_id in image_ids if image_id in self.annotations.instances]
        self.image_ids: list[int] = image_ids
        summary = self.annotations.dropped_summary()
        if summary is not None:
            logger.warning(summary)

    @property
    def annotation_file(self) -> Path:
        """The COCO JSON file the dataset was read from."""
        return self.annotations.annotation_file

    @property
    def label_to_category(self) -> dict[int, dict[str, Any]]:
        """``{label: {"id": coco_category_id, "name": name}}`` for labels ``1..K``."""
        return {label: dict(info) for label, info in self.annotations.label_to_category.items()}

    @property
    def class_names(self) -> list[str]:
        """Category names in label order: ``class_names[label - 1]`` (no background entry)."""
        return [info["name"] for _, info in sorted(self.annotations.label_to_category.items())]

    @property
    def num_classes(self) -> int:
        """Number of model classes including the background: ``K + 1``."""
        return len(self.annotations.label_to_category) + 1

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_record(self, index: int) -> CocoImageRecord:
        """The image entry of item ``index``."""
        return self.annotations.images[self.image_ids[index]]

    def image_paths(self) -> list[Path]:
        """The image file of every item, in item order (duplicate checks hash them)."""
        return [self.images_dir / self.image_record(index).file_name for index in range(len(self))]

    def image_categories(self) -> list[list[int]]:
        """The labels of the (non-crowd) instances of every item, in item order (``data.sampler=repeat_factor``)."""
        return [[instance.label for instance in self.annotations.instances.get(image_id, [])]
                for image_id in self.image_ids]

    def aspect_ratios(self) -> list[float]:
        """Width / height of every item, from the annotation file (no image is read)."""
        return [self.annotations.images[image_id].width / self.annotations.images[image_id].height
                for image_id in self.image_ids]

    def load_image(self, index: int) -> tv_tensors.Image:
        """Read the image of item ``index`` as ``tv_tensors.Image`` float32 ``[3, H, W]`` in ``[0, 1]``.

        Raises:
            FileNotFoundError: The image file is missing.
            ValueError: The file cannot be decoded, or its size differs from ``height``/``width`` in the
                annotation file.
        """
        record = self.image_record(index)
        path = self.images_dir / record.file_name
        problem = file_problem(path, "image file")
        if problem is not None:
            raise (FileNotFoundError if " not found: " in problem else ValueError)(
                f"{problem} (image id {record.image_id})")
        try:
            pixels = np.array(open_rgb(path, exif_transpose=True), dtype=np.uint8)
        except ValueError as error:
            raise ValueError(f"{path}: cannot decode image id {record.image_id} ({error})") from error
        if pixels.shape[:2] != (record.height, record.width):
            with PILImage.open(path) as image:
                turned = _upright_note(exif_orientation(image))
            raise ValueError(
                f"{path}: image is {pixels.shape[1]}x{pixels.shape[0]} (width x height{turned}) but "
                f"{self.annotation_file} declares {record.width}x{record.height} for image id {record.image_id}"
            )
        return tv_tensors.Image(torch.from_numpy(pixels).permute(2, 0, 1).to(torch.float32).div_(255.0))

    def load_target(self, index: int) -> dict[str, Any]:
        """Build the target dict of item ``index`` (see the class docstring for the format)."""
        record = self.image_record(index)
        instances = self.annotations.instances.get(record.image_id, [])
        canvas_size = (record.height, record.width)
        boxes = torch.tensor([instance.box for instance in instances], dtype=torch.float32).reshape(-1, 4)
        return {
            "boxes": tv_tensors.BoundingBoxes(boxes, format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=canvas_size),
            "labels": torch.tensor([instance.label for instance in instances], dtype=torch.int64),
            "masks": tv_tensors.Mask(decode_instance_masks(instances, height=record.height, width=record.width)),
            "image_id": record.image_id,
            "area": torch.tensor([instance.area for instance in instances], dtype=torch.float32),
            "iscrowd": torch.zeros(len(instances), dtype=torch.int64),
        }

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        image = self.load_image(index)
        target = self.load_target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def coco_ground_truth(self) -> dict[str, Any]:
        """COCO ground truth of the dataset's images, for :class:`visiontune.evaluation.coco.CocoEvaluator`.

        Category ids are the contiguous labels ``1..K`` (names kept), so model outputs are evaluated
        without remapping. Crowd annotations are included with ``iscrowd: 1``; dropped (degenerate or
        empty) annotations and other categories are not.

        Returns:
            A COCO dict with ``images``, ``annotations`` and ``categories``; ``bbox`` is ``[x, y, w, h]``
            of the clamped box in pixels.
        """
        images = [self.annotations.images[image_id] for image_id in self.image_ids]
        annotations = []
        for image in images:
            records = self.annotations.instances.get(image.image_id, []) + self.annotations.crowd_instances.get(
                image.image_id, []
            )
            for record in sorted(records, key=lambda item: item.annotation_id):
                x1, y1, x2, y2 = record.box
                annotations.append({
                    "id": record.annotation_id,
                    "image_id": record.image_id,
                    "category_id": record.label,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": record.area,
                    "iscrowd": int(record.iscrowd),
                    "segmentation": record.segmentation,
                })
        return {
            "images": [{"id": image.image_id, "file_name": image.file_name, "height": image.height,
                        "width": image.width} for image in images],
            "annotations": annotations,
            "categories": [{"id": label, "name": info["name"]}
                           for label, info in sorted(self.annotations.label_to_category.items())],
        }


@dataclass
class CocoDataReport:
    """What :func:`check_coco_data` found.

    Attributes:
        annotation_file: The checked JSON file.
        images_dir: The checked image folder.
        num_images: Number of valid image entries.
        num_annotations: Number of entries in ``annotations``.
        instances_per_category: Training (non-crowd, kept) instances per category name, in label order.
        images_per_category: Images holding at least one such instance, per category name, in label order.
        crowd_per_category: Crowd instances per category name, in label order.
        images_without_annotations: File names of images without a training instance.
        unreadable_images: ``"<path>: <reason>"`` for missing, undecodable or wrongly sized images.
        broken_annotations: Messages of broken entries (annotations, images, categories, names).
        dropped_summary: The warning about dropped degenerate/empty annotations, if any.
        orientation_note: The line naming images turned upright by their EXIF orientation, if any.
    """

    annotation_file: Path
    images_dir: Path
    num_images: int = 0
    num_annotations: int = 0
    instances_per_category: dict[str, int] = field(default_factory=dict)
    images_per_category: dict[str, int] = field(default_factory=dict)
    crowd_per_category: dict[str, int] = field(default_factory=dict)
    images_without_annotations: list[str] = field(default_factory=list)
    unreadable_images: list[str] = field(default_factory=list)
    broken_annotations: list[str] = field(default_factory=list)
    dropped_summary: str | None = None
    orientation_note: str | None = None

    @property
    def problems(self) -> list[str]:
        """Everything that must be fixed before training; non-empty means the check failed."""
        return [*self.broken_annotations, *self.unreadable_images]

    @property
    def ok(self) -> bool:
        """True when :attr:`problems` is empty."""
        return not self.problems

    def format_report(self) -> str:
        """A human-readable multi-line report."""
        lines = [
            f"COCO data check: {self.annotation_file}",
            f"  images folder: {self.images_dir}",
            f"  images: {self.num_images}, annotations: {self.num_annotations}",
            "  instances per category, images holding it, (crowd regions in brackets):",
        ]
        width = max((len(name) for name in self.instances_per_category), default=0)
        for name, count in self.instances_per_category.items():
            lines.append(f"    {name:<{width}}  {count:>7}  {self.images_per_category.get(name, 0):>7}  "
                         f"[{self.crowd_per_category.get(name, 0)}]")
        lines.append(f"  images without annotations: {len(self.images_without_annotations)}")
        if self.dropped_summary:
            lines.append(f"  warning: {self.dropped_summary}")
        if self.orientation_note:
            lines.append(f"  note: {self.orientation_note}")
        problems = self.problems
        lines.append(f"  problems: {len(problems)}")
        lines.extend(f"    - {problem}" for problem in problems)
        lines.append("  result: OK" if not problems else "  result: FAILED")
        return "\n".join(lines)


def _upright_note(orientation: int) -> str:
    """``", upright by its EXIF orientation 6"`` for a size message, or ``""`` for an upright file."""
    return f", upright by its EXIF orientation {orientation}" if orientation != 1 else ""


def _check_image_file(path: Path, record: CocoImageRecord, orientations: dict[Path, int]) -> str | None:
    """Return a reason when the image cannot be used, else None; an EXIF orientation (not 1) goes to
    ``orientations``. Only regular files are opened."""
    problem = file_problem(path, "file")
    if problem is not None:
        return f"{path}: {problem.partition(': ')[0]} (image id {record.image_id})"
    try:
        with PILImage.open(path) as image:
            size, orientation = image.size, exif_orientation(image)
            image.load()
    except DECODE_ERRORS as error:
        return f"{path}: cannot decode image id {record.image_id} ({error})"
    if orientation != 1:
        orientations[path] = orientation
    if orientation in TRANSPOSING_ORIENTATIONS:
        size = (size[1], size[0])
    if size != (record.width, record.height):
        return (f"{path}: image is {size[0]}x{size[1]} (width x height{_upright_note(orientation)}) but the "
                f"annotation file declares {record.width}x{record.height} for image id {record.image_id}")
    return None


def check_coco_data(
    images_dir: str | Path,
    annotation_file: str | Path,
    *,
    categories: Sequence[str] | None = None,
    check_images: bool = True,
) -> CocoDataReport:
    """Check a COCO instance-segmentation dataset and report every problem instead of stopping at the first.

    Args:
        images_dir: Folder that ``file_name`` entries are relative to.
        annotation_file: COCO instances JSON file.
        categories: Category names that will be trained (None: all); unknown names are problems.
        check_images: Also open and fully decode every image and compare its size with the annotation
            file (slow on large datasets).

    Returns:
        The report; ``report.problems`` is non-empty when the data cannot be used as is.
    """
    report = CocoDataReport(annotation_file=Path(annotation_file), images_dir=Path(images_dir))
    try:
        parsed = parse_coco_instances(annotation_file, categories=categories, collect_errors=True)
    except (FileNotFoundError, CocoFormatError) as error:
        report.broken_annotations.append(str(error))
        return report
    report.num_images = len(parsed.images)
    report.num_annotations = parsed.num_annotations
    report.broken_annotations = list(parsed.errors)
    report.dropped_summary = parsed.dropped_summary()
    names = {label: info["name"] for label, info in sorted(parsed.label_to_category.items())}
    instance_counts = Counter(record.label for records in parsed.instances.values() for record in records)
    crowd_counts = Counter(record.label for records in parsed.crowd_instances.values() for record in records)
    report.instances_per_category = {name: instance_counts.get(label, 0) for label, name in names.items()}
    image_counts = Counter(label for records in parsed.instances.values()
                           for label in {record.label for record in records})
    report.images_per_category = {name: image_counts.get(label, 0) for label, name in names.items()}
    report.crowd_per_category = {name: crowd_counts.get(label, 0) for label, name in names.items()}
    report.images_without_annotations = [
        record.file_name for image_id, record in parsed.images.items() if image_id not in parsed.instances
    ]
    if check_images:
        if not report.images_dir.is_dir():
            report.unreadable_images.append(f"{report.images_dir}: images folder not found")
        else:
            orientations: dict[Path, int] = {}
            for record in parsed.images.values():
                reason = _check_image_file(report.images_dir / record.file_name, record, orientations)
                if reason is not None:
                    report.unreadable_images.append(reason)
            report.orientation_note = orientation_note(orientations)
    return report
