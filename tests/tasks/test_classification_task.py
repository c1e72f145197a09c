"""Classification task: transforms from config, mixup on odd batches, prediction inputs."""

import pytest
import torch
from PIL import Image

from visiontune.config import load_config
from visiontune.tasks.classification import ClassificationTask
from visiontune.tasks.classification_predict import collect_prediction_inputs


@pytest.mark.parametrize("policy, expected", [
    ("rand-m7-mstd0.5", "RandAugment"),
    ("original", "AutoAugment"),
    ("augmix-m5", "AugMixAugment"),
    ("trivialaugment", "TrivialAugmentWide"),
])
def test_augment_policies_from_config(policy, expected):
    task = ClassificationTask(load_config(None, ["model.name=test_resnet", f"data.auto_augment={policy}",
                                                 "data.image_size=32", "data.reprob=0.25"]))
    transform = task.build_transform(train=True)
    names = [type(step).__name__ for step in transform.transforms]
    assert expected in names and "RandomErasing" in names
    image = transform(Image.new("RGB", (40, 50), (120, 30, 200)))
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32


def test_eval_transform_uses_crop_pct():
    task = ClassificationTask(load_config(None, ["model.name=test_resnet", "data.image_size=64",
                                                 "data.crop_pct=0.5"]))
    resize = task.build_transform(train=False).transforms[0]
    assert resize.size == 128  # 64 / 0.5


def test_mixup_handles_odd_batches():
    task = ClassificationTask(load_config(None, ["model.name=test_resnet", "data.mixup=0.8", "data.cutmix=1.0",
                                                 "data.label_smoothing=0.1", "model.num_classes=4"]))
    task.build_model(load_weights=False)
    images = torch.randn(5, 3, 16, 16)
    mixed, targets = task.prepare_train_batch(images, torch.tensor([0, 1, 2, 3, 0]))
    assert mixed.shape == images.shape and targets.shape == (5, 4)
    assert torch.allclose(targets.sum(1), torch.ones(5))
    assert targets[4, 0] == pytest.approx(0.9 + 0.1 / 4)  # the odd one out: smoothed one-hot


def test_prediction_inputs(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "tree" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "tree" / cls / "x.png")
    assert [label for _, label in collect_prediction_inputs(str(tmp_path / "tree"), ["a", "b"])] == ["a", "b"]
    assert [label for _, label in collect_prediction_inputs(str(tmp_path / "tree"), ["z"])] == [None, None]
    listing = tmp_path / "list.txt"
    listing.write_text("tree/a/x.png\ntree/missing.png\n")
    with pytest.raises(ValueError, match=r"list.txt:2: image not found: .*missing.png"):
        collect_prediction_inputs(str(listing), ["a"])
    with pytest.raises(ValueError, match=r"source not found"):
        collect_prediction_inputs(str(tmp_path / "nope"), ["a"])


def _labelled_images(root):
    """Two classes, two images each, in a class-folder tree, an FGVC-style list and a CSV."""
    colours = {"red": (220, 20, 20), "blue": (20, 20, 220)}
    lines, rows = [], ["path,label"]
    for cls, colour in colours.items():
        for index in range(2):
            image_id = f"{cls}{index}"
            (root / "images").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (24, 24), colour).save(root / "images" / f"{image_id}.jpg")
            (root / "tree" / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (24, 24), colour).save(root / "tree" / cls / f"{image_id}.jpg")
            lines.append(f"{image_id} {cls} colour")
            rows.append(f"images/{image_id}.jpg,{cls} colour")
    (root / "images_variant_test.txt").write_text("\n".join(lines) + "\n")
    (root / "test.csv").write_text("\n".join(rows) + "\n")


def test_predict_reads_every_training_source_and_writes_metrics(tmp_path):
    import json

    _labelled_images(tmp_path)
    config = load_config(None, ["task=classification", "model.name=test_resnet", f"data.root={tmp_path}",
                                "data.format=list", "data.images_dir=images", "data.image_ext=.jpg",
                                "data.image_size=32", "data.batch_size=2", "train.progress=false"])
    task = ClassificationTask(config)
    task.meta["class_names"] = ["blue colour", "red colour"]
    torch.manual_seed(0)
    model = task.build_model(load_weights=False).eval()

    listed = collect_prediction_inputs(str(tmp_path / "images_variant_test.txt"), ["blue colour", "red colour"],
                                       images_dir=tmp_path / "images", image_ext=".jpg")
    assert [(path.name, label) for path, label in listed] == [
        ("red0.jpg", "red colour"), ("red1.jpg", "red colour"), ("blue0.jpg", "blue colour"),
        ("blue1.jpg", "blue colour")]
    results = {}
    for name in ("images_variant_test.txt", "test.csv"):
        out = tmp_path / f"out_{name}"
        files = task.predict(model, str(tmp_path / name), out, device=torch.device("cpu"))
        assert out / "metrics.json" in files and out / "predictions.csv" in files
        metrics = json.loads((out / "metrics.json").read_text())
        # 2 classes: top-2 would always be 1, so only top-1 is reported (as in evaluation)
        assert metrics["num_images"] == 4 and set(metrics) == {"source", "top1", "num_images"}
        assert metrics["top1"] == task.predict_metrics["top1"]
        header, *lines = (out / "pred.txt").read_text().splitlines()
        assert header == "path\tpred\treal"
        predicted = [line.split("\t") for line in lines]
        assert metrics["top1"] == sum(row[1] == row[2] for row in predicted) / 4
        results[name] = metrics["top1"]
    assert results["images_variant_test.txt"] == results["test.csv"]  # same images, same labels

    task.meta["class_names"] = ["blue", "red"]  # the folder tree's labels are its folder names
    out = tmp_path / "out_tree"
    task.predict(model, str(tmp_path / "tree"), out, device=torch.device("cpu"))
    assert json.loads((out / "metrics.json").read_text())["top1"] == results["test.csv"]
    unlabelled = tmp_path / "out_image"
    files = task.predict(model, str(tmp_path / "images" / "red0.jpg"), unlabelled, device=torch.device("cpu"))
    assert files == [unlabelled / "predictions.csv"] and task.predict_metrics == {}


def test_missing_val_folder_names_data_val_split(tmp_path):
    for split in ("train", "eval"):
        for name in ("cat", "dog"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / name / "a.jpg")
    config = load_config(None, ["task=classification", "model.name=test_resnet", f"data.root={tmp_path}"])
    task = ClassificationTask(config)
    task.build_dataset("train", train=True)
    with pytest.raises(ValueError) as error:
        task.build_dataset(config.data.val_split, train=False)
    assert str(error.value) == (f"data folder not found: {tmp_path / 'val'} (data.root + data.val_split); found a "
                                "folder 'eval' next to it: set data.val_split=eval")
