"""Choosing model.init on the command line over the Mask R-CNN preset: the preset's weight file for its own init
is set aside with one note line; a contradiction given on the command line names the override to add."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torchvision

from visiontune.config import load_config
from visiontune.data.synthetic_coco import make_synthetic_coco
from visiontune.interop.mindspore import save_mindspore_checkpoint
from visiontune.interop.mindspore.mapping import to_mindspore_state_dict
from visiontune.models.maskrcnn import drop_preset_weights
from visiontune.tasks import create_task

PRESET = Path(__file__).resolve().parents[2] / "configs" / "instance_segmentation" / "maskrcnn_r50_fpn_book.yaml"
PRESET_CHECKPOINT = "weights/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"  # named by the preset, absent here
SMALL_MODEL = ("{rpn_pre_nms_top_n_train: 100, rpn_post_nms_top_n_train: 50, rpn_batch_size_per_image: 32, "
               "box_batch_size_per_image: 16, rpn_pre_nms_top_n_test: 50, rpn_post_nms_top_n_test: 20}")


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    make_synthetic_coco(root, num_images=3, split="train", seed=0)
    return root


def preset_task(root: Path, *overrides: str):
    config = load_config(PRESET, [
        f"data.root={root}", "data.train_split=annotations/instances_train.json", "data.val_split=null",
        "data.images_dir=train", "data.num_workers=0", "segmentation.min_size=96", "segmentation.max_size=128",
        f"model.kwargs={SMALL_MODEL}", *overrides])
    task = create_task(config)
    task.build_dataset("annotations/instances_train.json", train=True)
    return task


def test_preset_names_the_coco_checkpoint_it_needs():
    assert load_config(PRESET).model.checkpoint == PRESET_CHECKPOINT


def test_backbone_init_from_a_mindspore_resnet50_ckpt_sets_the_preset_checkpoint_aside(coco_root: Path,
                                                                                      tmp_path: Path, caplog):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50(weights=None).state_dict()
    ckpt = tmp_path / "resnet50.ckpt"
    save_mindspore_checkpoint(ckpt, to_mindspore_state_dict(resnet, "resnet50"))
    task = preset_task(coco_root, "model.init=backbone", f"model.backbone_checkpoint={ckpt}")
    with caplog.at_level(logging.INFO, logger="visiontune.models.maskrcnn"):
        model = task.build_model()
    assert (f"model.init=backbone: not using the preset's model.checkpoint={PRESET_CHECKPOINT} (a COCO Mask R-CNN, "
            "for model.init=coco)") in caplog.messages
    assert task.meta["load_report"]["loaded"] == 265
    assert torch.equal(model.backbone.body.conv1.weight, resnet["conv1.weight"])


def test_init_none_over_the_preset_starts_from_random_weights(coco_root: Path, caplog):
    with caplog.at_level(logging.INFO, logger="visiontune.models.maskrcnn"):
        preset_task(coco_root, "model.init=none").build_model()
    assert any(message.startswith("model.init=none: not using the preset's model.checkpoint=")
               for message in caplog.messages)


def test_checkpoint_given_with_another_init_names_the_override_to_add(coco_root: Path):
    task = preset_task(coco_root, "model.init=backbone", "model.checkpoint=mine.pth")
    with pytest.raises(ValueError, match=r"^model\.checkpoint is a Mask R-CNN state dict and needs model\.init=coco "
                                         r"\(got model\.init=backbone\): to start without mine\.pth, add "
                                         r"model\.checkpoint=null; ImageNet ResNet-50 weights"):
        task.build_model()


def test_drop_preset_weights_keeps_what_the_preset_init_uses():
    assert drop_preset_weights("coco", "c.pth", None, preset_init="coco", preset_checkpoint="c.pth") == ("c.pth", None)
    assert drop_preset_weights("backbone", "c.pth", "r.ckpt", preset_init=None) == ("c.pth", "r.ckpt")
    assert drop_preset_weights("coco", "c.pth", "r.pth", preset_init="backbone",
                               preset_backbone_checkpoint="r.pth") == ("c.pth", None)
