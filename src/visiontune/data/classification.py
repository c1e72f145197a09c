"""Image classification data: reading sample lists from disk and a map-style dataset over them.

Three on-disk layouts are read into one :class:`ClassificationSource` (a list of ``(path, label)`` pairs plus the
class names); nothing is copied or converted:

* :func:`scan_image_folder` - an ImageFolder tree ``folder/<class>/<image>``.
* :func:`read_annotation_list` - lines ``<image id> <label words...>`` with images at ``images_dir/<id><ext>``
  (the FGVC-Aircraft ``images_variant_trainval.txt`` layout).
* :func:`read_csv_list` - a CSV file with the header ``path,label``.

:func:`scan_image_folder` reads regular files with an image extension (:data:`IMG_EXTENSIONS`, as torchvision's
ImageFolder: GIF is not one) and names what it leaves out in one warning line per reason: other extensions, and
entries that are not regular files (a named pipe called ``a.jpg`` would block ``open()``; it is never opened).
A multi-frame image (animated WebP, multi-page TIFF) is read as its first frame; ``check-data`` says so.

Class names map to label indices in sorted order. A validation split is read with ``classes=`` the training
classes, so both splits share one index mapping: a validation class unknown to training is an error, a training
class without validation images is a warning.

:class:`ClassificationDataset` decodes images with PIL. A corrupt or truncated file either raises (``on_corrupt=
"error"``) or is skipped (``"skip"``): the sample becomes ``None``, :func:`collate_skip_none` drops it from the batch
and the dataset counts it in :attr:`ClassificationDataset.num_skipped`, across DataLoader worker processes too.
"""

from __future__ import annotations

import csv
import io
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image, ImageFile
from torch.utils.data import Dataset

from visiontune.data.validation import SkippedFiles, file_kind, file_problem, read_utf8_text
from visiontune.utils.image import open_rgb

logger = logging.getLogger(__name__)

IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""File extensions (lower case) that :func:`scan_image_folder` treats as images."""

MIN_TRAINING_CLASSES = 2
"""A classifier needs at least two classes: with one, every loss is 0 and every prediction is right."""

CSV_COLUMNS: tuple[str, str] = ("path", "label")
"""Columns a classification CSV file must have in its header."""

CorruptPolicy = Literal["error", "skip"]

SPLIT_FOLDER_NAMES: tuple[str, ...] = ("val", "valid", "validation", "eval", "evaluation", "test", "dev", "train",
                                       "training", "trainval")
"""Folder names a missing split folder is most likely called instead (suggested first, in this order)."""

_MAX_LISTED = 10  # how many offending entries an error message lists before summarising


@dataclass
class ClassificationSource:
    """The samples of one split.

    Attributes:
        samples: ``(image path, label index)`` pairs; label indices index ``classes``.
        classes: Class names; ``classes[i]`` is the name of label ``i`` (sorted order).
        origin: Where the samples came from (folder, annotation or CSV file), used in messages.
        skipped_links: Folder links that were not followed, as ``(link, real target)``: their target was already
            scanned (a link loop, or a second route to the same images).
        skipped_files: Files of a folder scan that were left out: an extension that is not an image's, or not a
            regular file (a named pipe, socket, device or broken link, which are never opened).
    """

    samples: list[tuple[Path, int]]
    classes: list[str]
    origin: str
    skipped_links: list[tuple[Path, Path]] = field(default_factory=list)
    skipped_files: SkippedFiles = field(default_factory=SkippedFiles)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> dict[str, int]:
        """Number of samples per class name, in class-index order (classes without samples count 0)."""
        counts = Counter(label for _, label in self.samples)
        return {name: counts.get(index, 0) for index, name in enumerate(self.classes)}

    def duplicate_paths(self) -> dict[Path, int]:
        """Paths listed more than once, mapped to how often they are listed."""
        counts = Counter(path for path, _ in self.samples)
        return {path: count for path, count in counts.items() if count > 1}

    def conflicting_labels(self) -> dict[Path, list[str]]:
        """Paths listed more than once with different labels, mapped to the sorted class names given to them."""
        labels_per_path: dict[Path, set[int]] = {}
        for path, label in self.samples:
            labels_per_path.setdefault(path, set()).add(label)
        return {
            path: sorted(self.classes[label] for label in labels)
            for path, labels in labels_per_path.items()
            if len(labels) > 1
        }


def too_few_classes(source: ClassificationSource) -> str | None:
    """Why ``source`` cannot be trained on as the training split (fewer than two classes), or ``None``."""
    if source.num_classes >= MIN_TRAINING_CLASSES:
        return None
    found = ", ".join(repr(name) for name in source.classes) or "none"
    return (f"{source.origin}: found {source.num_classes} class ({found}); a classifier needs at least "
            f"{MIN_TRAINING_CLASSES} classes (one sub-folder, or label, per class)")


def _format_list(items: Sequence[Any], *, limit: int = _MAX_LISTED) -> str:
    """``a, b, c`` with at most ``limit`` items and a ``(+N more)`` tail."""
    shown = ", ".join(str(item) for item in items[:limit])
    if len(items) > limit:
        shown += f" (+{len(items) - limit} more)"
    return shown


def _raise_collected(errors: list[str], what: str) -> None:
    """Raise one ValueError listing the first collected ``errors`` (one per line), if there are any."""
    if not errors:
        return
    shown = "\n  ".join(errors[:_MAX_LISTED])
    more = f"\n  ... and {len(errors) - _MAX_LISTED} more" if len(errors) > _MAX_LISTED else ""
    raise ValueError(f"{len(errors)} {what}:\n  {shown}{more}")


def _class_index(found: Iterable[str], classes: list[str] | None, origin: str) -> tuple[list[str], dict[str, int]]:
    """Return the class list and name -> index mapping for a split.

    Args:
        found: Class names that occur in the split.
        classes: The reference (training) classes, or ``None`` to use the sorted ``found`` names.
        origin: The split's origin, for messages.

    Raises:
        ValueError: ``classes`` is given and the split has classes outside it.
    """
    found_set = set(found)
    if classes is None:
        names = sorted(found_set)
    else:
        names = list(classes)
        if len(set(names)) != len(names):
            repeated = sorted(name for name, count in Counter(names).items() if count > 1)
            raise ValueError(f"classes list repeats names: {_format_list(repeated)}")
        extra = sorted(found_set - set(names))
        if extra:
            raise ValueError(
                f"{origin}: {len(extra)} class(es) not in the training classes: {_format_list(extra)} "
                f"(training has {len(names)} classes: {_format_list(names)})"
            )
        missing = [name for name in names if name not in found_set]
        if missing:
            logger.warning(
                "%s: %d training class(es) have no samples in this split: %s",
                origin,
                len(missing),
                _format_list(missing),
            )
    return names, {name: index for index, name in enumerate(names)}


def _warn_duplicates(source: ClassificationSource) -> None:
    duplicates = source.duplicate_paths()
    if duplicates:
        logger.warning(
            "%s: %d image path(s) are listed more than once (%d extra entries), e.g. %s",
            source.origin,
            len(duplicates),
            sum(duplicates.values()) - len(duplicates),
            _format_list(sorted(map(str, duplicates)), limit=3),
        )


def _has_image_extension(path: Path, extensions: Sequence[str]) -> bool:
    return path.suffix.lower() in extensions


def _walk_images(class_dir: Path, extensions: Sequence[str], skipped_links: list[tuple[Path, Path]],
                 skipped_files: SkippedFiles) -> list[Path]:
    """Image files under ``class_dir`` in sorted order, following folder links once each.

    A linked folder whose real path was already walked or contains ``class_dir`` (``self -> .``, ``loop -> ..``, two
    links to one folder) is not entered; it is appended to ``skipped_links`` as ``(link, real target)``. Files with
    another extension, and entries that are not regular files (never opened: a named pipe blocks ``open()``), go to
    ``skipped_files``; hidden entries (``.name``) are ignored.
    """
    files: list[Path] = []
    root = os.path.realpath(class_dir)
    visited = {root}
    for directory, subdirs, names in os.walk(class_dir, followlinks=True):
        kept = []
        for name in sorted(name for name in subdirs if not name.startswith(".")):
            real = os.path.realpath(os.path.join(directory, name))
            if real in visited or root.startswith(real.rstrip(os.sep) + os.sep):  # seen, or an ancestor (loop)
                skipped_links.append((Path(directory) / name, Path(real)))
                continue
            visited.add(real)
            kept.append(name)
        subdirs[:] = kept
        for path in (Path(directory) / name for name in sorted(names) if not name.startswith(".")):
            if not _has_image_extension(path, extensions):
                skipped_files.add(f"with an extension other than {', '.join(extensions)}", path)
            elif (kind := file_kind(path)) is not None:
                skipped_files.add(f"that are {kind}, not regular files", path)
            else:
                files.append(path)
    return files


def scan_image_folder(
    folder: str | Path,
    *,
    extensions: Sequence[str] = IMG_EXTENSIONS,
    classes: list[str] | None = None,
    hint: str | None = None,
    setting: str | None = None,
    split: str | None = None,
    exclude: Sequence[str] = (),
) -> ClassificationSource:
    """Read an ImageFolder tree ``folder/<class name>/<image>`` (images may sit in nested sub-folders).

    Hidden entries (names starting with ``.``) are ignored. Files are listed in sorted order.

    Args:
        folder: The split folder, e.g. ``data/train``.
        extensions: Lower-case file extensions counted as images (matched case-insensitively).
        classes: The training classes when reading a validation split; ``None`` uses this folder's sub-folders.
        hint: Where ``folder`` came from, appended to the not-found message, e.g. ``"data.root + data.train_split"``.
        setting: The config key naming the folder (``data.val_split``): a missing folder's message then suggests
            a folder next to it, e.g. ``found a folder 'eval' next to it: set data.val_split=eval``.
        split: The value of ``setting`` (the suggestion keeps its parent folders).
        exclude: Folder names next to it that are not suggested (the other split's folder).

    Returns:
        The samples with labels indexing the sorted class names (or ``classes`` when given).

    Raises:
        ValueError: The folder is missing or not a directory, has no class sub-folders, a class folder holds no
            images, or (with ``classes``) a class sub-folder is not among ``classes``.
    """
    folder = Path(folder)
    suffix = f" ({hint})" if hint else ""
    if not folder.exists():
        raise ValueError(f"data folder not found: {folder}{suffix}{_sibling_hint(folder, setting, exclude, split)}")
    if not folder.is_dir():
        raise ValueError(f"data folder is not a directory: {folder}{suffix}")
    extensions = tuple(extension.lower() for extension in extensions)

    class_dirs = sorted(entry for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not class_dirs:
        loose = [entry for entry in folder.iterdir() if entry.is_file() and _has_image_extension(entry, extensions)]
        detail = f"; found {len(loose)} image(s) directly in it, which need one sub-folder per class" if loose else ""
        raise ValueError(f"no class sub-folders in {folder}: expected {folder}/<class name>/<image>{detail}")

    files_per_class: dict[str, list[Path]] = {}
    skipped_links: list[tuple[Path, Path]] = []
    skipped_files = SkippedFiles()
    for class_dir in class_dirs:
        files_per_class[class_dir.name] = _walk_images(class_dir, extensions, skipped_links, skipped_files)
    for link, target in skipped_links:
        logger.warning("skipped the folder link %s -> %s: that folder is already scanned (a link loop or a second "
                       "route to the same images would repeat them)", link, target)
    skipped_files.warn(logger, str(folder))

    empty = [str(folder / name) for name, files in files_per_class.items() if not files]
    if len(empty) == len(files_per_class):
        raise ValueError(
            f"no images found under {folder} (looked in {len(empty)} class folder(s) for extensions "
            f"{', '.join(extensions)})"
        )
    if empty:
        raise ValueError(
            f"{len(empty)} empty class folder(s) (no files with extensions {', '.join(extensions)}): "
            f"{_format_list(empty)}"
        )

    names, index = _class_index(files_per_class, classes, str(folder))
    samples = [(path, index[name]) for name, files in files_per_class.items() for path in files]
    return ClassificationSource(samples=samples, classes=names, origin=str(folder), skipped_links=skipped_links,
                                skipped_files=skipped_files)


def _sibling_hint(folder: Path, setting: str | None, exclude: Sequence[str], split: str | None) -> str:
    """``; found a folder 'eval' next to it: set data.val_split=eval`` for a missing split folder, or ``""``."""
    parent = folder.parent
    if setting is None or not parent.is_dir():
        return ""
    excluded = {Path(name).name for name in exclude} | {folder.name}
    siblings = sorted(entry.name for entry in parent.iterdir()
                      if entry.is_dir() and not entry.name.startswith(".") and entry.name not in excluded)
    likely = sorted((name for name in siblings if name.lower() in SPLIT_FOLDER_NAMES),
                    key=lambda name: SPLIT_FOLDER_NAMES.index(name.lower()))
    if likely:
        value = likely[0] if split is None else (Path(split).parent / likely[0]).as_posix()
        return f"; found a folder {likely[0]!r} next to it: set {setting}={value}"
    if siblings:
        return (f"; folders next to it: {_format_list(siblings)} (set {setting} to the split folder, relative to "
                "data.root)")
    return ""


def read_annotation_list(
    list_file: str | Path,
    images_dir: str | Path,
    *,
    image_ext: str = ".jpg",
    classes: list[str] | None = None,
) -> ClassificationSource:
    """Read an annotation list with lines ``<image id> <label words...>``, e.g. ``1514522 Boeing 707``.

    The label is the rest of the line after the first whitespace (stripped), so it may contain spaces. The image of
    a line is ``images_dir / (image id + image_ext)``. Blank lines are ignored.

    Args:
        list_file: The annotation list (e.g. FGVC-Aircraft ``images_variant_trainval.txt``).
        images_dir: Folder holding the images.
        image_ext: Appended to each image id (``""`` when ids already carry an extension).
        classes: The training classes when reading a validation split; ``None`` uses the labels found here.

    Returns:
        The samples in file order, labels indexing the sorted class names (or ``classes`` when given).

    Raises:
        ValueError: The list or image folder is missing, the list is empty, lines have no label (reported as
            ``file:line``), images are missing (``file:line`` and path), or labels are not among ``classes``.
    """
    list_file = Path(list_file)
    images_dir = Path(images_dir)
    text = read_utf8_text(list_file, "annotation list", missing=ValueError)
    if not images_dir.is_dir():
        raise ValueError(f"image folder not found: {images_dir} (images of {list_file})")

    entries: list[tuple[Path, str]] = []
    errors: list[str] = []
    with io.StringIO(text) as handle:
        for line_number, line in enumerate(handle, start=1):
            parts = line.strip().split(maxsplit=1)
            if not parts:
                continue
            if len(parts) < 2:
                errors.append(f"{list_file}:{line_number}: expected '<image id> <label>', got {line.strip()!r}")
                continue
            image_id, label = parts[0], parts[1].strip()
            path = images_dir / f"{image_id}{image_ext}"
            problem = file_problem(path)
            if problem is not None:
                errors.append(f"{list_file}:{line_number}: {problem}")
                continue
            entries.append((path, label))
    _raise_collected(errors, f"problem(s) in annotation list {list_file}")
    if not entries:
        raise ValueError(f"annotation list has no entries: {list_file}")
    return _build_source(entries, classes, str(list_file))


def read_csv_list(
    csv_file: str | Path,
    *,
    root: str | Path | None = None,
    classes: list[str] | None = None,
) -> ClassificationSource:
    """Read a CSV file with a ``path,label`` header (further columns are allowed and ignored).

    Args:
        csv_file: The CSV file (UTF-8, an optional byte-order mark is accepted).
        root: Folder that relative image paths start from; default: the CSV file's folder.
        classes: The training classes when reading a validation split; ``None`` uses the labels found here.

    Returns:
        The samples in file order, labels indexing the sorted class names (or ``classes`` when given).

    Raises:
        ValueError: The file is missing or empty, the header lacks ``path``/``label``, a row has missing columns,
            an empty path or label, or names a missing image (reported as ``file:line``), or labels are not among
            ``classes``.
    """
    csv_file = Path(csv_file)
    text = read_utf8_text(csv_file, "CSV file", missing=ValueError)
    base = Path(root) if root is not None else csv_file.parent
    expected = ",".join(CSV_COLUMNS)

    entries: list[tuple[Path, str]] = []
    errors: list[str] = []
    with io.StringIO(text, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{csv_file}: empty file, expected a header with columns '{expected}'")
        header = [name.strip() for name in header]
        missing = [name for name in CSV_COLUMNS if name not in header]
        if missing:
            raise ValueError(
                f"{csv_file}:1: header must have columns '{expected}'; missing {', '.join(missing)} "
                f"in header {','.join(header)!r}"
            )
        path_column, label_column = header.index("path"), header.index("label")
        for row in reader:
            line_number = reader.line_num
            if not any(field.strip() for field in row):
                continue
            if len(row) != len(header):
                errors.append(f"{csv_file}:{line_number}: expected {len(header)} columns ({','.join(header)}), "
                              f"got {len(row)}")
                continue
            relative, label = row[path_column].strip(), row[label_column].strip()
            if not relative:
                errors.append(f"{csv_file}:{line_number}: empty path")
                continue
            if not label:
                errors.append(f"{csv_file}:{line_number}: empty label for {relative}")
                continue
            path = base / relative
            problem = file_problem(path)
            if problem is not None:
                errors.append(f"{csv_file}:{line_number}: {problem}")
                continue
            entries.append((path, label))
    _raise_collected(errors, f"problem(s) in CSV file {csv_file}")
    if not entries:
        raise ValueError(f"CSV file has no rows after the header: {csv_file}")
    return _build_source(entries, classes, str(csv_file))


def _build_source(entries: list[tuple[Path, str]], classes: list[str] | None, origin: str) -> ClassificationSource:
    names, index = _class_index((label for _, label in entries), classes, origin)
    samples = [(path, index[label]) for path, label in entries]
    source = ClassificationSource(samples=samples, classes=names, origin=origin)
    _warn_duplicates(source)
    return source


class ClassificationDataset(Dataset):
    """Map-style dataset over a :class:`ClassificationSource`; item ``i`` is ``(transform(image), label)``.

    Images are decoded with PIL, turned upright by their EXIF orientation (as every task reads images: training,
    prediction and export) and converted to 8-bit RGB (:func:`visiontune.utils.image.open_rgb`: 16-bit and
    float images are scaled, not clipped) before ``transform`` runs. PIL's global
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left untouched; while it is False (PIL's default) truncated files are
    reported as corrupt.

    Args:
        source: The samples and class names.
        transform: Applied to the RGB ``PIL.Image``; for batching with :func:`collate_skip_none` it must return a
            ``Tensor[3, H, W]`` of one size for every image.
        on_corrupt: ``"error"`` raises a ValueError naming the file and PIL's reason; ``"skip"`` logs a warning,
            counts the file in :attr:`num_skipped` and returns ``None`` for the sample (batch it with
            :func:`collate_skip_none`). The skip counter lives in shared memory and travels to DataLoader workers
            started with fork, spawn or forkserver; a ``"skip"`` dataset cannot be pickled outside of starting a
            worker process (e.g. ``copy.deepcopy``).

    Raises:
        ValueError: ``on_corrupt`` is not ``"error"`` or ``"skip"``.
    """

    def __init__(
        self,
        source: ClassificationSource,
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        on_corrupt: CorruptPolicy = "error",
    ) -> None:
        if on_corrupt not in ("error", "skip"):
            raise ValueError(f"on_corrupt must be 'error' or 'skip', got {on_corrupt!r}")
        self.source = source
        self.transform = transform
        self.on_corrupt = on_corrupt
        # Shared-memory counter so skips in DataLoader workers are visible to the main process. Created from the
        # spawn context: its lock then pickles into spawn/forkserver workers and is inherited by fork workers
        # (a lock from the default fork context refuses to travel to spawn workers).
        self._skip_counter = multiprocessing.get_context("spawn").Value("q", 0) if on_corrupt == "skip" else None
        if ImageFile.LOAD_TRUNCATED_IMAGES:
            logger.warning(
                "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by other code in this process): truncated images "
                "in %s will be decoded with grey fill instead of being reported as corrupt",
                source.origin,
            )

    @property
    def classes(self) -> list[str]:
        return self.source.classes

    @property
    def labels(self) -> list[int]:
        """Label index of every sample, in sample order."""
        return [label for _, label in self.source.samples]

    def image_paths(self) -> list[Path]:
        """The image file of every sample, in sample order (duplicate checks hash them)."""
        return [Path(path) for path, _ in self.source.samples]

    @property
    def num_skipped(self) -> int:
        """How many corrupt samples were skipped so far, summed over all worker processes."""
        return 0 if self._skip_counter is None else int(self._skip_counter.value)

    def __len__(self) -> int:
        return len(self.source.samples)

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        path, label = self.source.samples[index]
        try:
            image = open_rgb(path, exif_transpose=True)
        except ValueError as error:
            if self._skip_counter is None:
                raise
            with self._skip_counter.get_lock():
                self._skip_counter.value += 1
            logger.warning("skipping corrupt image (data.on_corrupt=skip): %s", error)
            return None
        if self.transform is not None:
            image = self.transform(image)
        return image, label


def collate_skip_none(batch: Sequence[tuple[torch.Tensor, int] | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate ``(image, label)`` samples, dropping the ``None`` entries of skipped corrupt images.

    Args:
        batch: Samples from :class:`ClassificationDataset`: ``(Tensor[3, H, W], int)`` or ``None``.

    Returns:
        ``(images, labels)``: ``images`` is ``Tensor[B, 3, H, W]`` (the transform's dtype), ``labels`` is
        ``Tensor[B]`` int64, ``B`` the number of kept samples. When every sample was skipped both are empty:
        ``images`` is float32 of shape ``[0, 3, 0, 0]`` (4-D, spatial size unknown) and ``labels`` has shape
        ``[0]``; callers skip such batches (test ``labels.numel() == 0``).

    Raises:
        TypeError: An image is not a Tensor (the dataset has no transform producing tensors).
    """
    kept = [sample for sample in batch if sample is not None]
    if not kept:
        return torch.empty((0, 3, 0, 0), dtype=torch.float32), torch.empty((0,), dtype=torch.int64)
    images = [image for image, _ in kept]
    for image in images:
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"collate_skip_none expects Tensor images (set a transform), got {type(image).__name__}")
    return torch.stack(images), torch.tensor([label for _, label in kept], dtype=torch.int64)
