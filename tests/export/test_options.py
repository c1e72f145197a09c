"""Export options: the ``export`` config section, checked by the schema, with the example input size parsed."""

from __future__ import annotations

import pytest

from visiontune.config import ConfigError, ExportConfig, load_config
from visiontune.export import ExportOptions


def test_the_options_are_the_export_section_with_its_defaults():
    assert issubclass(ExportOptions, ExportConfig)
    options = ExportOptions()
    assert options.as_section() == {
        "format": "onnx", "dynamic": True, "opset": 17, "half": False, "softmax": False, "decode": False,
        "tolerance": None, "input_size": None, "sample": None}
    assert options.image_size is None and options.resolved_tolerance == 1e-3
    assert ExportOptions(half=True).resolved_tolerance == 2e-2
    assert ExportOptions(half=True, tolerance=0.5).resolved_tolerance == 0.5


@pytest.mark.parametrize("size", ["360x640", (360, 640), [360, 640], "360,640"])
def test_every_spelling_of_the_input_size_gives_the_same_options(size):
    options = ExportOptions(input_size=size)
    assert options.input_size == [360, 640] and options.image_size == (360, 640)
    assert options == ExportOptions.from_config(load_config(None, ["export.input_size=360x640"]).export)
    assert ExportOptions(input_size=512).image_size == (512, 512)


@pytest.mark.parametrize("options, message", [
    ({"opset": 9}, "export.opset: expected an integer >= 11, got 9"),
    ({"format": "tflite"}, "export.format: expected one of 'onnx', got 'tflite'"),
    ({"tolerance": -1.0}, "export.tolerance: expected a number >= 0, got -1.0"),
    ({"tolerance": float("nan")}, "export.tolerance: expected a finite number >= 0, got nan"),
    ({"input_size": "16x16"}, "export.input_size: expected a list of integers >= 32, got [16, 16]"),
    ({"input_size": [480, 20]}, "export.input_size: expected a list of integers >= 32, got [480, 20]"),
    ({"input_size": "4x5x6"}, "export.input_size='4x5x6': expected HEIGHTxWIDTH (e.g. 480x640)"),
    ({"half": "yes"}, "export.half: expected bool (true/false), got 'yes' (str)"),
])
def test_bad_options_are_refused_in_one_line_naming_the_key(options, message):
    with pytest.raises(ConfigError) as raised:
        ExportOptions(**options)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_the_config_loader_refuses_what_the_options_refuse():
    with pytest.raises(ConfigError, match=r"^export.input_size: expected a list of integers >= 32, got \[16, 16\]"):
        load_config(None, ["export.input_size=[16, 16]"])
