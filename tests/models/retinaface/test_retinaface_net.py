from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet50

from visiontune.models.retinaface import (
    RetinaFace,
    count_priors,
    create_retinaface,
    list_retinaface_backbones,
    postprocess_detections,
)


def test_forward_raw_shapes_on_odd_sizes(tiny_model: RetinaFace) -> None:
    tiny_model.eval()
    with torch.no_grad():
        box_deltas, scores, landmark_deltas = tiny_model.forward_raw(torch.randn(2, 3, 37, 53))
    num_priors = count_priors((37, 53))
    assert box_deltas.shape == (2, num_priors, 4)
    assert scores.shape == (2, num_priors, 2)
    assert landmark_deltas.shape == (2, num_priors, 10)
    torch.testing.assert_close(scores.sum(dim=-1), torch.ones(2, num_priors))


def test_eval_forward_contract(tiny_model: RetinaFace) -> None:
    tiny_model.eval()
    tiny_model.postprocess.score_threshold = 0.0
    images = torch.randn(2, 3, 48, 64) * 50
    with torch.no_grad():
        detections = tiny_model(images)
        raw = tiny_model.forward_raw(images)
    expected = postprocess_detections(*raw, priors=tiny_model.priors((48, 64)), image_size=(48, 64),
                                      config=tiny_model.postprocess)
    assert isinstance(detections, list) and len(detections) == 2
    counts = [detection["scores"].shape[0] for detection in detections]
    for detection, reference, count in zip(detections, expected, counts):
        assert count > 0
        assert detection["boxes"].shape == (count, 4) and detection["boxes"].dtype == torch.float32
        assert detection["landmarks"].shape == (count, 5, 2)
        assert bool((detection["scores"][:-1] >= detection["scores"][1:]).all())
        for key in ("boxes", "scores", "landmarks", "labels"):
            torch.testing.assert_close(detection[key], reference[key])
    tiny_model.postprocess.score_threshold = 0.999
    with torch.no_grad():
        strict_counts = [detection["scores"].shape[0] for detection in tiny_model(images)]
    assert all(strict < loose for strict, loose in zip(strict_counts, counts))


def test_priors_are_cached_per_size(tiny_model: RetinaFace) -> None:
    assert tiny_model.priors((64, 64)) is tiny_model.priors((64, 64))
    assert tiny_model.priors((64, 64)).shape == (count_priors((64, 64)), 4)
    assert tiny_model.priors((64, 32)).shape == (count_priors((64, 32)), 4)


def test_input_validation(tiny_model: RetinaFace) -> None:
    tiny_model.eval()
    with pytest.raises(ValueError, match=r"float Tensor\[B, 3, H, W\], got Tensor\[3, 32, 32\]"):
        tiny_model(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match=r"got Tensor\[1, 3, 32, 32\] torch.uint8"):
        tiny_model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    tiny_model.train()
    with pytest.raises(ValueError, match="training mode needs targets"):
        tiny_model(torch.zeros(1, 3, 32, 32))


def test_unknown_backbone_suggests_a_name() -> None:
    assert list_retinaface_backbones() == ["mobilenet0.25", "resnet50"]
    with pytest.raises(ValueError, match=r"unknown RetinaFace backbone 'mobilenet025'; did you mean 'mobilenet0.25'\?"):
        create_retinaface("mobilenet025")
    with pytest.raises(ValueError, match=r"'ResNet-50'; did you mean 'resnet50'\? Available: mobilenet0.25, resnet50"):
        create_retinaface("ResNet-50")


def test_num_classes_sets_class_head() -> None:
    model = create_retinaface("mobilenet0.25", num_classes=3).eval()
    assert model.ClassHead[0].conv1x1.out_channels == 2 * 3
    with torch.no_grad():
        _, scores, _ = model.forward_raw(torch.zeros(1, 3, 32, 32))
    assert scores.shape[-1] == 3
    with pytest.raises(ValueError, match="num_classes counts the background and must be >= 2"):
        create_retinaface("mobilenet0.25", num_classes=1)


def test_resnet50_variant_names_and_forward() -> None:
    torch.manual_seed(0)
    model = create_retinaface("resnet50")
    assert model.body.feature_channels == (512, 1024, 2048)
    assert model.fpn.output1[0].in_channels == 512 and model.fpn.output1[0].out_channels == 256
    keys = set(model.state_dict())
    # Body keys are torchvision's resnet50 keys without the classifier, under "body." (IntermediateLayerGetter).
    with torch.device("meta"):
        torchvision_state = resnet50(weights=None).state_dict()
    torchvision_keys = {f"body.{key}" for key in torchvision_state if not key.startswith("fc.")}
    assert {key for key in keys if key.startswith("body.")} == torchvision_keys
    # FPN, SSH and head keys are the same as in the MobileNet variant (and the reference checkpoints).
    mobilenet_keys = {key for key in create_retinaface("mobilenet0.25").state_dict() if not key.startswith("body.")}
    assert {key for key in keys if not key.startswith("body.")} == mobilenet_keys
    assert model.ssh1.conv5X5_1[2].__class__ is torch.nn.ReLU  # 256-channel neck: ReLU, not LeakyReLU
    model.eval()
    with torch.no_grad():
        raw = model.forward_raw(torch.randn(1, 3, 32, 64))
    assert [output.shape for output in raw] == [(1, count_priors((32, 64)), size) for size in (4, 2, 10)]
    (detections,) = postprocess_detections(*raw, priors=model.priors((32, 64)), image_size=(32, 64))
    assert detections["landmarks"].shape[1:] == (5, 2)
    model.train()
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 30.0]]), "landmarks": torch.full((1, 5, 2), 20.0),
                "landmarks_valid": torch.tensor([True])}, {"boxes": torch.zeros(0, 4)}]
    losses = model(torch.randn(2, 3, 32, 64), targets)
    assert all(torch.isfinite(value) for value in losses.values())
