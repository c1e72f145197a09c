"""Name mapping MindCV -> timm and MindFace -> visiontune RetinaFace, both directions, and bad input."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from visiontune.interop.mindspore import (
    ArchitectureMismatchError,
    UnknownArchitectureError,
    check_state_dict_shapes,
    convert_mindspore_state_dict,
    get_mindspore_architecture,
    list_mindspore_architectures,
    read_mindspore_checkpoint,
    to_mindspore_state_dict,
)
from visiontune.models.retinaface.factory import create_retinaface

Shapes = dict[str, tuple[int, ...]]

TIMM_NAMES = {
    "mobilenet_v2_100": "mobilenetv2_100",
    "mobilenet_v3_small_100": "mobilenetv3_small_100",
    "mobilenet_v3_large_100": "mobilenetv3_large_100",
    "resnet50": "resnet50",
    "convnext_tiny": "convnext_tiny",
}


def zeros_like_shapes(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    return {name: np.zeros(shape, dtype=np.float32) for name, shape in shapes.items()}


def timm_shapes(model_name: str) -> Shapes:
    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False, num_classes=1000)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def batch_norm_leaves(module: str, channels: int, *, framework: str) -> Shapes:
    leaves = ("gamma", "beta", "moving_mean", "moving_variance") if framework == "mindspore" else (
        "weight", "bias", "running_mean", "running_var"
    )
    return {f"{module}.{leaf}": (channels,) for leaf in leaves}


# ---------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------


def test_registry_lists_every_architecture_and_accepts_timm_names() -> None:
    assert list_mindspore_architectures() == [
        "convnext_tiny",
        "mobilenet_v2_100",
        "mobilenet_v3_large_100",
        "mobilenet_v3_small_100",
        "resnet50",
        "resnet50_maskrcnn_backbone",
        "resnet50_modelzoo",
        "retinaface_mobilenet025",
        "retinaface_resnet50",
    ]
    assert get_mindspore_architecture("mobilenetv3_small_100").name == "mobilenet_v3_small_100"
    assert get_mindspore_architecture("MobileNet_V2_100").target == "timm mobilenetv2_100"
    assert get_mindspore_architecture("retinaface_mobilenet0.25").target_name == "mobilenet0.25"


def test_unknown_architecture_suggests_close_names() -> None:
    message = "unknown MindSpore architecture 'mobilenet_v3_smal_100'; did you mean 'mobilenet_v3_small_100'"
    with pytest.raises(UnknownArchitectureError, match=message):
        convert_mindspore_state_dict({}, "mobilenet_v3_smal_100")
    with pytest.raises(UnknownArchitectureError, match="'vit_base'.* Supported: convnext_tiny, mobilenet_v2_100"):
        to_mindspore_state_dict({}, "vit_base")


# ---------------------------------------------------------------------------------------------------
# Structural MobileNet rules on hand-written names
# ---------------------------------------------------------------------------------------------------


def tiny_mindcv_mobilenet_v3() -> Shapes:
    """A 3-block MindCV MobileNetV3 layout: DS block with SE, IR block, IR block with SE (same width)."""
    shapes: Shapes = {"features.0.weight": (4, 3, 3, 3), **batch_norm_leaves("features.1", 4, framework="mindspore")}
    # block 3 = depthwise-separable: dw conv, norm, act, SE, pw conv, norm
    shapes["features.3.layers.0.weight"] = (4, 1, 3, 3)
    shapes.update(batch_norm_leaves("features.3.layers.1", 4, framework="mindspore"))
    shapes.update({
        "features.3.layers.3.conv_reduce.weight": (2, 4, 1, 1), "features.3.layers.3.conv_reduce.bias": (2,),
        "features.3.layers.3.conv_expand.weight": (4, 2, 1, 1), "features.3.layers.3.conv_expand.bias": (4,),
        "features.3.layers.4.weight": (8, 4, 1, 1),
    })
    shapes.update(batch_norm_leaves("features.3.layers.5", 8, framework="mindspore"))
    # block 4 = inverted residual without SE: pw, norm, act, dw, norm, act, pwl, norm
    shapes["features.4.layers.0.weight"] = (12, 8, 1, 1)
    shapes.update(batch_norm_leaves("features.4.layers.1", 12, framework="mindspore"))
    shapes["features.4.layers.3.weight"] = (12, 1, 3, 3)
    shapes.update(batch_norm_leaves("features.4.layers.4", 12, framework="mindspore"))
    shapes["features.4.layers.6.weight"] = (6, 12, 1, 1)
    shapes.update(batch_norm_leaves("features.4.layers.7", 6, framework="mindspore"))
    # block 5 = inverted residual with SE after the depthwise activation; same width 6 -> same timm stage
    shapes["features.5.layers.0.weight"] = (18, 6, 1, 1)
    shapes.update(batch_norm_leaves("features.5.layers.1", 18, framework="mindspore"))
    shapes["features.5.layers.3.weight"] = (18, 1, 5, 5)
    shapes.update(batch_norm_leaves("features.5.layers.4", 18, framework="mindspore"))
    shapes.update({
        "features.5.layers.6.conv_reduce.weight": (8, 18, 1, 1), "features.5.layers.6.conv_reduce.bias": (8,),
        "features.5.layers.6.conv_expand.weight": (18, 8, 1, 1), "features.5.layers.6.conv_expand.bias": (18,),
        "features.5.layers.7.weight": (6, 18, 1, 1),
    })
    shapes.update(batch_norm_leaves("features.5.layers.8", 6, framework="mindspore"))
    shapes["features.6.weight"] = (36, 6, 1, 1)
    shapes.update(batch_norm_leaves("features.7", 36, framework="mindspore"))
    shapes.update({
        "classifier.0.weight": (16, 36), "classifier.0.bias": (16,),
        "classifier.3.weight": (10, 16), "classifier.3.bias": (10,),
    })
    return shapes


def test_mobilenet_v3_rules_on_a_hand_written_layout() -> None:
    shapes = tiny_mindcv_mobilenet_v3()
    state_dict, report = convert_mindspore_state_dict(zeros_like_shapes(shapes), "mobilenet_v3_small_100")
    weights = {source: target for source, target in report.renamed.items() if source.endswith((".weight", ".gamma"))}
    assert weights == {
        "features.0.weight": "conv_stem.weight",
        "features.1.gamma": "bn1.weight",
        "features.3.layers.0.weight": "blocks.0.0.conv_dw.weight",
        "features.3.layers.1.gamma": "blocks.0.0.bn1.weight",
        "features.3.layers.3.conv_reduce.weight": "blocks.0.0.se.conv_reduce.weight",
        "features.3.layers.3.conv_expand.weight": "blocks.0.0.se.conv_expand.weight",
        "features.3.layers.4.weight": "blocks.0.0.conv_pw.weight",
        "features.3.layers.5.gamma": "blocks.0.0.bn2.weight",
        "features.4.layers.0.weight": "blocks.1.0.conv_pw.weight",
        "features.4.layers.1.gamma": "blocks.1.0.bn1.weight",
        "features.4.layers.3.weight": "blocks.1.0.conv_dw.weight",
        "features.4.layers.4.gamma": "blocks.1.0.bn2.weight",
        "features.4.layers.6.weight": "blocks.1.0.conv_pwl.weight",
        "features.4.layers.7.gamma": "blocks.1.0.bn3.weight",
        "features.5.layers.0.weight": "blocks.1.1.conv_pw.weight",
        "features.5.layers.1.gamma": "blocks.1.1.bn1.weight",
        "features.5.layers.3.weight": "blocks.1.1.conv_dw.weight",
        "features.5.layers.4.gamma": "blocks.1.1.bn2.weight",
        "features.5.layers.6.conv_reduce.weight": "blocks.1.1.se.conv_reduce.weight",
        "features.5.layers.6.conv_expand.weight": "blocks.1.1.se.conv_expand.weight",
        "features.5.layers.7.weight": "blocks.1.1.conv_pwl.weight",
        "features.5.layers.8.gamma": "blocks.1.1.bn3.weight",
        "features.6.weight": "blocks.2.0.conv.weight",
        "features.7.gamma": "blocks.2.0.bn1.weight",
        "classifier.0.weight": "conv_head.weight",
        "classifier.3.weight": "classifier.weight",
    }
    assert report.renamed["features.7.moving_variance"] == "blocks.2.0.bn1.running_var"
    assert report.renamed["classifier.0.bias"] == "conv_head.bias"
    assert report.reshaped == {"conv_head.weight": ((16, 36), (16, 36, 1, 1))}
    assert state_dict["conv_head.weight"].shape == (16, 36, 1, 1)
    # 10 BatchNorms (stem 1 + blocks 2 + 3 + 3 + head 1) get a num_batches_tracked counter of 0
    counters = {name: tensor for name, tensor in state_dict.items() if name.endswith("num_batches_tracked")}
    assert len(counters) == 10 == len(report.added)
    assert all(tensor.dtype == torch.int64 and tensor.item() == 0 for tensor in counters.values())
    # and back: exactly the original names, shapes and order
    back = to_mindspore_state_dict(state_dict, "mobilenet_v3_small_100")
    assert [(name, array.shape) for name, array in back.items()] == list(shapes.items())


def test_mobilenet_v2_head_is_conv_head_bn2_classifier() -> None:
    shapes: Shapes = {"features.0.weight": (4, 3, 3, 3), **batch_norm_leaves("features.1", 4, framework="mindspore")}
    shapes["features.3.layers.0.weight"] = (4, 1, 3, 3)
    shapes.update(batch_norm_leaves("features.3.layers.1", 4, framework="mindspore"))
    shapes["features.3.layers.3.weight"] = (8, 4, 1, 1)
    shapes.update(batch_norm_leaves("features.3.layers.4", 8, framework="mindspore"))
    shapes["features.4.weight"] = (32, 8, 1, 1)
    shapes.update(batch_norm_leaves("features.5", 32, framework="mindspore"))
    shapes.update({"classifier.1.weight": (10, 32), "classifier.1.bias": (10,)})
    state_dict, report = convert_mindspore_state_dict(zeros_like_shapes(shapes), "mobilenet_v2_100")
    assert report.renamed["features.3.layers.3.weight"] == "blocks.0.0.conv_pw.weight"
    assert report.renamed["features.3.layers.4.moving_mean"] == "blocks.0.0.bn2.running_mean"
    assert report.renamed["features.4.weight"] == "conv_head.weight"
    assert report.renamed["features.5.beta"] == "bn2.bias"
    assert report.renamed["classifier.1.weight"] == "classifier.weight"
    assert report.reshaped == {}
    assert list(to_mindspore_state_dict(state_dict, "mobilenet_v2_100")) == list(shapes)


# ---------------------------------------------------------------------------------------------------
# Every real parameter list maps completely, both ways
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(TIMM_NAMES))
def test_mindcv_parameter_lists_cover_the_timm_models(
    read_params_txt: Callable[[str], Shapes], arch: str
) -> None:
    shapes = read_params_txt(arch)
    expected = timm_shapes(TIMM_NAMES[arch])
    state_dict, report = convert_mindspore_state_dict(zeros_like_shapes(shapes), arch, expected_shapes=expected)
    assert set(report.renamed) == set(shapes) and not report.skipped
    assert {name: tuple(tensor.shape) for name, tensor in state_dict.items()} == expected
    back = to_mindspore_state_dict(state_dict, arch)
    assert {name: array.shape for name, array in back.items()} == shapes


def test_mindcv_family_specific_names(read_params_txt: Callable[[str], Shapes]) -> None:
    _, convnext = convert_mindspore_state_dict(zeros_like_shapes(read_params_txt("convnext_tiny")), "convnext_tiny")
    assert {name: convnext.renamed[name] for name in (
        "feature.0.0.weight", "feature.0.1.gamma", "feature.1.2.gamma_", "feature.3.0.norm.beta",
        "feature.3.0.pwconv1.weight", "feature.3.0.dwconv.bias", "feature.4.0.gamma", "feature.4.1.weight",
        "norm.gamma", "classifier.bias",
    )} == {
        "feature.0.0.weight": "stem.0.weight",
        "feature.0.1.gamma": "stem.1.weight",
        "feature.1.2.gamma_": "stages.0.blocks.2.gamma",
        "feature.3.0.norm.beta": "stages.1.blocks.0.norm.bias",
        "feature.3.0.pwconv1.weight": "stages.1.blocks.0.mlp.fc1.weight",
        "feature.3.0.dwconv.bias": "stages.1.blocks.0.conv_dw.bias",
        "feature.4.0.gamma": "stages.2.downsample.0.weight",
        "feature.4.1.weight": "stages.2.downsample.1.weight",
        "norm.gamma": "head.norm.weight",
        "classifier.bias": "head.fc.bias",
    }
    assert not convnext.added  # LayerNorm has no running statistics
    _, resnet = convert_mindspore_state_dict(zeros_like_shapes(read_params_txt("resnet50")), "resnet50")
    assert resnet.renamed["layer3.0.down_sample.1.moving_variance"] == "layer3.0.downsample.1.running_var"
    assert resnet.renamed["layer4.2.conv3.weight"] == "layer4.2.conv3.weight"
    assert resnet.renamed["classifier.weight"] == "fc.weight"


def test_retinaface_resnet50_parameter_list_covers_the_visiontune_model(
    read_params_txt: Callable[[str], Shapes]
) -> None:
    shapes = read_params_txt("retinaface_resnet50")
    model = create_retinaface("resnet50")
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    state_dict, report = convert_mindspore_state_dict(
        zeros_like_shapes(shapes), "retinaface_resnet50", expected_shapes=expected
    )
    assert report.skipped == {
        "base.end_point.weight": "ImageNet classifier of the backbone; the detector does not use it",
        "base.end_point.bias": "ImageNet classifier of the backbone; the detector does not use it",
    }
    assert report.renamed["base.layer2.0.down_sample_layer.0.weight"] == "body.layer2.0.downsample.0.weight"
    assert report.renamed["ssh3.conv5x5_2.1.moving_mean"] == "ssh3.conv5X5_2.1.running_mean"
    assert report.renamed["landmarkhead.1.conv1x1.bias"] == "LandmarkHead.1.conv1x1.bias"
    model.load_state_dict(state_dict, strict=True)
    back = to_mindspore_state_dict(state_dict, "retinaface_resnet50")
    without_classifier = {name: shape for name, shape in shapes.items() if not name.startswith("base.end_point.")}
    assert {name: array.shape for name, array in back.items()} == without_classifier


def test_retinaface_mobilenet_checkpoint_matches_the_reference_state_dict(
    mindspore_dir: Path, fixtures_dir: Path, read_params_txt: Callable[[str], Shapes]
) -> None:
    reference = torch.load(
        fixtures_dir / "retinaface" / "mobilenet0.25_Final.pth", map_location="cpu", weights_only=True
    )
    reference = {name.removeprefix("module."): tensor for name, tensor in reference.items()}
    reference_shapes = {name: tuple(tensor.shape) for name, tensor in reference.items()}
    tensors = read_mindspore_checkpoint(mindspore_dir / "retinaface_mobilenet025.ckpt")
    state_dict, report = convert_mindspore_state_dict(tensors, "retinaface_mobilenet025")
    check_state_dict_shapes({name: tensor.shape for name, tensor in state_dict.items()}, reference_shapes, arch="ref")
    assert set(report.skipped) == {"base.fc.weight", "base.fc.bias"}
    assert report.renamed["ssh1.conv3x3.0.weight"] == "ssh1.conv3X3.0.weight"
    assert report.renamed["ssh2.conv7x7_2.1.gamma"] == "ssh2.conv7X7_2.1.weight"
    assert report.renamed["ssh2.conv7x7_3.1.gamma"] == "ssh2.conv7x7_3.1.weight"  # the reference's lower-case x
    assert report.renamed["classhead.0.conv1x1.weight"] == "ClassHead.0.conv1x1.weight"
    assert report.renamed["base.stage2.3.4.moving_variance"] == "body.stage2.3.4.running_var"
    np.testing.assert_array_equal(state_dict["body.stage1.0.0.weight"].numpy(), tensors["base.stage1.0.0.weight"])
    np.testing.assert_array_equal(
        state_dict["fpn.merge1.1.running_var"].numpy(), tensors["fpn.merge1.1.moving_variance"]
    )
    # the reference PyTorch weights export to exactly MindFace's names (minus the unused backbone classifier)
    exported = to_mindspore_state_dict(reference, "retinaface_mobilenet025")
    mindface_shapes = {name: shape for name, shape in read_params_txt("retinaface_mobilenet025").items()}
    del mindface_shapes["base.fc.weight"], mindface_shapes["base.fc.bias"]
    assert {name: array.shape for name, array in exported.items()} == mindface_shapes
    np.testing.assert_array_equal(exported["bboxhead.2.conv1x1.bias"], reference["BboxHead.2.conv1x1.bias"].numpy())


# ---------------------------------------------------------------------------------------------------
# Training checkpoints
# ---------------------------------------------------------------------------------------------------


def test_training_checkpoint_prefixes_and_optimizer_state(read_params_txt: Callable[[str], Shapes]) -> None:
    shapes = read_params_txt("mobilenet_v2_100")
    plain = zeros_like_shapes(shapes)
    training = {}
    for index, (name, array) in enumerate(plain.items()):
        prefix = ("network.", "network.network.", "network._backbone.", "")[index % 4]
        training[prefix + name] = array
    training["moments.features.0.weight"] = np.zeros(shapes["features.0.weight"], dtype=np.float32)
    training["adam_m.classifier.1.weight"] = np.zeros(shapes["classifier.1.weight"], dtype=np.float32)
    training["learning_rate"] = np.array(0.1, dtype=np.float32)
    training["global_step"] = np.array(100, dtype=np.int32)
    training["network.momentum"] = np.array(0.9, dtype=np.float32)
    training["random_op"] = np.frombuffer(b"rng", dtype=np.uint8)
    state_dict, report = convert_mindspore_state_dict(training, "mobilenet_v2_100")
    reference, _ = convert_mindspore_state_dict(plain, "mobilenet_v2_100")
    assert list(state_dict) == list(reference)
    assert report.skipped == {
        "moments.features.0.weight": "Momentum optimizer state",
        "adam_m.classifier.1.weight": "AdamWeightDecay first-moment estimate",
        "learning_rate": "training state, not a model weight",
        "global_step": "training state, not a model weight",
        "network.momentum": "training state, not a model weight",
        "random_op": "MindSpore random-number generator state",
    }
    assert report.stripped_prefixes["network.features.0.weight"] == "network."
    assert report.stripped_prefixes["network.network.features.1.moving_mean"] == "network.network."
    assert report.stripped_prefixes["network._backbone.features.1.moving_variance"] == "network._backbone."
    assert len(report.stripped_prefixes) == sum(1 for index in range(len(shapes)) if index % 4 != 3)
    assert "skipped 1 (Momentum optimizer state)" in report.summary()


def test_checkpoint_with_only_training_state() -> None:
    tensors = {"learning_rate": np.array(0.1), "moments.features.0.weight": np.zeros((2, 3, 3, 3))}
    message = "no model parameters to convert for 'mobilenet_v2_100': the checkpoint has 2 entries, 2 of them"
    with pytest.raises(ArchitectureMismatchError, match=message):
        convert_mindspore_state_dict(tensors, "mobilenet_v2_100")


def test_names_that_collide_after_prefix_stripping() -> None:
    tensors = {"features.0.weight": np.zeros(1), "network.features.0.weight": np.zeros(1)}
    with pytest.raises(ValueError, match="'features.0.weight' and 'network.features.0.weight' both give parameter"):
        convert_mindspore_state_dict(tensors, "mobilenet_v2_100")


# ---------------------------------------------------------------------------------------------------
# Checkpoints of another architecture
# ---------------------------------------------------------------------------------------------------


def test_checkpoint_of_another_family_is_rejected_with_examples(read_params_txt: Callable[[str], Shapes]) -> None:
    tensors = zeros_like_shapes(read_params_txt("mobilenet_v2_100"))
    message = (
        "262 of 262 parameter names do not fit architecture 'resnet50' \\(MindCV resnet50 -> timm resnet50\\), "
        "e.g. features.0.weight, features.1.moving_mean, .* \\(257 more\\)\\. The names fit the rules of "
        "'mobilenet_v2_100' / 'mobilenet_v3_small_100' / 'mobilenet_v3_large_100'"
    )
    with pytest.raises(ArchitectureMismatchError, match=message):
        convert_mindspore_state_dict(tensors, "resnet50")


def test_retinaface_checkpoint_given_a_classifier_architecture(mindspore_dir: Path) -> None:
    tensors = read_mindspore_checkpoint(mindspore_dir / "retinaface_mobilenet025.ckpt")
    message = "255 of 255 parameter names do not fit architecture 'convnext_tiny'.*'retinaface_mobilenet025'"
    with pytest.raises(ArchitectureMismatchError, match=message):
        convert_mindspore_state_dict(tensors, "convnext_tiny")
    message = "\\d+ of 255 parameter names do not fit architecture 'retinaface_resnet50'"
    with pytest.raises(ArchitectureMismatchError, match=message):
        convert_mindspore_state_dict(tensors, "retinaface_resnet50")


def test_partial_mismatch_counts_only_the_unknown_names(read_params_txt: Callable[[str], Shapes]) -> None:
    tensors = zeros_like_shapes(read_params_txt("resnet50"))
    tensors["layer1.0.attention.weight"] = np.zeros((4, 4), dtype=np.float32)
    message = "1 of 268 parameter names do not fit architecture 'resnet50'.*e.g. layer1.0.attention.weight$"
    with pytest.raises(ArchitectureMismatchError, match=message):
        convert_mindspore_state_dict(tensors, "resnet50")


def test_same_family_other_size_is_caught_by_expected_shapes(mindspore_dir: Path) -> None:
    tensors = read_mindspore_checkpoint(mindspore_dir / "mobilenet_v3_small_100.ckpt")
    expected = timm_shapes("mobilenetv3_large_100")
    message = (
        "does not match the mobilenet_v3_large_100 model: 103 missing \\(blocks.3.2.conv_pw.weight, .*\\); "
        "35 unexpected \\(blocks.0.0.se.conv_reduce.weight, .*\\); 141 with a different shape "
        "\\(blocks.1.0.conv_pw.weight \\[72, 16, 1, 1\\] vs expected \\[64, 16, 1, 1\\]"
    )
    with pytest.raises(ArchitectureMismatchError, match=message):
        convert_mindspore_state_dict(tensors, "mobilenetv3_large_100", expected_shapes=expected)


def test_torch_names_of_another_model_cannot_be_exported() -> None:
    state_dict = {"conv1.weight": torch.zeros(2, 3, 7, 7), "fc.weight": torch.zeros(10, 2)}
    message = "2 of 2 parameter names do not fit architecture 'mobilenet_v2_100'"
    with pytest.raises(ArchitectureMismatchError, match=message):
        to_mindspore_state_dict(state_dict, "mobilenet_v2_100")


def test_export_converts_dtypes_and_drops_batch_norm_counters() -> None:
    state_dict = {
        "conv1.weight": torch.ones(2, 3, 7, 7, dtype=torch.bfloat16),
        "bn1.weight": torch.ones(2),
        "bn1.bias": torch.zeros(2),
        "bn1.running_mean": torch.zeros(2),
        "bn1.running_var": torch.ones(2),
        "bn1.num_batches_tracked": torch.tensor(7),
        "fc.weight": torch.zeros(10, 2, requires_grad=True),
    }
    exported = to_mindspore_state_dict(state_dict, "resnet50")
    assert list(exported) == [
        "conv1.weight", "bn1.gamma", "bn1.beta", "bn1.moving_mean", "bn1.moving_variance", "classifier.weight"
    ]
    assert exported["conv1.weight"].dtype == np.float32
    exported["bn1.gamma"][0] = 5.0  # a copy: the model is untouched
    assert state_dict["bn1.weight"][0] == 1.0
