"""``visiontune config show`` (the resolved config) and ``visiontune config keys`` (the documented schema)."""

from __future__ import annotations

import yaml

from visiontune.cli import main
from visiontune.config import Config, config_to_dict, load_config
from visiontune.config.keys import attribute_docs, schema_keys, sections
from visiontune.config.loader import valid_keys
from visiontune.config.schema import ExportConfig, ModelConfig, TrainConfig


def test_show_prints_the_resolved_config(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text("task: face_detection\noptim:\n  lr: 0.003\n")
    assert main(["config", "show", "-c", str(path), "optim.lr=0.002", "export.half=true", "data.root=/data"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown == config_to_dict(load_config(path, ["optim.lr=0.002", "export.half=true", "data.root=/data"]))
    assert shown["task"] == "face_detection" and shown["optim"]["lr"] == 0.002 and shown["export"]["half"] is True
    assert set(shown) == set(config_to_dict(Config()))  # every key, defaults included


def test_show_rejects_unknown_keys_and_wrong_types(tmp_path, capsys):
    assert main(["config", "show", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "visiontune config: error: unknown config key 'optim.lrr'" in err and "did you mean 'optim.lr'" in err
    path = tmp_path / "cfg.yaml"
    path.write_text("train:\n  epochs: ten\n")
    assert main(["config", "show", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "train.epochs: expected int, got 'ten'" in err and f"{path}:2" in err


def test_keys_lists_every_key_with_type_default_and_doc(capsys):
    assert main(["config", "keys"]) == 0
    out = capsys.readouterr().out
    for key in valid_keys():
        if key not in sections():
            assert f"\n{key}: " in f"\n{out}", key
    assert "model.checkpoint: str | null = null\n    Local weights:" in out
    assert "export.half: bool = false\n    float16 weights and input" in out
    assert "train.amp: 'auto' | 'off' | 'bf16' | 'fp16' = auto\n" in out


def test_keys_of_one_section_or_one_key(capsys):
    assert main(["config", "keys", "export"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("export: ``visiontune export``")
    listed = [line.split(":")[0] for line in out.splitlines()[1:] if line.startswith("export.")]
    assert listed == [f"export.{name}" for name in ExportConfig.__dataclass_fields__]
    assert main(["config", "keys", "optim.lr"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == [
        "optim.lr: float (> 0) = 0.01", "    Peak learning rate (after warmup; see ``lr_scale``)."]


def test_unknown_section_says_did_you_mean(capsys):
    assert main(["config", "keys", "optm"]) == 2
    err = capsys.readouterr().err
    assert "visiontune config: error: unknown config section or key 'optm' (did you mean 'optim'" in err
    assert ("sections: model, data, loss, finetune, optim, sched, train, face, segmentation, eval, export, convert, "
            "tune") in err


def test_docs_come_from_the_attribute_docstrings():
    docs = attribute_docs(ModelConfig)
    assert docs["checkpoint_key"].startswith("Which entry of a checkpoint dict holds the weights")
    assert "log_every" not in attribute_docs(TrainConfig)  # undocumented keys have no doc
    (info,) = schema_keys("train.log_every")
    assert (info.type, info.default, info.doc) == ("int", "20", "")
    (info,) = schema_keys("data.scale")
    assert (info.type, info.default, info.doc) == ("list[float]", "[0.08, 1.0]",
                                                   "Training: area range of the random resized crop.")


def test_keys_show_the_declared_ranges(capsys):
    assert main(["config", "keys", "data"]) == 0
    out = capsys.readouterr().out
    assert "data.label_smoothing: float (in [0, 1)) = 0.0\n" in out
    assert "data.scale: list[float] (2 numbers in (0, 1], the first <= the second) = [0.08, 1.0]\n" in out
    assert "data.image_size: int (in [1, 8192]) = 224\n" in out
    assert main(["config", "keys", "device"]) == 0
    assert capsys.readouterr().out.startswith("device: str (auto, cpu, cuda, cuda:N or mps) = auto\n")
    (info,) = schema_keys("optim.momentum")
    assert info.range == "in [0, 1)"


def test_show_refuses_a_key_given_twice_and_accepts_an_empty_text_value(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text("optim:\n  lr: 0.1\ntrain:\n  epochs: 3\noptim:\n  momentum: 0.5\n")
    assert main(["config", "show", "-c", str(path)]) == 2
    assert capsys.readouterr().err == f"visiontune config: error: {path}:1 and {path}:5: key 'optim' is given twice\n"
    assert main(["config", "show", "data.image_ext=", "data.format=list"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["data"]["image_ext"] == ""


def test_show_reports_invalid_yaml_in_one_line(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text("optim:\n  lr: [0.1\ntrain: 3\n")
    assert main(["config", "show", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"visiontune config: error: {path}: invalid YAML (line 3, ")
