"""Tests of the instance segmentation task on generated COCO data (96x128 images, CPU)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from tests.helpers import FixedMaskModel
from visiontune.config import load_config
from visiontune.data.coco_format import CocoFormatError
from visiontune.data.synthetic_coco import make_synthetic_coco
from visiontune.engine.finetune import freeze_parameters
from visiontune.tasks import create_task
from visiontune.tasks.instance_segmentation import InstanceSegmentationTask
from visiontune.utils.drawing import PALETTE, draw_instances

SMALL_MODEL = ("{rpn_pre_nms_top_n_train: 100, rpn_post_nms_top_n_train: 50, rpn_batch_size_per_image: 32, "
               "box_batch_size_per_image: 16, rpn_pre_nms_top_n_test: 50, rpn_post_nms_top_n_test: 20}")


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train`` (6 images, book/cup/ball), ``val`` (4 images) and ``val_no_ball`` (book/cup only)."""
    root = tmp_path_factory.mktemp("coco")
    make_synthetic_coco(root, num_images=6, split="train", seed=0)
    make_synthetic_coco(root, num_images=4, split="val", seed=1)
    make_synthetic_coco(root, num_images=3, split="val_no_ball", categories=("book", "cup"), with_crowd=False, seed=2)
    return root


def make_task(root: Path, *overrides: str) -> InstanceSegmentationTask:
    config = load_config(None, [
        "task=instance_segmentation", "model.name=maskrcnn_resnet50_fpn", "data.format=coco", f"data.root={root}",
        "data.train_split=annotations/instances_train.json", "data.val_split=annotations/instances_val.json",
        "data.images_dir=train", "data.val_images_dir=val", "data.num_workers=0", "segmentation.min_size=96",
        "segmentation.max_size=128", f"model.kwargs={SMALL_MODEL}", "train.progress=false", *overrides,
    ])
    task = create_task(config)
    assert isinstance(task, InstanceSegmentationTask)
    return task


def raw_annotations(root: Path, split: str) -> dict[str, Any]:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def test_datasets_remap_the_category_subset_and_store_plain_meta(coco_root: Path) -> None:
    task = make_task(coco_root, "data.categories=[ball, book]")
    train = task.build_dataset("annotations/instances_train.json", train=True)
    assert task.meta["class_names"] == ["ball", "book"]
    assert task.meta["label_to_category"] == [{"label": 1, "id": 30, "name": "ball"},
                                              {"label": 2, "id": 10, "name": "book"}]
    assert json.loads(json.dumps(task.meta)) == task.meta  # JSON-like values only: lists, str keys
    raw = raw_annotations(coco_root, "train")
    expected = {1: sum(1 for a in raw["annotations"] if a["category_id"] == 30 and not a["iscrowd"]),
                2: sum(1 for a in raw["annotations"] if a["category_id"] == 10 and not a["iscrowd"])}
    labels = torch.cat([train[index][1]["labels"] for index in range(len(train))]).tolist()
    assert {label: labels.count(label) for label in (1, 2)} == expected and set(labels) <= {1, 2}
    assert len(train) == len(raw["images"])  # data.empty_images=keep (the default)

    val = task.build_dataset("annotations/instances_val.json", train=False)
    assert val.class_names == ["ball", "book"] and len(val) == 4
    assert task.label_to_category_id == {1: 30, 2: 10} and task.num_classes == 3
    with pytest.raises(CocoFormatError, match=r"instances_val_no_ball\.json: unknown category name 'ball'"):
        task.build_dataset("annotations/instances_val_no_ball.json", train=False)


def test_empty_training_images_can_be_dropped_but_never_validation_images(coco_root: Path) -> None:
    task = make_task(coco_root, "data.empty_images=drop", "data.categories=[ball]")
    train = task.build_dataset("annotations/instances_train.json", train=True)
    raw = raw_annotations(coco_root, "train")
    with_ball = {a["image_id"] for a in raw["annotations"] if a["category_id"] == 30 and not a["iscrowd"]}
    assert sorted(train.image_ids) == sorted(with_ball)
    assert len(task.build_dataset("annotations/instances_val.json", train=False)) == 4


def test_backbone_init_through_the_task_copies_the_file_exactly(
    coco_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50(weights=None)
    for module in resnet.modules():
        if isinstance(module, nn.BatchNorm2d):  # non-default statistics, so a dropped BN buffer shows
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    state_dict = resnet.state_dict()
    path = tmp_path / "resnet50.pth"
    torch.save(state_dict, path)

    task = make_task(coco_root, "model.init=backbone", f"model.backbone_checkpoint={path}")
    task.build_dataset("annotations/instances_train.json", train=True)
    with caplog.at_level(logging.INFO, logger="visiontune.models.maskrcnn"):
        model = task.build_model()
    assert "loaded 265, missing 0, unexpected 2 ['fc.weight', 'fc.bias']" in caplog.text
    report = task.meta["load_report"]
    assert (report["loaded"], report["missing"], report["unexpected"]) == (265, [], ["fc.weight", "fc.bias"])
    body_state = model.backbone.body.state_dict()
    assert len(body_state) == 265
    for key, value in body_state.items():
        assert torch.equal(value, state_dict[key]), key
    assert task.meta["frozen_batchnorm"] is True and task.meta["frozen_batchnorm_eps"] == 1e-5
    assert task.meta["trainable_backbone_layers"] == 3  # torchvision's default for pretrained weights

    # evaluation rebuilds the same modules from the checkpoint's meta alone (init none, no file read)
    rebuilt_task = make_task(coco_root, "model.init=none")
    rebuilt_task.load_meta(json.loads(json.dumps(task.state_for_checkpoint())))
    rebuilt = rebuilt_task.build_model(load_weights=False)
    rebuilt.load_state_dict(model.state_dict())  # strict: same keys and shapes
    assert isinstance(rebuilt.backbone.body.bn1, FrozenBatchNorm2d) and rebuilt.backbone.body.bn1.eps == 1e-5
    assert [p.requires_grad for p in rebuilt.parameters()] == [p.requires_grad for p in model.parameters()]


def test_model_parts_cover_every_parameter_once(coco_root: Path) -> None:
    task = make_task(coco_root, "model.init=none", "finetune.trainable_backbone_layers=5")
    task.build_dataset("annotations/instances_train.json", train=True)
    model = task.build_model()
    assert task.meta["frozen_batchnorm"] is False and task.meta["frozen_batchnorm_eps"] is None
    parts = task.model_parts(model)
    names = [name for name, _ in model.named_parameters()]
    head = [name for name in names if parts.is_head(name)]
    assert sorted(head) == sorted(f"roi_heads.{predictor}.{layer}.{kind}" for predictor, layer in (
        ("box_predictor", "cls_score"), ("box_predictor", "bbox_pred"), ("mask_predictor", "conv5_mask"),
        ("mask_predictor", "mask_fcn_logits")) for kind in ("weight", "bias"))
    assert len(parts.layer_groups) == 8
    assert sorted(name for group in parts.layer_groups for name in group) == sorted(set(names) - set(head))
    assert parts.layer_groups[0] == ["backbone.body.conv1.weight", "backbone.body.bn1.weight", "backbone.body.bn1.bias"]
    assert all(name.startswith("backbone.body.layer4.") for name in parts.layer_groups[4])
    assert all(name.startswith("rpn.") for name in parts.layer_groups[6])

    frozen = freeze_parameters(model, "first_n", 2, parts)  # stem + layer1
    assert frozen == sorted(parts.layer_groups[0] + parts.layer_groups[1])
    freeze_parameters(model, "backbone", None, parts)  # linear probe: only the predictors train
    assert sorted(name for name, p in model.named_parameters() if p.requires_grad) == sorted(head)


def test_trainable_backbone_layers_reach_the_model(coco_root: Path) -> None:
    task = make_task(coco_root, "model.name=maskrcnn_resnet50_fpn_v2", "model.init=none",
                     "finetune.trainable_backbone_layers=1", "segmentation.detections_per_img=7",
                     "segmentation.box_score_thresh=0.25")
    task.build_dataset("annotations/instances_train.json", train=True)
    model = task.build_model()
    trainable_body = {name.split(".")[0] for name, p in model.backbone.body.named_parameters() if p.requires_grad}
    assert trainable_body == {"layer4"} and task.meta["variant"] == "v2"
    assert isinstance(model.backbone.body.bn1, nn.BatchNorm2d)  # v2 keeps trainable BatchNorm
    assert (model.roi_heads.detections_per_img, model.roi_heads.score_thresh) == (7, 0.25)
    assert model.transform.min_size == (96,) and model.transform.max_size == 128
    assert model.roi_heads.box_predictor.cls_score.out_features == 4  # book, cup, ball + background


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.name=maskrcnn_resnet50"], r"model.name: 'maskrcnn_resnet50' is not an instance segmentation model "
                                       r"\(did you mean"),
    (["model.init=coco"], r"model.init=coco: set model.checkpoint to a local COCO Mask R-CNN file"),
    (["model.init=backbone"], r"model.init=backbone: set model.backbone_checkpoint"),
    (["model.init=none", "model.checkpoint=x.pth"], r"model.checkpoint is a Mask R-CNN state dict and needs "
                                                    r"model.init=coco \(got model.init=none\)"),
    (["model.init=coco", "model.backbone_checkpoint=r.pth", "model.checkpoint=c.pth"],
     r"model.backbone_checkpoint needs model.init=backbone \(got model.init=coco\)"),
    (["model.init=none", "model.pretrained=true"], r"model.pretrained=true with model.init=none"),
    (["model.init=none", "model.num_classes=3"], r"model.num_classes=3, but the data has 3 categories \(4 classes"),
    (["model.init=none", "model.kwargs={min_size: 64}"], r"model.kwargs sets \['min_size'\]: use the segmentation"),
    (["model.init=coco", "model.checkpoint=missing.pth"], r"weights file not found: missing.pth"),
])
def test_model_configuration_errors(coco_root: Path, overrides: list[str], message: str) -> None:
    task = make_task(coco_root, *overrides)
    task.build_dataset("annotations/instances_train.json", train=True)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        task.build_model()


def test_data_configuration_errors(coco_root: Path) -> None:
    with pytest.raises(ValueError, match=r"data.format: 'folder' is not an instance segmentation format; use coco"):
        make_task(coco_root, "data.format=folder").build_dataset("annotations/instances_train.json", train=True)
    with pytest.raises(ValueError, match="data.root is not set"):
        make_task(coco_root, "data.root=null").build_dataset("annotations/instances_train.json", train=True)
    task = make_task(coco_root, "data.categories=[book]")
    task.load_meta({"class_names": ["ball"], "label_to_category": [{"label": 1, "id": 30, "name": "ball"}],
                    "variant": "v1", "frozen_batchnorm": False, "frozen_batchnorm_eps": None,
                    "trainable_backbone_layers": 5})
    with pytest.raises(ValueError, match=r"data.categories=\['book'\] differs from the model's classes \['ball'\]"):
        task.build_dataset("annotations/instances_val.json", train=False)
    with pytest.raises(ValueError, match=r"the checkpoint's meta lacks \['label_to_category', 'variant'"):
        task.load_meta({"class_names": ["ball"]})


def ground_truth_outputs(dataset: Any) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, Any]]]:
    """Model-like outputs equal to the targets (score 1, probability-1 masks) for every image of ``dataset``."""
    outputs, targets = [], []
    for index in range(len(dataset)):
        _, target = dataset[index]
        count = len(target["labels"])
        outputs.append({"boxes": target["boxes"].as_subclass(torch.Tensor).clone(), "labels": target["labels"],
                        "scores": torch.ones(count), "masks": target["masks"].float()[:, None]})
        targets.append({"image_id": target["image_id"]})
    return outputs, targets


def test_evaluator_scores_the_ground_truth_one_and_writes_artifacts(coco_root: Path, tmp_path: Path) -> None:
    task = make_task(coco_root, "data.categories=[book, ball]", "segmentation.vis_thresh=0.5")
    task.build_dataset("annotations/instances_train.json", train=True)
    dataset = task.build_dataset("annotations/instances_val.json", train=False)
    outputs, targets = ground_truth_outputs(dataset)
    evaluator = task.build_evaluator(dataset)
    evaluator.reset()
    evaluator.update(outputs[:2], targets[:2])
    evaluator.update(outputs[2:], targets[2:])
    evaluator.synchronize()
    metrics = evaluator.compute()
    assert metrics["segm_AP"] == pytest.approx(1.0) and metrics["bbox_AP"] == pytest.approx(1.0)
    assert {"segm_AP_book", "segm_AP_ball", "bbox_AP50"} <= set(metrics)

    written = evaluator.save_artifacts(tmp_path / "eval")
    results_path = tmp_path / "eval" / "coco_results.json"
    assert written[0] == results_path and len(written) == 1 + 4  # results + one overlay per validation image
    results = json.loads(results_path.read_text())
    assert {result["category_id"] for result in results} <= {10, 30}  # the original COCO ids
    # the results file evaluates against the original annotation file: AP 1 on the two kept categories
    ground_truth = COCO(str(coco_root / "annotations" / "instances_val.json"))
    evaluation = COCOeval(ground_truth, ground_truth.loadRes(str(results_path)), iouType="segm")
    evaluation.params.catIds = [10, 30]
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)

    evaluator.reset()
    evaluator.update([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                       "scores": torch.zeros(0), "masks": torch.zeros(0, 1, 96, 128)}] * 4, targets)
    assert evaluator.compute()["segm_AP"] == 0.0


def test_overlay_blends_the_label_colour_into_mask_pixels() -> None:
    image = Image.fromarray(np.full((40, 60, 3), 100, dtype=np.uint8))
    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[10:30, 20:50] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("utf-8")
    detection = {"image_id": 1, "category_id": 2, "bbox": [20.0, 10.0, 30.0, 20.0], "score": 0.9, "segmentation": rle}
    drawn = np.asarray(draw_instances(image, [detection], class_names=["book", "ball"], score_threshold=0.5))
    red, green, blue = PALETTE[1]
    expected = [round(100 * 0.5 + value * 0.5) for value in (red, green, blue)]
    assert drawn[20, 35].tolist() == expected  # inside the mask, away from the outline and the text
    assert drawn[35, 5].tolist() == [100, 100, 100]  # outside
    assert drawn[10, 35].tolist() == [red, green, blue]  # the box outline
    below = draw_instances(image, [detection], class_names=["book", "ball"], score_threshold=0.95)
    assert np.array_equal(np.asarray(below), np.asarray(image))


def test_predict_writes_coco_results_with_original_ids_and_overlays(coco_root: Path, tmp_path: Path) -> None:
    task = make_task(coco_root, "data.categories=[book, ball]", "segmentation.vis_thresh=0.5")
    task.build_dataset("annotations/instances_train.json", train=True)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{coco_root / 'val' / '000002.png'}\n\n{coco_root / 'val' / '000004.png'}\n")
    written = task.predict(FixedMaskModel(label=2), str(listing), tmp_path / "out", device=torch.device("cpu"))
    assert [path.name for path in written] == ["results.json", "images.json", "000002.png", "000004.png"]
    header = json.loads((tmp_path / "out" / "images.json").read_text())
    assert [(image["id"], image["file_name"], image["height"], image["width"]) for image in header["images"]] == [
        (1, "000002.png", 96, 128), (2, "000004.png", 96, 128)]
    assert header["categories"] == [{"id": 10, "name": "book"}, {"id": 30, "name": "ball"}]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(result["image_id"], result["category_id"], result["score"]) for result in results] == [
        (1, 30, pytest.approx(0.8)), (2, 30, pytest.approx(0.8))]
    expected = np.zeros((96, 128), dtype=np.uint8)
    expected[:, :64] = 1
    coco = COCO(str(tmp_path / "out" / "images.json"))
    loaded = coco.loadRes(str(tmp_path / "out" / "results.json"))
    for annotation in loaded.loadAnns(loaded.getAnnIds()):
        assert np.array_equal(loaded.annToMask(annotation), expected)
    assert results[0]["bbox"] == [0.0, 0.0, 64.0, 96.0]

    with pytest.raises(ValueError, match=r"list.txt:1: image not found: .*nothing.png"):
        (tmp_path / "list.txt").write_text("nothing.png\n")
        task.predict(FixedMaskModel(label=2), str(listing), tmp_path / "out", device=torch.device("cpu"))


def test_prepare_train_batch_warns_once_about_removed_boxes(coco_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    task = make_task(coco_root)
    targets = [{"image_id": 3, "num_removed_boxes": 2}, {"image_id": 4, "num_removed_boxes": 0}]
    with caplog.at_level(logging.DEBUG, logger="visiontune.tasks.instance_segmentation"):
        task.prepare_train_batch([], targets)
        task.prepare_train_batch([], [{"image_id": 5, "num_removed_boxes": 1}])
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "augmentation left 2 box(es) under 1 pixel in image id(s) [3]" in warnings[0].message
    assert "3 so far" in caplog.text


def test_data_problems_report_counts_and_fail_on_problems(coco_root: Path, tmp_path: Path) -> None:
    text, has_errors = make_task(coco_root, "data.categories=[book, ball]").data_problems()
    assert not has_errors and text.endswith("no errors found")
    raw = raw_annotations(coco_root, "train")
    books = [a for a in raw["annotations"] if a["category_id"] == 10 and not a["iscrowd"]]
    holding = len({a["image_id"] for a in books})
    assert f"book  {len(books):>7}  {holding:>7}  [0]" in text and text.count("result: OK") == 2

    text, has_errors = make_task(coco_root, "data.val_split=annotations/instances_val_no_ball.json",
                                 "data.val_images_dir=val_no_ball").data_problems()
    assert has_errors and "unknown category name 'ball'" in text and text.endswith("errors found")

    broken = tmp_path / "broken"
    make_synthetic_coco(broken, num_images=3, split="train", seed=0)
    (broken / "train" / "000002.png").write_bytes(b"not a png")
    text, has_errors = make_task(broken, "data.val_split=null").data_problems()
    assert has_errors and "000002.png: cannot decode image id 2" in text


class OracleModel(nn.Module):
    """Imperfect detections derived from the ground truth, looked up by the image's pixels.

    Per image: every third instance missed, the others found with a score that falls with their index, and one
    false positive (the first instance's box and mask shifted by a quarter of the image) at score 0.95.
    """

    def __init__(self, dataset: Any) -> None:
        super().__init__()
        self.outputs: dict[bytes, dict[str, torch.Tensor]] = {}
        for index in range(len(dataset)):
            image = dataset.load_image(index).as_subclass(torch.Tensor)
            target = dataset.load_target(index)
            boxes = target["boxes"].as_subclass(torch.Tensor).clone()
            masks = target["masks"].as_subclass(torch.Tensor).float()[:, None]
            keep = [i for i in range(len(boxes)) if i % 3 != 2]
            output = {"boxes": boxes[keep], "labels": target["labels"][keep],
                      "scores": torch.tensor([0.9 - 0.1 * i for i in keep]), "masks": masks[keep]}
            if len(boxes):
                shift = image.shape[-1] // 4
                output = {"boxes": torch.cat([boxes[:1] + torch.tensor([shift, 0, shift, 0]), output["boxes"]]),
                          "labels": torch.cat([target["labels"][:1], output["labels"]]),
                          "scores": torch.cat([torch.tensor([0.95]), output["scores"]]),
                          "masks": torch.cat([masks[:1].roll(shift, dims=-1), output["masks"]])}
            self.outputs[image.numpy().tobytes()] = output

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [{key: value.clone() for key, value in self.outputs[image.numpy().tobytes()].items()}
                for image in images]


def same_metrics(first: dict[str, float], second: dict[str, Any]) -> bool:
    """Equal keys and values, NaN (or JSON null) equal to NaN."""
    def norm(value: Any) -> float:
        return float("nan") if value is None else float(value)

    return first.keys() == second.keys() and all(
        (np.isnan(norm(first[key])) and np.isnan(norm(second[key]))) or norm(first[key]) == norm(second[key])
        for key in first)


def test_predict_on_a_coco_file_reports_the_validation_metrics(coco_root: Path, tmp_path: Path) -> None:
    from visiontune.engine.inference import build_eval_loader, run_evaluation

    task = make_task(coco_root, "data.batch_size=2")
    task.build_dataset("annotations/instances_train.json", train=True)
    val = task.build_dataset("annotations/instances_val.json", train=False)
    model = OracleModel(val)
    evaluated = run_evaluation(model, build_eval_loader(task, val, task.config), task.build_evaluator(val),
                               device=torch.device("cpu"))
    assert 0.2 < evaluated["segm_AP"] < 0.9 and 0.2 < evaluated["bbox_AP"] < 0.9  # neither trivial nor perfect

    source = coco_root / "annotations" / "instances_val.json"
    written = task.predict(model, str(source), tmp_path / "out", device=torch.device("cpu"))
    out = tmp_path / "out"
    assert [path.name for path in written[:3]] == ["results.json", "images.json", "metrics.json"]
    assert sorted(path.relative_to(out).as_posix() for path in written[3:]) == [
        f"overlays/{entry['file_name'][:-4]}.png" for entry in raw_annotations(coco_root, "val")["images"]]
    stored = json.loads((out / "metrics.json").read_text())
    assert stored.pop("source") == str(source) and stored.pop("mask_thresh") == 0.5
    assert same_metrics(evaluated, stored) and same_metrics(evaluated, task.predict_metrics)
    assert stored["segm_AP"] == evaluated["segm_AP"] and stored["bbox_AP"] == evaluated["bbox_AP"]

    # the source's image ids are kept: results.json evaluates against the source file itself
    header = json.loads((out / "images.json").read_text())
    assert [(image["id"], image["file_name"]) for image in header["images"]] == [
        (entry["id"], entry["file_name"]) for entry in raw_annotations(coco_root, "val")["images"]]
    ground_truth = COCO(str(source))
    evaluation = COCOeval(ground_truth, ground_truth.loadRes(str(out / "results.json")), iouType="segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(evaluated["segm_AP"], abs=1e-6)


def test_predict_on_coco_files_without_annotations_or_in_the_coco_layout(coco_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "coco"
    shutil.copytree(coco_root, root)
    task = make_task(root, "data.root=null")
    task.load_meta({"class_names": ["book", "cup", "ball"],
                    "label_to_category": [{"label": 1, "id": 10, "name": "book"}, {"label": 2, "id": 20, "name": "cup"},
                                          {"label": 3, "id": 30, "name": "ball"}],
                    "variant": "v1", "frozen_batchnorm": False, "frozen_batchnorm_eps": None,
                    "trainable_backbone_layers": 5})
    raw = raw_annotations(root, "val")
    info = {"images": raw["images"][:2], "categories": raw["categories"]}  # an image info file: no annotations
    misplaced = root / "annotations" / "image_info_val.json"
    misplaced.write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"image_info_val.json: image 000001.png not found in"):
        task.predict(FixedMaskModel(label=2), str(misplaced), tmp_path / "info", device=torch.device("cpu"))
    images_only = root / "images_only.json"
    images_only.write_text(json.dumps(info))
    shutil.copytree(root / "val", root / "images")  # images/ next to the file
    written = task.predict(FixedMaskModel(label=2), str(images_only), tmp_path / "info", device=torch.device("cpu"))
    assert [path.name for path in written[:2]] == ["results.json", "images.json"] and task.predict_metrics == {}
    assert not (tmp_path / "info" / "metrics.json").exists()
    results = json.loads((tmp_path / "info" / "results.json").read_text())
    assert sorted({result["image_id"] for result in results}) == [entry["id"] for entry in raw["images"][:2]]

    # data.root unset: the images of annotations/instances_val.json are found in <root>/val (the COCO layout)
    task.predict(FixedMaskModel(label=2), str(root / "annotations" / "instances_val.json"), tmp_path / "val",
                 device=torch.device("cpu"))
    assert set(task.predict_metrics) >= {"segm_AP", "bbox_AP"} and (tmp_path / "val" / "metrics.json").is_file()


def test_check_data_gives_the_data_report_boxes_labels_and_names(coco_root: Path) -> None:
    check = make_task(coco_root).check_data()
    assert not check.has_errors and check.class_names == ["book", "cup", "ball"]
    train = check.samples["annotations/instances_train.json"]
    assert len(train) == 6 and len(check.samples["annotations/instances_val.json"]) == 4
    assert all(len(sample["boxes"]) == len(sample["labels"]) for sample in train)
    assert {label for sample in train for label in sample["labels"]} <= {1, 2, 3}
    assert all(Path(sample["path"]).is_file() for sample in train) and check.flagged == []
