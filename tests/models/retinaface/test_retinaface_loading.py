from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torchvision.models import resnet50

from visiontune.models.retinaface import (
    RetinaFace,
    create_retinaface,
    load_backbone_state_dict,
    load_retinaface_state_dict,
    read_state_dict,
    strip_prefixes,
)


def _assert_model_holds(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    model_state = model.state_dict()
    for key, value in state_dict.items():
        assert torch.equal(model_state[key], value), key


def test_reference_keys_match_model(tiny_model: RetinaFace, reference_state_dict: dict[str, torch.Tensor]) -> None:
    assert list(tiny_model.state_dict()) == list(reference_state_dict)


def test_load_reference_checkpoint_without_prefix(
    tiny_model: RetinaFace, reference_state_dict: dict[str, torch.Tensor], retinaface_dir: Path
) -> None:
    report = load_retinaface_state_dict(tiny_model, retinaface_dir / "mobilenet0.25_Final.pth")
    assert len(report.loaded) == len(reference_state_dict) == 300
    assert report.missing == report.unexpected == report.skipped == report.reinitialized == []
    assert report.backbone_fraction == 1.0
    assert report.source.endswith("mobilenet0.25_Final.pth")
    _assert_model_holds(tiny_model, reference_state_dict)


def test_load_reference_checkpoint_with_module_prefix(
    tiny_model: RetinaFace, reference_state_dict: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    prefixed = {f"module.{key}": value for key, value in reference_state_dict.items()}
    path = tmp_path / "prefixed.pth"
    torch.save(prefixed, path)
    report = load_retinaface_state_dict(tiny_model, path)
    assert len(report.loaded) == 300
    _assert_model_holds(tiny_model, reference_state_dict)
    # In-memory mapping, wrapped the way training scripts save checkpoints.
    model = create_retinaface("mobilenet0.25", checkpoint=None)
    load_retinaface_state_dict(model, {"state_dict": prefixed, "epoch": 3})
    _assert_model_holds(model, reference_state_dict)


def test_factory_loads_checkpoint(reference_state_dict: dict[str, torch.Tensor], retinaface_dir: Path) -> None:
    model = create_retinaface("mobilenet0.25", checkpoint=retinaface_dir / "mobilenet0.25_Final.pth")
    _assert_model_holds(model, reference_state_dict)


def test_strict_mismatch_raises_before_loading(
    tiny_model: RetinaFace, reference_state_dict: dict[str, torch.Tensor]
) -> None:
    before = {key: value.clone() for key, value in tiny_model.state_dict().items()}
    incomplete = dict(reference_state_dict)
    del incomplete["fpn.merge1.0.weight"]
    incomplete["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"1 missing keys \[fpn.merge1.0.weight\], 1 unexpected keys \[extra.weight\]"):
        load_retinaface_state_dict(tiny_model, incomplete)
    _assert_model_holds(tiny_model, before)
    report = load_retinaface_state_dict(tiny_model, incomplete, strict=False)
    assert report.missing == ["fpn.merge1.0.weight"] and report.unexpected == ["extra.weight"]
    counted = [key for key in tiny_model.state_dict() if not key.endswith("num_batches_tracked")]
    assert (report.backbone_total, report.backbone_loaded) == (len(counted), len(counted) - 1)


def test_shape_mismatch_names_the_key(tiny_model: RetinaFace, reference_state_dict: dict[str, torch.Tensor]) -> None:
    wrong = dict(reference_state_dict)
    wrong["ssh2.conv3X3.0.weight"] = torch.zeros(1, 1, 3, 3)
    with pytest.raises(ValueError, match=r"'ssh2.conv3X3.0.weight' has shape \[1, 1, 3, 3\] but the model expects"):
        load_retinaface_state_dict(tiny_model, wrong)


def test_other_num_classes_reinitialises_the_class_head(reference_state_dict: dict[str, torch.Tensor]) -> None:
    model = create_retinaface("mobilenet0.25", num_classes=3)
    report = load_retinaface_state_dict(model, reference_state_dict)
    assert report.reinitialized_names == [f"ClassHead.{level}.conv1x1.{name}" for level in range(3)
                                          for name in ("weight", "bias")]
    assert report.reinitialized[1] == ("ClassHead.0.conv1x1.bias", (4,), (6,))  # 2 anchors x 2 -> x 3 classes
    assert report.missing == report.skipped == [] and len(report.loaded) == 294
    assert report.as_dict()["reinitialized"] == report.reinitialized_names
    assert "re-initialised (shape differs) 6 ['ClassHead.0.conv1x1.weight'," in report.summary()
    _assert_model_holds(model, {k: v for k, v in reference_state_dict.items() if not k.startswith("ClassHead.")})


def test_mobilenet_imagenet_backbone(retinaface_dir: Path) -> None:
    path = retinaface_dir / "mobilenetV1X0.25_pretrain.tar"
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # must not need pickle
    backbone_weights = {key.removeprefix("module."): value for key, value in checkpoint["state_dict"].items()}
    torch.manual_seed(0)
    model = create_retinaface("mobilenet0.25")
    fpn_before = model.fpn.output1[0].weight.clone()
    report = load_backbone_state_dict(model.body, path)
    assert report.skipped == ["fc.weight", "fc.bias"] and report.unexpected == []
    assert len(report.loaded) == len(model.body.state_dict()) == 162
    assert report.summary().endswith("loaded 162, missing 0, unexpected 0, re-initialised (shape differs) 0, "
                                      "skipped 2 ['fc.weight', 'fc.bias']")
    assert report.as_dict()["skipped"] == ["fc.weight", "fc.bias"]
    _assert_model_holds(model.body, {k: v for k, v in backbone_weights.items() if not k.startswith("fc.")})
    assert torch.equal(model.fpn.output1[0].weight, fpn_before)
    factory_model = create_retinaface("mobilenet0.25", backbone_checkpoint=path)
    assert torch.equal(factory_model.body.stage3[1][3].weight, backbone_weights["stage3.1.3.weight"])


def test_resnet50_imagenet_backbone_torchvision_and_timm(tmp_path: Path) -> None:
    model = create_retinaface("resnet50")
    # A torchvision-named ImageNet file: torchvision's resnet50 keys, classifier included.
    with torch.device("meta"):
        torchvision_keys = list(resnet50(weights=None).state_dict())
        timm_keys = list(timm.create_model("resnet50").state_dict())
    assert sorted(timm_keys) == sorted(torchvision_keys)  # timm uses the same names
    body_state = model.body.state_dict()
    imagenet = {key: body_state[key] + 1 for key in torchvision_keys if not key.startswith("fc.")}
    imagenet.update({"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})
    torchvision_path = tmp_path / "resnet50_torchvision.pth"
    torch.save(imagenet, torchvision_path)
    report = load_backbone_state_dict(model.body, torchvision_path)
    assert report.skipped == ["fc.weight", "fc.bias"] and report.missing == []
    _assert_model_holds(model.body, {k: v for k, v in imagenet.items() if not k.startswith("fc.")})

    # timm checkpoints are usually safetensors files.
    timm_weights = {key: value + 1 for key, value in imagenet.items()}
    timm_path = tmp_path / "resnet50_timm.safetensors"
    save_file(timm_weights, str(timm_path))
    report = load_backbone_state_dict(model.body, timm_path)
    assert sorted(report.skipped) == ["fc.bias", "fc.weight"] and report.missing == []
    assert torch.equal(model.body.layer4[2].conv3.weight, timm_weights["layer4.2.conv3.weight"])


def test_read_state_dict_rejects_non_tensors(tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    torch.save({"weights": [1, 2, 3]}, path)
    with pytest.raises(ValueError,
                       match=r"bad.pth: cannot find the weights: expected a state dict .* key 'weights' holds list"):
        read_state_dict(path)


def test_strip_prefixes() -> None:
    value = torch.zeros(1)
    assert list(strip_prefixes({"module._orig_mod.fpn.x": value, "ssh1.y": value})) == ["fpn.x", "ssh1.y"]
    with pytest.raises(ValueError, match="collide"):
        strip_prefixes({"module.a": value, "a": value})
