"""Mask R-CNN: the traced resize, export and parity, and ONNX prediction against the task's PyTorch prediction.

A ResNet-50 Mask R-CNN takes ~30 s to trace on two CPU cores, so these tests use a torchvision ``MaskRCNN`` with a
three-layer backbone (same RPN, RoI heads, NMS and mask pasting code) inside the real instance segmentation task.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign

from visiontune.config import load_config
from visiontune.data.synthetic_coco import make_synthetic_coco
from visiontune.export import ExportOptions, export_model, predict_onnx
from visiontune.export.wrappers import resize_like_torchvision
from visiontune.tasks import create_task

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

IMAGE_SIZE = (96, 128)
"""Synthetic image size, equal to ``min_size`` x ``max_size``: the model keeps it, so eager and ONNX Runtime see
identical pixels and every detection (not just the confident ones) must agree."""


class TinyBackbone(nn.Sequential):
    """Three strided convolutions, 32 channels at stride 8."""

    def __init__(self) -> None:
        super().__init__(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU())
        self.out_channels = 32


def tiny_maskrcnn(num_classes: int) -> MaskRCNN:
    torch.manual_seed(0)
    model = MaskRCNN(
        TinyBackbone(), num_classes=None, min_size=IMAGE_SIZE[0], max_size=IMAGE_SIZE[1],
        rpn_anchor_generator=AnchorGenerator(((16, 32, 64),), ((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2),
        box_head=TwoMLPHead(32 * 7 * 7, 64), box_predictor=FastRCNNPredictor(64, num_classes),
        mask_head=MaskRCNNHeads(32, [32, 32], 1), mask_predictor=MaskRCNNPredictor(32, 32, num_classes),
        rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100, box_detections_per_img=30, box_score_thresh=0.05,
    )
    with torch.no_grad():  # spread class scores (not all tied near 1 / num_classes) and mask logits (not all < 0)
        model.roi_heads.box_predictor.cls_score.weight.normal_(0.0, 0.5)
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.normal_(0.0, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export_coco")
    make_synthetic_coco(root, num_images=3, image_size=IMAGE_SIZE, split="train", seed=0, with_crowd=False)
    return root


def make_task(coco_root: Path, *overrides: str):
    config = load_config(None, [
        "task=instance_segmentation", "model.name=maskrcnn_resnet50_fpn", "data.format=coco", f"data.root={coco_root}",
        "data.train_split=annotations/instances_train.json", "data.val_split=null", "data.images_dir=train",
        f"segmentation.min_size={IMAGE_SIZE[0]}", f"segmentation.max_size={IMAGE_SIZE[1]}", "train.progress=false",
        *overrides])
    task = create_task(config)
    task.build_dataset(config.data.train_split, train=False)  # class names and COCO category ids
    # the model settings a checkpoint's meta carries (load_meta needs them; the tiny stand-in has no ResNet-50)
    task.meta.update(variant="v1", frozen_batchnorm=False, frozen_batchnorm_eps=1e-5, trainable_backbone_layers=5)
    return task


@pytest.fixture(scope="module")
def strict_export(coco_root, tmp_path_factory):
    """Static 96x128 export; ``segmentation.vis_thresh=0`` makes every detection part of the parity check."""
    task = make_task(coco_root, "segmentation.vis_thresh=0.0")
    model = tiny_maskrcnn(task.num_classes)
    result = export_model(task, model, tmp_path_factory.mktemp("maskrcnn") / "maskrcnn.onnx",
                          options=ExportOptions(dynamic=False, input_size=IMAGE_SIZE))
    return task, model, result


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("size", [(97, 61), (50, 101), (33, 200), (301, 77), (96, 128)])
def test_resize_matches_torchvision_eager_and_keeps_its_size_when_traced(size):
    transform = GeneralizedRCNNTransform(96, 128, image_mean=[0.0] * 3, image_std=[1.0] * 3).eval()
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(0))
    expected, _ = transform.resize(image)
    actual = resize_like_torchvision(image, min_size=96, max_size=128)
    assert torch.equal(actual, expected)

    class Resize(nn.Module):
        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return resize_like_torchvision(image, min_size=96, max_size=128)

    buffer = io.BytesIO()
    torch.onnx.export(Resize(), (torch.rand(3, 80, 90),), buffer, dynamo=False, input_names=["image"],
                      output_names=["resized"], dynamic_axes={"image": {1: "h", 2: "w"}, "resized": {1: "h2", 2: "w2"}})
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (resized,) = session.run(None, {"image": image.numpy()})
    assert resized.shape == tuple(expected.shape)  # torchvision's own traced resize gives 95x60 for 97x61
    np.testing.assert_allclose(resized, expected.numpy(), atol=1e-4)


def test_every_detection_matches_pytorch(strict_export):
    _, _, result = strict_export
    (check,) = result.parity
    assert check.input_shape == (3, *IMAGE_SIZE)
    assert check.compared_detections >= 10  # the comparison covers many detections, in any order
    assert all(output.max_abs_diff <= 1e-4 * max(output.scale, 1.0) for output in check.outputs), result.parity_table()
    assert result.metadata.output_names == ["boxes", "labels", "scores", "masks"]
    assert result.metadata.class_names == ["book", "cup", "ball"]
    assert result.metadata.task_meta["label_to_category"][0] == {"label": 1, "id": 10, "name": "book"}
    graph = onnx.load(str(result.path))
    assert [graph_input.name for graph_input in graph.graph.input] == ["image"]


def coco_results(folder: Path) -> list[dict]:
    results = json.loads((folder / "results.json").read_text())
    return sorted(results, key=lambda item: (item["image_id"], -item["score"]))


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_predict_onnx_writes_the_coco_results_of_the_pytorch_path(strict_export, coco_root, tmp_path):
    task, model, result = strict_export
    source = coco_root / "train"
    torch_files = task.predict(model, str(source), tmp_path / "torch", device=torch.device("cpu"))
    onnx_files = predict_onnx(result.path, source, tmp_path / "onnx")
    assert [path.relative_to(tmp_path / "onnx") for path in onnx_files] == [
        path.relative_to(tmp_path / "torch") for path in torch_files]
    expected, actual = coco_results(tmp_path / "torch"), coco_results(tmp_path / "onnx")
    assert len(actual) == len(expected) >= 10
    mask_pixels = 0
    for item, reference in zip(actual, expected):
        assert (item["image_id"], item["category_id"]) == (reference["image_id"], reference["category_id"])
        assert item["score"] == pytest.approx(reference["score"], abs=1e-5)
        assert item["bbox"] == pytest.approx(reference["bbox"], abs=1e-3)
        mask, reference_mask = mask_utils.decode(item["segmentation"]), mask_utils.decode(reference["segmentation"])
        assert np.count_nonzero(mask != reference_mask) <= 2  # a probability at 0.5 +- 1e-6 may round either way
        mask_pixels += int(reference_mask.sum())
    assert mask_pixels > 100  # the masks are not all empty
    assert json.loads((tmp_path / "onnx" / "images.json").read_text()) == json.loads(
        (tmp_path / "torch" / "images.json").read_text())
    with pytest.raises(ValueError, match="segmentation.box_score_thresh: fixed by the exported graph"):
        predict_onnx(result.path, source, tmp_path / "other", **{"segmentation.box_score_thresh": 0.3})


def test_dynamic_export_runs_other_sizes(coco_root, tmp_path):
    task = make_task(coco_root)
    model = tiny_maskrcnn(task.num_classes)
    result = export_model(task, model, tmp_path / "dynamic.onnx", options=ExportOptions(input_size=IMAGE_SIZE))
    assert [check.input_shape for check in result.parity] == [(3, 96, 128), (3, 77, 157)]
    assert result.metadata.input_shape == [3, "height", "width"]
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    boxes, labels, scores, masks = session.run(None, {"image": np.random.default_rng(0).random((3, 61, 97),
                                                                                                np.float32)})
    assert masks.shape[1:] == (1, 61, 97) and len(boxes) == len(labels) == len(scores) == len(masks)
    with pytest.raises(ValueError, match="half=true is not supported for instance_segmentation"):
        export_model(task, model, tmp_path / "half.onnx", options=ExportOptions(half=True))
