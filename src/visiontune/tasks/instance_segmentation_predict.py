"""Instance segmentation prediction sources and outputs: the images of a COCO JSON source (with its evaluation
dataset when annotated) and the COCO ``results.json`` / ``images.json`` pair written for the predictions."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from visiontune.data.coco_dataset import CocoInstanceDataset
from visiontune.data.coco_format import CocoFormatError
from visiontune.data.validation import read_utf8_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictItem:
    """One image of a prediction source: its id in ``results.json``, file, ``file_name`` in ``images.json`` and
    overlay name (relative to ``overlays/``)."""

    image_id: int
    path: Path
    file_name: str
    output_name: PurePosixPath | Path


def coco_images_root(path: Path, first_file: str, candidates: Sequence[Path]) -> Path:
    """The folder that holds ``first_file`` of the COCO source ``path``: the first of ``candidates`` (the configured
    image folders), ``<root>/<split>`` beside ``<root>/annotations/instances_<split>.json``, ``images/`` next to the
    file, or the file's folder that has it.

    Raises:
        ValueError: no such folder holds ``first_file`` (each folder tried is named).
    """
    tried = [*candidates, path.parent.parent / path.stem.removeprefix("instances_"), path.parent / "images",
             path.parent]
    unique = list(dict.fromkeys(tried))
    for root in unique:
        if (root / first_file).is_file():
            return root
    raise ValueError(f"{path}: image {first_file} not found in {', '.join(str(root) for root in unique)} "
                     "(set data.root and data.val_images_dir)")


def coco_prediction_source(path: Path, candidates: Sequence[Path],
                           class_names: list[str]) -> tuple[list[PredictItem], CocoInstanceDataset | None] | None:
    """The images of a COCO JSON source and, when it has ``annotations``, its evaluation dataset (the model's
    ``class_names``, every image kept); None when ``path`` is not a ``.json`` file. The images are looked up as
    :func:`coco_images_root` says, ``candidates`` first.

    Raises:
        ValueError: the file is not COCO JSON, has no usable ``images`` list, or its annotations are broken.
    """
    if not path.is_file() or path.suffix.lower() != ".json":
        return None
    try:
        raw = json.loads(read_utf8_text(path, "COCO file"))  # a byte-order mark is accepted
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a COCO JSON file ({error})") from error
    entries = raw.get("images") if isinstance(raw, dict) else None
    if not isinstance(entries, list) or not entries or not all(
            isinstance(entry, dict) and "id" in entry and "file_name" in entry for entry in entries):
        raise ValueError(f"{path}: expected a COCO file with a non-empty 'images' list of entries with 'id' and "
                         "'file_name'")
    root = coco_images_root(path, str(entries[0]["file_name"]), candidates)
    if "annotations" not in raw:
        logger.info("predicting the %d images of %s (no annotations: no metrics), images in %s", len(entries),
                    path, root)
        return [PredictItem(int(entry["id"]), root / str(entry["file_name"]), str(entry["file_name"]),
                            PurePosixPath(str(entry["file_name"]))) for entry in entries], None
    try:
        dataset = CocoInstanceDataset(root, path, categories=class_names, empty_images="keep")
    except CocoFormatError as error:
        raise ValueError(f"{error} (a COCO prediction source is read with the model's categories "
                         f"{class_names})") from error
    logger.info("predicting the %d images of %s, images in %s", len(dataset), path, root)
    items = []
    for index in range(len(dataset)):
        record = dataset.image_record(index)
        items.append(PredictItem(record.image_id, root / record.file_name, record.file_name,
                                 PurePosixPath(record.file_name)))
    return items, dataset


def has_instances(dataset: CocoInstanceDataset, source: str) -> bool:
    """Whether the COCO source annotates any instance of the model's categories (else no metrics, warned)."""
    annotations = dataset.annotations
    if annotations.instances or annotations.crowd_instances:
        return True
    logger.warning("%s has no annotation of the model's categories %s: no metrics", source, dataset.class_names)
    return False


def write_coco_results(output_dir: Path, results: list[dict[str, Any]], records: list[dict[str, Any]],
                       label_to_category: Sequence[Mapping[str, Any]]) -> list[Path]:
    """``results.json`` (COCO results) and ``images.json`` (the matching ``images`` header and the ``categories``
    of ``label_to_category``, ``[{"label": 1, "id": 84, "name": "book"}, ...]``) in ``output_dir``."""
    results_path = output_dir / "results.json"
    results_path.write_text(json.dumps(results), encoding="utf-8")
    images_path = output_dir / "images.json"
    categories = [{"id": int(entry["id"]), "name": entry["name"]} for entry in label_to_category]
    images_path.write_text(json.dumps({"images": records, "categories": categories, "annotations": []}, indent=1),
                           encoding="utf-8")
    return [results_path, images_path]
