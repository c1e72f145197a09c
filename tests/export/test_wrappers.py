"""Export wrappers: in-graph priors, pixel decoding, BatchNorm folding before the float16 cast."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from visiontune.export.specs import fold_sequential_batch_norms
from visiontune.export.wrappers import (
    ClassifierExport,
    RetinaFaceDecodedExport,
    RetinaFaceRawExport,
    prior_grid_pixels,
)
from visiontune.models.retinaface import BoxCoder, PriorConfig, create_retinaface, generate_priors


@pytest.mark.parametrize("size", [(64, 64), (100, 75), (37, 129)])
@pytest.mark.parametrize("clip", [False, True])
def test_prior_grid_in_pixels_equals_generate_priors_times_size(size, clip):
    config = PriorConfig(clip=clip)
    height, width = size
    expected = generate_priors(size, config, dtype=torch.float64) * torch.tensor([width, height, width, height])
    actual = prior_grid_pixels(height, width, config)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual.double(), expected, rtol=0, atol=1e-4)


def test_prior_grid_hand_computed():
    config = PriorConfig(min_sizes=((4,), (8,), (16,)), steps=(8, 16, 32))
    priors = prior_grid_pixels(9, 16, config)  # levels: 2x2, 1x1, 1x1 cells
    expected = torch.tensor([[4, 4, 4, 4], [12, 4, 4, 4], [4, 12, 4, 4], [12, 12, 4, 4], [8, 8, 8, 8],
                             [16, 16, 16, 16]], dtype=torch.float32)
    torch.testing.assert_close(priors, expected)
    clipped = prior_grid_pixels(9, 16, PriorConfig(min_sizes=((4,), (8,), (16,)), steps=(8, 16, 32), clip=True))
    assert clipped[-1].tolist() == [16.0, 9.0, 16.0, 9.0]  # centre and size clamped to the 16x9 image


def test_decoded_wrapper_equals_normalised_decoding_times_size():
    torch.manual_seed(0)
    model = create_retinaface("mobilenet0.25").eval()
    coder = BoxCoder(variances=(0.1, 0.2))
    wrapper = RetinaFaceDecodedExport(model, coder)
    height, width = 185, 387  # the size of the second parity input of the RetinaFace exports (convolutions warm)
    images = torch.randn(2, 3, height, width) * 40
    with torch.no_grad():
        boxes, scores, landmarks = wrapper(images)
        box_deltas, class_scores, landmark_deltas = model.forward_raw(images)
    priors = generate_priors((height, width))
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    torch.testing.assert_close(boxes, coder.decode_boxes(box_deltas, priors) * scale, rtol=0, atol=1e-3)
    torch.testing.assert_close(scores, class_scores[..., 1])
    expected_landmarks = (coder.decode_landmarks(landmark_deltas, priors) * scale[:2]).flatten(start_dim=-2)
    torch.testing.assert_close(landmarks, expected_landmarks, rtol=0, atol=1e-3)
    assert boxes.shape == (2, priors.shape[0], 4) and landmarks.shape == (2, priors.shape[0], 10)


def test_wrappers_are_in_eval_mode_and_decoding_needs_two_classes():
    model = create_retinaface("mobilenet0.25")  # train mode
    assert not RetinaFaceRawExport(model).training and not model.training
    assert not ClassifierExport(nn.Sequential(nn.Flatten(), nn.Linear(3, 2))).training
    with pytest.raises(ValueError, match="needs a 2-class RetinaFace .* num_classes=3"):
        RetinaFaceDecodedExport(create_retinaface("mobilenet0.25", num_classes=3), BoxCoder())


class BatchNormSubclass(nn.BatchNorm2d):
    """Stands for timm's BatchNormAct2d: a BatchNorm2d subclass that must not be folded."""


def test_fold_sequential_batch_norms_is_exact_and_selective():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU()),
        nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU(), nn.BatchNorm2d(4)),  # BN not right after the conv
        nn.Sequential(nn.Conv2d(4, 4, 1), BatchNormSubclass(4)),
    )
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 2.0)
            module.bias.data.uniform_(-1, 1)
    model.eval()
    images = torch.randn(2, 3, 8, 8) * 100
    with torch.no_grad():
        expected = model(images)
        assert fold_sequential_batch_norms(model) == 1
        actual = model(images)
    assert isinstance(model[0][1], nn.Identity) and model[0][0].bias is not None
    assert isinstance(model[1][2], nn.BatchNorm2d) and isinstance(model[2][1], BatchNormSubclass)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-4)
