"""What visiontune writes into an exported model's ``metadata_props`` and how it is read back.

Every value is a string; structured values are JSON. The keys:

=====================  ==================================================================================
``format_version``     version of this layout (``"1"``)
``task``               ``classification`` | ``face_detection`` | ``instance_segmentation``
``visiontune_version`` version of visiontune that exported the model
``config``             the checkpoint's stored config, canonical JSON (sorted keys, no spaces)
``config_sha256``      sha256 of ``config`` (hex), the identity of the training configuration
``task_meta``          the checkpoint's task metadata (``class_names`` ...), JSON
``class_names``        JSON list of class names (``null`` when the task has none)
``input_name``         name of the graph input
``input_shape``        JSON list, a string for each dynamic axis (``["batch", 3, 224, 224]``)
``input_size``         JSON ``[height, width]`` of the example input the graph was traced with
``input_dtype``        ``float32`` or ``float16``
``preprocessing``      JSON: colour order, value range, mean/std (or BGR mean) the input must have
``output_names``       JSON list of the graph outputs, in order
``output_kind``        what the outputs are and how to post-process them (``logits``, ``probabilities``,
                       ``retinaface_raw``, ``retinaface_decoded``, :data:`MASKRCNN_ROI_MASKS`, ...)
``exporter``           exporter and versions, e.g. ``torch.onnx TorchScript (torch 2.5.0)``
``opset``              ONNX opset of the default domain
``parity``             JSON list of the parity checks run at export (input shape, per-output differences)
=====================  ==================================================================================

The stored config and task metadata are enough to rebuild the task (its pre- and post-processing) without the
checkpoint, which is how :func:`visiontune.export.runtime.predict_onnx` works.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = "1"

MASKRCNN_ROI_MASKS = "maskrcnn_roi_masks"
"""``output_kind`` of a Mask R-CNN graph with outputs ``boxes [N, 4]``, ``labels [N]``, ``scores [N]`` and
``mask_probabilities [N, 1, M, M]``: the host pastes the masks into the image with
:func:`visiontune.models.maskrcnn.paste_masks`, as the PyTorch model does."""
MASKRCNN_PASTED_MASKS = "maskrcnn_detections"
"""``output_kind`` of the older Mask R-CNN graphs that paste in the graph: outputs ``boxes``, ``labels``,
``scores`` and ``masks [N, 1, H, W]`` (torchvision's traced paste, which can put a mask edge one pixel off)."""
MASKRCNN_OUTPUTS: dict[str, list[str]] = {
    MASKRCNN_ROI_MASKS: ["boxes", "labels", "scores", "mask_probabilities"],
    MASKRCNN_PASTED_MASKS: ["boxes", "labels", "scores", "masks"],
}
"""Mask R-CNN ``output_kind`` -> the graph outputs it has, in order."""

_JSON_KEYS = ("config", "task_meta", "class_names", "input_shape", "input_size", "preprocessing", "output_names",
              "parity")
_TEXT_KEYS = ("task", "visiontune_version", "config_sha256", "input_name", "input_dtype", "output_kind", "exporter")
REQUIRED_KEYS: tuple[str, ...] = ("format_version", *_TEXT_KEYS, *_JSON_KEYS, "opset")
"""Keys every visiontune ONNX file carries."""


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal text (and equal hashes).

    Raises:
        ValueError: ``value`` holds something JSON cannot represent (the message names its type).
    """
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except TypeError as error:
        raise ValueError(f"cannot store the value as JSON: {error}") from None


def config_sha256(config: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of a stored config (the checkpoint's ``config`` dict)."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


def json_safe_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The task metadata of a checkpoint, checked to be JSON-representable.

    Raises:
        ValueError: an entry is not JSON-representable; the message names the key.
    """
    for key, value in meta.items():
        try:
            canonical_json(value)
        except ValueError as error:
            raise ValueError(f"checkpoint meta[{key!r}] cannot be stored in the ONNX metadata: {error}") from None
    return dict(meta)


@dataclass
class ExportMetadata:
    """The visiontune metadata of an exported model (see the module docstring for each field)."""

    task: str
    config: dict[str, Any]
    task_meta: dict[str, Any]
    class_names: list[str] | None
    input_name: str
    input_shape: list[int | str]
    input_size: list[int]
    input_dtype: str
    preprocessing: dict[str, Any]
    output_names: list[str]
    output_kind: str
    exporter: str
    opset: int
    visiontune_version: str
    config_sha256: str = ""
    parity: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.config_sha256:
            self.config_sha256 = config_sha256(self.config)

    @property
    def is_dynamic(self) -> bool:
        """Whether any input axis is dynamic."""
        return any(isinstance(size, str) for size in self.input_shape)

    def to_props(self) -> dict[str, str]:
        """``metadata_props`` entries (all strings)."""
        props = {"format_version": FORMAT_VERSION, "opset": str(self.opset)}
        props.update({key: str(getattr(self, key)) for key in _TEXT_KEYS})
        props.update({key: canonical_json(getattr(self, key)) for key in _JSON_KEYS})
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, str], *, source: str) -> ExportMetadata:
        """Parse ``metadata_props`` (as read by ONNX Runtime's ``custom_metadata_map``) and check the config hash.

        Args:
            props: the model's metadata.
            source: file name for error messages.

        Raises:
            ValueError: a key is missing or malformed, the format version is unknown, or the stored config does not
                match its hash (the metadata was edited).
        """
        missing = [key for key in REQUIRED_KEYS if key not in props]
        if missing:
            raise ValueError(f"{source}: not a visiontune ONNX export (metadata lacks {', '.join(missing)}); export "
                             "the checkpoint with `visiontune export checkpoint=...`")
        if props["format_version"] != FORMAT_VERSION:
            raise ValueError(f"{source}: metadata format_version {props['format_version']!r} is not supported "
                             f"(this visiontune reads {FORMAT_VERSION!r})")
        values: dict[str, Any] = {key: props[key] for key in _TEXT_KEYS}
        for key in _JSON_KEYS:
            try:
                values[key] = json.loads(props[key])
            except json.JSONDecodeError as error:
                raise ValueError(f"{source}: metadata {key!r} is not valid JSON ({error})") from None
        try:
            values["opset"] = int(props["opset"])
        except ValueError:
            raise ValueError(f"{source}: metadata 'opset' must be an integer, got {props['opset']!r}") from None
        expected = config_sha256(values["config"])
        if expected != values["config_sha256"]:
            raise ValueError(f"{source}: metadata 'config' does not match 'config_sha256' ({expected} != "
                             f"{values['config_sha256']}); the metadata was modified after export")
        return cls(**values)
