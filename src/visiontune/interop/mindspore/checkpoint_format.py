"""The layout of a MindSpore ``.ckpt`` checkpoint: protobuf field numbers, tensor types, and file-format sniffing.

A MindSpore checkpoint is a serialized protobuf ``Checkpoint`` message
(``mindspore/ccsrc/utils/checkpoint.proto``)::

    message Checkpoint {
        message Value {
            required string tag = 1;               // parameter name
            oneof value {
                TensorProto tensor = 2;
                MapTensorProto maptensor = 3;      // not supported here
            }
        }
        repeated Value value = 1;
    }
    message TensorProto {
        repeated int64 dims = 1;                   // shape; [0] means a scalar
        required string tensor_type = 2;           // "Float32", "Int64", ...
        required bytes tensor_content = 3;         // raw little-endian C-order data
    }

MindSpore writes one ``Value`` per parameter, except that a parameter larger than 512 MiB is split
into several consecutive ``Value`` entries with the same tag, whose contents are concatenated.

:mod:`~visiontune.interop.mindspore.checkpoint_reader` reads such files and
:mod:`~visiontune.interop.mindspore.checkpoint_writer` writes them, both without MindSpore or protobuf.
"""


from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from visiontune.interop.mindspore.protobuf_wire import WIRE_TYPE_LENGTH_DELIMITED, WireFormatError, decode_varint

__all__ = [
    "BFLOAT16",
    "CHECKPOINT_VALUE_FIELD",
    "MINDSPORE_SLICE_BYTES",
    "RANDOM_STATE_TYPE",
    "STORED_DTYPES",
    "STRING_TYPE",
    "SUPPORTED_TENSOR_TYPES",
    "TENSOR_CONTENT_FIELD",
    "TENSOR_DIMS_FIELD",
    "TENSOR_TYPES_BY_KIND",
    "TENSOR_TYPE_FIELD",
    "VALUE_MAP_TENSOR_FIELD",
    "VALUE_TAG_FIELD",
    "VALUE_TENSOR_FIELD",
    "CheckpointTensorInfo",
    "describe_file_format",
]

# Field numbers of checkpoint.proto.
CHECKPOINT_VALUE_FIELD = 1
VALUE_TAG_FIELD = 1
VALUE_TENSOR_FIELD = 2
VALUE_MAP_TENSOR_FIELD = 3
TENSOR_DIMS_FIELD = 1
TENSOR_TYPE_FIELD = 2
TENSOR_CONTENT_FIELD = 3

# MindSpore splits tensor_content into slices of at most 512 MiB (serialization.SLICE_SIZE KiB).
MINDSPORE_SLICE_BYTES = 512 * 1024 * 1024

BFLOAT16 = "BFloat16"
STRING_TYPE = "str"
RANDOM_STATE_TYPE = "random_op"  # MindSpore's serialized random-number generator state (opaque bytes)

# tensor_type -> NumPy dtype of the stored bytes (always little-endian).
STORED_DTYPES: Mapping[str, np.dtype] = MappingProxyType(
    {
        "Bool": np.dtype("?"),
        "Int8": np.dtype("i1"),
        "UInt8": np.dtype("u1"),
        "Int16": np.dtype("<i2"),
        "UInt16": np.dtype("<u2"),
        "Int32": np.dtype("<i4"),
        "UInt32": np.dtype("<u4"),
        "Int64": np.dtype("<i8"),
        "UInt64": np.dtype("<u8"),
        "Float16": np.dtype("<f2"),
        "Float32": np.dtype("<f4"),
        "Float64": np.dtype("<f8"),
        BFLOAT16: np.dtype("<u2"),  # raw bits; decoded to float32
    }
)

# (NumPy kind, itemsize) -> tensor_type, for writing.
TENSOR_TYPES_BY_KIND: Mapping[tuple[str, int], str] = MappingProxyType(
    {
        (dtype.kind, dtype.itemsize): name
        for name, dtype in STORED_DTYPES.items()
        if name != BFLOAT16
    }
)

#: Every ``tensor_type`` the reader understands. ``BFloat16`` is returned as float32 (exact);
#: ``str`` only as a scalar (0-d unicode array); ``random_op`` (MindSpore's random-generator state)
#: as its raw bytes (1-D uint8). Anything else (e.g. "Complex64", "Int4", MindSpore MapTensors)
#: raises :class:`UnsupportedTensorTypeError`.
SUPPORTED_TENSOR_TYPES: tuple[str, ...] = tuple(sorted([*STORED_DTYPES, STRING_TYPE, RANDOM_STATE_TYPE]))


@dataclass(frozen=True)
class CheckpointTensorInfo:
    """Metadata of one named tensor in a checkpoint (no data).

    Attributes:
        name: parameter name (the ``tag``).
        shape: tensor shape; ``()`` for a scalar (stored as ``dims = [0]``).
        tensor_type: MindSpore type string, e.g. ``"Float32"``.
        num_bytes: total size of ``tensor_content`` over all slices.
        offset: byte offset of the tensor's first ``Value`` entry in the file.
        num_slices: number of ``Value`` entries holding the data (> 1 only for tensors > 512 MiB).
    """

    name: str
    shape: tuple[int, ...]
    tensor_type: str
    num_bytes: int
    offset: int
    num_slices: int


def describe_file_format(head: bytes, *, mindspore: bool = False) -> str | None:
    """Name a well-known format from a file's first 16 bytes (``"an ONNX model"``, ``"a safetensors file"``, a PyTorch
    zip archive or pickle, ...; ``"a MindSpore checkpoint"`` too when ``mindspore``), or None."""
    if mindspore and _looks_like_mindspore(head):
        return "a MindSpore checkpoint"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "a zip archive (PyTorch .pt/.pth files written by torch.save are zip archives; use torch.load)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a Python pickle (legacy torch.save format; use torch.load)"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "an HDF5 file"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip-compressed file"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy file"
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 1 << 32:
        return "a safetensors file"
    if _looks_like_onnx(head):
        return "an ONNX model"
    return None


_ONNX_SECOND_FIELD_TAGS = frozenset({(2 << 3) | 2, (3 << 3) | 2, (4 << 3) | 2, (5 << 3) | 0, (6 << 3) | 2,
                                     (7 << 3) | 2, (8 << 3) | 2})


def _looks_like_mindspore(head: bytes) -> bool:
    """A ``Checkpoint.value`` entry (field 1, length-delimited) whose first field is its ``tag`` (the name)."""
    if len(head) < 3 or head[0] != (CHECKPOINT_VALUE_FIELD << 3) | WIRE_TYPE_LENGTH_DELIMITED:
        return False
    try:
        _, length_end = decode_varint(memoryview(head), 1, len(head))
    except WireFormatError:
        return False
    return length_end < len(head) and head[length_end] == (VALUE_TAG_FIELD << 3) | WIRE_TYPE_LENGTH_DELIMITED


def _looks_like_onnx(head: bytes) -> bool:
    """An ONNX ``ModelProto``: ``ir_version`` (field 1, a small varint) first, then ``producer_name``,
    ``producer_version``, ``domain``, ``model_version``, ``doc_string``, ``graph`` or ``opset_import``."""
    return len(head) >= 3 and head[0] == 0x08 and 0 < head[1] < 0x80 and head[2] in _ONNX_SECOND_FIELD_TAGS

