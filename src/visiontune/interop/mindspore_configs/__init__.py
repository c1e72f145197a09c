"""Import MindFace (RetinaFace) and MindCV training configs as visiontune configs.

::

    imported = import_mindspore_config("RetinaFace_mobilenet025.yaml")   # family detected from the keys
    imported.untranslated      # {"ngpu": "visiontune uses torchrun ...", ...}
    imported.write("retinaface.yaml")                                     # commented YAML for `visiontune train -c`

Every key of the source file is either translated (``imported.translated``: source key -> visiontune keys) or
listed with the reason it has no counterpart (``imported.untranslated``); ``imported.notes`` explains translations
that are approximate. The result is validated against the visiontune schema.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from visiontune.interop.mindspore_configs.common import (
    ImportConfigError,
    ImportedConfig,
    SourceConfig,
    read_source_config,
)
from visiontune.interop.mindspore_configs.mindcv import (
    MINDCV_DEFAULTS,
    MINDCV_MARKERS,
    timm_auto_augment,
    timm_model_name,
    translate_mindcv,
)
from visiontune.interop.mindspore_configs.mindface import MINDFACE_MARKERS, MINDFACE_MODELS, translate_mindface

__all__ = [
    "CONFIG_FAMILIES",
    "MINDCV_DEFAULTS",
    "MINDFACE_MODELS",
    "ImportConfigError",
    "ImportedConfig",
    "SourceConfig",
    "detect_config_family",
    "import_mindspore_config",
    "read_source_config",
    "timm_auto_augment",
    "timm_model_name",
]

CONFIG_FAMILIES = ("mindface", "mindcv")

_MIN_MARKERS = 2
_VISIONTUNE_SECTIONS = ("optim", "sched", "train", "data", "finetune", "face", "segmentation")


def detect_config_family(values: Mapping[str, Any], *, source: str = "<config>") -> str:
    """Tell a MindFace RetinaFace config (``"mindface"``) from a MindCV one (``"mindcv"``) by their keys.

    MindFace configs have keys such as ``variance``, ``match_thresh``, ``decay1``; MindCV configs a string
    ``model`` and keys such as ``epoch_size``, ``opt``, ``scheduler``.

    Raises:
        ImportConfigError: a visiontune config, or neither family (the message lists the keys looked for).
    """
    sections = [key for key in _VISIONTUNE_SECTIONS if isinstance(values.get(key), Mapping)]
    if sections or isinstance(values.get("model"), Mapping):
        raise ImportConfigError(
            f"{source} is already a visiontune config (it has the sections {sections or ['model']}); "
            "use it directly with `visiontune train -c`"
        )
    mindface = sorted(MINDFACE_MARKERS.intersection(values))
    mindcv = sorted(MINDCV_MARKERS.intersection(values))
    if isinstance(values.get("model"), str):
        mindcv.append("model")
    if len(mindface) >= _MIN_MARKERS and len(mindface) > len(mindcv):
        return "mindface"
    if len(mindcv) >= _MIN_MARKERS and len(mindcv) > len(mindface):
        return "mindcv"
    found = ", ".join(list(values)[:12]) + (", ..." if len(values) > 12 else "")
    if len(mindface) >= _MIN_MARKERS:
        raise ImportConfigError(
            f"{source}: cannot tell whether this is a MindFace or a MindCV config: it has the MindFace keys "
            f"{mindface} and the MindCV keys {mindcv}"
        )
    raise ImportConfigError(
        f"{source} is neither a MindFace RetinaFace config (keys such as variance, match_thresh, decay1, initial_lr) "
        f"nor a MindCV config (a model name and keys such as epoch_size, opt, scheduler); its keys: {found}"
    )


def import_mindspore_config(path: str | os.PathLike[str], *, family: str | None = None) -> ImportedConfig:
    """Read a MindFace RetinaFace or MindCV YAML config and translate it to visiontune.

    Args:
        path: the YAML file.
        family: ``"mindface"`` or ``"mindcv"``; detected from the keys when None.

    Returns:
        The translation, with the typed config, the per-key report and :meth:`ImportedConfig.write`.

    Raises:
        ImportConfigError: missing file, invalid YAML, unknown family, a value of the wrong type or an
            unsupported value; the message names the file (and the line and key).
    """
    source = read_source_config(path)
    if family is None:
        family = detect_config_family(source.values, source=str(source.path))
    if family == "mindface":
        return translate_mindface(source)
    if family == "mindcv":
        return translate_mindcv(source)
    raise ImportConfigError(f"unknown config family {family!r}; expected one of {', '.join(CONFIG_FAMILIES)}")
