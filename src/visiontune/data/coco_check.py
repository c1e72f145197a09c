"""``check-data`` for COCO instance segmentation: every problem of an annotation file and its images in one report.

:func:`check_coco_data` parses the annotation file collecting every broken entry (instead of stopping at the first,
as training does), counts instances, images and crowd regions per category, and optionally opens every image to
compare its size (upright by its EXIF orientation) with the annotation file. :meth:`CocoDataReport.format_report`
is the text the CLI prints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image as PILImage

from visiontune.data.coco_format import CocoFormatError, CocoImageRecord, parse_coco_instances
from visiontune.data.validation import file_problem, orientation_note, upright_note
from visiontune.utils.image import DECODE_ERRORS, TRANSPOSING_ORIENTATIONS, exif_orientation

__all__ = ["CocoDataReport", "check_coco_data"]


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
        return (f"{path}: image is {size[0]}x{size[1]} (width x height{upright_note(orientation)}) but the "
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
