"""The shared drawing module: face boxes with landmarks (instance masks are covered by the instance task's tests)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from visiontune.utils.drawing import (
    BOX_COLOR,
    LANDMARK_COLORS,
    PALETTE,
    contrast_color,
    draw_faces,
    draw_instances,
    label_color,
    line_width,
)


def test_draw_faces_draws_boxes_and_landmarks_on_a_copy():
    image = Image.new("RGB", (60, 40))
    boxes = np.array([[10.0, 15.0, 40.0, 35.0]])
    landmarks = np.array([[[15, 20], [25, 20], [20, 25], [15, 30], [25, 30]]], dtype=np.float64)
    drawn = np.asarray(draw_faces(image, boxes, np.array([0.93]), landmarks))
    assert drawn[35, 25].tolist() == list(BOX_COLOR)  # bottom edge of the box
    assert drawn[20, 25].tolist() == list(LANDMARK_COLORS[1])  # right eye
    assert drawn[2, 2].tolist() == [0, 0, 0]
    assert np.asarray(image).max() == 0  # the input is unchanged
    empty = draw_faces(image, np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))
    assert np.asarray(empty).max() == 0


def test_line_width_and_label_colors():
    assert line_width(Image.new("RGB", (100, 50))) == 1 and line_width(Image.new("RGB", (1200, 900))) == 3
    assert label_color(1) == PALETTE[0] and label_color(len(PALETTE) + 2) == PALETTE[1]


def test_face_scores_are_filled_labels_with_contrasting_text():
    image = Image.new("RGB", (200, 120), (128, 128, 128))
    boxes = np.array([[40.0, 50.0, 140.0, 110.0]])
    landmarks = np.full((1, 5, 2), 80.0)
    drawn = draw_faces(image, boxes, np.array([0.93]), landmarks)
    label = drawn.crop((40, 30, 100, 50))  # above the box's top-left corner
    colours = {colour for _count, colour in label.getcolors(10000)}
    assert BOX_COLOR in colours  # the filled label
    assert contrast_color(BOX_COLOR) == (0, 0, 0) and any(max(c) <= 40 for c in colours)  # black text on red
    assert drawn.getpixel((20, 20)) == (128, 128, 128)  # nothing drawn away from the box


def test_instance_labels_stay_inside_the_image():
    from pycocotools import mask as mask_utils

    image = Image.new("RGB", (120, 80), (240, 240, 240))
    mask = np.zeros((80, 120), dtype=np.uint8)
    mask[0:40, 80:120] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    detection = {"image_id": 1, "category_id": 3, "bbox": [80.0, 0.0, 40.0, 40.0], "score": 0.9, "segmentation": rle}
    drawn = draw_instances(image, [detection], class_names=["a", "b", "umbrella"], score_threshold=0.5)
    pixels = np.asarray(drawn)
    filled = np.all(pixels == PALETTE[2], axis=-1)
    cols = np.nonzero(filled)[1]
    assert filled[:20].sum() > 100  # the label: no room above the box, so at its top, moved left to fit
    assert cols.min() < 80  # shifted left of the box to stay inside the image
    assert np.asarray(image).min() == 240  # input unchanged
