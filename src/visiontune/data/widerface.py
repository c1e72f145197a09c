"""WIDER FACE annotations in memory: one image's faces (:class:`WiderFaceRecord`) and a parsed annotation file
(:class:`WiderFaceAnnotations`).

:func:`~visiontune.data.widerface_annotations.read_annotations` reads them from the annotation files;
:class:`~visiontune.data.widerface_dataset.WiderFaceDataset` serves them with their images.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePosixPath

import numpy as np

from visiontune.data.face_instances import FaceInstances

__all__ = ["OFFICIAL_ATTRIBUTE_NAMES", "WiderFaceAnnotations", "WiderFaceRecord"]

OFFICIAL_ATTRIBUTE_NAMES: tuple[str, ...] = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
"""Column names of the per-face attributes in the official ground truth, in file order."""


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
        """Return a copy of the faces as :class:`~visiontune.data.face_instances.FaceInstances`."""
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
