"""model.pretrained without network: the cache is used when it holds the weights, otherwise one quick probe and a
one-line error (never the hub's minute of retries). No test here contacts the network."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from visiontune.cli import main
from visiontune.models.classification import create_timm_model
from visiontune.models.loading import WeightLoadError
from visiontune.utils import hub

REPO = "timm/test_resnet.r160_in1k"  # test_resnet's hf_hub_id


@pytest.fixture()
def no_network(monkeypatch, tmp_path: Path) -> list[str]:
    """Empty hub caches, no connection ever opened, and a probe that says the host cannot be reached (the hosts it
    was asked about are recorded)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    probed: list[str] = []

    def unreachable(host: str, **kwargs) -> bool:
        probed.append(host)
        return False

    monkeypatch.setattr(hub, "hub_reachable", unreachable)
    return probed


def test_unreachable_hub_fails_in_seconds_with_one_line(no_network: list[str], tmp_path: Path):
    start = time.perf_counter()
    with pytest.raises(WeightLoadError) as caught:
        create_timm_model("test_resnet", num_classes=3, pretrained=True)
    assert time.perf_counter() - start < 5.0
    assert no_network == ["huggingface.co"]  # probed once
    assert str(caught.value) == (
        f"model.pretrained: huggingface.co cannot be reached and the pretrained weights of 'test_resnet' are not "
        f"cached ({REPO} in {tmp_path / 'hf'}): pass a local weight file with model.checkpoint=<file> (.pth, "
        ".safetensors or MindSpore .ckpt), or start from random weights with model.pretrained=false")


def test_hf_hub_offline_fails_without_probing(no_network: list[str], monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightLoadError, match=r"^model\.pretrained: HF_HUB_OFFLINE is set and the pretrained weights "
                                              r"of 'test_resnet' are not cached"):
        create_timm_model("test_resnet", num_classes=3, pretrained=True)
    assert no_network == []


def test_cached_weights_load_without_any_hub_request(no_network: list[str], tmp_path: Path):
    reference = timm.create_model("test_resnet", num_classes=1000)
    snapshot = tmp_path / "hf" / f"models--{REPO.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(snapshot / "model.safetensors"))
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    model = create_timm_model("test_resnet", num_classes=1000, pretrained=True)
    assert no_network == []
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_train_with_pretrained_offline_prints_one_line(no_network: list[str], tiny_shapes: Path, tmp_path: Path,
                                                       capsys):
    code = main(["train", "task=classification", "device=cpu", f"data.root={tiny_shapes}", "model.name=test_resnet",
                 "model.pretrained=true", "data.image_size=32", "data.num_workers=0", "train.progress=false",
                 f"project={tmp_path / 'runs'}"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "visiontune train: error: model.pretrained: huggingface.co cannot be reached and the pretrained weights of "
        "'test_resnet' are not cached")
    assert no_network == ["huggingface.co"]
