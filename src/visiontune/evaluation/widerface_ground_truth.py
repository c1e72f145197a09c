"""WIDER FACE validation ground truth: the in-memory form and the loader for the official ``.mat`` files.

The official evaluation ships four MATLAB files. ``wider_face_val.mat`` holds, per event (61 on the val set),
cell arrays of image names (``file_list``) and face boxes (``face_bbx_list``, ``x y w h`` in pixels);
``wider_{easy,medium,hard}_val.mat`` each add ``gt_list``: per image, the 1-based indices of the faces that
count for that difficulty. Faces not in a difficulty's list are ignored by the evaluation of that difficulty.
Images without faces carry one dummy ``0 0 0 0`` box in the official files; it is kept as is.

Images are keyed ``<event>/<image name>``; :func:`widerface_image_key` maps the image ids of other data (relative
paths without extension) to such keys.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from visiontune.utils.widerface_format import WiderFaceFormatError

DIFFICULTIES: tuple[str, ...] = ("easy", "medium", "hard")
GROUND_TRUTH_FILE = "wider_face_val.mat"
DIFFICULTY_FILES: dict[str, str] = {difficulty: f"wider_{difficulty}_val.mat" for difficulty in DIFFICULTIES}
DEFAULT_EVENT = "images"
"""Event folder of image ids that have no folder component (official layout ``<event>/<image>``)."""


def split_image_id(image_id: str) -> tuple[str, str]:
    """Split ``"<event>/<image name>"`` into its two parts, raising ``ValueError`` when it is malformed."""
    parts = image_id.split("/")
    if len(parts) != 2 or not all(parts) or any(part in (".", "..") or "\\" in part for part in parts):
        raise ValueError(
            f"image id {image_id!r} is malformed: expected '<event>/<image name without extension>', "
            "e.g. '0--Parade/0_Parade_marchingband_1_465'"
        )
    return parts[0], parts[1]


def widerface_image_key(image_id: str) -> str:
    """The official ``<event>/<image name>`` key of an image id (a relative path without extension).

    ``event/name`` is kept, ``name`` becomes ``images/name`` and ``a/b/event/name`` becomes ``event/name``
    (e.g. ids relative to a folder above ``WIDER_val/images``).

    Raises:
        ValueError: the id is empty or has an empty component.
    """
    parts = PurePosixPath(image_id).parts
    if not parts or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"image id {image_id!r} is not a relative path without '.' or '..' components")
    if len(parts) == 1:
        return f"{DEFAULT_EVENT}/{parts[0]}"
    return f"{parts[-2]}/{parts[-1]}"


def widerface_image_keys(image_ids: Iterable[str]) -> dict[str, str]:
    """``image id -> widerface_image_key(image id)``.

    Raises:
        ValueError: two ids share a key (the message names both).
    """
    keys: dict[str, str] = {}
    owner: dict[str, str] = {}
    for image_id in image_ids:
        key = widerface_image_key(image_id)
        if key in owner and owner[key] != image_id:
            raise ValueError(f"images {owner[key]!r} and {image_id!r} both map to the WIDER FACE key {key!r} "
                             "('<event>/<image name>'); rename one of them")
        owner[key] = image_id
        keys[image_id] = key
    return keys


@dataclass(frozen=True)
class WiderFaceGroundTruth:
    """Ground truth of a WIDER FACE split, one entry per image, in evaluation order.

    Args:
        image_ids: ``"<event>/<image name without extension>"`` per image, unique.
        boxes: per image ``float64 [G_i, 4]`` face boxes ``x, y, w, h`` in pixels (``G_i`` may be 0).
        counted: for each difficulty ``"easy"``, ``"medium"``, ``"hard"``, per image a ``bool [G_i]`` mask of the
            faces that count for that difficulty (the official ``gt_list``); the other faces are ignored:
            predictions matching them are neither true nor false positives.

    Lists are converted to tuples of arrays; a malformed field raises ``ValueError`` naming the image.
    """

    image_ids: tuple[str, ...]
    boxes: tuple[np.ndarray, ...]
    counted: Mapping[str, tuple[np.ndarray, ...]]

    def __post_init__(self) -> None:
        image_ids = tuple(str(image_id) for image_id in self.image_ids)
        for image_id in image_ids:
            split_image_id(image_id)
        if len(set(image_ids)) != len(image_ids):
            duplicates = sorted({image_id for image_id in image_ids if image_ids.count(image_id) > 1})
            raise ValueError(f"ground truth lists these image ids more than once: {duplicates[:5]}")
        if len(self.boxes) != len(image_ids):
            raise ValueError(f"ground truth has {len(image_ids)} image ids but {len(self.boxes)} box arrays")
        boxes = tuple(_as_box_array(box_array, image_id) for box_array, image_id in zip(self.boxes, image_ids))
        if set(self.counted) != set(DIFFICULTIES):
            raise ValueError(f"ground truth 'counted' must have exactly the keys {list(DIFFICULTIES)}, "
                             f"got {sorted(self.counted)}")
        counted: dict[str, tuple[np.ndarray, ...]] = {}
        for difficulty in DIFFICULTIES:
            masks = self.counted[difficulty]
            if len(masks) != len(image_ids):
                raise ValueError(f"ground truth 'counted[{difficulty!r}]' has {len(masks)} masks for "
                                 f"{len(image_ids)} images")
            counted[difficulty] = tuple(
                _as_mask(mask, image_id, difficulty, len(box_array))
                for mask, image_id, box_array in zip(masks, image_ids, boxes)
            )
        object.__setattr__(self, "image_ids", image_ids)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "counted", counted)

    @property
    def num_images(self) -> int:
        """Number of images."""
        return len(self.image_ids)

    def subset(self, image_ids: Collection[str]) -> WiderFaceGroundTruth:
        """The ground truth of the images in ``image_ids`` only (in this ground truth's order)."""
        kept = [index for index, image_id in enumerate(self.image_ids) if image_id in image_ids]
        return WiderFaceGroundTruth(
            image_ids=tuple(self.image_ids[index] for index in kept),
            boxes=tuple(self.boxes[index] for index in kept),
            counted={difficulty: tuple(self.counted[difficulty][index] for index in kept)
                     for difficulty in DIFFICULTIES})

    @property
    def events(self) -> tuple[str, ...]:
        """Event names in order of first appearance."""
        return tuple(dict.fromkeys(split_image_id(image_id)[0] for image_id in self.image_ids))

    def num_faces(self, difficulty: str | None = None) -> int:
        """Number of faces (all of them, or those counted for ``difficulty``)."""
        if difficulty is None:
            return sum(len(box_array) for box_array in self.boxes)
        if difficulty not in self.counted:
            raise ValueError(f"unknown difficulty {difficulty!r}; expected one of {list(DIFFICULTIES)}")
        return int(sum(mask.sum() for mask in self.counted[difficulty]))


def _as_box_array(box_array: Any, image_id: str) -> np.ndarray:
    array = np.asarray(box_array, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"ground truth boxes of image {image_id!r} must have shape [G, 4] (x, y, w, h), "
                         f"got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"ground truth boxes of image {image_id!r} contain NaN or infinite values")
    return array


def _as_mask(mask: Any, image_id: str, difficulty: str, num_boxes: int) -> np.ndarray:
    array = np.asarray(mask)
    if array.size == 0 and num_boxes == 0:
        return np.zeros(0, dtype=bool)
    if array.dtype != np.bool_ or array.shape != (num_boxes,):
        raise ValueError(f"ground truth 'counted[{difficulty!r}]' of image {image_id!r} must be a bool mask of "
                         f"shape ({num_boxes},), got dtype {array.dtype} and shape {array.shape}")
    return array


def load_widerface_ground_truth(gt_dir: str | Path) -> WiderFaceGroundTruth:
    """Load the official WIDER FACE ground truth ``.mat`` files with scipy.

    Args:
        gt_dir: folder holding ``wider_face_val.mat``, ``wider_easy_val.mat``, ``wider_medium_val.mat`` and
            ``wider_hard_val.mat`` (the ``ground_truth`` folder of the official ``eval_tools``).

    Returns:
        The ground truth in the files' order (event by event), boxes ``x, y, w, h`` in pixels.

    Raises:
        FileNotFoundError: a file is missing.
        WiderFaceFormatError: a file is unreadable, lacks a key, or has an unexpected structure (the message
            names the file, the key and the event / image).
    """
    from scipy.io import loadmat  # scipy is heavy to import; only needed here

    gt_dir = Path(gt_dir)
    contents: dict[str, dict[str, Any]] = {}
    for file_name in (GROUND_TRUTH_FILE, *DIFFICULTY_FILES.values()):
        path = gt_dir / file_name
        if not path.is_file():
            raise FileNotFoundError(f"WIDER FACE ground truth file {path} not found; expected the official "
                                    f"{GROUND_TRUTH_FILE} and {', '.join(DIFFICULTY_FILES.values())} in {gt_dir}")
        try:
            contents[file_name] = loadmat(str(path))
        except Exception as error:  # scipy raises several types for corrupt files
            raise WiderFaceFormatError(path, None, f"not a readable MATLAB .mat file ({error})") from error

    main_path = gt_dir / GROUND_TRUTH_FILE
    main = contents[GROUND_TRUTH_FILE]
    events = [_cell_string(cell, main_path, f"event_list[{index}]")
              for index, cell in enumerate(_cell_vector(_require(main, "event_list", main_path), main_path,
                                                        "event_list"))]
    file_cells = _per_event_cells(main, "file_list", main_path, events)
    box_cells = _per_event_cells(main, "face_bbx_list", main_path, events)

    image_ids: list[str] = []
    boxes: list[np.ndarray] = []
    for event, names, event_boxes in zip(events, file_cells, box_cells):
        if len(names) != len(event_boxes):
            raise WiderFaceFormatError(main_path, None, f"event {event!r} has {len(names)} entries in 'file_list' but "
                                                        f"{len(event_boxes)} in 'face_bbx_list'")
        for index, (name_cell, box_cell) in enumerate(zip(names, event_boxes)):
            name = _cell_string(name_cell, main_path, f"file_list of event {event!r}, image {index}")
            image_ids.append(f"{event}/{name}")
            boxes.append(_cell_boxes(box_cell, main_path, image_ids[-1]))

    counted: dict[str, list[np.ndarray]] = {}
    for difficulty, file_name in DIFFICULTY_FILES.items():
        path = gt_dir / file_name
        _check_same_images(contents[file_name], path, events, file_cells)
        keep_cells = _per_event_cells(contents[file_name], "gt_list", path, events)
        masks: list[np.ndarray] = []
        for event, names, event_keep in zip(events, file_cells, keep_cells):
            if len(event_keep) != len(names):
                raise WiderFaceFormatError(path, None, f"event {event!r} has {len(event_keep)} entries in 'gt_list', "
                                                       f"expected {len(names)} (one per image)")
            for keep_cell in event_keep:
                image_index = len(masks)
                masks.append(_keep_mask(keep_cell, path, image_ids[image_index], len(boxes[image_index])))
        counted[difficulty] = masks
    return WiderFaceGroundTruth(image_ids=tuple(image_ids), boxes=tuple(boxes),
                                counted={difficulty: tuple(masks) for difficulty, masks in counted.items()})


def _require(contents: Mapping[str, Any], key: str, path: Path) -> Any:
    if key not in contents:
        found = sorted(name for name in contents if not name.startswith("__"))
        raise WiderFaceFormatError(path, None, f"missing key {key!r} (found keys: {found})")
    return contents[key]


def _cell_vector(value: Any, path: Path, what: str) -> list[Any]:
    """The elements of a MATLAB cell vector (loaded as an object array of shape [N, 1], [1, N] or [N])."""
    if not isinstance(value, np.ndarray) or value.dtype != object:
        raise WiderFaceFormatError(path, None, f"{what} must be a MATLAB cell array, got "
                                               f"{type(value).__name__} {getattr(value, 'dtype', '')}".rstrip())
    if value.size == 0:
        return []
    if value.ndim > 2 or (value.ndim == 2 and min(value.shape) != 1):
        raise WiderFaceFormatError(path, None, f"{what} must be a cell vector, got shape {value.shape}")
    return list(value.reshape(-1))


def _cell_string(value: Any, path: Path, what: str) -> str:
    array = np.asarray(value)
    if array.dtype.kind != "U" or array.size != 1 or not str(array.reshape(-1)[0]):
        raise WiderFaceFormatError(path, None, f"{what} must be a non-empty string, got {value!r}")
    return str(array.reshape(-1)[0])


def _per_event_cells(contents: Mapping[str, Any], key: str, path: Path, events: Sequence[str]) -> list[list[Any]]:
    outer = _cell_vector(_require(contents, key, path), path, key)
    if len(outer) != len(events):
        raise WiderFaceFormatError(path, None, f"{key!r} has {len(outer)} events, expected {len(events)}")
    return [_cell_vector(cell, path, f"{key} of event {event!r}") for cell, event in zip(outer, events)]


def _cell_boxes(value: Any, path: Path, image_id: str) -> np.ndarray:
    array = np.asarray(value)
    if array.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if array.dtype.kind not in "iuf" or array.ndim != 2 or array.shape[1] != 4:
        raise WiderFaceFormatError(path, None, f"'face_bbx_list' of image {image_id!r} must be a numeric [G, 4] "
                                               f"matrix (x, y, w, h), got dtype {array.dtype} and shape {array.shape}")
    return array.astype(np.float64)


def _keep_mask(value: Any, path: Path, image_id: str, num_boxes: int) -> np.ndarray:
    indices = np.asarray(value)
    mask = np.zeros(num_boxes, dtype=bool)
    if indices.size == 0:
        return mask
    if indices.dtype.kind not in "iuf" or (indices.ndim == 2 and min(indices.shape) != 1) or indices.ndim > 2:
        raise WiderFaceFormatError(path, None, f"'gt_list' of image {image_id!r} must be a numeric vector of 1-based "
                                               f"face indices, got dtype {indices.dtype} and shape {indices.shape}")
    flat = indices.reshape(-1).astype(np.float64)
    out_of_range = (flat != np.round(flat)) | (flat < 1) | (flat > num_boxes)
    if out_of_range.any():
        raise WiderFaceFormatError(path, None, f"'gt_list' of image {image_id!r} has index {flat[out_of_range][0]:g}; "
                                               f"expected integers in 1..{num_boxes} (the image has {num_boxes} faces)")
    positions = flat.astype(np.int64) - 1
    if len(np.unique(positions)) != len(positions):
        raise WiderFaceFormatError(path, None, f"'gt_list' of image {image_id!r} lists a face more than once: "
                                               f"{sorted((positions + 1).tolist())}")
    mask[positions] = True
    return mask


def _check_same_images(contents: Mapping[str, Any], path: Path, events: Sequence[str],
                       file_cells: Sequence[Sequence[Any]]) -> None:
    """The difficulty files repeat ``event_list`` / ``file_list``; when present they must match the main file."""
    if "event_list" in contents:
        own_events = [_cell_string(cell, path, f"event_list[{index}]")
                      for index, cell in enumerate(_cell_vector(contents["event_list"], path, "event_list"))]
        if own_events != list(events):
            mismatch = next((index for index, (a, b) in enumerate(zip(own_events, events)) if a != b),
                            min(len(own_events), len(events)))
            raise WiderFaceFormatError(path, None, f"'event_list' differs from {GROUND_TRUTH_FILE} at event {mismatch} "
                                                   f"({len(own_events)} events here, {len(events)} there)")
    if "file_list" in contents:
        own_files = _per_event_cells(contents, "file_list", path, events)
        for event, own, expected in zip(events, own_files, file_cells):
            own_names = [_cell_string(cell, path, f"file_list of event {event!r}") for cell in own]
            expected_names = [_cell_string(cell, path, f"file_list of event {event!r}") for cell in expected]
            if own_names != expected_names:
                raise WiderFaceFormatError(path, None, f"'file_list' of event {event!r} differs from "
                                                       f"{GROUND_TRUTH_FILE}")
