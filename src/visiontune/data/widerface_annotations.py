"""WIDER FACE annotation files: the three layouts and :func:`read_annotations`.

Every image path is relative to the image root (a leading ``/``, as written by some ``wider_val.txt`` generators,
is ignored):

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
per file and counted in :class:`~visiontune.data.widerface.WiderFaceAnnotations`. Any malformed line raises
:class:`~visiontune.utils.widerface_format.WiderFaceFormatError` naming ``file:line``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from visiontune.data.face_instances import MISSING_LANDMARK_VALUE, NUM_LANDMARKS
from visiontune.data.validation import TextFileError, fits_float32, read_utf8_text
from visiontune.data.widerface import OFFICIAL_ATTRIBUTE_NAMES, WiderFaceAnnotations, WiderFaceRecord
from visiontune.utils.widerface_format import WiderFaceFormatError

__all__ = ["ANNOTATION_FORMATS", "read_annotations"]

logger = logging.getLogger(__name__)

ANNOTATION_FORMATS: tuple[str, ...] = ("retinaface", "official", "list")
"""The layouts :func:`read_annotations` reads (``data.format``)."""

RETINAFACE_VALUES_PER_FACE = 20
RETINAFACE_BOX_ONLY_VALUES = 4
OFFICIAL_VALUES_PER_FACE = 4 + len(OFFICIAL_ATTRIBUTE_NAMES)


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


def _read_retinaface_labels(path: Path) -> WiderFaceAnnotations:
    """Parse a RetinaFace ``label.txt`` (``# <image path>`` lines followed by 20-number face lines).

    Args:
        path: the annotation file.

    Returns:
        One record per ``#`` line, in file order, with ``attributes`` None.

    Raises:
        WiderFaceFormatError: a face line before the first image, a line with a count other than 20 (or 4) numbers,
            a non-numeric or non-finite value, partially missing landmarks, or an image listed twice.
    """
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


def _read_official_annotations(path: Path) -> WiderFaceAnnotations:
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


def _read_image_list(path: Path) -> WiderFaceAnnotations:
    """Parse a list of image paths, one per line, each optionally prefixed by ``#``.

    Args:
        path: the list file.

    Returns:
        One record per line with no faces (``N = 0``) and ``attributes`` None.

    Raises:
        WiderFaceFormatError: a line of numbers (an annotated file read with the wrong format) or an image listed
            twice.
    """
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
    """Parse a WIDER FACE annotation file (UTF-8; a byte-order mark is dropped).

    Args:
        path: the annotation file.
        annotation_format: one of :data:`ANNOTATION_FORMATS` (see the module docstring for the layouts).

    Returns:
        The records, one per image in file order (``attributes`` ``int64 [N, 6]`` for ``official``, None
        otherwise; no faces for ``list``), and the lines of the faces dropped for a degenerate box.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: an unknown format, or ``path`` is not a regular file.
        WiderFaceFormatError: the file does not follow the layout or is not UTF-8 (the message starts with
            ``file:line:``).
    """
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

