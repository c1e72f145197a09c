"""Classification prediction: the images (and known labels) of a prediction source, and the files written for them
(``predictions.csv``, ``pred.txt``)."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

from visiontune.data.classification import read_annotation_list
from visiontune.data.sources import list_image_files
from visiontune.data.validation import file_problem, read_utf8_text

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif")
"""The file suffixes (lower case) read as images of a prediction source."""

PRED_TXT_HEADER = "path\tpred\treal\n"
"""The first line of ``pred.txt``: its tab-separated columns (image path, top-1 prediction, the known label)."""

PredictionRow = tuple[Path, "str | None", list[tuple[str, float]]]
"""One predicted image: its path, its known label (or None) and its top-k ``(class name, probability)`` pairs."""


def collect_prediction_inputs(source: str, class_names: list[str], *, images_dir: Path | None = None,
                              image_ext: str = ".jpg") -> list[tuple[Path, str | None]]:
    """Expand ``source`` into ``(image path, known label or None)`` pairs.

    A ``.txt`` file is a list of image paths (relative to the file's folder, or absolute), or an annotation list
    in the ``list`` layout, ``<image id> <label words>`` per line with the image at ``images_dir/<id><image_ext>``
    (read when its first line's image is found there; every line then needs a label).

    Raises:
        ValueError: the source does not exist or holds no images.
    """
    path = Path(source)
    if not path.exists():
        raise ValueError(f"source not found: {path}")
    problem = None if path.is_dir() else file_problem(path, "source")
    if problem is not None:
        raise ValueError(problem)
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return [(path, None)]
    if path.is_file() and path.suffix.lower() == ".csv":
        return _csv_items(path)
    if path.is_file() and images_dir is not None and _is_annotation_list(path, images_dir, image_ext):
        return _annotation_list_items(path, images_dir, image_ext)
    if path.is_file():
        return _image_list_items(path)
    subfolders = sorted(child for child in path.iterdir() if child.is_dir())
    items: list[tuple[Path, str | None]]
    if subfolders and all(child.name in class_names for child in subfolders):
        items = [(image, child.name) for child in subfolders for image in list_image_files(child, IMAGE_SUFFIXES)]
    else:
        items = [(image, None) for image in list_image_files(path, IMAGE_SUFFIXES)]
    if not items:
        raise ValueError(f"no images found in {path}")
    return items


def _csv_items(path: Path) -> list[tuple[Path, str | None]]:
    """The ``(image, label or None)`` pairs of a ``path[,label]`` CSV file (image paths relative to its folder)."""
    with path.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise ValueError(f"{path}: expected a CSV header with a 'path' column (and optionally 'label')")
        rows: list[tuple[Path, str | None]] = []
        for row in reader:
            image = path.parent / (row["path"] or "")
            problem = file_problem(image)
            if problem is not None:
                raise ValueError(f"{path}:{reader.line_num}: {problem}")
            rows.append((image, row.get("label") or None))
        return rows


def _image_list_items(path: Path) -> list[tuple[Path, str | None]]:
    """The images of a text list, one path a line (relative to the list's folder, or absolute), without labels."""
    items: list[tuple[Path, str | None]] = []
    for number, line in enumerate(read_utf8_text(path, "image list").splitlines(), start=1):
        if line.strip():
            image = Path(line.strip())
            image = image if image.is_absolute() else path.parent / image
            problem = file_problem(image)
            if problem is not None:
                raise ValueError(f"{path}:{number}: {problem}")
            items.append((image, None))
    return items


def _is_annotation_list(path: Path, images_dir: Path, image_ext: str) -> bool:
    """Whether the first line of ``path`` is ``<image id> <label>`` with ``images_dir/<id><image_ext>`` existing."""
    with path.open(encoding="utf-8") as stream:
        first = next((line.strip() for line in stream if line.strip()), "")
    parts = first.split(maxsplit=1)
    return len(parts) == 2 and (images_dir / f"{parts[0]}{image_ext}").is_file()


def _annotation_list_items(path: Path, images_dir: Path, image_ext: str) -> list[tuple[Path, str | None]]:
    """The ``(image, label)`` pairs of an annotation list (:func:`read_annotation_list`'s checks, file order)."""
    source = read_annotation_list(path, images_dir, image_ext=image_ext, classes=None)
    return [(image, source.classes[label]) for image, label in source.samples]


def write_predictions_csv(rows: Sequence[PredictionRow], output_dir: Path, *, topk: int) -> Path:
    """``output_dir/predictions.csv``: ``path``, ``label1, prob1 .. label<topk>, prob<topk>`` (probabilities with 6
    decimals) and, when any row has a known label, ``true_label``."""
    csv_path = output_dir / "predictions.csv"
    labelled = any(label is not None for _, label, _ in rows)
    with csv_path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        header = ["path"] + [f"{kind}{rank + 1}" for rank in range(topk) for kind in ("label", "prob")]
        writer.writerow(header + (["true_label"] if labelled else []))
        for path, label, top in rows:
            row = [str(path)] + [value for name, prob in top for value in (name, f"{prob:.6f}")]
            writer.writerow(row + ([label] if label is not None else []))
    return csv_path


def write_pred_txt(rows: Sequence[PredictionRow], output_dir: Path, class_names: Sequence[str],
                   source: str) -> Path:
    """``output_dir/pred.txt`` (:data:`PRED_TXT_HEADER`, then image, top-1 prediction and known label per line);
    known labels that are not classes of the model are warned about in one line (they count as wrong)."""
    pred_path = output_dir / "pred.txt"
    with pred_path.open("w", encoding="utf-8") as stream:
        stream.write(PRED_TXT_HEADER)
        for path, label, top in rows:
            stream.write(f"{path}\t{top[0][0]}\t{label}\n")
    unknown = sorted({label for _, label, _ in rows if label is not None and label not in class_names})
    if unknown:
        logger.warning("%d label(s) of %s are not classes of the model (counted as wrong): %s", len(unknown),
                       source, ", ".join(unknown[:10]))
    return pred_path
