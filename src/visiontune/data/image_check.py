"""Checks behind ``visiontune check-data``: decode every image and summarise the splits of a dataset.

:func:`inspect_image` fully decodes one file and returns an :class:`ImageFinding` for what is wrong with it
(``"error"``: training would fail on it; ``"warning"``: it loads but deserves a look, e.g. a non-RGB mode).
:func:`scan_images` runs it over many files with a progress bar, and :func:`check_classification_sources`
combines that with split-level checks (class counts, duplicates, classes missing between splits) into a
:class:`CheckReport` whose :meth:`CheckReport.format` is the text the CLI prints.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from visiontune.data.classification import ClassificationSource, too_few_classes
from visiontune.data.samplers import imbalance_summary
from visiontune.data.validation import file_kind, orientation_note
from visiontune.utils.image import DECODE_ERRORS, ImageModeError, exif_orientation, high_bit_depth_note

logger = logging.getLogger(__name__)

FindingLevel = Literal["error", "warning"]

_MAX_LISTED = 20  # entries listed per kind of problem in the printed report


@dataclass(frozen=True)
class ImageFinding:
    """One problem with one image file.

    Attributes:
        path: The image file.
        level: ``"error"`` (cannot be trained on) or ``"warning"`` (loads, but check it).
        message: What is wrong, e.g. ``"mode CMYK, not RGB (converted to RGB when loaded)"``.
    """

    path: Path
    level: FindingLevel
    message: str

    def format(self) -> str:
        return f"{self.path}: {self.message}"


def _header_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG or GIF header, or None for other files (PIL refuses 0-pixel images at open)."""
    try:
        with path.open("rb") as handle:
            header = handle.read(24)
    except OSError:
        return None
    if header.startswith(b"\x89PNG\r\n\x1a\n") and header[12:16] == b"IHDR":
        return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    if header[:6] in (b"GIF87a", b"GIF89a") and len(header) >= 10:
        return int.from_bytes(header[6:8], "little"), int.from_bytes(header[8:10], "little")
    return None


def inspect_image(path: str | Path) -> ImageFinding | None:
    """Fully decode one image file and report the most serious problem found.

    Errors: the file is missing, unreadable or empty, is not a regular file (a named pipe, socket or device: never
    opened), is not an image PIL can identify, is corrupt or truncated (found by a full decode with
    ``Image.load()``; PIL's global ``LOAD_TRUNCATED_IMAGES`` is not changed), or has zero width or height, or holds
    16-bit/float values that cannot be scaled to 8 bit. Warning: the image has several frames (an animated GIF or
    WebP, a multi-page TIFF: only the first is read), or decodes but its mode is not RGB (``L``, ``CMYK``, ``RGBA``,
    ``P``, ...; training converts it to RGB), or it is a 16-bit or float image that training scales to 8 bit (the
    warning says how: :func:`visiontune.utils.image.to_rgb`).

    Args:
        path: The image file.

    Returns:
        The finding, or ``None`` when the image is a readable RGB image.
    """
    return _inspect(Path(path))[0]


def _inspect(path: Path) -> tuple[ImageFinding | None, int]:
    """:func:`inspect_image`'s finding and the file's EXIF orientation (1 when upright or unreadable)."""
    try:
        size = path.stat().st_size
    except OSError as error:
        return ImageFinding(path, "error", f"cannot read file: {error.strerror or error}"), 1
    kind = file_kind(path)
    if kind is not None:
        return ImageFinding(path, "error", f"{kind}, not a regular file (never opened)"), 1
    finding, orientation = _decode(path, size)
    return finding, orientation


def _decode(path: Path, size: int) -> tuple[ImageFinding | None, int]:
    """Decode the regular file ``path`` of ``size`` bytes (see :func:`inspect_image`); also its EXIF orientation."""
    if size == 0:
        return ImageFinding(path, "error", "empty file (0 bytes)"), 1
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width == 0 or height == 0:
                return ImageFinding(path, "error", f"zero-size image ({width}x{height} pixels)"), 1
            orientation = exif_orientation(image)
            frames = int(getattr(image, "n_frames", 1))
            image.load()
            mode = image.mode
            scaling = high_bit_depth_note(image, path)
    except UnidentifiedImageError:
        header_size = _header_size(path)
        if header_size is not None and 0 in header_size:
            width, height = header_size
            return ImageFinding(path, "error", f"zero-size image ({width}x{height} pixels in the file header)"), 1
        return ImageFinding(path, "error", "not an image PIL can read (unknown or broken file format)"), 1
    except PermissionError as error:
        return ImageFinding(path, "error", f"cannot read file: {error.strerror or error}"), 1
    except ImageModeError as error:
        return ImageFinding(path, "error", str(error).removeprefix(f"{path}: ")), 1
    except DECODE_ERRORS as error:
        return ImageFinding(path, "error", f"corrupt or truncated image: {type(error).__name__}: {error}"), 1
    if frames > 1:
        return ImageFinding(path, "warning", f"{frames} frames (animated or multi-page): only the first frame is "
                                             "read"), orientation
    if scaling is not None:
        return ImageFinding(path, "warning", f"{scaling} when loaded"), orientation
    if mode != "RGB":
        return ImageFinding(path, "warning", f"mode {mode}, not RGB (converted to RGB when loaded)"), orientation
    return None, orientation


def scan_images(
    paths: Iterable[str | Path],
    *,
    desc: str,
    num_workers: int = 0,
    progress: bool = True,
    orientations: dict[Path, int] | None = None,
) -> list[ImageFinding]:
    """Run :func:`inspect_image` over ``paths`` (each distinct path once) with a tqdm progress bar.

    Args:
        paths: Image files; repeated paths are inspected once.
        desc: Progress bar label, e.g. ``"train"``.
        num_workers: Decoding threads; ``0`` decodes in the calling thread (PIL releases the GIL while decoding,
            so threads speed up large scans).
        progress: Show the progress bar (on stderr).
        orientations: If given, filled with ``path -> EXIF orientation`` of every decoded image whose orientation
            is not 1 (upright), for :func:`~visiontune.data.validation.orientation_note`.

    Returns:
        The findings, in the order of ``paths``.
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    unique = list(dict.fromkeys(Path(path) for path in paths))
    with tqdm(total=len(unique), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        if num_workers == 0:
            results = []
            for path in unique:
                results.append(_inspect(path))
                bar.update()
        else:
            with ThreadPoolExecutor(max_workers=num_workers) as executor:
                results = []
                for result in executor.map(_inspect, unique):
                    results.append(result)
                    bar.update()
    if orientations is not None:
        orientations.update((path, orientation) for path, (_, orientation) in zip(unique, results) if orientation != 1)
    return [finding for finding, _ in results if finding is not None]


@dataclass
class SplitSummary:
    """Counts for one split.

    Attributes:
        name: Split name, e.g. ``"train"``.
        origin: Folder or annotation file the split was read from.
        num_samples: Number of samples (entries, duplicates included).
        class_counts: Samples per class name, in class-index order.
        duplicates: Paths listed more than once -> how often.
    """

    name: str
    origin: str
    num_samples: int
    class_counts: dict[str, int]
    duplicates: dict[Path, int]


@dataclass
class CheckReport:
    """Result of :func:`check_classification_sources`.

    Attributes:
        splits: One summary per split, in the order given.
        image_findings: Per split name, the problems found in its image files.
        errors: Dataset-level errors (e.g. a validation class unknown to training).
        warnings: Dataset-level warnings (e.g. a class without validation images, duplicate entries).
        num_images_checked: Distinct image files decoded (0 when images were not checked).
        notes: Facts that are neither errors nor warnings (images turned upright by their EXIF orientation).
    """

    splits: list[SplitSummary]
    image_findings: dict[str, list[ImageFinding]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    num_images_checked: int = 0
    notes: list[str] = field(default_factory=list)

    def _image_findings(self, level: FindingLevel) -> list[tuple[str, ImageFinding]]:
        return [
            (split, finding)
            for split, findings in self.image_findings.items()
            for finding in findings
            if finding.level == level
        ]

    @property
    def num_errors(self) -> int:
        return len(self.errors) + len(self._image_findings("error"))

    @property
    def num_warnings(self) -> int:
        return len(self.warnings) + len(self._image_findings("warning"))

    @property
    def has_errors(self) -> bool:
        """True when training on this data would fail or be wrong (the CLI exits with status 1)."""
        return self.num_errors > 0

    def format(self, *, max_listed: int = _MAX_LISTED) -> str:
        """The human-readable report: per-split and per-class counts, then errors, warnings and a verdict.

        Args:
            max_listed: Image findings listed per level before the rest is summarised as a count.
        """
        lines: list[str] = []
        for split in self.splits:
            lines.append(f"split {split.name!r}: {split.num_samples} images, {len(split.class_counts)} classes "
                         f"({split.origin})")
        lines.append("")
        lines.extend(self._class_table())
        lines.append("")
        if self.image_findings:
            lines.append(f"images decoded: {self.num_images_checked}")
        else:
            lines.append("images not decoded (image check disabled)")
        for level, messages in (("error", self.errors), ("warning", self.warnings)):
            image_findings = self._image_findings(level)  # type: ignore[arg-type]
            total = len(messages) + len(image_findings)
            if total == 0:
                continue
            lines.append(f"{level}s ({total}):")
            lines.extend(f"  - {message}" for message in messages)
            lines.extend(f"  - {split}: {finding.format()}" for split, finding in image_findings[:max_listed])
            if len(image_findings) > max_listed:
                lines.append(f"  ... and {len(image_findings) - max_listed} more image {level}s")
        lines.extend(f"note: {note}" for note in self.notes)
        verdict = "FAILED" if self.has_errors else "OK"
        lines.append(f"result: {verdict} ({self.num_errors} error(s), {self.num_warnings} warning(s))")
        return "\n".join(lines)

    def _class_table(self) -> list[str]:
        """Rows ``class  count(split 1)  count(split 2) ...`` over the union of class names."""
        names: list[str] = []
        for split in self.splits:
            names.extend(name for name in split.class_counts if name not in names)
        if not names:
            return []
        name_width = max(len("class"), *(len(name) for name in names))
        widths = [max(len(split.name), 6) for split in self.splits]
        header = "class".ljust(name_width) + "".join(
            "  " + split.name.rjust(width) for split, width in zip(self.splits, widths)
        )
        rows = [header]
        for name in names:
            cells = []
            for split, width in zip(self.splits, widths):
                count = split.class_counts.get(name)
                cells.append("  " + ("-" if count is None else str(count)).rjust(width))
            rows.append(name.ljust(name_width) + "".join(cells))
        return rows


def _compare_classes(reference_name: str, reference: ClassificationSource, name: str, other: ClassificationSource,
                     report: CheckReport) -> None:
    """Record classes that differ between the reference (training) split and another split."""
    if other.classes == reference.classes:
        return
    extra = [cls for cls in other.classes if cls not in reference.classes]
    missing = [cls for cls in reference.classes if cls not in other.classes]
    if extra:
        report.errors.append(f"split {name!r} has {len(extra)} class(es) not in {reference_name!r}: "
                             f"{', '.join(extra[:_MAX_LISTED])}")
    if missing:
        report.warnings.append(f"split {name!r} lacks {len(missing)} class(es) of {reference_name!r}: "
                               f"{', '.join(missing[:_MAX_LISTED])}")
    if not extra and not missing:
        report.errors.append(f"splits {reference_name!r} and {name!r} order their classes differently, so the same "
                             "label index means different classes")


def _check_split(name: str, source: ClassificationSource, reference_name: str, reference: ClassificationSource,
                 report: CheckReport) -> None:
    """Add the summary of one split and its split-level findings to ``report``.

    Findings: classes that differ from the reference split (or, for the reference, its class balance), classes
    without samples, paths listed more than once (with different labels: an error), files and folder links a scan
    left out.
    """
    counts = source.class_counts()
    duplicates = source.duplicate_paths()
    report.splits.append(SplitSummary(name, source.origin, len(source.samples), counts, duplicates))
    if name != reference_name:
        _compare_classes(reference_name, reference, name, source, report)
    else:
        balance, imbalanced = imbalance_summary(counts)
        report.notes.append(f"split {name!r}: {balance}")
        report.warnings.extend([f"split {name!r}: {imbalanced}"] if imbalanced else [])
    empty = [cls for cls, count in counts.items() if count == 0]
    if empty:
        report.warnings.append(f"split {name!r} has no images for {len(empty)} class(es): "
                               f"{', '.join(empty[:_MAX_LISTED])}")
    if duplicates:
        examples = ", ".join(str(path) for path in list(duplicates)[:3])
        report.warnings.append(f"split {name!r} lists {len(duplicates)} image path(s) more than once "
                               f"({sum(duplicates.values()) - len(duplicates)} extra entries), e.g. {examples}")
    report.warnings.extend(f"split {name!r}: {line}" for line in source.skipped_files.lines(source.origin))
    for link, target in source.skipped_links:
        report.warnings.append(f"split {name!r}: folder link {link} -> {target} not followed: that folder is "
                               "already scanned (a link loop or a second route to the same images)")
    for path, labels in source.conflicting_labels().items():
        report.errors.append(f"split {name!r}: {path} is listed with different labels: {', '.join(labels)}")


def _check_shared_paths(name: str, source: ClassificationSource, seen_in: dict[Path, str], report: CheckReport) -> None:
    """Warn about image paths of split ``name`` that an earlier split already lists (train/val leakage).

    Args:
        seen_in: Path -> the first split listing it; updated with the paths of ``name``.
    """
    shared: dict[str, int] = {}
    for path in dict.fromkeys(path for path, _ in source.samples):
        if path in seen_in and seen_in[path] != name:
            shared[seen_in[path]] = shared.get(seen_in[path], 0) + 1
        else:
            seen_in.setdefault(path, name)
    for other, count in shared.items():
        report.warnings.append(f"{count} image path(s) appear in both {other!r} and {name!r}")


def check_classification_sources(
    splits: dict[str, ClassificationSource],
    *,
    check_images: bool = True,
    num_workers: int = 0,
    progress: bool = True,
) -> CheckReport:
    """Check the splits of a classification dataset and decode every image.

    The first split (normally ``"train"``) is the reference for the class list. Errors: a reference with fewer than
    two classes, corrupt or unreadable images, classes of a later split that the reference lacks or ordered
    differently, paths listed more than once with different labels. Warnings: files a folder scan left out (other
    extensions, not regular files), non-RGB or multi-frame images, reference classes without samples in a split,
    paths listed more than once in a split, paths shared between splits (train/val leakage), a reference split whose
    largest class has more than 10x the images of its smallest. Notes: the reference split's class imbalance
    (largest / smallest), images with an EXIF orientation (turned upright when loaded).

    Args:
        splits: Split name -> source, e.g. ``{"train": ..., "val": ...}``.
        check_images: Decode every image (disable for a quick count-only report).
        num_workers: Decoding threads, see :func:`scan_images`.
        progress: Show a progress bar per split.

    Returns:
        The report; print ``report.format()`` and fail when ``report.has_errors``.

    Raises:
        ValueError: ``splits`` is empty.
    """
    if not splits:
        raise ValueError("check_classification_sources needs at least one split")
    report = CheckReport(splits=[])
    reference_name, reference = next(iter(splits.items()))
    refusal = too_few_classes(reference)
    if refusal is not None:
        report.errors.append(f"split {reference_name!r}: {refusal}")
    seen_in: dict[Path, str] = {}
    checked: set[Path] = set()
    orientations: dict[Path, int] = {}
    for name, source in splits.items():
        _check_split(name, source, reference_name, reference, report)
        _check_shared_paths(name, source, seen_in, report)
        if check_images:
            paths = [path for path, _ in source.samples if path not in checked]
            findings = scan_images(paths, desc=f"checking {name}", num_workers=num_workers, progress=progress,
                                   orientations=orientations)
            checked.update(paths)
            report.image_findings[name] = findings
    report.num_images_checked = len(checked)
    note = orientation_note(orientations)
    if note is not None:
        report.notes.append(note)
    logger.debug("checked %d images: %d errors, %d warnings", len(checked), report.num_errors, report.num_warnings)
    return report
