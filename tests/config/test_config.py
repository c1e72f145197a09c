"""Typed config: YAML + overrides, unknown keys and wrong types with did-you-mean messages."""

from pathlib import Path

import pytest
import yaml

from visiontune.config import Config, ConfigError, load_config, parse_freeze, save_config, valid_keys
from visiontune.tasks import create_task

REPO = Path(__file__).resolve().parents[2]


def test_defaults_and_overrides_are_typed():
    config = load_config(None, ["optim.lr=0.002", "model.name=convnext_tiny", "data.image_size=600",
                                "data.scale=[0.5, 1]", "train.ema=true", "finetune.lr_mults={blocks.5: 1.1}"])
    assert config.optim.lr == 0.002
    assert config.model.name == "convnext_tiny"
    assert config.data.image_size == 600
    assert config.data.scale == [0.5, 1.0] and all(isinstance(v, float) for v in config.data.scale)
    assert config.train.ema is True
    assert config.finetune.lr_mults == {"blocks.5": 1.1}


def test_int_accepted_for_float_but_not_string_for_int():
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0
    with pytest.raises(ConfigError, match=r"data.image_size: expected int, got 'big'"):
        load_config(None, ["data.image_size=big"])


def test_unknown_key_suggests_nearest(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'.*did you mean 'optim.lr'"):
        load_config(None, ["optim.lrr=0.1"])
    path = tmp_path / "cfg.yaml"
    path.write_text("task: classification\noptim:\n  lr: 0.1\n  momentun: 0.9\n")
    with pytest.raises(ConfigError, match=r"optim.momentun.*cfg.yaml:4.*did you mean 'optim.momentum'"):
        load_config(path)


def test_wrong_type_in_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("train:\n  epochs: ten\n")
    with pytest.raises(ConfigError, match=r"train.epochs: expected int, got 'ten'.*cfg.yaml:2"):
        load_config(path)


def test_literal_choices_and_unknown_task():
    with pytest.raises(ConfigError,
                       match=r"sched.name: expected one of .*'cosine'.*got 'cosin'.*did you mean 'cosine'"):
        load_config(None, ["sched.name=cosin"])
    with pytest.raises(ConfigError, match=r"task: unknown task 'clasification'.*did you mean 'classification'"):
        create_task(load_config(None, ["task=clasification"]))  # validated where tasks are created


def test_section_must_be_mapping_and_override_syntax():
    with pytest.raises(ConfigError, match=r"optim.*expected a mapping"):
        load_config(None, ["optim=3"])
    with pytest.raises(ConfigError, match=r"not of the form key=value"):
        load_config(None, ["optim.lr"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML"):
        load_config(bad)


def test_freeze_forms():
    assert parse_freeze("none") == ("none", None)
    assert parse_freeze("backbone") == ("backbone", None)
    assert parse_freeze({"first_n": 3}) == ("first_n", 3)
    assert parse_freeze("first_n:4") == ("first_n", 4)
    assert parse_freeze(["^net\\.conv_stem"]) == ("regex", ["^net\\.conv_stem"])
    with pytest.raises(ConfigError, match=r"invalid regular expression '\['"):
        parse_freeze(["["])
    with pytest.raises(ConfigError, match=r"finetune.freeze: expected"):
        parse_freeze(42)


def test_save_roundtrip(tmp_path):
    config = load_config(None, ["optim.lr=0.123", "finetune.freeze={first_n: 2}"])
    path = save_config(config, tmp_path / "config.yaml")
    again = load_config(path)
    assert again == config
    assert isinstance(again, Config)


@pytest.mark.parametrize("preset", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_loads(preset):
    config = load_config(preset)
    assert config.task in ("classification", "face_detection", "instance_segmentation")
    # every key in the file is a schema key (load_config would have raised otherwise)
    data = yaml.safe_load(preset.read_text())
    assert set(data) <= set(valid_keys())


def test_aircraft_recipe_matches_mindcv():
    config = load_config(REPO / "configs/classification/mindcv_aircraft_mobilenetv3_large.yaml")
    assert (config.data.batch_size, config.data.image_size, config.data.auto_augment) == (8, 600, "rand-m7-mstd0.5")
    assert (config.train.epochs, config.optim.lr) == (50, 0.002)


def test_off_literal_and_flow_mapping_typo():
    assert load_config(None, ["train.amp=off"]).train.amp == "off"
    with pytest.raises(ConfigError, match=r"model.kwargs: entry 'img_size:32' has no value; YAML needs a space"):
        load_config(None, ["model.kwargs={img_size:32}"])
    assert load_config(None, ["model.kwargs={img_size: 32}"]).model.kwargs == {"img_size": 32}


def test_exponent_without_dot_is_a_float(tmp_path):
    assert load_config(None, ["optim.weight_decay=1e-4"]).optim.weight_decay == 1e-4
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 5e-3\n")
    assert load_config(path).optim.lr == 0.005
    with pytest.raises(ConfigError, match=r"optim.lr: expected float, got '1e-4x'"):
        load_config(None, ["optim.lr=1e-4x"])
