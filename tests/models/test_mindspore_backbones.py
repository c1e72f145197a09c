"""A MindSpore ImageNet ResNet-50 ``.ckpt`` in any of its three namings is the ResNet-50 backbone of Mask R-CNN and of
RetinaFace ResNet-50 (``model.backbone_checkpoint``). The checkpoints are written by visiontune's own ``.ckpt``
writer, from a torchvision ResNet-50 with random weights, in each naming."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import resnet50

from visiontune.interop.mindspore import (
    detect_resnet50_naming,
    read_mindspore_checkpoint,
    save_mindspore_checkpoint,
    to_mindspore_state_dict,
)
from visiontune.models.maskrcnn import create_maskrcnn
from visiontune.models.retinaface import create_retinaface

NAMINGS = {
    "resnet50": ("layer1.0.down_sample.0.weight", "classifier.weight"),  # MindCV
    "resnet50_modelzoo": ("layer1.0.down_sample_layer.0.weight", "end_point.weight"),  # model zoo, MindFace
    "resnet50_maskrcnn_backbone": ("backbone.layer1.0.conv_down_sample.weight", "end_point.weight"),  # Mask R-CNN
}


@pytest.fixture(scope="module")
def imagenet_resnet50() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = resnet50()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a mis-mapped one shows
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    return model.state_dict()


@pytest.fixture(scope="module", params=sorted(NAMINGS))
def mindspore_checkpoint(request, imagenet_resnet50, tmp_path_factory) -> tuple[str, Path]:
    naming = request.param
    path = tmp_path_factory.mktemp(naming) / f"{naming}.ckpt"
    save_mindspore_checkpoint(path, to_mindspore_state_dict(imagenet_resnet50, naming))
    names = list(read_mindspore_checkpoint(path))
    assert set(NAMINGS[naming]) <= set(names)  # the file really uses that naming
    assert detect_resnet50_naming(names) == naming
    return naming, path


def _assert_body_holds(body: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    body_state = body.state_dict()
    compared = [key for key in body_state if key in state_dict and not key.endswith("num_batches_tracked")]
    assert len(compared) > 250  # every conv and BatchNorm tensor of the four stages and the stem
    for key in compared:
        torch.testing.assert_close(body_state[key], state_dict[key], rtol=0, atol=0, msg=key)


def test_mask_rcnn_backbone_from_each_mindspore_naming(mindspore_checkpoint, imagenet_resnet50, caplog):
    naming, path = mindspore_checkpoint
    caplog.set_level("INFO")
    model = create_maskrcnn("v1", num_classes=3, init="backbone", backbone_checkpoint=path)
    _assert_body_holds(model.backbone.body, imagenet_resnet50)
    assert f"converted 265 tensors of {naming}" in caplog.text or f"of {naming} to timm resnet50" in caplog.text
    assert "backbone init" in caplog.text  # the load report


def test_retinaface_resnet50_backbone_from_each_mindspore_naming(mindspore_checkpoint, imagenet_resnet50):
    _, path = mindspore_checkpoint
    model = create_retinaface("resnet50", backbone_checkpoint=path)
    _assert_body_holds(model.body, imagenet_resnet50)


def test_mindcv_resnet50_parameter_list_is_read_as_mindcv(fixtures_dir):
    lines = (fixtures_dir / "mindspore" / "resnet50.params.txt").read_text().splitlines()
    assert detect_resnet50_naming([line.split("\t")[0] for line in lines]) == "resnet50"
    zoo = [name.replace(".down_sample.", ".down_sample_layer.") for name in (line.split("\t")[0] for line in lines)]
    assert detect_resnet50_naming(zoo) == "resnet50_modelzoo"
