"""Typed configuration: YAML files + dotted overrides -> :class:`Config`."""

from visiontune.config.errors import ConfigError
from visiontune.config.loader import (
    config_from_dict,
    config_to_dict,
    copy_config,
    load_config,
    save_config,
    valid_keys,
)
from visiontune.config.parsers import parse_freeze, parse_image_size
from visiontune.config.schema import (
    Config,
    ConvertConfig,
    DataConfig,
    ExportConfig,
    FaceConfig,
    FinetuneConfig,
    ModelConfig,
    OptimConfig,
    SchedConfig,
    SegmentationConfig,
    TrainConfig,
)

__all__ = [
    "Config",
    "ConfigError",
    "ConvertConfig",
    "DataConfig",
    "ExportConfig",
    "FaceConfig",
    "FinetuneConfig",
    "ModelConfig",
    "OptimConfig",
    "SchedConfig",
    "SegmentationConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "copy_config",
    "load_config",
    "parse_freeze",
    "parse_image_size",
    "save_config",
    "valid_keys",
]
