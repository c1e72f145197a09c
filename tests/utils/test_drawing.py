"""The shared drawing module: face boxes with landmarks (instance masks are covered by the instance task's tests)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from visiontune.utils.drawing import BOX_COLOR, LANDMARK_COLORS, PALETTE, draw_faces, label_color, line_width


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
