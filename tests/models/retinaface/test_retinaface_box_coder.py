from __future__ import annotations

import math

import pytest
import torch

from visiontune.models.retinaface.box_coder import BoxCoder
from visiontune.models.retinaface.priors import generate_priors


def test_encode_hand_computed() -> None:
    coder = BoxCoder((0.1, 0.2))
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    boxes = torch.tensor([[0.4, 0.3, 0.7, 0.9]])  # centre (0.55, 0.6), size (0.3, 0.6)
    expected = torch.tensor([[0.05 / 0.02, 0.1 / 0.04, math.log(1.5) / 0.2, math.log(1.5) / 0.2]])
    torch.testing.assert_close(coder.encode_boxes(boxes, priors), expected)
    landmarks = torch.tensor([[[0.6, 0.3], [0.5, 0.5], [0.4, 0.7], [0.5, 0.54], [0.52, 0.5]]])
    encoded = coder.encode_landmarks(landmarks, priors)
    assert encoded.shape == (1, 10)
    torch.testing.assert_close(encoded, torch.tensor([[5.0, -5.0, 0.0, 0.0, -5.0, 5.0, 0.0, 1.0, 1.0, 0.0]]))


def test_box_round_trip() -> None:
    generator = torch.Generator().manual_seed(0)
    coder = BoxCoder()
    priors = generate_priors((64, 96))
    top_left = torch.rand(priors.shape[0], 2, generator=generator)
    size = torch.rand(priors.shape[0], 2, generator=generator) * 0.5 + 0.01
    boxes = torch.cat([top_left, top_left + size], dim=1)
    torch.testing.assert_close(coder.decode_boxes(coder.encode_boxes(boxes, priors), priors), boxes)
    deltas = torch.randn(2, priors.shape[0], 4, generator=generator)  # batched
    torch.testing.assert_close(coder.encode_boxes(coder.decode_boxes(deltas, priors), priors), deltas, atol=1e-4,
                               rtol=1e-4)


def test_landmark_round_trip() -> None:
    generator = torch.Generator().manual_seed(1)
    coder = BoxCoder()
    priors = generate_priors((64, 96))
    points = torch.rand(3, priors.shape[0], 5, 2, generator=generator)
    encoded = coder.encode_landmarks(points, priors)
    assert encoded.shape == (3, priors.shape[0], 10)
    torch.testing.assert_close(coder.decode_landmarks(encoded, priors), points)


def test_invalid_variances() -> None:
    with pytest.raises(ValueError, match="variances must be two positive numbers"):
        BoxCoder((0.1, 0.0))
