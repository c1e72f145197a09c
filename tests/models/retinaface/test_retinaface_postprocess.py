from __future__ import annotations

import pytest
import torch

from visiontune.models.retinaface import BoxCoder, RetinaFacePostprocessConfig, postprocess_detections
from visiontune.models.retinaface.priors import generate_priors

IMAGE_SIZE = (64, 96)  # height, width
SCALE = torch.tensor([96.0, 64.0, 96.0, 64.0])


def _raw_outputs(boxes_by_prior: dict[int, list[float]], scores_by_prior: dict[int, float], *, num_classes: int = 2):
    """Raw outputs that decode to the given pixel boxes and face scores; other priors score 0."""
    priors = generate_priors(IMAGE_SIZE)
    coder = BoxCoder()
    box_deltas = torch.zeros(1, priors.shape[0], 4)
    landmark_deltas = torch.zeros(1, priors.shape[0], 10)
    for prior_index, box in boxes_by_prior.items():
        normalised = torch.tensor([box]) / SCALE
        box_deltas[0, prior_index] = coder.encode_boxes(normalised, priors[prior_index : prior_index + 1])[0]
        landmark_deltas[0, prior_index] = torch.arange(10) / 10
    scores = torch.zeros(1, priors.shape[0], num_classes)
    scores[..., 0] = 1.0
    for prior_index, score in scores_by_prior.items():
        scores[0, prior_index] = torch.tensor([1 - score, score])
    return box_deltas, scores, landmark_deltas, priors


def test_threshold_nms_and_pixel_outputs() -> None:
    boxes = {0: [10.0, 10.0, 30.0, 30.0], 5: [11.0, 10.0, 31.0, 30.0], 9: [50.0, 20.0, 70.0, 44.0], 20: [0, 0, 9, 9]}
    scores = {0: 0.8, 5: 0.9, 9: 0.5, 20: 0.02}  # 20 is not > 0.02; 0 overlaps 5 (IoU 0.9) and is suppressed
    box_deltas, class_scores, landmark_deltas, priors = _raw_outputs(boxes, scores)
    (detections,) = postprocess_detections(box_deltas, class_scores, landmark_deltas, priors=priors,
                                           image_size=IMAGE_SIZE)
    assert set(detections) == {"boxes", "scores", "landmarks", "labels"}
    torch.testing.assert_close(detections["scores"], torch.tensor([0.9, 0.5]))
    torch.testing.assert_close(detections["boxes"], torch.tensor([boxes[5], boxes[9]]), atol=1e-4, rtol=0)
    assert detections["labels"].tolist() == [1, 1]
    # Landmark deltas 0.0, 0.1, ... around prior 5's centre, scaled by 0.1 * prior size, in pixels.
    prior = priors[5]
    expected_x = (prior[0] + torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8]) * 0.1 * prior[2]) * 96
    expected_y = (prior[1] + torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9]) * 0.1 * prior[3]) * 64
    assert detections["landmarks"].shape == (2, 5, 2)
    torch.testing.assert_close(detections["landmarks"][0], torch.stack([expected_x, expected_y], dim=1))


def test_top_k_limits() -> None:
    boxes = {0: [0.0, 0.0, 10.0, 10.0], 50: [40.0, 0.0, 50.0, 10.0], 100: [0.0, 40.0, 10.0, 50.0]}
    scores = {0: 0.7, 50: 0.9, 100: 0.8}
    raw = _raw_outputs(boxes, scores)
    box_deltas, class_scores, landmark_deltas, priors = raw
    kwargs = {"priors": priors, "image_size": IMAGE_SIZE}
    (detections,) = postprocess_detections(box_deltas, class_scores, landmark_deltas, **kwargs)
    torch.testing.assert_close(detections["scores"], torch.tensor([0.9, 0.8, 0.7]))
    config = RetinaFacePostprocessConfig(max_detections=2)
    (detections,) = postprocess_detections(box_deltas, class_scores, landmark_deltas, config=config, **kwargs)
    torch.testing.assert_close(detections["scores"], torch.tensor([0.9, 0.8]))
    config = RetinaFacePostprocessConfig(pre_nms_top_k=1)
    (detections,) = postprocess_detections(box_deltas, class_scores, landmark_deltas, config=config, **kwargs)
    torch.testing.assert_close(detections["scores"], torch.tensor([0.9]))
    config = RetinaFacePostprocessConfig(score_threshold=0.8)
    (detections,) = postprocess_detections(box_deltas, class_scores, landmark_deltas, config=config, **kwargs)
    torch.testing.assert_close(detections["scores"], torch.tensor([0.9]))


def test_inclusive_pixel_nms() -> None:
    # Plain IoU 55 / 145 = 0.379 (both kept at 0.4); inclusive IoU 71.5 / 170.5 = 0.419 (second suppressed).
    boxes = {0: [0.0, 0.0, 10.0, 10.0], 2: [4.5, 0.0, 14.5, 10.0]}
    box_deltas, class_scores, landmark_deltas, priors = _raw_outputs(boxes, {0: 0.9, 2: 0.8})
    kwargs = {"priors": priors, "image_size": IMAGE_SIZE}
    (plain,) = postprocess_detections(box_deltas, class_scores, landmark_deltas, **kwargs)
    assert len(plain["scores"]) == 2
    config = RetinaFacePostprocessConfig(nms_inclusive_pixels=True)
    (inclusive,) = postprocess_detections(box_deltas, class_scores, landmark_deltas, config=config, **kwargs)
    torch.testing.assert_close(inclusive["scores"], torch.tensor([0.9]))


def test_multiclass_nms_is_per_class() -> None:
    priors = generate_priors(IMAGE_SIZE)
    box_deltas = torch.zeros(1, priors.shape[0], 4)
    landmark_deltas = torch.zeros(1, priors.shape[0], 10)
    class_scores = torch.zeros(1, priors.shape[0], 3)
    class_scores[..., 0] = 1.0
    class_scores[0, 7] = torch.tensor([0.1, 0.5, 0.4])  # same box, two foreground classes
    (detections,) = postprocess_detections(box_deltas, class_scores, landmark_deltas, priors=priors,
                                           image_size=IMAGE_SIZE)
    torch.testing.assert_close(detections["scores"], torch.tensor([0.5, 0.4]))
    assert detections["labels"].tolist() == [1, 2]
    torch.testing.assert_close(detections["boxes"][0], detections["boxes"][1])


def test_empty_result_shapes() -> None:
    priors = generate_priors(IMAGE_SIZE)
    class_scores = torch.zeros(2, priors.shape[0], 2)
    class_scores[..., 0] = 1.0
    detections = postprocess_detections(torch.zeros(2, priors.shape[0], 4), class_scores,
                                        torch.zeros(2, priors.shape[0], 10), priors=priors, image_size=IMAGE_SIZE)
    assert len(detections) == 2
    assert detections[1]["boxes"].shape == (0, 4) and detections[1]["landmarks"].shape == (0, 5, 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"score_threshold": 1.0}, r"score_threshold must be in \[0, 1\)"),
        ({"nms_iou_threshold": 0.0}, r"nms_iou_threshold must be in \(0, 1\]"),
        ({"max_detections": 0}, "pre_nms_top_k and max_detections must be >= 1"),
    ],
)
def test_config_validation(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetinaFacePostprocessConfig(**kwargs)
