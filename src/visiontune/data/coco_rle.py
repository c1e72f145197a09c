"""COCO ``segmentation`` values: validation, polygons and run-length encoding (RLE) to one compressed RLE.

A COCO annotation's ``segmentation`` is a list of polygons (``[[x0, y0, x1, y1, ...], ...]`` in pixels), an
uncompressed RLE (``{"size": [height, width], "counts": [int, ...]}``) or a compressed RLE (``counts`` a string, the
format of ``pycocotools.mask.encode``). :func:`segmentation_to_rle` checks any of them against the image size and
returns a pycocotools RLE; :func:`decode_compressed_rle_counts` decodes a compressed ``counts`` string in Python, so a
corrupt one is rejected before pycocotools (which does no bounds checking) reads it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from visiontune.data.validation import is_json_int, is_json_number

__all__ = ["SegmentationFormatError", "decode_compressed_rle_counts", "segmentation_to_rle"]


class SegmentationFormatError(ValueError):
    """A ``segmentation`` (or its RLE ``counts``) is malformed; the message says what was expected.

    The message names no file or annotation: the COCO parser adds both.
    """


def decode_compressed_rle_counts(counts: str) -> list[int]:
    """Decode the run lengths of a compressed COCO RLE string (the format of ``pycocotools.mask.encode``).

    Each run length is stored as 5-bit groups in characters offset by 48, with a continuation bit
    (``0x20``) and a sign bit (``0x10``) in the last group; from the third run on, values are stored as
    differences to the run two places earlier. Decoding in Python lets a corrupt string be rejected
    before pycocotools, which does no bounds checking, decodes it.

    Args:
        counts: The ``counts`` string of a compressed RLE.

    Returns:
        The run lengths, alternating background and foreground, starting with background, in
        column-major (Fortran) pixel order.

    Raises:
        SegmentationFormatError: The string has a character outside the encoding, ends inside a value or decodes to
            a negative run length.
    """
    run_lengths: list[int] = []
    position = 0
    while position < len(counts):
        value = 0
        group_index = 0
        more = True
        while more:
            if position >= len(counts):
                raise SegmentationFormatError("compressed RLE 'counts' ends in the middle of a run length")
            group = ord(counts[position]) - 48
            if not 0 <= group < 64:
                raise SegmentationFormatError(
                    f"compressed RLE 'counts' has an invalid character {counts[position]!r} at position {position}"
                )
            value |= (group & 0x1F) << (5 * group_index)
            more = bool(group & 0x20)
            position += 1
            group_index += 1
            if not more and group & 0x10:
                value |= -1 << (5 * group_index)
        if len(run_lengths) > 2:
            value += run_lengths[-2]
        if value < 0:
            raise SegmentationFormatError(
                f"compressed RLE 'counts' decodes to a negative run length at run {len(run_lengths)}")
        run_lengths.append(value)
    return run_lengths


def segmentation_to_rle(segmentation: Any, *, height: int, width: int) -> dict[str, Any]:
    """Validate a COCO ``segmentation`` and convert it to a single compressed RLE.

    Args:
        segmentation: Polygons (``[[x0, y0, x1, y1, ...], ...]`` in pixels), an uncompressed RLE
            (``{"size": [height, width], "counts": [int, ...]}``) or a compressed RLE
            (``{"size": [height, width], "counts": str}``).
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        A pycocotools RLE ``{"size": [height, width], "counts": bytes}``; an empty polygon list gives an
        empty mask.

    Raises:
        SegmentationFormatError: The segmentation is malformed; the message says what was expected.
    """
    if isinstance(segmentation, list):
        for index, polygon in enumerate(segmentation):
            if not isinstance(polygon, list) or not all(is_json_number(value) for value in polygon):
                raise SegmentationFormatError(f"segmentation polygon {index} must be a list of finite numbers")
            if len(polygon) < 6 or len(polygon) % 2:
                raise SegmentationFormatError(
                    f"segmentation polygon {index} has {len(polygon)} coordinates; expected an even number >= 6 "
                    "(x, y pairs of at least 3 points)"
                )
        if not segmentation:
            return mask_utils.encode(np.zeros((height, width, 1), dtype=np.uint8, order="F"))[0]
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        counts = segmentation.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(is_json_int(value) for value in size)):
            raise SegmentationFormatError(f"RLE 'size' must be [height, width] (two ints), got {size!r}")
        if size != [height, width]:
            raise SegmentationFormatError(
                f"RLE 'size' {size} does not match the image's [height, width] = [{height}, {width}]")
        if isinstance(counts, list):
            if not all(is_json_int(value) and value >= 0 for value in counts):
                raise SegmentationFormatError("uncompressed RLE 'counts' must be a list of non-negative ints")
            run_lengths = counts
        elif isinstance(counts, str):
            run_lengths = decode_compressed_rle_counts(counts)
        else:
            raise SegmentationFormatError(
                "RLE 'counts' must be a list of ints (uncompressed) or a string (compressed), "
                f"got {type(counts).__name__}"
            )
        if sum(run_lengths) != height * width:
            raise SegmentationFormatError(
                f"RLE 'counts' cover {sum(run_lengths)} pixels; expected height * width = {height * width}"
            )
        if isinstance(counts, list):
            return mask_utils.frPyObjects({"size": size, "counts": counts}, height, width)
        return {"size": [height, width], "counts": counts.encode("ascii")}
    raise SegmentationFormatError(
        f"segmentation must be a list of polygons or an RLE dict, got {type(segmentation).__name__}"
    )
