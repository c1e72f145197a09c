"""Freezing (requires_grad and BatchNorm eval) and per-layer learning rates."""

import logging

import pytest
import timm
import torch
from torch import nn

from visiontune.config import ConfigError
from visiontune.engine.finetune import (
    ModelParts,
    build_param_groups,
    freeze_parameters,
    frozen_batchnorm_names,
    set_frozen_batchnorm_eval,
    warn_frozen_random_weights,
    warn_unused_unfreeze,
)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.stage = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.stage(self.stem(x)).mean((2, 3)))


def tiny_parts(model):
    names = [n for n, _ in model.named_parameters()]
    return ModelParts(head=["head"], layer_groups=[[n for n in names if n.startswith("stem")],
                                                  [n for n in names if n.startswith("stage")]])


def test_backbone_freeze_keeps_bn_statistics_bit_identical():
    torch.manual_seed(0)
    model = Tiny()
    frozen = freeze_parameters(model, "backbone", None, tiny_parts(model))
    assert frozen and all(not name.startswith("head") for name in frozen)
    assert frozen_batchnorm_names(model) == ["stem.1", "stage.1"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    assert set_frozen_batchnorm_eval(model) == 2
    for _ in range(3):
        loss = model(torch.randn(4, 3, 8, 8)).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = model.state_dict()
    for key, value in before.items():
        if key.startswith("head"):
            assert not torch.equal(value, after[key]), key
        else:
            assert torch.equal(value, after[key]), key  # weights AND running stats / num_batches_tracked


def test_requires_grad_alone_lets_bn_drift():
    """The failure mode we fix: frozen params but BN in train mode still updates its buffers."""
    model = Tiny()
    freeze_parameters(model, "backbone", None, tiny_parts(model))
    before = model.stem[1].running_mean.clone()
    model.train()
    model(torch.randn(4, 3, 8, 8))
    assert not torch.equal(before, model.stem[1].running_mean)


def test_first_n_and_regex():
    model = Tiny()
    frozen = freeze_parameters(model, "first_n", 1, tiny_parts(model))
    assert frozen == sorted(n for n, _ in model.named_parameters() if n.startswith("stem"))
    model = Tiny()
    assert freeze_parameters(model, "regex", [r"^stage\.0"], tiny_parts(model)) == ["stage.0.bias", "stage.0.weight"]
    with pytest.raises(ValueError, match=r"pattern 'nothing' matches no parameter name"):
        freeze_parameters(Tiny(), "regex", ["nothing"], tiny_parts(model))
    with pytest.raises(ValueError, match=r"first_n=5 but the model has only 2 layer groups"):
        freeze_parameters(Tiny(), "first_n", 5, tiny_parts(model))


def test_param_groups_head_mult_regex_and_no_decay():
    model = Tiny()
    groups = build_param_groups(model, lr=0.1, weight_decay=1e-4, parts=tiny_parts(model), head_lr_mult=1.2,
                                lr_mults={r"^stage": 1.1})
    by_name = {name: (g["lr"], g["weight_decay"]) for g in groups for name in g["names"]}
    assert by_name["head.weight"] == (pytest.approx(0.12), 1e-4)
    assert by_name["head.bias"] == (pytest.approx(0.12), 0.0)
    assert by_name["stage.0.weight"] == (pytest.approx(0.11), 1e-4)
    assert by_name["stage.1.weight"] == (pytest.approx(0.11), 0.0)  # BN weight: no decay
    assert by_name["stem.0.weight"] == (pytest.approx(0.1), 1e-4)


def test_layer_decay_matches_formula():
    model = Tiny()
    groups = build_param_groups(model, lr=1.0, weight_decay=0.0, parts=tiny_parts(model), layer_decay=0.5)
    lr = {name: g["lr"] for g in groups for name in g["names"]}
    assert lr["head.weight"] == pytest.approx(1.0)
    assert lr["stage.0.weight"] == pytest.approx(0.5)  # layer 1 of L=2: 0.5 ** (2 - 1)
    assert lr["stem.0.weight"] == pytest.approx(0.25)  # layer 0: 0.5 ** 2


def test_timm_classifier_linear_probe_parts():
    from visiontune.config import load_config
    from visiontune.models.classification import ImageClassifier
    from visiontune.tasks.classification import ClassificationTask

    task = ClassificationTask(load_config(None, ["model.name=mobilenetv2_100", "model.num_classes=3"]))
    model = ImageClassifier(timm.create_model("mobilenetv2_100", num_classes=3))
    parts = task.model_parts(model)
    assert parts.head == ["net.classifier"]
    assert parts.layer_groups[0][0] == "net.conv_stem.weight"
    frozen = freeze_parameters(model, "backbone", None, parts)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["net.classifier.weight", "net.classifier.bias"]
    assert len(frozen) == len(list(model.parameters())) - 2


def mobilenet_and_parts():
    from visiontune.config import load_config
    from visiontune.models.classification import ImageClassifier
    from visiontune.tasks.classification import ClassificationTask

    task = ClassificationTask(load_config(None, ["model.name=mobilenetv2_100", "model.num_classes=3"]))
    model = ImageClassifier(timm.create_model("mobilenetv2_100", num_classes=3))
    return model, task.model_parts(model)


def test_mindcv_lr_mults_pattern_on_timm_model_is_an_error_listing_the_modules():
    """MindCV names (features.13 ...) match nothing in timm's MobileNetV2: no silent run without the multiplier."""
    model, parts = mobilenet_and_parts()
    with pytest.raises(ConfigError) as caught:
        build_param_groups(model, lr=0.1, weight_decay=0.0, parts=parts, lr_mults={r"features\.1[345]": 0.1})
    assert str(caught.value) == (
        r"finetune.lr_mults: pattern 'features\.1[345]' matches no parameter name of the model; the model's modules: "
        "net.conv_stem, net.bn1, net.blocks.0-6, net.conv_head, net.bn2, net.classifier")


def test_freeze_pattern_matching_nothing_suggests_close_module_names():
    model, parts = mobilenet_and_parts()
    with pytest.raises(ConfigError, match=r"^finetune\.freeze: pattern 'conv_stm' matches no parameter name of the "
                                          r"model; did you mean 'net\.conv_stem'\?$"):
        freeze_parameters(model, "regex", ["conv_stm"], parts)
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ConfigError, match=r"did you mean 'net\.blocks\.6' or 'net\.blocks\.5'"):
        build_param_groups(model, lr=0.1, weight_decay=0.0, parts=parts, lr_mults={r"^net\.blocks\.9": 0.1})


def test_lr_mults_pattern_shadowed_by_an_earlier_one_is_an_error():
    model = Tiny()
    with pytest.raises(ConfigError, match=r"^finetune\.lr_mults: pattern 'stage\\\.0' only matches parameters that the "
                                          r"earlier pattern 'stage' already sets \(the first matching pattern wins\)"):
        build_param_groups(model, lr=0.1, weight_decay=0.0, parts=tiny_parts(model),
                           lr_mults={"stage": 0.5, r"stage\.0": 0.1})
    groups = build_param_groups(model, lr=0.1, weight_decay=0.0, parts=tiny_parts(model),
                                lr_mults={r"stage\.0": 0.1, "stage": 0.5})  # the specific one first: both apply
    lr = {name: g["lr"] for g in groups for name in g["names"]}
    assert lr["stage.0.weight"] == pytest.approx(0.01) and lr["stage.1.weight"] == pytest.approx(0.05)


def test_layer_decay_without_layer_groups_is_an_error():
    model = Tiny()
    with pytest.raises(ConfigError, match=r"^finetune\.layer_decay=0\.5: this model has no layer groups"):
        build_param_groups(model, lr=1.0, weight_decay=0.0, parts=ModelParts(head=["head"]), layer_decay=0.5)


def test_freezing_random_weights_warns_once(caplog):
    model = Tiny()
    frozen = freeze_parameters(model, "backbone", None, tiny_parts(model))
    with caplog.at_level(logging.WARNING, logger="visiontune.engine.finetune"):
        assert not warn_frozen_random_weights(model, frozen, random_weights=False)
        assert caplog.messages == []
        assert warn_frozen_random_weights(model, frozen, random_weights=True)
    assert caplog.messages == [
        "8 frozen parameter tensors (e.g. stem.0.weight) keep their random initial values and never learn: load "
        "weights (model.pretrained=true or model.checkpoint=<file>) or train every layer (finetune.freeze=none)"]


def test_trainer_warns_for_frozen_random_layers_not_for_loaded_weights(tiny_config, tmp_path, caplog):
    from visiontune.engine.trainer import Trainer

    with caplog.at_level(logging.WARNING):
        trainer = Trainer(tiny_config("finetune.freeze=backbone", "model.pretrained=false"))
        trainer.setup()
    warned = [m for m in caplog.messages if "keep their random initial values and never learn" in m]
    assert len(warned) == 1 and warned[0].startswith(f"{len(trainer.frozen_names)} frozen parameter tensors")
    weights = tmp_path / "start.pth"
    torch.save(trainer.model.state_dict(), weights)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        Trainer(tiny_config("finetune.freeze=backbone", f"model.checkpoint={weights}", "name=loaded")).setup()
    assert not [m for m in caplog.messages if "never learn" in m]


def test_unfreeze_at_epoch_that_does_nothing_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="visiontune.engine.finetune"):
        assert not warn_unused_unfreeze(None, epochs=5, frozen_names=[])
        assert not warn_unused_unfreeze(2, epochs=5, frozen_names=["stem.0.weight"])
        assert caplog.messages == []
        assert warn_unused_unfreeze(2, epochs=5, frozen_names=[])
        assert warn_unused_unfreeze(5, epochs=5, frozen_names=["stem.0.weight"])
    assert caplog.messages == [
        "finetune.unfreeze_at_epoch=2 has no effect: finetune.freeze froze no layer (set finetune.freeze, or remove "
        "the key)",
        "finetune.unfreeze_at_epoch=5 has no effect: the run ends after epoch 4 (train.epochs=5), so the frozen "
        "layers never train"]


def test_trainer_warns_for_unfreeze_without_freeze(tiny_config, caplog):
    from visiontune.engine.trainer import Trainer

    with caplog.at_level(logging.WARNING):
        Trainer(tiny_config("finetune.unfreeze_at_epoch=1")).setup()
    assert "finetune.unfreeze_at_epoch=1 has no effect: finetune.freeze froze no layer" in caplog.text
