"""Converted weights reproduce the real MindSpore outputs (MindSpore 2.10 on CPU, MindCV 0.3, MindFace).

Measured on the fixtures (max |difference| / max |MindSpore output|):

* mobilenet_v2_100, timm ``mobilenetv2_100``: ~3e-7 (8.9e-8 absolute).
* mobilenet_v3_small_100, timm ``mobilenetv3_small_100``: ~1e-3 as built by timm, because MindCV pads its
  stride-2 depthwise convolutions with ``pad_mode="same"`` (bottom/right only); ~4e-7 after
  ``match_mindspore_padding``.
* retinaface_mobilenet025, visiontune ``create_retinaface("mobilenet0.25")``: ~4e-7 for loc, conf, landmarks.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn

from visiontune.interop.mindspore import (
    UnknownArchitectureError,
    convert_mindspore_state_dict,
    match_mindspore_padding,
    read_mindspore_checkpoint,
    save_mindspore_checkpoint,
    to_mindspore_state_dict,
)
from visiontune.models.retinaface.factory import create_retinaface

TOLERANCE = 1e-4  # relative to the largest MindSpore output magnitude


def relative_max_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    assert actual.shape == expected.shape
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def converted_timm_model(mindspore_dir: Path, arch: str, timm_name: str) -> nn.Module:
    tensors = read_mindspore_checkpoint(mindspore_dir / f"{arch}.ckpt")
    state_dict, _ = convert_mindspore_state_dict(tensors, arch)
    model = timm.create_model(timm_name, pretrained=False, num_classes=1000).eval()
    model.load_state_dict(state_dict, strict=True)
    return model


def logits(model: nn.Module, mindspore_dir: Path, arch: str) -> np.ndarray:
    images = torch.from_numpy(np.load(mindspore_dir / f"{arch}.input.npy"))
    assert images.shape == (2, 3, 224, 224)
    with torch.no_grad():
        return model(images).numpy()


def test_mobilenet_v2_logits_match_mindspore(mindspore_dir: Path) -> None:
    model = converted_timm_model(mindspore_dir, "mobilenet_v2_100", "mobilenetv2_100")
    expected = np.load(mindspore_dir / "mobilenet_v2_100.logits.npy")
    assert relative_max_difference(logits(model, mindspore_dir, "mobilenet_v2_100"), expected) < TOLERANCE


def test_mobilenet_v3_small_logits_match_mindspore_with_its_padding(mindspore_dir: Path) -> None:
    model = converted_timm_model(mindspore_dir, "mobilenet_v3_small_100", "mobilenetv3_small_100")
    expected = np.load(mindspore_dir / "mobilenet_v3_small_100.logits.npy")
    keys = list(model.state_dict())
    # timm pads strided depthwise convolutions symmetrically: same weights, visibly different logits
    assert relative_max_difference(logits(model, mindspore_dir, "mobilenet_v3_small_100"), expected) > 10 * TOLERANCE
    replaced = match_mindspore_padding(model, "mobilenet_v3_small_100")
    # MindCV small: blocks 1, 2, 4 and 9 have stride 2 -> timm stages 0, 1, 2 and 4 (first block of each)
    assert replaced == ["blocks.0.0.conv_dw", "blocks.1.0.conv_dw", "blocks.2.0.conv_dw", "blocks.4.0.conv_dw"]
    assert list(model.state_dict()) == keys
    assert relative_max_difference(logits(model, mindspore_dir, "mobilenet_v3_small_100"), expected) < TOLERANCE


def test_retinaface_mobilenet025_outputs_match_mindface(mindspore_dir: Path) -> None:
    tensors = read_mindspore_checkpoint(mindspore_dir / "retinaface_mobilenet025.ckpt")
    state_dict, _ = convert_mindspore_state_dict(tensors, "retinaface_mobilenet025")
    model = create_retinaface("mobilenet0.25").eval()
    model.load_state_dict(state_dict, strict=True)
    images = torch.from_numpy(np.load(mindspore_dir / "retinaface_mobilenet025.input.npy"))
    with torch.no_grad():
        outputs = model.forward_raw(images)
    for name, output in zip(("loc", "conf", "landms"), outputs):
        expected = np.load(mindspore_dir / f"retinaface_mobilenet025.{name}.npy")
        assert relative_max_difference(output.numpy(), expected) < TOLERANCE, name


def test_export_of_the_converted_model_reproduces_the_mindspore_file(mindspore_dir: Path, tmp_path: Path) -> None:
    model = converted_timm_model(mindspore_dir, "mobilenet_v3_small_100", "mobilenetv3_small_100")
    exported = to_mindspore_state_dict(model.state_dict(), "mobilenet_v3_small_100")
    original = mindspore_dir / "mobilenet_v3_small_100.ckpt"
    mindspore_order = list(read_mindspore_checkpoint(original))  # MindSpore lists BN statistics before gamma/beta
    assert sorted(exported) == sorted(mindspore_order)
    save_mindspore_checkpoint(tmp_path / "exported.ckpt", {name: exported[name] for name in mindspore_order})
    assert (tmp_path / "exported.ckpt").read_bytes() == original.read_bytes()


def test_padding_adaptation_pads_bottom_right_like_mindspore() -> None:
    depthwise = nn.Conv2d(2, 2, kernel_size=3, stride=2, padding=1, groups=2, bias=False)
    with torch.no_grad():
        depthwise.weight.fill_(1.0)
    depthwise.weight.requires_grad_(False)
    model = nn.Sequential(depthwise, nn.Conv2d(2, 2, kernel_size=3, stride=2, padding=1)).eval()
    assert match_mindspore_padding(model, "mobilenetv3_large_100") == ["0"]  # the dense conv is left alone
    image = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(1, 2, 1, 1)
    with torch.no_grad():
        output = model[0](image)
    # 4x4 -> 2x2 with 1 pixel of padding at the bottom/right only: windows rows/cols [0:3] and [2:5]
    expected = torch.tensor([[45.0, 39.0], [66.0, 50.0]])
    assert torch.equal(output[0, 0], expected) and torch.equal(output[0, 1], expected)
    assert not model[0].weight.requires_grad and not model[0].training
    assert type(model[1]) is nn.Conv2d


def test_padding_adaptation_is_a_no_op_where_mindspore_pads_like_timm(caplog: pytest.LogCaptureFixture) -> None:
    model = nn.Sequential(nn.Conv2d(2, 2, kernel_size=3, stride=2, padding=1, groups=2))
    assert match_mindspore_padding(model, "mobilenet_v2_100") == []
    assert type(model[0]) is nn.Conv2d
    with caplog.at_level(logging.WARNING):
        assert match_mindspore_padding(model, "convnext_tiny") == []
    assert "known difference: MindSpore nn.GELU() defaults to the tanh approximation" in caplog.text
    with pytest.raises(UnknownArchitectureError, match="did you mean 'mobilenet_v2_100'"):
        match_mindspore_padding(model, "mobilenet_v2")
