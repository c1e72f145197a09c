from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from visiontune.models.retinaface import RetinaFace, RetinaFaceLoss, validate_target
from visiontune.models.retinaface.priors import generate_priors

IMAGE_SIZE = (64, 64)
# Exactly the first prior (level 1, cell (0, 0), 16 px): IoU 1 with it, <= 1/3 with every other prior.
FACE_BOX = [-4.0, -4.0, 12.0, 12.0]


def _face_target(*, with_landmarks: bool) -> dict[str, torch.Tensor]:
    landmarks = torch.full((1, 5, 2), 4.0) if with_landmarks else torch.full((1, 5, 2), float("nan"))
    return {
        "boxes": torch.tensor([FACE_BOX]),
        "landmarks": landmarks,
        "landmarks_valid": torch.tensor([with_landmarks]),
    }


def _empty_target() -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.zeros(0, 4),
        "landmarks": torch.zeros(0, 5, 2),
        "landmarks_valid": torch.zeros(0, dtype=torch.bool),
    }


def _constant_predictions(batch_size: int, num_priors: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    box = torch.full((batch_size, num_priors, 4), 0.5, requires_grad=True)
    logits = torch.zeros(batch_size, num_priors, 2, requires_grad=True)
    landmarks = torch.full((batch_size, num_priors, 10), 0.5, requires_grad=True)
    return box, logits, landmarks


def test_hand_computed_losses_and_landmark_normalisation() -> None:
    priors = generate_priors(IMAGE_SIZE)
    box, logits, landmarks = _constant_predictions(2, priors.shape[0])
    targets = [_face_target(with_landmarks=True), _face_target(with_landmarks=False)]
    losses = RetinaFaceLoss()(box, logits, landmarks, priors=priors, targets=targets, image_size=IMAGE_SIZE)
    assert set(losses) == {"loss_box", "loss_cls", "loss_landmarks"}
    # One positive prior per image with target deltas 0: smooth L1 of 0.5 is 0.125 per value.
    torch.testing.assert_close(losses["loss_box"], torch.tensor(2.0 * (4 * 0.125 * 2) / 2))
    # Landmarks only for the face that has them, normalised by 1 (not by the 2 positives).
    torch.testing.assert_close(losses["loss_landmarks"], torch.tensor(10 * 0.125 / 1))
    # Zero logits: cross-entropy ln 2 for each of (1 positive + 7 negatives) per image, over 2 positives.
    torch.testing.assert_close(losses["loss_cls"], torch.tensor(16 * math.log(2.0) / 2))


def test_loss_weights_are_applied() -> None:
    priors = generate_priors(IMAGE_SIZE)
    box, logits, landmarks = _constant_predictions(1, priors.shape[0])
    loss = RetinaFaceLoss(loc_weight=1.0, class_weight=0.5, landm_weight=3.0)
    losses = loss(box, logits, landmarks, priors=priors, targets=[_face_target(with_landmarks=True)],
                  image_size=IMAGE_SIZE)
    torch.testing.assert_close(losses["loss_box"], torch.tensor(0.5))
    torch.testing.assert_close(losses["loss_landmarks"], torch.tensor(3.0 * 1.25))
    torch.testing.assert_close(losses["loss_cls"], torch.tensor(0.5 * 8 * math.log(2.0)))


def test_faces_without_landmarks_give_zero_landmark_loss() -> None:
    priors = generate_priors(IMAGE_SIZE)
    box, logits, landmarks = _constant_predictions(1, priors.shape[0])
    losses = RetinaFaceLoss()(box, logits, landmarks, priors=priors, targets=[_face_target(with_landmarks=False)],
                              image_size=IMAGE_SIZE)
    assert losses["loss_landmarks"].item() == 0.0
    assert losses["loss_box"].item() > 0.0
    sum(losses.values()).backward()
    assert torch.isfinite(landmarks.grad).all() and float(landmarks.grad.abs().sum()) == 0.0


def test_images_without_faces() -> None:
    priors = generate_priors(IMAGE_SIZE)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, priors.shape[0], 2, generator=generator, requires_grad=True)
    box = torch.randn(2, priors.shape[0], 4, generator=generator, requires_grad=True)
    landmarks = torch.randn(2, priors.shape[0], 10, generator=generator, requires_grad=True)
    targets = [_empty_target(), {"boxes": torch.zeros(0, 4)}]
    losses = RetinaFaceLoss()(box, logits, landmarks, priors=priors, targets=targets, image_size=IMAGE_SIZE)
    assert {name: value.item() for name, value in losses.items()} == {
        "loss_box": 0.0,
        "loss_cls": 0.0,
        "loss_landmarks": 0.0,
    }
    sum(losses.values()).backward()
    assert torch.isfinite(logits.grad).all()

    # With mined negatives in empty images the class loss is the 10 largest background losses per image.
    losses = RetinaFaceLoss(min_negatives_per_image=10)(
        box, logits, landmarks, priors=priors, targets=targets, image_size=IMAGE_SIZE
    )
    background_labels = torch.zeros(2 * priors.shape[0], dtype=torch.long)
    background_loss = F.cross_entropy(logits.detach().reshape(-1, 2), background_labels, reduction="none")
    expected = background_loss.reshape(2, -1).topk(10, dim=1).values.sum()
    torch.testing.assert_close(losses["loss_cls"], expected)


def test_model_gradients_flow(tiny_model: RetinaFace) -> None:
    tiny_model.train()
    images = torch.randn(2, 3, *IMAGE_SIZE)
    targets = [_face_target(with_landmarks=True), _empty_target()]
    losses = tiny_model(images, targets)
    assert all(torch.isfinite(value) for value in losses.values())
    sum(losses.values()).backward()
    for name in ("body.stage1.0.0.weight", "fpn.output1.0.weight", "ssh1.conv3X3.0.weight",
                 "ClassHead.0.conv1x1.weight", "BboxHead.0.conv1x1.weight", "LandmarkHead.0.conv1x1.weight"):
        gradient = tiny_model.get_parameter(name).grad
        assert gradient is not None and torch.isfinite(gradient).all() and float(gradient.abs().sum()) > 0, name


def test_model_zero_face_batch_is_finite(tiny_model: RetinaFace) -> None:
    tiny_model.train()
    losses = tiny_model(torch.randn(2, 3, *IMAGE_SIZE), [_empty_target(), _empty_target()])
    total = sum(losses.values())
    assert torch.isfinite(total) and total.item() == 0.0
    total.backward()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"landmarks": torch.zeros(0, 5, 2)}, r"target 0: missing key 'boxes'"),
        ({"boxes": torch.tensor([[10.0, 10.0, 10.0, 20.0]])}, r"target 0: box 0 \[10.0, 10.0, 10.0, 20.0\] has zero"),
        ({"boxes": torch.zeros(2, 5)}, r"target 0: 'boxes' must be a float Tensor\[N, 4\]"),
        ({"boxes": torch.tensor([[0.0, 0.0, float("nan"), 5.0]])}, "NaN or inf"),
        ({"boxes": torch.tensor([FACE_BOX]), "landmarks": torch.zeros(1, 5, 2)}, "give both 'landmarks' and"),
        (
            {
                "boxes": torch.tensor([FACE_BOX]),
                "landmarks": torch.zeros(1, 10),
                "landmarks_valid": torch.ones(1, dtype=torch.bool),
            },
            r"'landmarks' must be Tensor\[1, 5, 2\]",
        ),
        (
            {"boxes": torch.tensor([FACE_BOX]), "landmarks": torch.zeros(1, 5, 2), "landmarks_valid": torch.ones(1)},
            r"'landmarks_valid' must be a bool Tensor\[1\]",
        ),
        ({"boxes": torch.tensor([FACE_BOX]), "labels": torch.tensor([2])}, r"'labels' must be in \[1, 1\]"),
    ],
)
def test_bad_targets_are_rejected(target: dict[str, torch.Tensor], message: str) -> None:
    priors = generate_priors(IMAGE_SIZE)
    box, logits, landmarks = _constant_predictions(1, priors.shape[0])
    with pytest.raises(ValueError, match=message):
        RetinaFaceLoss()(box, logits, landmarks, priors=priors, targets=[target], image_size=IMAGE_SIZE)


def test_target_count_must_match_batch() -> None:
    priors = generate_priors(IMAGE_SIZE)
    box, logits, landmarks = _constant_predictions(2, priors.shape[0])
    with pytest.raises(ValueError, match="got 1 targets for a batch of 2 images"):
        RetinaFaceLoss()(box, logits, landmarks, priors=priors, targets=[_empty_target()], image_size=IMAGE_SIZE)


def test_targets_on_a_device_are_checked_without_reading_values() -> None:
    """On an accelerator a value check would wait for the device once per image and step: only keys, shapes and
    dtypes are checked there (meta tensors have no values: reading one raises)."""
    target = {"boxes": torch.empty(2, 4, device="meta"), "landmarks": torch.empty(2, 5, 2, device="meta"),
              "landmarks_valid": torch.empty(2, dtype=torch.bool, device="meta"),
              "labels": torch.empty(2, dtype=torch.int64, device="meta")}
    validate_target(target, index=0, num_classes=2)
    with pytest.raises(ValueError, match=r"'landmarks' must be Tensor\[2, 5, 2\]"):
        validate_target({**target, "landmarks": torch.empty(2, 10, device="meta")}, index=0, num_classes=2)


def test_the_loss_reads_no_value_on_the_host() -> None:
    """Meta tensors have shapes but no values: the whole loss (matching, hard negatives, masked sums) and its
    backward run on them, so a training step never waits for the device inside the loss (no .item(), no boolean
    indexing, no data-dependent branch)."""
    priors = generate_priors(IMAGE_SIZE).to("meta")
    num_priors = priors.shape[0]
    predictions = [torch.empty(2, num_priors, size, device="meta", requires_grad=True) for size in (4, 2, 10)]
    targets = [{"boxes": torch.empty(3, 4, device="meta"), "landmarks": torch.empty(3, 5, 2, device="meta"),
                "landmarks_valid": torch.empty(3, dtype=torch.bool, device="meta")},
               {"boxes": torch.empty(0, 4, device="meta")}]
    losses = RetinaFaceLoss()(*predictions, priors=priors, targets=targets, image_size=IMAGE_SIZE)
    sum(losses.values()).backward()
    assert all(prediction.grad is not None for prediction in predictions)
