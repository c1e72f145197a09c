"""Tests of the Mask R-CNN builder: weight loading, freezing, and a few CPU training steps."""

from __future__ import annotations

import logging
import time
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from visiontune.data.coco_dataset import CocoInstanceDataset
from visiontune.data.detection_transforms import collate_detection
from visiontune.data.synthetic_coco import make_synthetic_coco, synthetic_images_dir
from visiontune.models.loading import LoadReport, read_weights
from visiontune.models.maskrcnn import (
    PretrainedWeightsUnavailableError,
    create_maskrcnn,
    load_backbone_weights,
    load_detector_weights,
)
from visiontune.utils import hub

# Small sampling budgets keep a CPU step short; they are MaskRCNN keyword arguments passed through.
FAST = {"min_size": 128, "max_size": 160, "rpn_pre_nms_top_n_train": 300, "rpn_post_nms_top_n_train": 100,
        "rpn_batch_size_per_image": 64, "box_batch_size_per_image": 32}
PREDICTOR_KEYS = {
    "roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.cls_score.bias",
    "roi_heads.box_predictor.bbox_pred.weight", "roi_heads.box_predictor.bbox_pred.bias",
    "roi_heads.mask_predictor.mask_fcn_logits.weight", "roi_heads.mask_predictor.mask_fcn_logits.bias",
}


def random_resnet50_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision ResNet-50 state dict whose BatchNorm statistics are not the defaults (0 mean, 1 var)."""
    torch.manual_seed(seed)
    resnet = torchvision.models.resnet50(weights=None)
    for module in resnet.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.num_batches_tracked.fill_(7)
    return resnet.state_dict()


def test_backbone_init_copies_a_torchvision_resnet50_exactly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state_dict = random_resnet50_state_dict()
    path = tmp_path / "resnet50.pth"
    torch.save(state_dict, path)
    with caplog.at_level(logging.INFO, logger="visiontune.models.maskrcnn"):
        model = create_maskrcnn("v1", num_classes=3, init="backbone", backbone_checkpoint=path)
    assert "loaded 265, missing 0, unexpected 2 ['fc.weight', 'fc.bias']" in caplog.text
    body = model.backbone.body
    assert isinstance(body.bn1, FrozenBatchNorm2d) and body.bn1.eps == 1e-5
    body_state = body.state_dict()
    assert len(body_state) == 265  # 320 keys minus 53 num_batches_tracked minus fc.weight/fc.bias
    for key, value in body_state.items():
        assert torch.equal(value, state_dict[key]), key  # weights, BN gamma/beta and running statistics

    fresh = create_maskrcnn("v1", num_classes=3, init="none", frozen_batchnorm=True)
    report = load_backbone_weights(fresh, {f"module.{key}": value for key, value in state_dict.items()},
                                   source="timm-style")
    assert (len(report.loaded), len(report.missing), report.unexpected) == (265, 0, ["fc.weight", "fc.bias"])


def test_backbone_init_of_v2_keeps_trainable_batchnorm(tmp_path: Path) -> None:
    state_dict = random_resnet50_state_dict(seed=1)
    path = tmp_path / "resnet50.pth"
    torch.save({"state_dict": state_dict}, path)  # wrapped, as many training scripts save it
    model = create_maskrcnn("v2", num_classes=3, init="backbone", backbone_checkpoint=path)
    assert isinstance(model.backbone.body.bn1, nn.BatchNorm2d)
    report = load_backbone_weights(model, state_dict)
    assert (len(report.loaded), len(report.missing), len(report.unexpected)) == (318, 0, 2)
    for key, value in model.backbone.body.state_dict().items():
        assert torch.equal(value, state_dict[key]), key


def test_backbone_of_another_architecture_is_rejected() -> None:
    model = create_maskrcnn("v1", num_classes=3, init="none")
    with pytest.raises(ValueError, match=r"resnet18: .* backbone tensor\(s\) have a different shape .*layer1\.0\."
                                         r"conv1\.weight: file \(64, 64, 3, 3\) vs model \(64, 64, 1, 1\)"):
        load_backbone_weights(model, torchvision.models.resnet18(weights=None).state_dict(), source="resnet18")
    with pytest.raises(ValueError, match="no key matches the ResNet-50 backbone"):
        load_backbone_weights(model, {"encoder.weight": torch.zeros(1)}, source="other")


@pytest.mark.parametrize(("layers", "trainable"), [(0, set()), (2, {"layer3", "layer4"}),
                                                    (5, {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"})])
def test_trainable_backbone_layers(layers: int, trainable: set[str]) -> None:
    model = create_maskrcnn("v2", num_classes=3, init="none", trainable_backbone_layers=layers)
    for name, parameter in model.backbone.body.named_parameters():
        assert parameter.requires_grad == (name.split(".")[0] in trainable), name
    assert all(parameter.requires_grad for parameter in model.backbone.fpn.parameters())
    assert all(parameter.requires_grad for parameter in model.roi_heads.parameters())
    with pytest.raises(ValueError, match=r"trainable_backbone_layers must be in \[0, 5\], got 6"):
        create_maskrcnn("v1", num_classes=3, init="none", trainable_backbone_layers=6)


def test_torchvision_defaults_for_norm_and_freezing() -> None:
    scratch = create_maskrcnn("v1", num_classes=3, init="none")
    assert isinstance(scratch.backbone.body.bn1, nn.BatchNorm2d)
    assert all(parameter.requires_grad for parameter in scratch.backbone.body.parameters())
    assert scratch.transform.min_size == (800,) and scratch.transform.max_size == 1333


def test_coco_init_from_a_local_file_reinitialises_the_predictors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    coco_like = create_maskrcnn("v1", num_classes=91, init="none", frozen_batchnorm=True)
    path = tmp_path / "maskrcnn_coco.pth"
    torch.save(coco_like.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="visiontune.models.maskrcnn"):
        model = create_maskrcnn("v1", num_classes=5, init="coco", checkpoint=path)
    assert "missing 0, unexpected 0, re-initialised (shape differs) 6" in caplog.text
    source = coco_like.state_dict()
    for key, value in model.state_dict().items():
        if key in PREDICTOR_KEYS:
            assert value.shape[0] in (5, 5 * 4)
        else:
            assert torch.equal(value, source[key]), key
    assert model.roi_heads.box_predictor.cls_score.out_features == 5
    assert model.backbone.body.bn1.eps == 0.0  # as torchvision's overwrite_eps for the v1 COCO weights
    assert not model.backbone.body.conv1.weight.requires_grad  # default: 3 trainable stages
    assert model.backbone.body.layer2[0].conv1.weight.requires_grad
    with pytest.raises(ValueError, match="does not fit this Mask R-CNN .* same variant"):
        create_maskrcnn("v2", num_classes=5, init="coco", checkpoint=path)


def test_maskrcnn_loaders_report_like_every_loader() -> None:
    torch.manual_seed(0)
    coco_like = create_maskrcnn("v1", num_classes=91, init="none", frozen_batchnorm=True).state_dict()
    model = create_maskrcnn("v1", num_classes=5, init="none", frozen_batchnorm=True)
    report = load_detector_weights(model, coco_like, source="coco.pth")
    assert isinstance(report, LoadReport)
    assert ("roi_heads.box_predictor.cls_score.weight", (91, 1024), (5, 1024)) in report.reinitialized
    assert set(report.reinitialized_names) == PREDICTOR_KEYS and report.missing == []
    assert len(report.loaded) == len(coco_like) - 6 and report.backbone_fraction == 1.0
    heads = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.")  # conv5_mask too (same shape: loaded)
    non_head = [key for key in report.loaded if not key.startswith(heads) and not key.endswith("num_batches_tracked")]
    assert report.backbone_total == report.backbone_loaded == len(non_head)
    assert report.as_dict() == {"source": "coco.pth", "loaded": len(coco_like) - 6,
                                "reinitialized": report.reinitialized_names, "missing": [], "unexpected": [],
                                "backbone_fraction": 1.0}
    assert "load report for coco.pth:" in report.format() and "re-initialised      6" in report.format()

    stages = {key.removeprefix("backbone.body."): value for key, value in coco_like.items()
              if key.startswith("backbone.body.layer")}
    partial = load_backbone_weights(model, stages, source="stages.pth")
    stem = ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"]
    assert partial.missing == [f"backbone.body.{key}" for key in stem]
    assert (partial.backbone_loaded, partial.backbone_total) == (len(stages), len(stages) + len(stem))
    assert partial.as_dict()["backbone_fraction"] == pytest.approx(len(stages) / (len(stages) + 5))


def test_coco_init_without_network_explains_the_local_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights

    def no_network(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(hub, "hub_reachable", lambda host, **kwargs: True)  # the download itself fails
    with pytest.raises(PretrainedWeightsUnavailableError, match=r"could not fetch torchvision weights "
                       r"MaskRCNN_ResNet50_FPN_Weights\.COCO_V1 .*pass its local path as `checkpoint` "
                       r"\(e\.g\. checkpoint=/path/to/maskrcnn_resnet50_fpn_coco-bf2d0c1e\.pth\)"):
        create_maskrcnn("v1", num_classes=3, init="coco")


def test_unreachable_download_host_fails_in_seconds_without_downloading(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights
    probed: list[str] = []

    def unreachable(host: str, **kwargs: object) -> bool:
        probed.append(host)
        return False

    def download(*args: object, **kwargs: object) -> None:
        raise AssertionError("no download may start when the host cannot be reached")

    monkeypatch.setattr(hub, "hub_reachable", unreachable)
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsUnavailableError) as caught:
        create_maskrcnn("v1", num_classes=3, init="backbone")
    assert time.perf_counter() - start < 5.0 and probed == ["download.pytorch.org"]
    assert str(caught.value) == (
        "could not fetch torchvision weights ResNet50_Weights.IMAGENET1K_V1 from "
        "https://download.pytorch.org/models/resnet50-0676ba61.pth (download.pytorch.org cannot be reached and "
        f"{tmp_path / 'hub' / 'checkpoints'} holds no copy). Without network access, download that file elsewhere "
        "and pass its local path as `backbone_checkpoint` (e.g. backbone_checkpoint=/path/to/resnet50-0676ba61.pth).")


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match=r"unknown Mask R-CNN variant 'v3'; expected one of \('v1', 'v2'\)"):
        create_maskrcnn("v3", num_classes=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown init 'imagenet'"):
        create_maskrcnn("v1", num_classes=3, init="imagenet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="checkpoint is only used with init='coco'"):
        create_maskrcnn("v1", num_classes=3, init="none", checkpoint="x.pth")
    with pytest.raises(ValueError, match="num_classes counts the background and must be >= 2, got 1"):
        create_maskrcnn("v1", num_classes=1, init="none")
    with pytest.raises(FileNotFoundError, match="weights file not found: .*missing.pth"):
        create_maskrcnn("v1", num_classes=3, init="backbone", backbone_checkpoint="missing.pth")


def test_read_weights_strips_wrappers_and_reads_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {"a.weight": torch.arange(3.0), "b.bias": torch.ones(2)}
    torch.save({"model": {f"module._orig_mod.{key}": value for key, value in tensors.items()}, "epoch": 3},
               tmp_path / "wrapped.pth")
    save_file(tensors, str(tmp_path / "weights.safetensors"))
    for name in ("wrapped.pth", "weights.safetensors"):
        loaded = read_weights(tmp_path / name)
        assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list\.pth: expected a dict of tensors"):
        read_weights(tmp_path / "list.pth")


@pytest.mark.slow
def test_a_few_cpu_training_steps_reduce_every_loss(tmp_path: Path) -> None:
    annotation_file = make_synthetic_coco(tmp_path, num_images=6, seed=0)
    dataset = CocoInstanceDataset(synthetic_images_dir(annotation_file), annotation_file, empty_images="drop")
    images, targets = collate_detection([dataset[0], dataset[1]])
    torch.manual_seed(0)
    model = create_maskrcnn("v1", num_classes=dataset.num_classes, init="none", trainable_backbone_layers=0, **FAST)
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    model.train()
    history = []
    start = time.perf_counter()
    for _ in range(8):
        losses = model(images, targets)
        assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append({name: value.item() for name, value in losses.items()} | {"total": total.item()})
    seconds_per_step = (time.perf_counter() - start) / len(history)
    print(f"Mask R-CNN v1 CPU training: {seconds_per_step:.2f} s/iteration (2 images, min_size 128, max_size 160)")
    assert all(torch.isfinite(torch.tensor(list(step.values()))).all() for step in history)
    assert history[-1]["total"] < 0.3 * history[0]["total"]
    for name in ("loss_classifier", "loss_mask", "loss_objectness"):
        assert history[-1][name] < history[0][name], name

    model.eval()
    with torch.no_grad():
        outputs = model([images[0]])
    assert len(outputs) == 1 and set(outputs[0]) == {"boxes", "labels", "scores", "masks"}
    count = len(outputs[0]["boxes"])
    assert outputs[0]["boxes"].shape == (count, 4) and outputs[0]["masks"].shape == (count, 1, 96, 128)
    assert outputs[0]["labels"].dtype == torch.int64
