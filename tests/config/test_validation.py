"""Value ranges declared on the schema fields, non-finite floats, duplicate YAML keys, ``key=`` and the keys a
command line sets (what a resume applies)."""

from __future__ import annotations

import dataclasses
import re
import typing

import pytest

from visiontune.config import Config, ConfigError, load_config
from visiontune.config.constraints import Pattern, Range
from visiontune.config.loader import config_from_dict, config_to_dict, copy_config, overlay_changed
from visiontune.config.validation import field_constraints, validate_config
from visiontune.config.yaml_io import DuplicateKeyError, load_yaml

# the input and the exact message (the loader adds " (override '<input>')")
OUT_OF_RANGE = [
    ("data.eval_batch_size=0", "data.eval_batch_size: expected an integer >= 1, got 0"),
    ("train.clip_grad=-1", "train.clip_grad: expected a number > 0, got -1.0"),
    ("sched.warmup_epochs=-5", "sched.warmup_epochs: expected a number >= 0, got -5.0"),
    ("data.mixup=-1", "data.mixup: expected a number >= 0, got -1.0"),
    ("data.reprob=5", "data.reprob: expected a number in [0, 1], got 5.0"),
    ("data.hflip=2", "data.hflip: expected a number in [0, 1], got 2.0"),
    ("data.label_smoothing=2", "data.label_smoothing: expected a number in [0, 1), got 2.0"),
    ("data.crop_pct=0", "data.crop_pct: expected a number in (0, 1], got 0.0"),
    ("optim.weight_decay=-1", "optim.weight_decay: expected a number >= 0, got -1.0"),
    ("optim.momentum=5", "optim.momentum: expected a number in [0, 1), got 5.0"),
    ("train.ema_decay=2", "train.ema_decay: expected a number in [0, 1), got 2.0"),
    ("optim.lr=.inf", "optim.lr: expected a finite number > 0, got inf"),
    ("data.scale=[1.0,0.1]", "data.scale: expected 2 numbers in (0, 1], the first <= the second, got [1.0, 0.1]"),
    ("train.time_budget=-1", "train.time_budget: expected a number > 0, got -1.0"),
    ("train.max_steps=-3", "train.max_steps: expected an integer >= 1, got -3"),
    ("train.save_every_steps=-1", "train.save_every_steps: expected an integer >= 0, got -1"),
    ("finetune.head_lr_mult=-1", "finetune.head_lr_mult: expected a number >= 0, got -1.0"),
    # found while giving every numeric field its range
    ("data.image_size=100000000", "data.image_size: expected an integer in [1, 8192], got 100000000"),
    ("device=bogus", "device: expected auto, cpu, cuda, cuda:N or mps, got 'bogus'"),
    ("device=cuda:x", "device: expected auto, cpu, cuda, cuda:N or mps, got 'cuda:x'"),
    ("optim.lr=.nan", "optim.lr: expected a finite number > 0, got nan"),
    ("optim.lr=0", "optim.lr: expected a number > 0, got 0.0"),
    ("train.epochs=-1", "train.epochs: expected an integer >= 0, got -1"),
    ("data.batch_size=0", "data.batch_size: expected an integer >= 1, got 0"),
    ("model.min_loaded_fraction=1.5", "model.min_loaded_fraction: expected a number in [0, 1], got 1.5"),
    ("data.mean=[0.5, 0.5]", "data.mean: expected 3 numbers in [0, 1], got [0.5, 0.5]"),
    ("sched.milestones=[5, 2]",
     "sched.milestones: expected a list of numbers >= 0, in non-decreasing order, got [5.0, 2.0]"),
    ("face.min_sizes=[[0, 16]]", "face.min_sizes: expected a list of integers >= 1, got [[0, 16]]"),
    ("finetune.lr_mults={blocks: -1}", "finetune.lr_mults: expected numbers >= 0 as values, got 'blocks': -1.0"),
    ("model.kwargs={drop: .inf}", "model.kwargs: expected finite numbers, got {'drop': inf}"),
    ("export.opset=9", "export.opset: expected an integer >= 11, got 9"),
    ("seed=-1", "seed: expected an integer in [0, 2147483647], got -1"),
]


@pytest.mark.parametrize("override, message", OUT_OF_RANGE, ids=[item[0] for item in OUT_OF_RANGE])
def test_out_of_range_values_name_the_key_and_the_range(override, message):
    with pytest.raises(ConfigError) as raised:
        load_config(None, [override])
    assert str(raised.value) == f"{message} (override {override!r})"


def test_range_errors_in_a_file_name_file_and_line(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("train:\n  epochs: 3\n  ema_decay: 2\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == f"train.ema_decay: expected a number in [0, 1), got 2.0 ({path}:3)"


def test_boundaries_and_valid_values_pass():
    config = load_config(None, ["data.hflip=1", "data.hflip=0", "data.crop_pct=1", "optim.momentum=0",
                                "data.scale=[1, 1]", "device=cuda:1", "device=mps", "data.eval_batch_size=null",
                                "train.clip_grad=null", "data.image_size=8192", "sched.milestones=[2, 2, 5]"])
    assert config.data.scale == [1.0, 1.0] and config.device == "mps" and config.data.image_size == 8192


def test_a_config_built_in_code_is_checked_too():
    config = Config()
    config.data.reprob = 5.0
    with pytest.raises(ConfigError, match=re.escape("data.reprob: expected a number in [0, 1], got 5.0")):
        validate_config(config)
    values = config_to_dict(Config())
    values["optim"]["lr"] = float("inf")
    with pytest.raises(ConfigError, match=re.escape("optim.lr: expected a finite number > 0, got inf")):
        config_from_dict(values)


def _numeric(annotation) -> bool:
    return annotation in (int, float) or any(_numeric(arg) for arg in typing.get_args(annotation))


def test_every_numeric_field_declares_its_range():
    """New numeric fields need a range next to them (``Annotated[float, NonNegative]``)."""
    missing = []
    for section in [Config, *(type(getattr(Config(), f.name)) for f in dataclasses.fields(Config)
                              if dataclasses.is_dataclass(getattr(Config(), f.name)))]:
        hints = typing.get_type_hints(section)
        for item in dataclasses.fields(section):
            annotation = hints[item.name]
            if typing.get_origin(annotation) is typing.Literal or not _numeric(annotation):
                continue
            if not any(isinstance(c, Range) for c in field_constraints(section).get(item.name, ())):
                missing.append(f"{section.__name__}.{item.name}")
    assert not missing, f"numeric fields without a declared Range: {missing}"
    assert isinstance(field_constraints(Config)["device"][0], Pattern)


def test_every_default_is_in_range():
    validate_config(Config())


# ---------------------------------------------------------------------------------------------- duplicate keys


def test_duplicate_key_in_a_file_names_both_lines(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("task: classification\noptim:\n  lr: 0.1\n  momentum: 0.9\ntrain:\n  epochs: 3\n"
                    "optim:\n  lr: 0.5\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == f"{path}:2 and {path}:7: key 'optim' is given twice"
    path.write_text("task: classification\noptim:\n  lr: 0.1\n  momentum: 0.9\n  lr: 0.5\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == f"{path}:3 and {path}:5: key 'optim.lr' is given twice"


def test_duplicate_key_at_any_depth_and_in_flow_style():
    text = "model:\n  kwargs:\n    a: 1\n    b:\n      - {x: 1, x: 2}\n"
    with pytest.raises(DuplicateKeyError, match=re.escape("c.yaml:5 and c.yaml:5: key 'model.kwargs.b[0].x' is "
                                                          "given twice")):
        load_yaml(text, "c.yaml")
    with pytest.raises(ConfigError) as raised:
        load_config(None, ["model.kwargs={a: 1, a: 2}"])
    assert str(raised.value) == "override 'model.kwargs={a: 1, a: 2}': key 'model.kwargs.a' is given twice"


def test_yaml_semantics_are_otherwise_those_of_safe_load():
    import yaml

    text = "base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\nn: 1e-4\nflag: off\nv: .inf\n"
    data, lines = load_yaml(text, "t.yaml")
    assert data == yaml.safe_load(text)
    assert lines["other.x"] == 4 and lines["n"] == 5
    with pytest.raises(ConfigError, match=re.escape("t.yaml: invalid YAML (line 2, column 2): while parsing a flow "
                                                     "sequence; expected ',' or ']', but got ':'")):
        load_yaml("a: [1, 2\nb: 3\n", "t.yaml")
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.load("!!python/object:os.system {}", Loader=__import__("visiontune.config.yaml_io",
                                                                         fromlist=["x"]).UniqueKeyLoader)


def test_duplicate_key_in_a_mindspore_config(tmp_path):
    from visiontune.interop.mindspore_configs.common import ImportConfigError, read_source_config

    path = tmp_path / "ms.yaml"
    path.write_text("mode: 0\nbatch_size: 16\nlr: 0.1\nbatch_size: 32\n")
    with pytest.raises(ImportConfigError) as raised:
        read_source_config(path)
    assert str(raised.value) == f"{path}:2 and {path}:4: key 'batch_size' is given twice"
    path.write_text("mode: 0\nbatch_size: 16\n")
    assert read_source_config(path).lines == {"mode": 1, "batch_size": 2}


# ---------------------------------------------------------------------------------------------- key= and set keys


def test_empty_value_is_the_empty_string_for_text_keys_and_null_for_optional_ones():
    config = load_config(None, ["data.image_ext=", "data.root=/d", "data.root=", "train.metric="])
    assert config.data.image_ext == "" and config.data.root is None and config.train.metric is None
    assert load_config(None, ["data.image_ext=''"]).data.image_ext == ""
    assert load_config(None, ['data.image_ext=".png"']).data.image_ext == ".png"
    assert load_config(None, ['name="a b"']).name == "a b"
    with pytest.raises(ConfigError, match=re.escape("optim.lr: expected float, got None")):
        load_config(None, ["optim.lr="])


def test_load_config_records_the_keys_given(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("optim:\n  lr: 0.01\nmodel:\n  kwargs: {a: 1}\n")
    config = load_config(path, ["train.epochs=10", "data.root=x"])
    assert config.set_keys == {"optim.lr", "model.kwargs", "train.epochs", "data.root"}
    assert copy_config(config).set_keys == config.set_keys
    assert "set_keys" not in config_to_dict(config) and Config().set_keys is None


def test_resume_overlay_applies_the_keys_set_also_when_they_equal_the_defaults():
    stored = load_config(None, ["train.epochs=5", "optim.lr=0.002", "data.root=d", "name=run"])
    update = load_config(None, ["train.epochs=10", "optim.lr=0.01", "resume=r/last.pt"])
    merged = overlay_changed(stored, update, always=("device",))
    assert (merged.train.epochs, merged.optim.lr, merged.data.root, merged.name) == (10, 0.01, "d", "run")
    untouched = overlay_changed(stored, load_config(None, ["resume=r/last.pt"]))
    assert (untouched.train.epochs, untouched.optim.lr) == (5, 0.002)
    in_code = Config()  # no set_keys: the values that differ from the defaults
    in_code.train.epochs = 7
    assert overlay_changed(stored, in_code).train.epochs == 7 and overlay_changed(stored, in_code).optim.lr == 0.002


# ---------------------------------------------------------------------------------------------- text as written


def test_parse_yaml_keeps_the_written_text_of_unquoted_non_string_scalars():
    from visiontune.config.yaml_io import parse_yaml

    document = parse_yaml("name: off\ndata:\n  categories: [no, 'yes', person]\n  root:\nn: 1.50\nq: 'off'\n", "c.yaml")
    assert document.data["name"] is False and document.data["n"] == 1.5
    assert document.texts == {"name": "off", "data.categories[0]": "no", "data.root": "", "n": "1.50"}
    assert document.lines["data.categories[1]"] == 3


def test_a_text_key_in_a_file_takes_the_text_and_a_choice_matches_it(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("name: no\nproject: 1.50\ndata:\n  root: ~\n  val_split: null\ntrain:\n  amp: off\n")
    config = load_config(path)
    assert (config.name, config.project, config.data.root, config.data.val_split) == ("no", "1.50", None, None)
    assert config.train.amp == "off"
    path.write_text("name: [a]\n")
    with pytest.raises(ConfigError, match=re.escape(f"name: expected str, got ['a'] (list) ({path}:1)")):
        load_config(path)


def test_parse_override_reads_yaml_and_refuses_a_broken_flow_collection():
    from visiontune.config.overrides import parse_override

    assert parse_override("flag=off") == ("flag", False) and parse_override("size=[1, 2]") == ("size", [1, 2])
    assert parse_override("name=a #b") == ("name", "a #b")  # an unquoted string stays as given
    with pytest.raises(ConfigError, match=re.escape("size: [1, 2 looks like a YAML flow sequence, but YAML cannot read "
                                                    "it (line 1, column 6)")):
        parse_override("size=[1, 2")


def test_an_invalid_yaml_error_pickles():
    import pickle

    from visiontune.config.yaml_io import InvalidYamlError

    with pytest.raises(InvalidYamlError) as raised:
        load_yaml("a: [1\n", "c.yaml")
    copy = pickle.loads(pickle.dumps(raised.value))
    assert (str(copy), copy.problem) == (str(raised.value), raised.value.problem)
