"""Read and write WIDER FACE predictions in the official submission layout.

One text file per image, ``<out_dir>/<event>/<image name>.txt``::

    <image name>
    <number of boxes N>
    x y w h score        (N lines, pixels, box top-left corner plus width and height)

This is what the official MATLAB ``eval_tools`` and the widely used Python port read.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from visiontune.evaluation.widerface_ground_truth import split_image_id
from visiontune.utils.paths import safe_output_names
from visiontune.utils.widerface_format import WiderFaceFormatError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")

WIDER_BOX_MODES: tuple[str, ...] = ("int", "decimal")
"""How boxes enter the WIDER FACE evaluation and prediction files (``face.wider_boxes``): ``int`` as the reference
tools write them (whole pixels, :func:`wider_xywh`), ``decimal`` unchanged."""


def check_box_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`WIDER_BOX_MODES`, else ``ValueError`` naming ``face.wider_boxes``."""
    if mode not in WIDER_BOX_MODES:
        raise ValueError(f"face.wider_boxes: expected one of {', '.join(WIDER_BOX_MODES)}, got {mode!r}")
    return mode


def wider_xywh(boxes_xyxy: object, mode: str = "int") -> np.ndarray:
    """``float64 [N, 4]`` ``x, y, w, h`` of xyxy boxes as written to a WIDER FACE prediction file.

    ``mode="int"`` reproduces the reference implementation's ``test_widerface.py`` (the published AP was computed
    from such files): ``x = int(x1)``, ``y = int(y1)``, ``w = int(x2) - int(x1)``, ``h = int(y2) - int(y1)``,
    ``int`` truncating toward zero. ``mode="decimal"`` keeps ``x1, y1, x2 - x1, y2 - y1`` unchanged.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    if check_box_mode(mode) == "int":
        boxes = np.trunc(boxes)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


class NonFinitePredictionError(ValueError):
    """A model's predictions for one image hold NaN or infinite values (the weights diverged, or overflowed in
    evaluation). The message names the image; ``image`` holds its name for callers that add context."""

    def __init__(self, message: str, *, image: str = "") -> None:
        super().__init__(message)
        self.image = image


def as_prediction_array(boxes: object, image_id: str) -> np.ndarray:
    """Validate one image's predictions and return them as ``float64 [N, 5]`` (x, y, w, h, score).

    An empty input (``[]`` or shape ``[0, 5]``) gives shape ``[0, 5]``. Raises ``ValueError`` naming the image
    for any other shape, :class:`NonFinitePredictionError` for NaN / infinite values.
    """
    try:
        array = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"predictions of image {image_id!r} are not numeric: {error}") from error
    if array.shape in ((0,), (0, 0)):
        return np.zeros((0, 5), dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 5:
        raise ValueError(f"predictions of image {image_id!r} must have shape [N, 5] (x, y, w, h, score), "
                         f"got {array.shape}")
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise NonFinitePredictionError(f"predictions of image {image_id!r} have a NaN or infinite value in row "
                                       f"{row}: {array[row].tolist()}", image=image_id)
    return array


def write_widerface_predictions(out_dir: str | Path, predictions: Mapping[str, object]) -> list[Path]:
    """Write predictions in the official layout, one ``<event>/<image>.txt`` per image.

    Args:
        out_dir: output folder (created if needed); existing files of the same images are overwritten.
        predictions: ``"<event>/<image name without extension>"`` -> ``[N, 5]`` array (x, y, w, h, score),
            pixels. Images with no detections should be given as empty arrays: the official tools warn
            about missing files.

    Returns:
        The written file paths, in the order of ``predictions``.

    Numbers are written with Python's shortest round-trip ``repr``, so reading them back is exact; whole-number
    box values (:func:`wider_xywh` with ``mode="int"``) are written without a decimal point, as the reference tools
    write them.
    """
    out_dir = Path(out_dir)
    arrays = {image_id: as_prediction_array(boxes, image_id) for image_id, boxes in predictions.items()}
    written: list[Path] = []
    names = safe_output_names(out_dir, [f"{'/'.join(split_image_id(image_id))}.txt" for image_id in arrays],
                              source="WIDER FACE predictions", suffixes=(".txt",))
    for (image_id, array), name in zip(arrays.items(), names):
        image_name = split_image_id(image_id)[1]
        path = out_dir / f"{name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [image_name, str(len(array))]
        lines.extend(" ".join([*(_format_coordinate(value) for value in row[:4]), repr(float(row[4]))])
                     for row in array)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(path)
    logger.debug("wrote WIDER FACE predictions for %d images to %s", len(written), out_dir)
    return written


def read_widerface_predictions(pred_dir: str | Path) -> dict[str, np.ndarray]:
    """Read a folder in the official layout (``<pred_dir>/<event>/<image>.txt``).

    Args:
        pred_dir: the folder holding one sub-folder per event.

    Returns:
        ``"<event>/<image name>"`` -> ``float64 [N, 5]`` (x, y, w, h, score), pixels, in file order.

    Raises:
        FileNotFoundError: ``pred_dir`` is not a folder.
        WiderFaceFormatError: a file is malformed (the message names the file and line) or the folder holds
            something other than event folders of ``.txt`` files. Hidden entries (``.name``) are skipped.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"WIDER FACE prediction folder {pred_dir} not found")
    predictions: dict[str, np.ndarray] = {}
    for event_dir in sorted(_visible_entries(pred_dir)):
        if not event_dir.is_dir():
            raise WiderFaceFormatError(event_dir, None, "unexpected file in the prediction folder; expected one "
                                                        "folder per event holding <image>.txt files")
        for path in sorted(_visible_entries(event_dir)):
            if not path.is_file() or path.suffix != ".txt":
                raise WiderFaceFormatError(path, None, "unexpected entry; expected <image>.txt prediction files")
            predictions[f"{event_dir.name}/{path.stem}"] = read_prediction_file(path)
    logger.debug("read WIDER FACE predictions for %d images from %s", len(predictions), pred_dir)
    return predictions


def read_prediction_file(path: str | Path) -> np.ndarray:
    """Parse one official prediction file into ``float64 [N, 5]`` (x, y, w, h, score).

    The first line must name the image (optionally with a folder and an image extension) and match the file
    name; the second holds the box count ``N``; then exactly ``N`` lines of five numbers separated by
    whitespace. Trailing blank lines are allowed. Raises ``WiderFaceFormatError`` naming the file and line.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < 2:
        raise WiderFaceFormatError(path, None, f"expected the image name on line 1 and the box count on line 2, "
                                               f"got {len(lines)} line(s)")
    named = lines[0].strip().replace("\\", "/").rsplit("/", 1)[-1]
    extension = Path(named).suffix
    stem = named[: -len(extension)] if extension.lower() in IMAGE_EXTENSIONS else named
    if stem != path.stem:
        raise WiderFaceFormatError(path, 1, f"image name {lines[0].strip()!r} does not match the file name "
                                            f"{path.stem!r}")
    count_text = lines[1].strip()
    if not count_text.isdigit():
        raise WiderFaceFormatError(path, 2, f"expected the number of boxes (an integer >= 0), got {count_text!r}")
    count = int(count_text)
    box_lines = lines[2:]
    if len(box_lines) != count:
        raise WiderFaceFormatError(path, 2, f"declares {count} boxes but the file has {len(box_lines)} box lines")
    boxes = np.zeros((count, 5), dtype=np.float64)
    for row, line in enumerate(box_lines):
        line_number = row + 3
        fields = line.split()
        if len(fields) != 5:
            raise WiderFaceFormatError(path, line_number, f"expected 5 numbers 'x y w h score', "
                                                          f"got {len(fields)} field(s): {line!r}")
        try:
            values = [float(field) for field in fields]
        except ValueError as error:
            raise WiderFaceFormatError(path, line_number, f"not a number in {line!r}") from error
        if not all(np.isfinite(values)):
            raise WiderFaceFormatError(path, line_number, f"NaN or infinite value in {line!r}")
        boxes[row] = values
    return boxes


def _format_coordinate(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def _visible_entries(folder: Path) -> list[Path]:
    return [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
