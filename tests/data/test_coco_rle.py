"""Tests of visiontune.data.coco_rle: COCO segmentations (polygons, RLE) validated and converted to one RLE."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from visiontune.data.coco_rle import SegmentationFormatError, decode_compressed_rle_counts, segmentation_to_rle

HEIGHT, WIDTH = 10, 12
SQUARE = [2, 2, 6, 2, 6, 6, 2, 6]  # pycocotools fills rows 2..5 and columns 2..5


def square_mask() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[2:6, 2:6] = 1
    return mask


@pytest.mark.parametrize(("counts", "message"), [
    ("ab~", "compressed RLE 'counts' has an invalid character '~' at position 2"),
    ("Q", "compressed RLE 'counts' ends in the middle of a run length"),
    ("@", "compressed RLE 'counts' decodes to a negative run length at run 0"),  # sign bit set: -16
])
def test_corrupt_compressed_counts_are_refused(counts: str, message: str) -> None:
    with pytest.raises(SegmentationFormatError) as caught:
        decode_compressed_rle_counts(counts)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


def test_polygon_uncompressed_and_compressed_rle_give_the_same_mask() -> None:
    expected = square_mask()
    compressed = mask_utils.encode(np.asfortranarray(expected))["counts"].decode("ascii")
    runs = decode_compressed_rle_counts(compressed)
    assert runs == [22, 4, 6, 4, 6, 4, 6, 4, 64]  # columns 2..5 hold rows 2..5; 22 = 2 columns of 10 + 2 rows
    for segmentation in ([SQUARE], {"size": [HEIGHT, WIDTH], "counts": runs},
                         {"size": [HEIGHT, WIDTH], "counts": compressed}):
        rle = segmentation_to_rle(segmentation, height=HEIGHT, width=WIDTH)
        np.testing.assert_array_equal(mask_utils.decode(rle), expected)


def test_an_empty_polygon_list_is_an_empty_mask() -> None:
    rle = segmentation_to_rle([], height=HEIGHT, width=WIDTH)
    assert rle["size"] == [HEIGHT, WIDTH]
    assert mask_utils.decode(rle).sum() == 0


@pytest.mark.parametrize(("segmentation", "message"), [
    ({"size": [True, WIDTH], "counts": [HEIGHT * WIDTH]},
     "RLE 'size' must be [height, width] (two ints), got [True, 12]"),
    ([[1e39, 1, 5, 1, 5, 5]], "segmentation polygon 0 must be a list of finite numbers"),
    ([[1, 1, 5, 1, False, 5]], "segmentation polygon 0 must be a list of finite numbers"),
    ({"size": [HEIGHT, WIDTH], "counts": [HEIGHT * WIDTH - 1, True]},
     "uncompressed RLE 'counts' must be a list of non-negative ints"),
])
def test_json_booleans_and_numbers_beyond_float32_are_refused(segmentation: Any, message: str) -> None:
    with pytest.raises(SegmentationFormatError) as caught:
        segmentation_to_rle(segmentation, height=HEIGHT, width=WIDTH)
    assert str(caught.value) == message
