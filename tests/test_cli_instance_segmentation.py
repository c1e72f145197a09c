"""Acceptance test: Mask R-CNN from the command line on generated COCO data: check-data, train, eval, predict.

The tutorial preset is used with overrides that keep the run to a few CPU seconds: random initialisation
(``model.init=none``), one trainable ResNet stage, 96x128 images, small RPN/ROI sampling budgets.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from visiontune.cli import main
from visiontune.data.synthetic_coco import make_synthetic_coco

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "configs" / "instance_segmentation" / "maskrcnn_r50_fpn_book.yaml"
SMALL_MODEL = ("model.kwargs={rpn_pre_nms_top_n_train: 100, rpn_post_nms_top_n_train: 50, "
               "rpn_batch_size_per_image: 32, box_batch_size_per_image: 16, rpn_pre_nms_top_n_test: 50, "
               "rpn_post_nms_top_n_test: 20}")


def same_metrics(first: dict[str, float], second: dict[str, float]) -> bool:
    """Equal keys and values, NaN equal to NaN (COCO writes NaN where a size range has no object)."""
    return first.keys() == second.keys() and all(
        (math.isnan(first[key]) and math.isnan(second[key])) or first[key] == second[key] for key in first)


def test_check_data_train_eval_predict(tmp_path: Path, capsys) -> None:
    root = tmp_path / "coco"
    make_synthetic_coco(root, num_images=8, split="train", seed=0)
    make_synthetic_coco(root, num_images=4, split="val", seed=1)
    data = [f"data.root={root}", "data.train_split=annotations/instances_train.json",
            "data.val_split=annotations/instances_val.json", "data.images_dir=train", "data.val_images_dir=val",
            "data.categories=[book, ball]", "data.num_workers=0", "segmentation.min_size=96",
            "segmentation.max_size=128"]

    assert main(["check-data", "-c", str(PRESET), *data]) == 0
    report = capsys.readouterr().out
    assert report.count("result: OK") == 2 and "no errors found" in report

    assert main(["train", "-c", str(PRESET), *data, "model.init=none", "model.checkpoint=null",
                 "finetune.trainable_backbone_layers=1", "data.batch_size=2", "train.epochs=1", "train.max_steps=2",
                 "segmentation.detections_per_img=5", "segmentation.vis_thresh=0.0", SMALL_MODEL,
                 f"project={tmp_path / 'runs'}", "train.progress=false", "train.plots=false"]) == 0
    run_dir = tmp_path / "runs" / "instance_segmentation" / "maskrcnn_r50_fpn_book"
    with (run_dir / "metrics.csv").open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert int(rows[-1]["step"]) == 2
    validation = {key: float(value) for key, value in rows[-1].items() if key.startswith("val_")}
    assert {"val_segm_AP", "val_bbox_AP", "val_segm_AP_book", "val_segm_AP_ball"} <= set(validation)
    assert (run_dir / "eval" / "coco_results.json").is_file()
    assert len(list((run_dir / "eval" / "overlays").glob("*.png"))) == 4
    report = (run_dir / "report.html").read_text()  # the task view of the run report, on a real run folder
    per_category = report.split("AP per category (best epoch)")[1].split("</table>")[0]
    assert "book" in per_category and "ball" in per_category
    assert "Detections of the best checkpoint" in report and report.count("data:image/") >= 4  # overlays inline

    capsys.readouterr()
    assert main(["eval", f"checkpoint={run_dir / 'last.pt'}", "train.progress=false"]) == 0
    assert "val_segm_AP" in capsys.readouterr().out
    evaluated = json.loads((run_dir / "eval-instances_val" / "metrics.json").read_text())
    intervals = evaluated.pop("intervals")  # 95% bootstrap intervals over the 4 images (eval.intervals)
    assert set(intervals) == {"val_bbox_AP", "val_segm_AP"}
    assert all(0.0 <= low <= high <= 1.0 for low, high in intervals.values())
    assert same_metrics(evaluated, validation)  # one evaluation code path: the same numbers for the same weights

    output = tmp_path / "predictions"
    assert main(["predict", f"checkpoint={run_dir / 'last.pt'}", f"source={root / 'val'}", f"output={output}"]) == 0
    header = json.loads((output / "images.json").read_text())
    assert [image["file_name"] for image in header["images"]] == ["000001.png", "000002.png", "000003.png",
                                                                   "000004.png"]
    assert header["categories"] == [{"id": 10, "name": "book"}, {"id": 30, "name": "ball"}]
    results = json.loads((output / "results.json").read_text())
    assert 0 < len(results) <= 4 * 5  # segmentation.detections_per_img=5
    loaded = COCO(str(output / "images.json")).loadRes(str(output / "results.json"))
    for annotation in loaded.loadAnns(loaded.getAnnIds()):
        assert annotation["category_id"] in (10, 30)
        mask = mask_utils.decode(annotation["segmentation"])
        assert mask.shape == (96, 128) and mask.dtype == np.uint8
        assert mask_utils.area(annotation["segmentation"]) == mask.sum()
    for name in ("000001", "000004"):
        with Image.open(output / "overlays" / f"{name}.png") as overlay, Image.open(root / "val" / f"{name}.png") as im:
            assert overlay.size == im.size == (128, 96)

    capsys.readouterr()
    missing = tmp_path / "no_such_folder"
    assert main(["predict", f"checkpoint={run_dir / 'last.pt'}", f"source={missing}"]) == 2
    assert f"source not found: {missing}" in capsys.readouterr().err
