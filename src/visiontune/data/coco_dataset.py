"""The COCO instance-segmentation ``Dataset``: images and their targets (boxes, labels, masks) in torchvision's format.

The annotation file is read and validated by :func:`visiontune.data.coco_format.parse_coco_instances` (conventions
there: labels ``1..K``, crowd regions kept out of the training targets, degenerate or empty annotations dropped);
the dataset names what was dropped in one warning, reads each image upright by its EXIF orientation and checks its
size against the annotation file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image as PILImage
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset
from torchvision import tv_tensors

from visiontune.data.coco_format import CocoImageRecord, CocoInstanceRecord, parse_coco_instances
from visiontune.data.coco_rle import segmentation_to_rle
from visiontune.data.validation import file_problem, upright_note
from visiontune.utils.image import exif_orientation, open_rgb

__all__ = ["CocoInstanceDataset", "decode_instance_masks"]

logger = logging.getLogger(__name__)

EmptyImagePolicy = Literal["keep", "drop"]
DetectionTransform = Callable[[tv_tensors.Image, dict[str, Any]], tuple[Any, dict[str, Any]]]


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
        CocoFormatError: The annotation file is broken (see :func:`~visiontune.data.coco_format.parse_coco_instances`).
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
                turned = upright_note(exif_orientation(image))
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
