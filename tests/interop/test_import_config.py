"""``visiontune import-config``: MindFace RetinaFace and MindCV YAML configs -> visiontune configs.

The configs in ``tests/interop/data`` are verbatim copies of MindFace's ``RetinaFace_mobilenet025.yaml`` /
``RetinaFace_resnet50.yaml`` and MindCV's ``mobilenet_v3_small_ascend.yaml`` / ``mobilenet_v2_1.0_ascend.yaml``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml
from timm.data import create_transform

from visiontune.cli import main
from visiontune.config.loader import config_to_dict, load_config
from visiontune.engine.scheduler import build_schedule_spec, lr_factor
from visiontune.interop.mindspore_configs import (
    ImportConfigError,
    detect_config_family,
    import_mindspore_config,
    timm_auto_augment,
    timm_model_name,
)

DATA = Path(__file__).parent / "data"
MINDFACE_MOBILENET = DATA / "RetinaFace_mobilenet025.yaml"
MINDFACE_RESNET = DATA / "RetinaFace_resnet50.yaml"
MINDCV_MOBILENET_V3 = DATA / "mobilenet_v3_small_ascend.yaml"
MINDCV_MOBILENET_V2 = DATA / "mobilenet_v2_1.0_ascend.yaml"
WIDERFACE = "/home/d1/czp21/czp/mindspore/retinaface/retinaface_mindinsight/data/WiderFace"


def source_keys(path: Path) -> list[str]:
    return list(yaml.safe_load(path.read_text()))


def line_of(path: Path, key: str) -> int:
    lines = path.read_text().splitlines()
    return next(number for number, line in enumerate(lines, start=1) if re.match(rf"['\"]?{key}['\"]?\s*:", line))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", [MINDFACE_MOBILENET, MINDFACE_RESNET, MINDCV_MOBILENET_V3, MINDCV_MOBILENET_V2])
def test_every_key_is_translated_or_explained_and_the_output_loads(path, tmp_path):
    imported = import_mindspore_config(path)
    keys = source_keys(path)
    assert set(imported.translated).isdisjoint(imported.untranslated)
    assert sorted([*imported.translated, *imported.untranslated]) == sorted(keys)
    assert all(reason for reason in imported.untranslated.values())

    output = imported.write(tmp_path / "imported.yaml")
    assert load_config(output) == imported.config
    text = output.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    for key in imported.untranslated:
        assert any(line.startswith(f"#   {key}: ") for line in header), key
    assert yaml.safe_load(text) == imported.values


def test_mindface_mobilenet025(tmp_path):
    imported = import_mindspore_config(MINDFACE_MOBILENET)
    assert imported.family == "mindface"
    config = imported.config
    assert (config.task, config.name, config.seed, config.project) == ("face_detection", "RetinaFace_mobilenet025", 1,
                                                                       "./ckpt/")
    assert (config.model.name, config.model.checkpoint, config.model.backbone_checkpoint) == (
        "retinaface_mobilenet0.25", None, None)
    data = config.data
    assert (data.format, data.root) == ("retinaface", WIDERFACE)
    assert (data.train_split, data.images_dir, data.val_split, data.val_images_dir) == (
        "train/label.txt", "train/images", "val/label.txt", "val/images")
    assert (data.image_size, data.batch_size, data.num_workers) == (640, 16, 1)
    assert (config.optim.name, config.optim.lr, config.optim.momentum, config.optim.nesterov,
            config.optim.weight_decay) == ("momentum", 0.02, 0.9, False, 0.0005)
    assert config.finetune.no_weight_decay_norm_bias is True
    sched = config.sched
    assert (sched.name, sched.warmup_epochs, sched.warmup_factor, sched.min_lr) == ("cosine", 5.0, 1.0 / 3.0, 0.0)
    train = config.train
    assert (train.epochs, train.save_every_steps, train.keep_last, train.clip_grad) == (120, 402, 10, None)
    face = config.face
    assert (face.variance, face.clip, face.match_thresh, face.in_channel, face.out_channel) == ([0.1, 0.2], False,
                                                                                               0.35, 32, 64)
    assert (face.loc_weight, face.class_weight, face.landm_weight) == (2.0, 1.0, 1.0)
    assert (face.origin_size, face.conf_thresh, face.nms_thresh) == (True, 0.02, 0.4)
    assert face.gt_dir == f"{WIDERFACE}/ground_truth"
    assert config.output == "./widerface_result"
    assert set(imported.untranslated) == {"device_target", "num_anchor", "ngpu", "num_classes", "mode", "decay1",
                                          "decay2", "gamma", "val_model", "val_iou_threshold", "val_save_result"}
    assert imported.untranslated["ngpu"].startswith("visiontune uses torchrun for distribution")
    assert imported.untranslated["decay1"] == "used only by MindFace's step schedule (lr_type other than dynamic_lr)"
    assert imported.translated["training_dataset"] == "data.root, data.train_split, data.images_dir"
    assert imported.translated["initial_lr"] == "optim.lr"
    assert imported.defaults == {}
    # MindFace's dynamic_lr ends at (1 + cos(pi * 115 / 120)) / 2 of the initial LR
    assert any(f"MindFace ends at {(1 + math.cos(math.pi * 115 / 120)) / 2:.2g} x initial_lr" in note
               for note in imported.notes)


def test_mindface_resnet50():
    imported = import_mindspore_config(MINDFACE_RESNET)
    config = imported.config
    assert config.model.name == "retinaface_resnet50"
    assert config.model.backbone_checkpoint == ("pretrained/resnet50_ascend_v170_imagenet2012_official_cv_top1acc76.97"
                                                "_top5acc93.44.ckpt")
    assert any(note.startswith("pretrain_path: ") and "model.backbone_checkpoint reads it as it is" in note
               for note in imported.notes)
    assert (config.data.root, config.data.train_split, config.data.val_split) == ("data/WiderFace", "train/label.txt",
                                                                                  "val/label.txt")
    assert (config.data.image_size, config.optim.lr, config.optim.weight_decay) == (840, 0.04, 0.0001)
    assert (config.sched.name, config.sched.warmup_epochs) == ("cosine", 0.0)  # warmup_epoch: -1 = no warmup
    assert (config.train.epochs, config.train.save_every_steps, config.train.clip_grad) == (70, 1608, None)
    assert (config.face.in_channel, config.face.out_channel, config.face.gt_dir) == (256, 256,
                                                                                     "data/WiderFace/ground_truth")
    assert "clips each gradient tensor to norm 1.0" in imported.untranslated["grad_clip"]
    assert {"nnpu", "device_id", "T_max", "eta_min"} <= set(imported.untranslated)
    assert imported.translated["pretrain_path"] == "model.backbone_checkpoint"


def test_mindcv_mobilenet_v3_small():
    imported = import_mindspore_config(MINDCV_MOBILENET_V3)
    assert imported.family == "mindcv"
    config = imported.config
    assert (config.task, config.name, config.project) == ("classification", "mobilenet_v3_small_ascend", "./ckpt")
    assert (config.model.name, config.model.num_classes, config.model.pretrained, config.model.checkpoint) == (
        "mobilenetv3_small_100", 1000, False, None)
    data = config.data
    assert (data.format, data.root, data.train_split, data.val_split) == ("folder", "/path/to/imagenet", "train", "val")
    assert (data.image_size, data.crop_pct, data.interpolation) == (224, 0.875, "bilinear")
    assert (data.scale, data.ratio, data.hflip, data.color_jitter) == ([0.08, 1.0], [0.75, 1.333], 0.5, 0.4)
    assert (data.label_smoothing, data.batch_size, data.num_workers) == (0.1, 75, 8)
    assert (config.optim.name, config.optim.lr, config.optim.momentum, config.optim.nesterov,
            config.optim.weight_decay, config.optim.eps) == ("momentum", 0.77, 0.9, False, 2e-5, None)
    assert (config.sched.name, config.sched.warmup_epochs, config.sched.warmup_factor, config.sched.min_lr) == (
        "cosine", 4.0, 0.0, 0.0)
    assert imported.translated["decay_epochs"].startswith("the cosine length")  # 4 + 466 == 470
    assert (config.train.epochs, config.train.amp, config.train.eval_every, config.train.keep_last,
            config.train.log_every) == (470, "auto", 1, 30, 100)
    assert imported.defaults == {"warmup_factor": 0.0, "log_interval": 100}
    assert set(imported.untranslated) == {"mode", "distribute", "shuffle", "dataset_download", "drop_remainder",
                                          "dataset_sink_mode", "loss", "loss_scale"}
    assert imported.untranslated["distribute"].startswith("visiontune uses torchrun")
    assert any(note.startswith("amp_level: O3 -> train.amp=auto") for note in imported.notes)
    assert any(note.startswith("weight_decay_filter: MindSpore's optimizers skip weight decay on norm")
               for note in imported.notes)


def test_mindcv_mobilenet_v2():
    imported = import_mindspore_config(MINDCV_MOBILENET_V2)
    config = imported.config
    assert (config.model.name, config.train.amp, config.train.epochs, config.data.num_workers) == (
        "mobilenetv2_100", "off", 300, 32)
    assert config.train.eval_every == 1  # visiontune's default; MindCV's val_while_train is off by default
    assert imported.translated["filter_bias_and_bn"] == "finetune.no_weight_decay_norm_bias"
    assert not any(note.startswith("weight_decay_filter") for note in imported.notes)  # filter_bias_and_bn is exact


@pytest.mark.parametrize("mindcv_name, timm_name", [
    ("mobilenet_v3_small_100", "mobilenetv3_small_100"),
    ("mobilenet_v3_large_100", "mobilenetv3_large_100"),
    ("mobilenet_v2_100_224", "mobilenetv2_100"),
    ("mobilenet_v2_140", "mobilenetv2_140"),
    ("resnet50", "resnet50"),
    ("convnext_tiny", "convnext_tiny"),
    ("efficientnet_b0", "efficientnet_b0"),
    ("no_such_model_42", None),
])
def test_mindcv_model_names(mindcv_name, timm_name):
    assert timm_model_name(mindcv_name) == timm_name


def test_unknown_mindcv_model_is_kept_with_a_note(tmp_path):
    path = write(tmp_path, "vit.yaml", "model: 'no_such_model_42'\nepoch_size: 10\nopt: 'adamw'\nlr: 0.001\n")
    imported = import_mindspore_config(path)
    assert imported.config.model.name == "no_such_model_42"
    assert "model: 'no_such_model_42' has no known timm equivalent; set model.name to a timm model name" in \
        imported.notes
    # MindCV defaults for the keys the file does not set (MindCV's config.py)
    assert imported.config.optim.eps == 1e-10 and imported.config.optim.weight_decay == 1e-6
    assert (imported.config.data.batch_size, imported.config.sched.min_lr, imported.config.sched.warmup_epochs) == (
        128, 1e-6, 3.0)


@pytest.mark.parametrize("policy, expected, note", [
    ("randaug-m7-mstd0.5", "rand-m7-mstd0.5", ""),
    ("randaug-m9", "rand-m9-mstd0.5", ""),  # MindCV's default magnitude noise is 0.5, timm's none
    ("randaug-m10-n2-w0-mstd0.5-mmax10-inc0", "rand-m10-n2-mstd0.5-mmax10-inc0", "section w0"),
    ("autoaug-mstd0.5", "original-mstd0.5", ""),
    ("autoaugr", "originalr-mstd0.5", ""),
    ("3a", "3a-mstd0.5", ""),
    ("augmix-m5-w4-d2", "augmix-m5-w4-d2", ""),
    ("trivialaugwide", None, "timm has no TrivialAugmentWide"),
])
def test_auto_augment_strings_are_timm_compatible(policy, expected, note):
    translated, message = timm_auto_augment(policy)
    assert translated == expected
    assert message.startswith(note)
    if translated is not None:
        create_transform(32, is_training=True, auto_augment=translated)  # timm accepts it


def test_mindcv_augmentation_details(tmp_path):
    path = write(tmp_path, "aug.yaml", """
model: 'resnet50'
epoch_size: 10
opt: 'rmsprop'
auto_augment: 'randaug-m10-n2-w0-mstd0.5-mmax10-inc0'
mean: [123.675, 116.28, 103.53]
std: [58.395, 57.12, 57.375]
re_prob: 0.25
re_value: 'random'
interpolation: 'area'
cutmix_prob: 0.5
in_channels: 1
""")
    imported = import_mindspore_config(path)
    data = imported.config.data
    assert (data.auto_augment, data.mean, data.std) == ("rand-m10-n2-mstd0.5-mmax10-inc0", [0.485, 0.456, 0.406],
                                                        [0.229, 0.224, 0.225])
    assert (data.reprob, data.remode, data.interpolation, data.mixup_prob) == (0.25, "pixel", "box", 0.5)
    assert imported.config.optim.name == "rmsproptf" and imported.config.optim.eps == 1e-10
    assert imported.untranslated["in_channels"] == "visiontune feeds 3-channel RGB images; 1 channels are not supported"
    assert any(note.startswith("auto_augment: section w0") for note in imported.notes)


def schedule_factors(config, *, steps_per_epoch: int) -> list[float]:
    spec = build_schedule_spec(config.sched, epochs=config.train.epochs, steps_per_epoch=steps_per_epoch)
    return [lr_factor(spec, step) for step in range(config.train.epochs * steps_per_epoch)]


def test_mindface_step_schedule_reproduces_adjust_learning_rate(tmp_path):
    path = write(tmp_path, "step.yaml", """
'name': 'MobileNet025'
'variance': [0.1, 0.2]
'match_thresh': 0.35
'optim': 'momentum'
'momentum': 0.9
'epoch': 12
'decay1': 5
'decay2': 8
'lr_type': 'step'
'initial_lr': 0.1
'warmup_epoch': 2
'gamma': 0.5
""")
    config = import_mindspore_config(path).config
    assert (config.sched.name, config.sched.milestones, config.sched.gamma) == ("multistep", [4.0, 8.0], 0.5)
    factors = schedule_factors(config, steps_per_epoch=3)
    for epoch in range(3, 13):  # MindFace's 1-based epochs after warmup
        expected = 0.5 if 5 <= epoch <= 8 else (0.25 if epoch > 8 else 1.0)
        assert factors[(epoch - 1) * 3: epoch * 3] == [expected] * 3, epoch


def test_mindface_dynamic_lr_warmup_matches(tmp_path):
    imported = import_mindspore_config(MINDFACE_MOBILENET)
    factors = schedule_factors(imported.config, steps_per_epoch=4)
    warmup_steps = 5 * 4
    for step in range(warmup_steps):  # MindFace: lr/3 + (lr - lr/3) * step / warmup_steps
        assert factors[step] == pytest.approx(1 / 3 + (2 / 3) * step / warmup_steps)
    assert factors[warmup_steps] == 1.0


def test_mindcv_step_decay_after_warmup(tmp_path):
    path = write(tmp_path, "step.yaml", """
model: 'resnet50'
opt: 'sgd'
lr: 0.1
epoch_size: 12
scheduler: 'step_decay'
warmup_epochs: 2
warmup_factor: 0.1
decay_epochs: 3
decay_rate: 0.5
min_lr: 0.0
""")
    imported = import_mindspore_config(path)
    config = imported.config
    assert (config.sched.name, config.sched.milestones, config.sched.gamma) == ("multistep", [5.0, 8.0, 11.0], 0.5)
    assert imported.untranslated["min_lr"] == "not used by MindCV's step_decay scheduler"
    factors = schedule_factors(config, steps_per_epoch=2)
    for step in range(4):  # MindCV: linear from warmup_factor over the warmup steps
        assert factors[step] == pytest.approx(0.1 + 0.9 * step / 4)
    for epoch in range(2, 12):  # MindCV: decay_rate ** ((epoch - warmup) // decay_epochs)
        assert factors[epoch * 2: epoch * 2 + 2] == [0.5 ** ((epoch - 2) // 3)] * 2, epoch


@pytest.mark.parametrize("text, sched", [
    ("scheduler: 'step_decay'\nwarmup_epochs: 0\ndecay_epochs: 3\ndecay_rate: 0.5\n",
     {"name": "step", "step_size": 3.0, "gamma": 0.5}),
    ("scheduler: 'multi_step_decay'\nwarmup_epochs: 1\nmulti_step_decay_milestones: [2, 4]\ndecay_rate: 0.1\n",
     {"name": "multistep", "milestones": [3.0, 5.0], "gamma": 0.1}),
    ("scheduler: 'constant'\nwarmup_epochs: 0\n", {"name": "constant", "warmup_epochs": 0.0}),
    ("scheduler: 'cosine_decay'\nwarmup_epochs: 1\ndecay_epochs: 5\nmin_lr: 0.001\n",
     {"name": "cosine", "warmup_epochs": 1.0, "min_lr": 0.001}),
])
def test_mindcv_schedulers(tmp_path, text, sched):
    path = write(tmp_path, "sched.yaml", f"model: 'resnet50'\nepoch_size: 10\nopt: 'momentum'\n{text}")
    imported = import_mindspore_config(path)
    translated = config_to_dict(imported.config)["sched"]
    assert {key: translated[key] for key in sched} == sched
    if "decay_epochs: 5" in text:  # 1 + 5 != 10: MindCV holds min_lr for the last 4 epochs
        assert imported.untranslated["decay_epochs"].startswith("visiontune's cosine spans the 9 epochs after warmup")


def test_untranslatable_scheduler_is_listed(tmp_path):
    path = write(tmp_path, "exp.yaml", "model: 'resnet50'\nepoch_size: 10\nscheduler: 'exponential_decay'\n"
                                       "decay_rate: 0.9\n")
    imported = import_mindspore_config(path)
    assert imported.untranslated["scheduler"].startswith("'exponential_decay' has no visiontune counterpart")
    assert imported.untranslated["decay_rate"] == "not used by MindCV's exponential_decay scheduler"
    assert "name" not in imported.values.get("sched", {})


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


def test_family_detection(tmp_path):
    assert detect_config_family(yaml.safe_load(MINDFACE_MOBILENET.read_text())) == "mindface"
    assert detect_config_family(yaml.safe_load(MINDCV_MOBILENET_V3.read_text())) == "mindcv"
    path = write(tmp_path, "arcface.yaml", "backbone: iresnet50\nnum_features: 512\nlr: 0.1\n")
    with pytest.raises(ImportConfigError, match=rf"{re.escape(str(path))} is neither a MindFace RetinaFace config "
                                                r".* nor a MindCV config .*its keys: backbone, num_features, lr"):
        import_mindspore_config(path)
    visiontune_config = write(tmp_path, "vt.yaml", "task: classification\noptim:\n  lr: 0.1\n")
    with pytest.raises(ImportConfigError, match=r"vt.yaml is already a visiontune config \(it has the sections "
                                                r"\['optim'\]\)"):
        import_mindspore_config(visiontune_config)


@pytest.mark.parametrize("source, key, old, new, expected", [
    (MINDFACE_MOBILENET, "epoch", "'epoch': 120", "'epoch': ten", "an integer, got 'ten' (str)"),
    (MINDFACE_MOBILENET, "clip", "'clip': False", "'clip': 'no'", "true or false, got 'no' (str)"),
    (MINDFACE_MOBILENET, "variance", "'variance': [0.1, 0.2]", "'variance': [0.1]", "a list of 2 items, got [0.1]"),
    (MINDFACE_MOBILENET, "name", "'name' : 'MobileNet025'", "'name' : 'MobileNet050'",
     "one of 'MobileNet025', 'ResNet50', got 'MobileNet050'"),
    (MINDFACE_MOBILENET, "optim", "'optim': 'sgd'", "'optim': 'adam'", "one of 'sgd', 'momentum', got 'adam'"),
    (MINDCV_MOBILENET_V3, "epoch_size", "epoch_size: 470", "epoch_size: ten", "an integer, got 'ten' (str)"),
    (MINDCV_MOBILENET_V3, "amp_level", "amp_level: 'O3'", "amp_level: 'O5'", "one of 'O0', 'O1', 'O2', 'O3'"),
    (MINDCV_MOBILENET_V3, "lr", "lr: 0.77", "lr: fast", "a number, got 'fast' (str)"),
])
def test_wrong_values_name_the_file_line_and_key(tmp_path, source, key, old, new, expected):
    text = source.read_text()
    assert old in text
    path = write(tmp_path, source.name, text.replace(old, new))
    location = f"{re.escape(str(path))}:{line_of(path, key)}: {key}: expected {re.escape(expected)}"
    with pytest.raises(ImportConfigError, match=location):
        import_mindspore_config(path)


def test_translated_values_are_validated_by_the_schema(tmp_path):
    path = write(tmp_path, "bad.yaml", MINDFACE_MOBILENET.read_text().replace("'batch_size': 16", "'batch_size': 0"))
    location = f"{re.escape(str(path))}:{line_of(path, 'batch_size')}"
    with pytest.raises(ImportConfigError, match=rf"{location}: batch_size: translated to an invalid value: "
                                                r"data.batch_size: expected an integer >= 1"):
        import_mindspore_config(path)


def test_missing_unreadable_and_self_overwriting_files(tmp_path):
    with pytest.raises(ImportConfigError, match=r"config file not found: .*missing.yaml"):
        import_mindspore_config(tmp_path / "missing.yaml")
    broken = write(tmp_path, "broken.yaml", "name: [unclosed\n")
    with pytest.raises(ImportConfigError, match=r"broken.yaml: invalid YAML"):
        import_mindspore_config(broken)
    listing = write(tmp_path, "list.yaml", "- a\n- b\n")
    with pytest.raises(ImportConfigError, match=r"list.yaml: expected a mapping of option names .* found a list"):
        import_mindspore_config(listing)
    copy = write(tmp_path, "mindface.yaml", MINDFACE_MOBILENET.read_text())
    with pytest.raises(ImportConfigError, match="refusing to overwrite the imported file"):
        import_mindspore_config(copy).write(copy)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def test_cli_writes_config_and_lists_untranslated_keys(tmp_path, capsys):
    output = tmp_path / "retinaface.yaml"
    assert main(["import-config", str(MINDFACE_RESNET), "-o", str(output)]) == 0
    out = capsys.readouterr().out
    assert f"MindFace RetinaFace config {MINDFACE_RESNET}: translated 33 of 49 keys" in out
    assert "not translated (16):" in out
    assert "  ngpu: visiontune uses torchrun for distribution" in out
    assert f"wrote {output}; train with: visiontune train -c {output}" in out
    config = load_config(output, ["data.batch_size=4"])
    assert (config.model.name, config.data.batch_size) == ("retinaface_resnet50", 4)


def test_cli_prints_yaml_without_output(capsys):
    assert main(["import-config", str(MINDCV_MOBILENET_V3)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Imported by `visiontune import-config` from the MindCV config")
    assert "#   dataset_sink_mode: MindSpore sinks the dataset to the device" in out
    assert yaml.safe_load(out) == import_mindspore_config(MINDCV_MOBILENET_V3).values


def test_cli_errors(tmp_path, capsys):
    path = write(tmp_path, "bad.yaml", MINDFACE_MOBILENET.read_text().replace("'epoch': 120", "'epoch': ten"))
    assert main(["import-config", str(path)]) == 2
    assert (f"visiontune import-config: error: {path}:{line_of(path, 'epoch')}: epoch: expected an integer, got 'ten'"
            in capsys.readouterr().err)
    assert main(["import-config", str(tmp_path / "nothing.yaml")]) == 2
    assert "visiontune import-config: error: config file not found:" in capsys.readouterr().err
    unknown = write(tmp_path, "other.yaml", "foo: 1\nbar: 2\n")
    assert main(["import-config", str(unknown), "-o", str(tmp_path / "out.yaml")]) == 2
    assert "is neither a MindFace RetinaFace config" in capsys.readouterr().err
    assert not (tmp_path / "out.yaml").exists()


@pytest.mark.slow
def test_imported_mindface_config_fine_tunes_from_a_mindspore_checkpoint(fixtures_dir, tmp_path, monkeypatch,
                                                                         capsys):
    """A MindFace config whose resume_net is a MindSpore .ckpt, on a tiny WIDER FACE-layout dataset, trains."""
    import json

    from PIL import Image

    from visiontune.engine.checkpoint import load_checkpoint

    monkeypatch.chdir(tmp_path)
    photos = fixtures_dir / "retinaface"
    detections = json.loads((photos / "expected_detections_mobilenet0.25.json").read_text())
    for split, names in (("train", ["mindface_0000.jpg", "selfie.jpg"]), ("val", ["mindface_0000.jpg"])):
        lines = []
        for name in names:
            with Image.open(photos / "images" / name) as image:
                scale = 256 / max(image.size)
                target = tmp_path / "WiderFace" / split / "images" / "event" / name
                target.parent.mkdir(parents=True, exist_ok=True)
                image.convert("RGB").resize((round(image.width * scale), round(image.height * scale))).save(target)
            lines.append(f"# event/{name}")
            for x1, y1, x2, y2, score, *points in detections[name]:
                if score > 0.5:
                    landmarks = [f"{points[2 * i] * scale:.1f} {points[2 * i + 1] * scale:.1f} 0.0" for i in range(5)]
                    box = [x1 * scale, y1 * scale, (x2 - x1) * scale, (y2 - y1) * scale]
                    lines.append(" ".join([*(f"{value:.1f}" for value in box), *landmarks, "1.0"]))
        (tmp_path / "WiderFace" / split / "label.txt").write_text("\n".join(lines) + "\n")
    text = MINDFACE_MOBILENET.read_text()
    mindspore_checkpoint = fixtures_dir / "mindspore" / "retinaface_mobilenet025.ckpt"
    for old, new in (("'batch_size': 16", "'batch_size': 2"), ("'image_size': 640", "'image_size': 256"),
                     ("'epoch': 120", "'epoch': 1"), ("'num_workers': 1", "'num_workers': 0"),
                     ("'resume_net': ~", f"'resume_net': '{mindspore_checkpoint}'"),
                     (f"'{WIDERFACE}/train/label.txt'", "'WiderFace/train/label.txt'"),
                     (f"'{WIDERFACE}/val/'", "'WiderFace/val/'"), (f"'{WIDERFACE}/ground_truth'", "~")):
        assert old in text
        text = text.replace(old, new)
    source = write(tmp_path, "my_retinaface.yaml", text)

    assert main(["import-config", str(source), "-o", "imported.yaml"]) == 0
    assert main(["train", "-c", "imported.yaml", "train.progress=false", "train.plots=false"]) == 0
    run = tmp_path / "ckpt" / "face_detection" / "my_retinaface"
    state = load_checkpoint(run / "best.pt")
    assert state["meta"]["load_report"]["backbone_fraction"] == 1.0
    assert state["meta"]["load_report"]["reinitialized"] == [] and state["meta"]["load_report"]["missing"] == []
    assert state["config"]["sched"]["warmup_factor"] == pytest.approx(1 / 3)
    capsys.readouterr()


@pytest.mark.parametrize("train, val, expected", [
    ("data/WiderFace/train/label.txt", "data/WiderFace/val/",
     {"root": "data/WiderFace", "train_split": "train/label.txt", "images_dir": "train/images",
      "val_split": "val/label.txt", "val_images_dir": "val/images"}),
    ("train/label.txt", "val", {"root": ".", "train_split": "train/label.txt", "val_split": "val/label.txt"}),
    ("faces/train/label.txt", "/mnt/widerface/val/",
     {"root": "faces", "train_split": "train/label.txt", "val_split": "/mnt/widerface/val/label.txt",
      "val_images_dir": "/mnt/widerface/val/images"}),
    ("faces/train/label.txt", None, {"root": "faces", "train_split": "train/label.txt", "val_split": None}),
])
def test_mindface_dataset_layout(tmp_path, train, val, expected):
    text = f"name: 'ResNet50'\nvariance: [0.1, 0.2]\nmatch_thresh: 0.35\nbatch_size: 4\ntraining_dataset: '{train}'\n"
    if val is not None:
        text += f"val_dataset_folder: '{val}'\n"
    config = import_mindspore_config(write(tmp_path, "layout.yaml", text)).config
    assert {key: getattr(config.data, key) for key in expected} == expected
    assert config.data.batch_size == 4


def test_model_zoo_resnet50_spelling_none_resume_and_pretrain_path(tmp_path):
    """The model zoo's RetinaFace ResNet-50 config: ``name: 'Resnet50'``, ``resume_net: None`` (the string),
    ``pretrain: True`` with ``pretrain_path``: the backbone weights are used, nothing becomes 'None'."""
    text = MINDFACE_RESNET.read_text()
    for old, new in (("'name': 'ResNet50'", "'name': 'Resnet50'"), ("'resume_net': ~", "'resume_net': None")):
        assert old in text
        text = text.replace(old, new)
    imported = import_mindspore_config(write(tmp_path, "default_config.yaml", text))
    assert imported.config.model.name == "retinaface_resnet50"
    assert imported.config.model.checkpoint is None
    assert imported.config.model.backbone_checkpoint == yaml.safe_load(text)["pretrain_path"]
    assert imported.translated["pretrain_path"].startswith("model.backbone_checkpoint")


@pytest.mark.parametrize("unset", ["None", "none", "null", "''", "~"])
def test_unset_words_mean_no_resume_checkpoint(tmp_path, unset):
    text = MINDFACE_MOBILENET.read_text().replace("'resume_net': ~", f"'resume_net': {unset}")
    imported = import_mindspore_config(write(tmp_path, "cfg.yaml", text))
    assert imported.config.model.checkpoint is None
