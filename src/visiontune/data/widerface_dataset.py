"""The WIDER FACE dataset: images with their faces, image decoding as BGR, batching and the faces outside images.

The annotations come from :func:`~visiontune.data.widerface_annotations.read_annotations`; each sample goes
through a :class:`~visiontune.data.face_instances.FaceTransform` (training augmentation or evaluation resize of
:mod:`visiontune.data.face_transforms`).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from visiontune.data.face_instances import FaceTransform
from visiontune.data.face_transforms import FaceEvalTransform, compute_eval_scale
from visiontune.data.validation import file_problem
from visiontune.data.widerface import WiderFaceAnnotations
from visiontune.data.widerface_annotations import read_annotations
from visiontune.utils.image import open_rgb, oriented_size

__all__ = ["WiderFaceDataset", "collate_faces", "faces_outside_images", "load_bgr_image"]


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
    """Decode an image as ``uint8 [H, W, 3]`` BGR (EXIF orientation applied, like ``cv2.imread``).

    Decoding is :func:`~visiontune.utils.image.open_rgb`'s, as for every task: 16-bit and float images are scaled to
    8 bit, and an unreadable file raises ``ValueError`` naming it.
    """
    rgb = open_rgb(Path(path), exif_transpose=True)
    return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])


class WiderFaceDataset(Dataset):
    """WIDER FACE (or any data in its layouts) for face detection with five landmarks.

    Args:
        root: folder that image paths in the annotation file are relative to (e.g. ``WIDER_val/images``).
        annotation_file: the annotation file.
        annotation_format: one of :data:`ANNOTATION_FORMATS`.
        transform: called as ``transform(image, faces, generator)`` on the ``uint8 [H, W, 3]`` BGR image, its
            :class:`~visiontune.data.face_instances.FaceInstances` and a ``numpy.random.Generator``; see
            :class:`~visiontune.data.face_instances.FaceTransform`. Default: original size, mean subtracted
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
