"""ONNX metadata: canonical config hash, round trip, and rejection of foreign or edited files."""

from __future__ import annotations

import hashlib

import pytest
import torch

from visiontune.export.metadata import ExportMetadata, canonical_json, config_sha256, json_safe_meta


def make_metadata(**changes) -> ExportMetadata:
    values = dict(task="classification", config={"task": "classification", "data": {"image_size": 32}},
                  task_meta={"class_names": ["cat", "dog"]}, class_names=["cat", "dog"], input_name="images",
                  input_shape=["batch", 3, 32, 32], input_size=[32, 32], input_dtype="float32",
                  preprocessing={"mean": [0.5, 0.5, 0.5]}, output_names=["logits"], output_kind="logits",
                  exporter="test", opset=17, visiontune_version="0.1.0")
    values.update(changes)
    return ExportMetadata(**values)


def test_config_hash_is_sha256_of_canonical_json():
    config = {"task": "classification", "data": {"root": "d", "image_size": 32}}
    reordered = {"data": {"image_size": 32, "root": "d"}, "task": "classification"}
    text = '{"data":{"image_size":32,"root":"d"},"task":"classification"}'
    assert canonical_json(config) == canonical_json(reordered) == text
    assert config_sha256(config) == config_sha256(reordered) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert config_sha256(config) != config_sha256({**config, "task": "face_detection"})


def test_props_round_trip():
    metadata = make_metadata(parity=[{"input_shape": [1, 3, 32, 32], "outputs": []}])
    props = metadata.to_props()
    assert all(isinstance(value, str) for value in props.values())
    assert props["class_names"] == '["cat","dog"]' and props["opset"] == "17" and props["format_version"] == "1"
    assert props["config_sha256"] == config_sha256(metadata.config)
    parsed = ExportMetadata.from_props(props, source="m.onnx")
    assert parsed == metadata
    assert parsed.is_dynamic and not make_metadata(input_shape=[1, 3, 32, 32]).is_dynamic


def test_edited_or_foreign_metadata_is_rejected():
    props = make_metadata().to_props()
    edited = {**props, "config": canonical_json({"task": "classification", "data": {"image_size": 64}})}
    with pytest.raises(ValueError, match=r"m\.onnx: metadata 'config' does not match 'config_sha256'"):
        ExportMetadata.from_props(edited, source="m.onnx")
    without = {key: value for key, value in props.items() if key not in ("task", "config")}
    with pytest.raises(ValueError, match=r"m\.onnx: not a visiontune ONNX export \(metadata lacks task, config\)"):
        ExportMetadata.from_props(without, source="m.onnx")
    with pytest.raises(ValueError, match="metadata 'class_names' is not valid JSON"):
        ExportMetadata.from_props({**props, "class_names": "[cat"}, source="m.onnx")
    with pytest.raises(ValueError, match="format_version '2' is not supported"):
        ExportMetadata.from_props({**props, "format_version": "2"}, source="m.onnx")


def test_task_meta_must_be_json():
    assert json_safe_meta({"class_names": ["a"], "load_report": {"loaded": 3}}) == {
        "class_names": ["a"], "load_report": {"loaded": 3}}
    with pytest.raises(ValueError, match=r"checkpoint meta\['anchors'\] cannot be stored in the ONNX metadata"):
        json_safe_meta({"class_names": ["a"], "anchors": torch.zeros(2)})
