"""WIDER FACE annotations and the face-detection dataset.

Three annotation layouts are read; every image path is relative to the image root (a leading ``/``, as written by
some ``wider_val.txt`` generators, is ignored):

``retinaface``
    The RetinaFace ``label.txt``: a ``# <image path>`` line, then one face per line with 20 numbers,
    ``x y w h`` followed by five landmarks as ``lx ly flag`` triples and a final value (all landmark values -1 when
    the face has no landmarks). Box-only lines with 4 numbers (the RetinaFace ``val/label.txt``) are accepted as
    faces without landmarks.
``official``
    ``wider_face_{train,val}_bbx_gt.txt``: the image path, the number of faces, then one line per face with
    ``x y w h blur expression illumination invalid occlusion pose``. A count of 0 is followed by one line of ten
    zeros in the official files; that line is consumed when present.
``list``
    One image path per line, optionally prefixed by ``#`` (test or val lists such as ``wider_val.txt``); the images
    have no annotations.

Boxes become ``(x, y, x + w, y + h)``; faces with ``w <= 0`` or ``h <= 0`` are dropped, reported in one warning
per file and counted in :class:`WiderFaceAnnotations` (:func:`read_annotations`). Any malformed line raises
:class:`WiderFaceFormatError` naming ``file:line``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Collection, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from visiontune.data.face_transforms import FaceEvalTransform, FaceInstances, FaceTransform, compute_eval_scale
from visiontune.data.validation import TextFileError, file_problem, fits_float32, read_utf8_text
from visiontune.utils.image import EXIF_ORIENTATION, oriented_size

__all__ = [
    "ANNOTATION_FORMATS",
    "EXIF_ORIENTATION",
    "OFFICIAL_ATTRIBUTE_NAMES",
    "WiderFaceAnnotations",
    "WiderFaceDataset",
    "WiderFaceFormatError",
    "WiderFaceRecord",
    "collate_faces",
    "load_annotations",
    "load_bgr_image",
    "oriented_size",
    "parse_image_list",
    "parse_official_annotations",
    "parse_retinaface_labels",
    "read_annotations",
]

logger = logging.getLogger(__name__)

ANNOTATION_FORMATS: tuple[str, ...] = ("retinaface", "official", "list")
OFFICIAL_ATTRIBUTE_NAMES: tuple[str, ...] = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
"""Column names of the per-face attributes in the official ground truth, in file order."""

RETINAFACE_VALUES_PER_FACE = 20
RETINAFACE_BOX_ONLY_VALUES = 4
OFFICIAL_VALUES_PER_FACE = 4 + len(OFFICIAL_ATTRIBUTE_NAMES)
NUM_LANDMARKS = 5
MISSING_LANDMARK_VALUE = -1.0


class WiderFaceFormatError(ValueError):
    """A WIDER FACE annotation file does not follow its layout; the message starts with ``file:line:``."""

    def __init__(self, path: str | os.PathLike[str], line_number: int, message: str) -> None:
        super().__init__(f"{path}:{line_number}: {message}")
        self.path = Path(path)
        self.line_number = line_number


@dataclasses.dataclass(eq=False)
class WiderFaceRecord:
    """One image's annotation.

    Attributes:
        relative_path: image path relative to the image root, ``/``-separated
            (e.g. ``0--Parade/0_Parade_marchingband_1_465.jpg``).
        line_number: 1-based line of the image path in the annotation file.
        boxes: ``float32 [N, 4]`` ``(x1, y1, x2, y2)`` in pixels of the original image.
        landmarks: ``float32 [N, 5, 2]`` ``(x, y)`` pixels (left eye, right eye, nose, left mouth corner, right mouth
            corner); -1 where ``landmarks_valid`` is False.
        landmarks_valid: ``bool [N]``.
        attributes: ``int64 [N, 6]`` official attributes (:data:`OFFICIAL_ATTRIBUTE_NAMES`), or None for the other
            formats.
        face_lines: 1-based line of each face in the annotation file (empty for records built in code).
    """

    relative_path: str
    line_number: int
    boxes: np.ndarray
    landmarks: np.ndarray
    landmarks_valid: np.ndarray
    attributes: np.ndarray | None = None
    face_lines: tuple[int, ...] = ()

    def faces_outside(self, height: int, width: int) -> list[int]:
        """Indices of the faces whose box lies entirely outside a ``height x width`` image (no pixel inside)."""
        x1, y1, x2, y2 = self.boxes.T if len(self.boxes) else (np.zeros(0),) * 4
        outside = (x2 <= 0) | (y2 <= 0) | (x1 >= width) | (y1 >= height)
        return [int(index) for index in np.flatnonzero(outside)]

    @property
    def image_id(self) -> str:
        """Relative path without extension, e.g. ``0--Parade/0_Parade_marchingband_1_465``."""
        return str(PurePosixPath(self.relative_path).with_suffix(""))

    @property
    def num_faces(self) -> int:
        return int(self.boxes.shape[0])

    def faces(self) -> FaceInstances:
        """Return a copy of the faces as :class:`~visiontune.data.face_transforms.FaceInstances`."""
        return FaceInstances(boxes=self.boxes, landmarks=self.landmarks, landmarks_valid=self.landmarks_valid).copy()


@dataclasses.dataclass(frozen=True, eq=False)
class WiderFaceAnnotations:
    """The parsed annotation file: its records and the faces the parser dropped.

    Attributes:
        path: the annotation file.
        records: one record per image, in file order.
        dropped_lines: 1-based line of every face dropped for a width or height ``<= 0``.
    """

    path: Path
    records: list[WiderFaceRecord]
    dropped_lines: tuple[int, ...] = ()

    @property
    def dropped_faces(self) -> int:
        """Number of faces dropped for a degenerate box."""
        return len(self.dropped_lines)

    @property
    def num_faces(self) -> int:
        """Number of faces kept, over all images."""
        return sum(record.num_faces for record in self.records)

    def counts(self) -> str:
        """``"F faces; E images without faces; L faces without landmarks; D degenerate boxes dropped (...)"``."""
        empty = sum(1 for record in self.records if record.num_faces == 0)
        without_landmarks = sum(int((~record.landmarks_valid).sum()) for record in self.records)
        return (f"{self.num_faces} faces; {empty} images without faces; {without_landmarks} faces without landmarks; "
                f"{self.dropped_faces} degenerate boxes dropped (width or height <= 0)")


# ---------------------------------------------------------------------------------------------------------------
# Parsing helpers
# ---------------------------------------------------------------------------------------------------------------


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """Return ``(1-based line number, stripped text)`` for every non-blank line of ``path`` (UTF-8, a byte-order mark
    is dropped; invalid UTF-8 is an error naming the line)."""
    try:
        text = read_utf8_text(path)
    except TextFileError as error:
        raise WiderFaceFormatError(path, error.line_number, error.reason) from None
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _is_numeric_line(text: str) -> bool:
    try:
        [float(token) for token in text.split()]
    except ValueError:
        return False
    return True


def _parse_numbers(path: Path, line_number: int, text: str, what: str) -> np.ndarray:
    """Parse whitespace-separated finite numbers; raise naming ``path:line`` otherwise."""
    values = []
    for token in text.split():
        try:
            value = float(token)
        except ValueError:
            raise WiderFaceFormatError(path, line_number, f"could not parse {token!r} as a number in {what}") from None
        if not np.isfinite(value):
            raise WiderFaceFormatError(path, line_number, f"expected finite numbers in {what}, got {token!r}")
        if not fits_float32(value):
            raise WiderFaceFormatError(path, line_number, f"{token!r} in {what} is outside the float32 range "
                                                          "(|x| <= 3.4e38): it would become inf")
        values.append(value)
    return np.asarray(values, dtype=np.float64)


def _relative_image_path(path: Path, line_number: int, text: str) -> str:
    relative = text.strip().lstrip("/")
    if not relative:
        raise WiderFaceFormatError(path, line_number, "expected an image path, got an empty one")
    if ".." in PurePosixPath(relative).parts:
        raise WiderFaceFormatError(path, line_number, f"image path {relative!r} must not contain '..'")
    return relative


class _RecordBuilder:
    """Collects the faces of one image and drops degenerate boxes (counted per file)."""

    def __init__(self, relative_path: str, line_number: int, *, with_attributes: bool) -> None:
        self.relative_path = relative_path
        self.line_number = line_number
        self.with_attributes = with_attributes
        self.boxes: list[np.ndarray] = []
        self.landmarks: list[np.ndarray] = []
        self.landmarks_valid: list[bool] = []
        self.attributes: list[np.ndarray] = []
        self.face_lines: list[int] = []

    def add(
        self,
        xywh: np.ndarray,
        landmarks: np.ndarray | None,
        attributes: np.ndarray | None,
        *,
        drop_log: list[int],
        line_number: int,
    ) -> None:
        x, y, width, height = (float(value) for value in xywh)
        if width <= 0 or height <= 0:
            drop_log.append(line_number)
            return
        self.boxes.append(np.array([x, y, x + width, y + height], dtype=np.float32))
        self.face_lines.append(line_number)
        if landmarks is None:
            self.landmarks.append(np.full((NUM_LANDMARKS, 2), MISSING_LANDMARK_VALUE, dtype=np.float32))
            self.landmarks_valid.append(False)
        else:
            self.landmarks.append(landmarks.astype(np.float32))
            self.landmarks_valid.append(True)
        if attributes is not None:
            self.attributes.append(attributes)

    def build(self) -> WiderFaceRecord:
        num_faces = len(self.boxes)
        attributes = None
        if self.with_attributes:
            attributes = (
                np.stack(self.attributes).astype(np.int64)
                if num_faces
                else np.zeros((0, len(OFFICIAL_ATTRIBUTE_NAMES)), dtype=np.int64)
            )
        return WiderFaceRecord(
            relative_path=self.relative_path,
            line_number=self.line_number,
            boxes=np.stack(self.boxes) if num_faces else np.zeros((0, 4), dtype=np.float32),
            landmarks=np.stack(self.landmarks) if num_faces else np.zeros((0, NUM_LANDMARKS, 2), dtype=np.float32),
            landmarks_valid=np.asarray(self.landmarks_valid, dtype=bool),
            attributes=attributes,
            face_lines=tuple(self.face_lines),
        )


class _RecordCollector:
    """Ordered records of one file, rejecting an image listed twice, and the dropped-box warning."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[WiderFaceRecord] = []
        self.first_line_of: dict[str, int] = {}
        self.dropped_lines: list[int] = []

    def check_new(self, relative_path: str, line_number: int) -> None:
        if relative_path in self.first_line_of:
            raise WiderFaceFormatError(
                self.path,
                line_number,
                f"image {relative_path!r} is already listed at line {self.first_line_of[relative_path]}",
            )
        self.first_line_of[relative_path] = line_number

    def finish(self) -> WiderFaceAnnotations:
        if self.dropped_lines:
            logger.warning(
                "%s: dropped %d face(s) with width or height <= 0 (first at line %d)",
                self.path,
                len(self.dropped_lines),
                self.dropped_lines[0],
            )
        return WiderFaceAnnotations(path=self.path, records=self.records, dropped_lines=tuple(self.dropped_lines))


def _parse_retinaface_landmarks(path: Path, line_number: int, values: np.ndarray) -> np.ndarray | None:
    """Landmarks ``[5, 2]`` from a 20-value face line, or None when all five points are ``(-1, -1)``."""
    points = values[4 : 4 + 3 * NUM_LANDMARKS].reshape(NUM_LANDMARKS, 3)[:, :2]
    missing = np.all(points == MISSING_LANDMARK_VALUE, axis=1)
    if missing.all():
        return None
    if missing.any():
        missing_indices = np.flatnonzero(missing).tolist()
        raise WiderFaceFormatError(
            path,
            line_number,
            f"landmarks {missing_indices} are (-1, -1) (missing) but the others are not; "
            "expected all five landmarks or none",
        )
    return points


# ---------------------------------------------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------------------------------------------


def parse_retinaface_labels(path: str | os.PathLike[str]) -> list[WiderFaceRecord]:
    """Parse a RetinaFace ``label.txt`` (``# <image path>`` lines followed by 20-number face lines).

    Args:
        path: the annotation file.

    Returns:
        One record per ``#`` line, in file order, with ``attributes`` None.

    Raises:
        WiderFaceFormatError: a face line before the first image, a line with a count other than 20 (or 4) numbers,
            a non-numeric or non-finite value, partially missing landmarks, or an image listed twice.
    """
    return _read_retinaface_labels(Path(path)).records


def _read_retinaface_labels(path: Path) -> WiderFaceAnnotations:
    collector = _RecordCollector(path)
    builder: _RecordBuilder | None = None
    for line_number, text in _read_lines(path):
        if text.startswith("#"):
            if builder is not None:
                collector.records.append(builder.build())
            relative_path = _relative_image_path(path, line_number, text[1:])
            collector.check_new(relative_path, line_number)
            builder = _RecordBuilder(relative_path, line_number, with_attributes=False)
            continue
        if builder is None:
            raise WiderFaceFormatError(path, line_number, "face line before the first '# <image path>' line")
        values = _parse_numbers(path, line_number, text, what="a face line")
        if values.size == RETINAFACE_VALUES_PER_FACE:
            landmarks = _parse_retinaface_landmarks(path, line_number, values)
        elif values.size == RETINAFACE_BOX_ONLY_VALUES:
            landmarks = None
        else:
            raise WiderFaceFormatError(
                path,
                line_number,
                f"expected {RETINAFACE_VALUES_PER_FACE} numbers after '# {builder.relative_path}' "
                f"(x y w h, 5 x (lx ly flag), score) or {RETINAFACE_BOX_ONLY_VALUES} (x y w h), got {values.size}",
            )
        builder.add(values[:4], landmarks, None, drop_log=collector.dropped_lines, line_number=line_number)
    if builder is not None:
        collector.records.append(builder.build())
    return collector.finish()


def parse_official_annotations(path: str | os.PathLike[str]) -> list[WiderFaceRecord]:
    """Parse an official ``wider_face_{train,val}_bbx_gt.txt``.

    Args:
        path: the annotation file.

    Returns:
        One record per image, in file order, without landmarks and with ``attributes`` ``int64 [N, 6]``.

    Raises:
        WiderFaceFormatError: a missing or non-integer face count, a face line with other than 10 numbers or with
            non-integer attributes, a zero count followed by a non-zero line, a file that ends inside an image's
            faces, or an image listed twice.
    """
    return _read_official_annotations(Path(path)).records


def _read_official_annotations(path: Path) -> WiderFaceAnnotations:
    lines = _read_lines(path)
    collector = _RecordCollector(path)
    index = 0
    while index < len(lines):
        line_number, text = lines[index]
        if _is_numeric_line(text):
            raise WiderFaceFormatError(path, line_number, f"expected an image path, got {text!r}")
        relative_path = _relative_image_path(path, line_number, text)
        collector.check_new(relative_path, line_number)
        builder = _RecordBuilder(relative_path, line_number, with_attributes=True)
        count_line_number, count = _official_face_count(path, lines, index, relative_path)
        index += 2
        if count == 0 and index < len(lines) and _is_numeric_line(lines[index][1]):
            _check_zero_line(path, *lines[index])
            index += 1
        for face in range(count):
            if index >= len(lines):
                raise WiderFaceFormatError(
                    path, count_line_number, f"file ends after {face} of {count} faces of {relative_path!r}"
                )
            face_line_number, face_text = lines[index]
            values = _official_face_values(path, face_line_number, face_text, relative_path=relative_path,
                                           face=f"face {face + 1} of {count}")
            builder.add(values[:4], None, values[4:].astype(np.int64), drop_log=collector.dropped_lines,
                        line_number=face_line_number)
            index += 1
        collector.records.append(builder.build())
    return collector.finish()


def _official_face_count(path: Path, lines: Sequence[tuple[int, str]], index: int,
                         relative_path: str) -> tuple[int, int]:
    """``(line number, face count)`` of the count line that follows the image path at ``lines[index]``."""
    if index + 1 >= len(lines):
        raise WiderFaceFormatError(path, lines[index][0], f"file ends before the face count of {relative_path!r}")
    count_line_number, count_text = lines[index + 1]
    try:
        count = int(count_text)
    except ValueError:
        count = -1
    if count < 0:
        raise WiderFaceFormatError(
            path, count_line_number, f"expected the number of faces of {relative_path!r}, got {count_text!r}"
        )
    return count_line_number, count


def _check_zero_line(path: Path, line_number: int, text: str) -> None:
    """The numeric line after a zero face count must be the official line of zeros."""
    values = _parse_numbers(path, line_number, text, what="the line after a zero face count")
    if values.size != OFFICIAL_VALUES_PER_FACE or np.any(values != 0):
        raise WiderFaceFormatError(
            path,
            line_number,
            f"a face count of 0 must be followed by a line of {OFFICIAL_VALUES_PER_FACE} zeros or the next "
            f"image path, got {text!r}",
        )


def _official_face_values(path: Path, line_number: int, text: str, *, relative_path: str, face: str) -> np.ndarray:
    """The ten numbers of an official face line (``x y w h`` and six integer attributes) of image
    ``relative_path``; ``face`` names the face in messages (``face 2 of 3``)."""
    values = _parse_numbers(path, line_number, text, what=f"a face line of {relative_path!r}")
    if values.size != OFFICIAL_VALUES_PER_FACE:
        raise WiderFaceFormatError(
            path,
            line_number,
            f"expected {OFFICIAL_VALUES_PER_FACE} numbers (x y w h {' '.join(OFFICIAL_ATTRIBUTE_NAMES)}) "
            f"for {face} of {relative_path!r}, got {values.size}",
        )
    attributes = values[4:]
    if np.any(attributes != np.round(attributes)):
        raise WiderFaceFormatError(path, line_number, f"expected integer attributes, got {text.split()[4:]}")
    return values


def parse_image_list(path: str | os.PathLike[str]) -> list[WiderFaceRecord]:
    """Parse a list of image paths, one per line, each optionally prefixed by ``#``.

    Returns:
        One record per line with no faces (``N = 0``) and ``attributes`` None.

    Raises:
        WiderFaceFormatError: a line of numbers (an annotated file read with the wrong format) or an image listed
            twice.
    """
    return _read_image_list(Path(path)).records


def _read_image_list(path: Path) -> WiderFaceAnnotations:
    collector = _RecordCollector(path)
    for line_number, text in _read_lines(path):
        entry = text[1:] if text.startswith("#") else text
        if entry.strip() and _is_numeric_line(entry):
            raise WiderFaceFormatError(
                path, line_number, f"expected an image path, got {text!r} (is this an annotated file?)"
            )
        relative_path = _relative_image_path(path, line_number, entry)
        collector.check_new(relative_path, line_number)
        collector.records.append(_RecordBuilder(relative_path, line_number, with_attributes=False).build())
    return collector.finish()


def read_annotations(path: str | os.PathLike[str], annotation_format: str) -> WiderFaceAnnotations:
    """Parse ``path`` in one of :data:`ANNOTATION_FORMATS` (``retinaface``, ``official``, ``list``): the records
    and the faces dropped for a degenerate box."""
    parsers = {
        "retinaface": _read_retinaface_labels,
        "official": _read_official_annotations,
        "list": _read_image_list,
    }
    if annotation_format not in parsers:
        raise ValueError(
            f"unknown WIDER FACE annotation format {annotation_format!r}; expected one of {ANNOTATION_FORMATS}"
        )
    return parsers[annotation_format](Path(path))


def load_annotations(path: str | os.PathLike[str], annotation_format: str) -> list[WiderFaceRecord]:
    """The records of ``path`` in one of :data:`ANNOTATION_FORMATS` (see :func:`read_annotations`)."""
    return read_annotations(path, annotation_format).records


# ---------------------------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------------------------


def faces_outside_images(annotations: WiderFaceAnnotations, images_root: Path,
                         skip: Collection[Path] = ()) -> list[tuple[Path, str]]:
    """Faces whose box lies entirely outside its image (sizes from the file headers, EXIF orientation applied).

    Such a face can never be detected: COCO drops a box like it as degenerate; WIDER files keep it, so check-data
    names it. Images in ``skip`` (unreadable ones, reported already) and missing images are passed over.

    Returns:
        ``(image path, "file:line: face box (x1, y1, x2, y2) lies outside the image (W x H pixels)")`` per face.
    """
    found = []
    for record in annotations.records:
        path = images_root / record.relative_path
        if path in skip or not path.is_file() or not len(record.boxes):
            continue
        height, width = oriented_size(path)
        for index in record.faces_outside(height, width):
            line = record.face_lines[index] if record.face_lines else record.line_number
            box = ", ".join(f"{value:g}" for value in record.boxes[index])
            found.append((path, f"{annotations.path}:{line}: face box ({box}) lies outside the image "
                                f"{record.relative_path} ({width} x {height} pixels)"))
    return found


def load_bgr_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image with PIL as ``uint8 [H, W, 3]`` BGR (EXIF orientation applied, like ``cv2.imread``)."""
    with Image.open(path) as image:
        rgb = ImageOps.exif_transpose(image).convert("RGB")
        return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])


class WiderFaceDataset(Dataset):
    """WIDER FACE (or any data in its layouts) for face detection with five landmarks.

    Args:
        root: folder that image paths in the annotation file are relative to (e.g. ``WIDER_val/images``).
        annotation_file: the annotation file.
        annotation_format: one of :data:`ANNOTATION_FORMATS`.
        transform: called as ``transform(image, faces, generator)`` on the ``uint8 [H, W, 3]`` BGR image, its
            :class:`~visiontune.data.face_transforms.FaceInstances` and a ``numpy.random.Generator``; see
            :class:`~visiontune.data.face_transforms.FaceTransform`. Default: original size, mean subtracted
            (:class:`~visiontune.data.face_transforms.FaceEvalTransform`).

    Each item is ``(image, target)``: ``image`` ``float32 [3, H', W']`` BGR minus the mean (``[3, S, S]`` for the
    training transform) and ``target`` with ``boxes`` ``float32 [N, 4]`` xyxy, ``landmarks`` ``float32 [N, 5, 2]``
    (-1 where not valid), both in pixels of the returned image, ``landmarks_valid`` ``bool [N]``, ``image_id``
    (relative path without extension), ``orig_size`` ``(H, W)`` of the decoded image, plus the transform's own
    keys (``scale`` for the evaluation transform).

    Randomness: each ``__getitem__`` draws a seed with ``torch.randint`` from torch's default generator and builds
    a ``numpy.random.Generator`` from it, so samples are reproducible given ``torch.manual_seed`` in the main
    process and given the DataLoader's per-worker torch seeds, and differ between epochs.

    ``records`` holds the parsed annotations and ``dropped_faces`` the number of degenerate boxes left out.

    Raises:
        FileNotFoundError: the annotation file or an image file (checked at construction) does not exist.
        WiderFaceFormatError: the annotation file is malformed.
        ValueError: an unknown format or an annotation file without images.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        annotation_file: str | os.PathLike[str],
        annotation_format: str = "retinaface",
        transform: FaceTransform | None = None,
    ) -> None:
        self.root = Path(root)
        self.annotation_file = Path(annotation_file)
        self.annotation_format = annotation_format
        self.transform: FaceTransform = transform if transform is not None else FaceEvalTransform()
        annotations = read_annotations(self.annotation_file, annotation_format)
        self.records = annotations.records
        self.dropped_faces = annotations.dropped_faces
        if not self.records:
            raise ValueError(f"{self.annotation_file}: lists no images")
        self._check_images_exist()

    def _check_images_exist(self) -> None:
        problems = [(record, file_problem(self.root / record.relative_path, "image file")) for record in self.records]
        missing = [(record, problem) for record, problem in problems if problem is not None]
        if missing:
            first, problem = missing[0]
            error = FileNotFoundError if "not found" in str(problem) else ValueError
            raise error(f"{problem} (listed at {self.annotation_file}:{first.line_number}); "
                        f"{len(missing)} of {len(self.records)} images are missing or not regular files under "
                        f"{self.root}")

    def __len__(self) -> int:
        return len(self.records)

    def image_path(self, index: int) -> Path:
        """Path of the image of sample ``index``."""
        return self.root / self.records[index].relative_path

    def image_paths(self) -> list[Path]:
        """The image file of every sample, in sample order (duplicate checks hash them)."""
        return [self.image_path(index) for index in range(len(self.records))]

    def image_categories(self) -> list[list[int]]:
        """``[1]`` (face) for a sample with faces, ``[]`` without, in sample order (``data.sampler=repeat_factor``)."""
        return [[1] if record.num_faces else [] for record in self.records]

    def eval_sizes(self, transform: FaceEvalTransform, *, limit: int = 2) -> dict[tuple[int, int], str]:
        """``(height, width)`` after ``transform`` -> the first image of that size, up to ``limit`` sizes.

        Reads the file headers only (EXIF orientation applied, as the decoded images).
        """
        sizes: dict[tuple[int, int], str] = {}
        for index, record in enumerate(self.records):
            height, width = oriented_size(self.image_path(index))
            scale = compute_eval_scale(height, width, target_size=transform.target_size, max_size=transform.max_size)
            sizes.setdefault((max(1, round(height * scale)), max(1, round(width * scale))), record.relative_path)
            if len(sizes) >= limit:
                break
        return sizes

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        record = self.records[index]
        image = load_bgr_image(self.root / record.relative_path)
        seed = int(torch.randint(0, 2**62, (1,)).item())
        generator = np.random.default_rng(seed)
        tensor, target = self.transform(image, record.faces(), generator)
        target["image_id"] = record.image_id
        target["orig_size"] = (int(image.shape[0]), int(image.shape[1]))
        return tensor, target

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, annotation_file={str(self.annotation_file)!r}, "
            f"annotation_format={self.annotation_format!r}, images={len(self)}, transform={self.transform!r})"
        )


def collate_faces(batch: Sequence[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Stack images of equal size and keep the targets as a list.

    Args:
        batch: ``(image float32 [3, H, W], target)`` pairs.

    Returns:
        ``float32 [B, 3, H, W]`` images and the ``B`` targets.

    Raises:
        ValueError: the batch is empty or its images differ in size (evaluate at original size with batch size 1).
    """
    if not batch:
        raise ValueError("collate_faces got an empty batch")
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        described = ", ".join(
            f"{target.get('image_id', index)}: {tuple(image.shape)}" for index, (image, target) in enumerate(batch)
        )
        raise ValueError(f"cannot stack images of different sizes ({described}); use batch size 1 or resize them")
    return torch.stack(images), targets
