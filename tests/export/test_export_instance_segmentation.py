"""Mask R-CNN: the traced resize, export and parity, and ONNX prediction against the task's PyTorch prediction.

A ResNet-50 Mask R-CNN takes ~30 s to trace on two CPU cores, so these tests use a torchvision ``MaskRCNN`` with a
three-layer backbone (same RPN, RoI heads, NMS and mask pasting code) inside the real instance segmentation task, with
two sets of weights: class scores and mask logits spread out (confident detections, masks with clear edges, as after
training) and torchvision's random initialisation (class scores near 1/K, mask probabilities near 0.5 everywhere,
where a small difference flips many mask pixels).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx  # the dev install brings it: never skipped
import onnxruntime  # the dev install brings it: never skipped
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


def tiny_maskrcnn(num_classes: int, *, spread: bool = True) -> MaskRCNN:
    """The tiny Mask R-CNN; ``spread=False`` keeps torchvision's random initialisation of the predictors."""
    torch.manual_seed(0)
    model = MaskRCNN(
        TinyBackbone(), num_classes=None, min_size=IMAGE_SIZE[0], max_size=IMAGE_SIZE[1],
        rpn_anchor_generator=AnchorGenerator(((16, 32, 64),), ((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2),
        box_head=TwoMLPHead(32 * 7 * 7, 64), box_predictor=FastRCNNPredictor(64, num_classes),
        mask_head=MaskRCNNHeads(32, [32, 32], 1), mask_predictor=MaskRCNNPredictor(32, 32, num_classes),
        rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100, box_detections_per_img=30, box_score_thresh=0.05,
    )
    if spread:  # spread class scores (not all tied near 1 / num_classes) and mask logits (not all < 0)
        with torch.no_grad():
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
    assert [output.name for output in check.outputs] == ["boxes", "labels", "scores", "mask_probabilities"]
    masks = check.outputs[3]
    assert masks.shape == (check.compared_detections, 1, 28, 28)  # unpasted: the mask head's 28x28 per detection
    assert masks.scale == 1.0 and masks.allowed == pytest.approx(1e-3)  # absolute: probabilities have scale 1
    assert result.metadata.output_names == ["boxes", "labels", "scores", "mask_probabilities"]
    assert result.metadata.output_kind == "maskrcnn_roi_masks"
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
    assert masks.shape[1:] == (1, 28, 28) and len(boxes) == len(labels) == len(scores) == len(masks)
    with pytest.raises(ValueError, match="half=true is not supported for instance_segmentation"):
        export_model(task, model, tmp_path / "half.onnx", options=ExportOptions(half=True))


PREDICT_SIZES = [(48, 64), (80, 120), (97, 61)]
"""``(height, width)`` of the prediction images: upscaled, downscaled and rotated aspect ratio for the model's
96x128 resize, so the graph's resize and box rescaling are exercised."""


@pytest.fixture(scope="module")
def sized_images(tmp_path_factory) -> Path:
    """Synthetic COCO images (with objects) of the sizes in :data:`PREDICT_SIZES`, in one folder."""
    root = tmp_path_factory.mktemp("sized")
    folder = root / "images"
    folder.mkdir()
    for index, size in enumerate(PREDICT_SIZES):
        make_synthetic_coco(root / f"set{index}", num_images=2, image_size=size, split="train", seed=index,
                            num_empty_images=0, with_crowd=False)
        for image in sorted((root / f"set{index}" / "train").iterdir()):
            image.rename(folder / f"{size[0]}x{size[1]}_{image.name}")
    return folder


def matched_detections(torch_dir: Path, onnx_dir: Path) -> list[tuple[dict, dict]]:
    """The detections of the two ``results.json`` paired image by image (same label, box IoU >= 0.5); every
    detection scoring >= 0.3 on either side must have its pair."""
    from visiontune.export.parity import match_detections

    expected, actual = coco_results(torch_dir), coco_results(onnx_dir)
    pairs = []
    for image_id in sorted({item["image_id"] for item in expected + actual}):
        left = [item for item in expected if item["image_id"] == image_id]
        right = [item for item in actual if item["image_id"] == image_id]

        def boxes(items):
            return np.array([[x, y, x + w, y + h] for x, y, w, h in (item["bbox"] for item in items)]).reshape(-1, 4)

        rows, columns = match_detections(boxes(left), np.array([item["category_id"] for item in left]),
                                         boxes(right), np.array([item["category_id"] for item in right]))
        unmatched = [item["score"] for side, matched in ((left, rows), (right, columns))
                     for index, item in enumerate(side) if index not in set(matched.tolist()) and item["score"] >= 0.3]
        assert not unmatched, f"image {image_id}: detections without a counterpart, scores {unmatched}"
        pairs.extend((left[row], right[column]) for row, column in zip(rows, columns))
    return pairs


def mask_iou(first: dict, second: dict) -> float:
    first_mask, second_mask = (mask_utils.decode(item["segmentation"]).astype(bool) for item in (first, second))
    union = np.count_nonzero(first_mask | second_mask)
    return np.count_nonzero(first_mask & second_mask) / union if union else 1.0


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
@pytest.mark.parametrize("spread", [True, False], ids=["spread-weights", "random-init"])
def test_predict_on_the_onnx_file_gives_the_masks_of_the_checkpoint(coco_root, sized_images, tmp_path, spread):
    # every detection is part of the parity check; random weights give mask probabilities of 0.41-0.53 (median
    # 0.47): binarised at 0.47, about half of each box is foreground and many pixels lie close to the threshold
    task = make_task(coco_root, "segmentation.vis_thresh=0.0", f"segmentation.mask_thresh={0.5 if spread else 0.47}")
    model = tiny_maskrcnn(task.num_classes, spread=spread)
    result = export_model(task, model, tmp_path / "model.onnx", options=ExportOptions(input_size=(64, 48)))
    assert all(check.ok for check in result.parity) and all(check.compared_detections for check in result.parity)
    torch_dir, onnx_dir = tmp_path / "torch", tmp_path / "onnx"
    task.predict(model, str(sized_images), torch_dir, device=torch.device("cpu"))
    predict_onnx(result.path, sized_images, onnx_dir)
    pairs = matched_detections(torch_dir, onnx_dir)
    assert len(pairs) >= 30
    ious = [mask_iou(reference, item) for reference, item in pairs]
    assert min(ious) >= 0.99, sorted(ious)[:5]
    assert max(abs(item["score"] - reference["score"]) for reference, item in pairs) <= 1e-4
    assert max(np.abs(np.subtract(item["bbox"], reference["bbox"])).max() for reference, item in pairs) <= 1e-2
    areas = [int(mask_utils.area(reference["segmentation"])) for reference, _ in pairs]
    assert sum(areas) > 300 and np.count_nonzero(areas) >= len(areas) // 2  # the masks are not empty
    if not spread:  # random weights: masks near 0.5 everywhere, so a tiny probability difference would show
        probabilities = result.parity[0].outputs[3]
        assert probabilities.max_abs_diff <= 1e-4


class PerturbedMasksSession:
    """An ONNX Runtime session whose mask probabilities are off by 0.02 (20 times the default tolerance)."""

    def __init__(self, session):
        self.session = session

    def get_inputs(self):
        return self.session.get_inputs()

    def run(self, names, feeds):
        boxes, labels, scores, masks = self.session.run(names, feeds)
        return [boxes, labels, scores, masks + np.float32(0.02)]


def test_tolerance_decides_the_mask_probability_comparison(coco_root, tmp_path, monkeypatch):
    import re

    from visiontune.export import ParityError
    from visiontune.export import exporter as exporter_module

    real_session = exporter_module.cpu_session
    monkeypatch.setattr(exporter_module, "cpu_session", lambda graph: PerturbedMasksSession(real_session(graph)))
    task = make_task(coco_root, "segmentation.vis_thresh=0.0")
    model = tiny_maskrcnn(task.num_classes)
    options = {"dynamic": False, "input_size": IMAGE_SIZE}
    with pytest.raises(ParityError) as refused:
        export_model(task, model, tmp_path / "default.onnx", options=ExportOptions(**options))
    message = str(refused.value)
    assert re.search(r"output 'mask_probabilities' on input 3x96x128: max abs difference 2\.0\d*e-02 > allowed "
                     r"1\.000e-03 \(tolerance 0\.001 x scale 1\)", message), message
    assert "'boxes'" not in message and "'scores'" not in message  # they agree within the default tolerance
    suggested = re.search(r"tolerance=(\S+) accepts these numeric differences", message)
    assert suggested and 0.02 <= float(suggested.group(1)) <= 0.021, message
    assert not (tmp_path / "default.onnx").exists()
    result = export_model(task, model, tmp_path / "suggested.onnx",
                          options=ExportOptions(**options, tolerance=float(suggested.group(1))))
    (check,) = result.parity
    assert check.ok and check.outputs[3].allowed == pytest.approx(float(suggested.group(1)))
    assert check.outputs[0].allowed == pytest.approx(float(suggested.group(1)) * check.outputs[0].scale)


def rewrite_layout(source: Path, target: Path, *, output_kind: str, mask_output: str) -> Path:
    """A copy of an export whose fourth output and metadata describe another layout."""
    graph = onnx.load(str(source))
    old_name = graph.graph.output[3].name
    for node in graph.graph.node:
        node.input[:] = [mask_output if name == old_name else name for name in node.input]
        node.output[:] = [mask_output if name == old_name else name for name in node.output]
    graph.graph.output[3].name = mask_output
    props = {prop.key: prop.value for prop in graph.metadata_props}
    props.update(output_kind=output_kind, output_names=json.dumps(["boxes", "labels", "scores", mask_output]))
    onnx.helper.set_model_props(graph, props)
    onnx.save(graph, str(target))
    return target


def test_an_older_export_with_pasted_masks_loads_and_an_unknown_layout_is_refused(strict_export, coco_root, tmp_path,
                                                                                  caplog, capsys):
    from visiontune.cli import main
    from visiontune.export import OnnxModel
    from visiontune.export.runtime import OnnxMaskRCNN

    _, _, result = strict_export
    older = rewrite_layout(result.path, tmp_path / "older.onnx", output_kind="maskrcnn_detections",
                           mask_output="masks")
    image = torch.rand(3, *IMAGE_SIZE)
    (new_output,) = OnnxMaskRCNN(OnnxModel(result.path))([image])
    with caplog.at_level("WARNING", logger="visiontune.export.runtime"):
        (old_output,) = OnnxMaskRCNN(OnnxModel(older))([image])
    assert "pastes its masks in the graph" in caplog.text and "export the checkpoint again" in caplog.text
    assert new_output["masks"].shape[-2:] == IMAGE_SIZE  # pasted on the host
    assert old_output["masks"].shape[-2:] == (28, 28)  # an older graph's masks are used as it returns them
    assert torch.equal(old_output["boxes"], new_output["boxes"])
    unknown = rewrite_layout(result.path, tmp_path / "unknown.onnx", output_kind="maskrcnn_polygons",
                             mask_output="polygons")
    assert main(["predict", f"checkpoint={unknown}", f"source={coco_root / 'train'}",
                 f"output={tmp_path / 'out'}"]) == 2
    error = capsys.readouterr().err.splitlines()[-1]  # after the "predicting with" log line
    assert error.startswith("visiontune predict: error: ") and "Traceback" not in error
    assert ("unknown.onnx: output_kind 'maskrcnn_polygons' with outputs ['boxes', 'labels', 'scores', 'polygons'] is "
            "not a Mask R-CNN layout this visiontune reads ('maskrcnn_roi_masks' with outputs boxes, labels, scores, "
            "mask_probabilities); export the checkpoint again") in error


def test_the_model_pastes_with_the_function_the_onnx_runtime_uses():
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    from visiontune.models.maskrcnn import MaskPastingTransform, create_maskrcnn, paste_masks

    generator = torch.Generator().manual_seed(0)
    probabilities = torch.rand(5, 1, 28, 28, generator=generator)
    corners = torch.rand(5, 2, generator=generator) * 40
    boxes = torch.cat([corners, corners + 5 + torch.rand(5, 2, generator=generator) * 30], dim=1)
    torchvision_transform = GeneralizedRCNNTransform(96, 128, [0.5] * 3, [0.25] * 3).eval()
    transform = MaskPastingTransform.like(torchvision_transform).eval()
    assert (transform.min_size, transform.max_size, transform.image_mean) == ((96,), 128, [0.5] * 3)

    def detections():
        return [{"boxes": boxes.clone(), "labels": torch.ones(5, dtype=torch.int64), "masks": probabilities.clone()}]

    (expected,) = torchvision_transform.postprocess(detections(), [(96, 128)], [(61, 97)])
    (actual,) = transform.postprocess(detections(), [(96, 128)], [(61, 97)])
    assert torch.equal(actual["boxes"], expected["boxes"]) and torch.equal(actual["masks"], expected["masks"])
    assert torch.equal(paste_masks(probabilities, expected["boxes"], (61, 97)), expected["masks"])
    assert actual["masks"].shape == (5, 1, 61, 97)
    model = create_maskrcnn("v1", num_classes=3, init="none", min_size=64, max_size=96)
    assert type(model.transform) is MaskPastingTransform and model.transform.min_size == (64,)
