"""Weight files of every format, prefix stripping, the load report and the wrong-architecture error."""

import pytest
import timm
import torch
from safetensors.torch import save_file

from visiontune.models.classification import ImageClassifier, load_classifier_weights
from visiontune.models.loading import WeightLoadError, read_weights, strip_prefixes


def test_strip_prefixes():
    cleaned = strip_prefixes({"module._orig_mod.conv.weight": 1, "module.fc.bias": 2, "fc.weight": 3})
    assert cleaned == {"conv.weight": 1, "fc.bias": 2, "fc.weight": 3}


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model", "model_ema"])
def test_read_pth_variants(tmp_path, wrapper):
    weights = {"module.a": torch.ones(2), "module.b": torch.zeros(1)}
    path = tmp_path / "w.pth"
    torch.save(weights if wrapper is None else {wrapper: weights, "epoch": 3}, path)
    assert set(read_weights(path)) == {"a", "b"}


def test_read_safetensors(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"_orig_mod.a": torch.ones(2)}, str(path))
    assert torch.equal(read_weights(path)["a"], torch.ones(2))


def test_read_errors(tmp_path):
    with pytest.raises(WeightLoadError, match=r"weights file not found: .*nope.pth"):
        read_weights(tmp_path / "nope.pth")
    path = tmp_path / "odd.pth"
    torch.save({"epoch": 1, "notes": {"x": 1}}, path)
    with pytest.raises(WeightLoadError, match=r"odd.pth: cannot find the weights"):
        read_weights(path)
    with pytest.raises(WeightLoadError, match=r"no entry 'ema'"):
        torch.save({"model": {"a": torch.ones(1)}}, path)
        read_weights(path, key="ema")


def test_head_reinitialised_on_class_count_change(tmp_path, caplog):
    torch.manual_seed(0)
    source = timm.create_model("resnet10t", num_classes=10)
    path = tmp_path / "r.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model = ImageClassifier(timm.create_model("resnet10t", num_classes=3))
    head_before = model.net.fc.weight.clone()
    with caplog.at_level("INFO"):
        report = load_classifier_weights(model, str(path))
    assert [name for name, _, _ in report.reinitialized] == ["fc.weight", "fc.bias"]
    assert report.backbone_fraction == 1.0 and not report.unexpected and not report.missing
    assert torch.equal(model.net.conv1[0].weight, source.conv1[0].weight)
    assert torch.equal(model.net.fc.weight, head_before)
    assert "re-initialised      2" in caplog.text


def test_wrong_architecture_fails_loudly(tmp_path):
    path = tmp_path / "mnv2.pth"
    torch.save(timm.create_model("mobilenetv2_100", num_classes=5).state_dict(), path)
    model = ImageClassifier(timm.create_model("resnet10t", num_classes=5))
    with pytest.raises(WeightLoadError, match=r"only 0/\d+ \(0.0%\) of the model's non-head tensors.*different "
                                              r"architecture"):
        load_classifier_weights(model, str(path))


def test_threshold_is_configurable(tmp_path):
    source = timm.create_model("resnet10t", num_classes=5).state_dict()
    partial = {k: v for i, (k, v) in enumerate(source.items()) if i % 2 == 0}
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    model = ImageClassifier(timm.create_model("resnet10t", num_classes=5))
    with pytest.raises(WeightLoadError):
        load_classifier_weights(model, str(path))
    report = load_classifier_weights(model, str(path), min_loaded_fraction=0.3)
    assert 0.3 < report.backbone_fraction < 0.7 and report.missing


def test_corrupt_visiontune_checkpoint_names_file_and_tensor(tmp_path):
    from visiontune.engine.checkpoint import atomic_save

    torch.manual_seed(0)
    weights = {"stem.weight": torch.randn(64, 3, 3, 3), "head.weight": torch.randn(10, 64)}
    path = atomic_save({"version": "0", "model": weights, "config": {"task": "classification"}}, tmp_path / "best.pt")
    assert torch.equal(read_weights(path)["head.weight"], weights["head.weight"])  # intact: reads as before
    data = bytearray(path.read_bytes())
    start = data.find(weights["stem.weight"].numpy().tobytes())
    assert start >= 0
    data[start:start + 2000] = bytes(byte ^ 0xFF for byte in data[start:start + 2000])  # 2000 flipped bytes
    path.write_bytes(bytes(data))
    with pytest.raises(WeightLoadError) as raised:
        read_weights(path)
    assert str(raised.value) == (
        f"{path} is corrupt: tensor model/stem.weight does not match the SHA-256 checksum stored when the file was "
        "written; use another copy or an earlier checkpoint")
