"""Read and write MindSpore ``.ckpt`` checkpoints without MindSpore.

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

The reader memory-maps the file, indexes the entries by byte offset and copies each tensor's bytes
exactly once into its own NumPy array.
"""

from __future__ import annotations

import contextlib
import logging
import math
import mmap
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

import numpy as np
import torch

from visiontune.interop.mindspore.errors import (
    CorruptCheckpointError,
    NotAMindSporeCheckpointError,
    UnsupportedTensorTypeError,
)
from visiontune.interop.mindspore.protobuf_wire import (
    WIRE_TYPE_LENGTH_DELIMITED,
    WIRE_TYPE_VARINT,
    WireField,
    WireFormatError,
    decode_packed_varints,
    decode_varint,
    encode_length_delimited_field,
    encode_length_delimited_header,
    encode_varint_field,
    iter_fields,
    read_field,
    to_signed_int64,
)
from visiontune.utils.files import atomic_write

__all__ = [
    "SUPPORTED_TENSOR_TYPES",
    "CheckpointTensorInfo",
    "describe_file_format",
    "list_mindspore_checkpoint",
    "read_mindspore_checkpoint",
    "save_mindspore_checkpoint",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
TensorLike = np.ndarray | torch.Tensor

# Field numbers of checkpoint.proto.
_CHECKPOINT_VALUE = 1
_VALUE_TAG = 1
_VALUE_TENSOR = 2
_VALUE_MAP_TENSOR = 3
_TENSOR_DIMS = 1
_TENSOR_TYPE = 2
_TENSOR_CONTENT = 3

# MindSpore splits tensor_content into slices of at most 512 MiB (serialization.SLICE_SIZE KiB).
MINDSPORE_SLICE_BYTES = 512 * 1024 * 1024

_BFLOAT16 = "BFloat16"
_STRING = "str"
_RANDOM_STATE = "random_op"  # MindSpore's serialized random-number generator state (opaque bytes)

# tensor_type -> NumPy dtype of the stored bytes (always little-endian).
_STORED_DTYPES: Mapping[str, np.dtype] = MappingProxyType(
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
        _BFLOAT16: np.dtype("<u2"),  # raw bits; decoded to float32
    }
)

# (NumPy kind, itemsize) -> tensor_type, for writing.
_TENSOR_TYPES_BY_KIND: Mapping[tuple[str, int], str] = MappingProxyType(
    {
        (dtype.kind, dtype.itemsize): name
        for name, dtype in _STORED_DTYPES.items()
        if name != _BFLOAT16
    }
)

#: Every ``tensor_type`` the reader understands. ``BFloat16`` is returned as float32 (exact);
#: ``str`` only as a scalar (0-d unicode array); ``random_op`` (MindSpore's random-generator state)
#: as its raw bytes (1-D uint8). Anything else (e.g. "Complex64", "Int4", MindSpore MapTensors)
#: raises :class:`UnsupportedTensorTypeError`.
SUPPORTED_TENSOR_TYPES: tuple[str, ...] = tuple(sorted([*_STORED_DTYPES, _STRING, _RANDOM_STATE]))


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


@dataclass(frozen=True)
class _ValueEntry:
    """One ``Checkpoint.value`` entry: where its tensor bytes lie in the file."""

    name: str
    dims: tuple[int, ...]
    tensor_type: str
    content_start: int
    content_end: int
    offset: int


@dataclass(frozen=True)
class _IndexedTensor:
    """A named tensor and the file slices holding its bytes."""

    info: CheckpointTensorInfo
    slices: tuple[tuple[int, int], ...]


def read_mindspore_checkpoint(path: PathLike) -> dict[str, np.ndarray]:
    """Read every tensor of a MindSpore ``.ckpt`` file.

    Args:
        path: the checkpoint file.

    Returns:
        Tensors by parameter name, in file order. Arrays are C-contiguous, native byte order, owned
        (writable) copies of the file data with the stored dtype (``BFloat16`` becomes float32;
        a ``str`` scalar becomes a 0-d unicode array, a ``random_op`` entry its raw bytes as uint8).
        Scalars (``dims = [0]``) have shape ``()``.

    Raises:
        NotAMindSporeCheckpointError: the file is empty or another format (zip/.pth, pickle, ...).
        CorruptCheckpointError: the file is truncated or corrupted; the message names the byte offset.
        UnsupportedTensorTypeError: a tensor's ``tensor_type`` is not in :data:`SUPPORTED_TENSOR_TYPES`.
    """
    path = Path(path)
    with _mapped_file(path) as buffer:
        index = _index_checkpoint(buffer, source=str(path))
        return {tensor.info.name: _read_tensor(buffer, tensor, source=str(path)) for tensor in index}


def list_mindspore_checkpoint(path: PathLike) -> list[CheckpointTensorInfo]:
    """List the tensors of a MindSpore ``.ckpt`` file without reading their data.

    Unsupported tensor types are listed too (their ``tensor_type`` tells which).

    Raises:
        NotAMindSporeCheckpointError: the file is empty or another format.
        CorruptCheckpointError: the file is truncated or corrupted.
    """
    path = Path(path)
    with _mapped_file(path) as buffer:
        return [tensor.info for tensor in _index_checkpoint(buffer, source=str(path))]


def save_mindspore_checkpoint(
    path: PathLike,
    tensors: Mapping[str, TensorLike],
    *,
    max_slice_bytes: int = MINDSPORE_SLICE_BYTES,
) -> None:
    """Write tensors to a MindSpore ``.ckpt`` file that MindSpore and :func:`read_mindspore_checkpoint` read.

    The file is written to a temporary file next to ``path`` and renamed over it
    (:func:`visiontune.utils.files.atomic_write`), so ``path`` never holds a partial checkpoint. All tensors
    are validated before anything is written.

    Args:
        path: destination file (overwritten if it exists).
        tensors: name -> ``numpy.ndarray`` or ``torch.Tensor`` (any device; bool, int8/16/32/64,
            uint8/16/32/64, float16/32/64, and torch.bfloat16), or a 0-d NumPy unicode array (``str``).
            Written in the mapping's order.
        max_slice_bytes: tensors larger than this are split into consecutive entries with the same
            name, like MindSpore does above 512 MiB (protobuf messages must stay below 2 GiB).

    Raises:
        UnsupportedTensorTypeError: a value is not an array/tensor or has a dtype without a MindSpore
            ``tensor_type`` (e.g. complex64); the message names the tensor.
        ValueError: an empty or non-string name, or ``max_slice_bytes < 1``.
        FileWriteError: the disk is full or the folder cannot be written (one line naming ``path``); a previous
            file at ``path`` is kept and the temporary file removed.
    """
    if max_slice_bytes < 1:
        raise ValueError(f"max_slice_bytes must be >= 1, got {max_slice_bytes}")
    prepared = [_prepare_tensor(name, value) for name, value in tensors.items()]
    path = Path(path)

    def write(file: BinaryIO) -> None:
        for tensor in prepared:
            _write_tensor(file, tensor, max_slice_bytes=max_slice_bytes)

    atomic_write(path, write)
    logger.debug("wrote %d tensors to MindSpore checkpoint %s", len(prepared), path)  # callers report the file


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _mapped_file(path: Path) -> Iterator[memoryview]:
    """Yield a read-only ``memoryview`` of the memory-mapped file (released on exit)."""
    with path.open("rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            raise NotAMindSporeCheckpointError(f"{path} is empty (0 bytes), not a MindSpore checkpoint")
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapping:
            view = memoryview(mapping)
            try:
                yield view
            finally:
                view.release()


def _index_checkpoint(buffer: memoryview, *, source: str) -> list[_IndexedTensor]:
    """Parse the entry headers and group slices into named tensors (no tensor data is read)."""
    _check_signature(buffer, source=source)
    entries = _scan_entries(buffer, source=source)
    grouped: list[list[_ValueEntry]] = []
    first_offsets: dict[str, int] = {}
    for entry in entries:
        if grouped and grouped[-1][0].name == entry.name:
            first = grouped[-1][0]
            if entry.dims != first.dims or entry.tensor_type != first.tensor_type:
                raise CorruptCheckpointError(
                    f"{source}: slice of tensor '{entry.name}' at byte offset {entry.offset} has dims "
                    f"{list(entry.dims)} / type {entry.tensor_type!r}, but its first slice at byte offset "
                    f"{first.offset} has dims {list(first.dims)} / type {first.tensor_type!r}",
                    offset=entry.offset,
                )
            grouped[-1].append(entry)
            continue
        if entry.name in first_offsets:
            raise CorruptCheckpointError(
                f"{source}: duplicate tensor name '{entry.name}' at byte offsets {first_offsets[entry.name]} "
                f"and {entry.offset}",
                offset=entry.offset,
            )
        first_offsets[entry.name] = entry.offset
        grouped.append([entry])
    return [_make_indexed_tensor(group, source=source) for group in grouped]


def _make_indexed_tensor(group: Sequence[_ValueEntry], *, source: str) -> _IndexedTensor:
    first = group[0]
    num_bytes = sum(entry.content_end - entry.content_start for entry in group)
    shape = _shape_from_dims(first, num_bytes, source=source)
    info = CheckpointTensorInfo(
        name=first.name,
        shape=shape,
        tensor_type=first.tensor_type,
        num_bytes=num_bytes,
        offset=first.offset,
        num_slices=len(group),
    )
    slices = tuple((entry.content_start, entry.content_end) for entry in group)
    return _IndexedTensor(info=info, slices=slices)


def _shape_from_dims(entry: _ValueEntry, num_bytes: int, *, source: str) -> tuple[int, ...]:
    """MindSpore stores a scalar as ``dims = [0]``; a genuinely empty 1-D tensor has no content."""
    if any(dim < 0 for dim in entry.dims):
        raise CorruptCheckpointError(
            f"{source}: tensor '{entry.name}' at byte offset {entry.offset} has negative dims {list(entry.dims)}",
            offset=entry.offset,
        )
    if entry.dims in ((), (0,)) and num_bytes > 0:
        return ()
    return entry.dims


def _check_signature(buffer: memoryview, *, source: str) -> None:
    """Reject files of other formats with a message that says what the file looks like."""
    head = bytes(buffer[:16])
    foreign = describe_file_format(head)
    if foreign is not None:
        raise NotAMindSporeCheckpointError(f"{source} is {foreign}, not a MindSpore checkpoint")
    size = len(buffer)
    not_checkpoint = (
        f"{source} is not a MindSpore checkpoint (or is an encrypted one, which is not supported): "
        "it does not start with a Checkpoint.value entry holding a parameter name"
    )
    expected_tag = (_CHECKPOINT_VALUE << 3) | WIRE_TYPE_LENGTH_DELIMITED
    if head[0] != expected_tag:
        raise NotAMindSporeCheckpointError(f"{not_checkpoint} (byte 0 is 0x{head[0]:02x}, expected 0x0a)")
    try:
        value = read_field(buffer, 0, size)
    except WireFormatError as error:
        if not error.truncated:
            raise NotAMindSporeCheckpointError(f"{not_checkpoint} ({error})") from error
        value_end = size  # truncated inside the first entry: still check the name below
    else:
        value_end = value.payload_end
        if value.wire_type != WIRE_TYPE_LENGTH_DELIMITED:
            raise NotAMindSporeCheckpointError(not_checkpoint)
    try:
        _, length_end = decode_varint(buffer, 1, size)
        name_field = read_field(buffer, length_end, value_end)
    except WireFormatError as error:
        raise NotAMindSporeCheckpointError(f"{not_checkpoint} ({error})") from error
    if name_field.number != _VALUE_TAG or name_field.wire_type != WIRE_TYPE_LENGTH_DELIMITED:
        raise NotAMindSporeCheckpointError(not_checkpoint)
    try:
        bytes(buffer[name_field.payload_start : name_field.payload_end]).decode("utf-8")
    except UnicodeDecodeError as error:
        raise NotAMindSporeCheckpointError(f"{not_checkpoint} (the first name is not UTF-8)") from error


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
    if len(head) < 3 or head[0] != (_CHECKPOINT_VALUE << 3) | WIRE_TYPE_LENGTH_DELIMITED:
        return False
    try:
        _, length_end = decode_varint(memoryview(head), 1, len(head))
    except WireFormatError:
        return False
    return length_end < len(head) and head[length_end] == (_VALUE_TAG << 3) | WIRE_TYPE_LENGTH_DELIMITED


def _looks_like_onnx(head: bytes) -> bool:
    """An ONNX ``ModelProto``: ``ir_version`` (field 1, a small varint) first, then ``producer_name``,
    ``producer_version``, ``domain``, ``model_version``, ``doc_string``, ``graph`` or ``opset_import``."""
    return len(head) >= 3 and head[0] == 0x08 and 0 < head[1] < 0x80 and head[2] in _ONNX_SECOND_FIELD_TAGS


def _scan_entries(buffer: memoryview, *, source: str) -> list[_ValueEntry]:
    """Decode the header of every top-level ``Checkpoint.value`` entry."""
    size = len(buffer)
    entries: list[_ValueEntry] = []
    offset = 0
    while offset < size:
        try:
            field = read_field(buffer, offset, size)
        except WireFormatError as error:
            raise _corrupt_error(buffer, error, entries=entries, entry_offset=offset, source=source) from error
        if field.number != _CHECKPOINT_VALUE or field.wire_type != WIRE_TYPE_LENGTH_DELIMITED:
            raise CorruptCheckpointError(
                f"{source} is corrupted: expected Checkpoint.value entry #{len(entries)} (field 1, length-delimited) "
                f"at byte offset {offset}, found field {field.number} with wire type {field.wire_type}",
                offset=offset,
            )
        try:
            entries.append(_parse_value(buffer, field, source=source))
        except WireFormatError as error:
            raise _corrupt_error(buffer, error, entries=entries, entry_offset=offset, source=source) from error
        offset = field.payload_end
    return entries


def _corrupt_error(
    buffer: memoryview,
    error: WireFormatError,
    *,
    entries: Sequence[_ValueEntry],
    entry_offset: int,
    source: str,
) -> CorruptCheckpointError:
    """Build the error for a decoding failure inside entry ``len(entries)`` starting at ``entry_offset``."""
    name = _peek_entry_name(buffer, entry_offset)
    what = f"entry #{len(entries)}" + (f" ('{name}')" if name else "")
    if error.truncated:
        message = (
            f"{source} is truncated: {what} starting at byte offset {entry_offset} is cut off "
            f"({error}); the file has {len(buffer)} bytes"
        )
    else:
        message = f"{source} is corrupted: cannot decode {what} starting at byte offset {entry_offset} ({error})"
    return CorruptCheckpointError(message, offset=error.offset)


def _peek_entry_name(buffer: memoryview, entry_offset: int) -> str | None:
    """Best-effort read of the ``tag`` of the entry at ``entry_offset`` (for error messages)."""
    try:
        value = read_field(buffer, entry_offset, len(buffer))
        start, end = value.payload_start, value.payload_end
    except WireFormatError:
        try:
            _, start = decode_varint(buffer, entry_offset + 1, len(buffer))
            end = len(buffer)
        except WireFormatError:
            return None
    try:
        name_field = read_field(buffer, start, end)
        if name_field.number != _VALUE_TAG or name_field.wire_type != WIRE_TYPE_LENGTH_DELIMITED:
            return None
        return bytes(buffer[name_field.payload_start : name_field.payload_end]).decode("utf-8")
    except (WireFormatError, UnicodeDecodeError):
        return None


def _parse_value(buffer: memoryview, value: WireField, *, source: str) -> _ValueEntry:
    name: str | None = None
    tensor_field = None
    for field in iter_fields(buffer, value.payload_start, value.payload_end):
        if field.number == _VALUE_TAG and field.wire_type == WIRE_TYPE_LENGTH_DELIMITED:
            raw_name = bytes(buffer[field.payload_start : field.payload_end])
            try:
                name = raw_name.decode("utf-8")
            except UnicodeDecodeError as error:
                raise CorruptCheckpointError(
                    f"{source} is corrupted: the name of the entry at byte offset {value.offset} is not UTF-8",
                    offset=field.offset,
                ) from error
        elif field.number == _VALUE_TENSOR and field.wire_type == WIRE_TYPE_LENGTH_DELIMITED:
            tensor_field = field
        elif field.number == _VALUE_MAP_TENSOR:
            label = f"'{name}'" if name else f"at byte offset {value.offset}"
            raise UnsupportedTensorTypeError(
                f"{source}: tensor {label} is a MindSpore MapTensor (embedding hash table), which is not supported"
            )
    if name is None:
        raise CorruptCheckpointError(
            f"{source} is corrupted: the entry at byte offset {value.offset} has no name (tag)", offset=value.offset
        )
    if tensor_field is None:
        raise CorruptCheckpointError(
            f"{source} is corrupted: entry '{name}' at byte offset {value.offset} has no tensor", offset=value.offset
        )
    return _parse_tensor(buffer, tensor_field, name=name, entry_offset=value.offset, source=source)


def _parse_tensor(
    buffer: memoryview, tensor: WireField, *, name: str, entry_offset: int, source: str
) -> _ValueEntry:
    dims: list[int] = []
    tensor_type: str | None = None
    content = (tensor.payload_end, tensor.payload_end)
    for field in iter_fields(buffer, tensor.payload_start, tensor.payload_end):
        if field.number == _TENSOR_DIMS and field.wire_type == WIRE_TYPE_VARINT:
            dims.append(to_signed_int64(field.value))
        elif field.number == _TENSOR_DIMS and field.wire_type == WIRE_TYPE_LENGTH_DELIMITED:
            packed = decode_packed_varints(buffer, field.payload_start, field.payload_end)
            dims.extend(to_signed_int64(dim) for dim in packed)
        elif field.number == _TENSOR_TYPE and field.wire_type == WIRE_TYPE_LENGTH_DELIMITED:
            tensor_type = bytes(buffer[field.payload_start : field.payload_end]).decode("utf-8", errors="replace")
        elif field.number == _TENSOR_CONTENT and field.wire_type == WIRE_TYPE_LENGTH_DELIMITED:
            content = (field.payload_start, field.payload_end)
    if tensor_type is None:
        raise CorruptCheckpointError(
            f"{source} is corrupted: tensor '{name}' at byte offset {entry_offset} has no tensor_type",
            offset=entry_offset,
        )
    return _ValueEntry(
        name=name,
        dims=tuple(dims),
        tensor_type=tensor_type,
        content_start=content[0],
        content_end=content[1],
        offset=entry_offset,
    )


def _read_tensor(buffer: memoryview, tensor: _IndexedTensor, *, source: str) -> np.ndarray:
    """Copy one tensor's bytes out of the mapped file into a new array (one copy)."""
    info = tensor.info
    if info.tensor_type == _STRING:
        return _read_string(buffer, tensor, source=source)
    if info.tensor_type == _RANDOM_STATE:
        return np.concatenate(
            [np.frombuffer(buffer, dtype=np.uint8, count=end - start, offset=start) for start, end in tensor.slices]
        )
    stored_dtype = _STORED_DTYPES.get(info.tensor_type)
    if stored_dtype is None:
        raise UnsupportedTensorTypeError(
            f"{source}: tensor '{info.name}' (byte offset {info.offset}) has tensor_type {info.tensor_type!r}, "
            f"which is not supported; supported types: {', '.join(SUPPORTED_TENSOR_TYPES)}"
        )
    expected_bytes = math.prod(info.shape) * stored_dtype.itemsize
    if expected_bytes != info.num_bytes:
        raise CorruptCheckpointError(
            f"{source} is corrupted: tensor '{info.name}' at byte offset {info.offset} declares shape "
            f"{list(info.shape)} of {info.tensor_type} ({expected_bytes} bytes) but holds {info.num_bytes} bytes",
            offset=info.offset,
        )
    raw = np.empty(info.num_bytes, dtype=np.uint8)
    position = 0
    for start, end in tensor.slices:
        length = end - start
        if length:
            raw[position : position + length] = np.frombuffer(buffer, dtype=np.uint8, count=length, offset=start)
            position += length
    array = raw.view(stored_dtype)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if info.tensor_type == _BFLOAT16:
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array.reshape(info.shape)


def _read_string(buffer: memoryview, tensor: _IndexedTensor, *, source: str) -> np.ndarray:
    info = tensor.info
    if info.shape != () or info.num_bytes % 4:
        raise UnsupportedTensorTypeError(
            f"{source}: tensor '{info.name}' (byte offset {info.offset}) has tensor_type 'str' with shape "
            f"{list(info.shape)} and {info.num_bytes} bytes; only scalar UTF-32 strings are supported"
        )
    data = b"".join(bytes(buffer[start:end]) for start, end in tensor.slices)
    return np.array(data.decode("utf-32-le"))


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PreparedTensor:
    name: str
    dims: tuple[int, ...]
    tensor_type: str
    itemsize: int
    content: memoryview  # flat uint8 view of little-endian C-order data


def _prepare_tensor(name: str, value: TensorLike) -> _PreparedTensor:
    if not isinstance(name, str) or not name:
        raise ValueError(f"tensor names must be non-empty strings, got {name!r}")
    if isinstance(value, torch.Tensor):
        array, tensor_type = _torch_to_numpy(name, value)
    elif isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
        tensor_type = _numpy_tensor_type(name, array.dtype)
    else:
        raise UnsupportedTensorTypeError(
            f"tensor '{name}': expected a numpy.ndarray or torch.Tensor, got {type(value).__name__}"
        )
    if tensor_type == _STRING:
        if array.ndim != 0:
            raise UnsupportedTensorTypeError(
                f"tensor '{name}': only scalar (0-d) strings can be stored, got shape {list(array.shape)}"
            )
        encoded = str(array.item()).encode("utf-32-le")
        return _PreparedTensor(name, (0,), _STRING, 4, memoryview(encoded))
    dims = tuple(array.shape) if array.ndim else (0,)  # MindSpore writes a scalar as dims [0]
    little_endian = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))  # note: 0-d becomes 1-d
    content = memoryview(little_endian.reshape(-1).view(np.uint8))  # type: ignore[arg-type]  # ndarray is a buffer
    return _PreparedTensor(name, dims, tensor_type, little_endian.dtype.itemsize, content)


def _torch_to_numpy(name: str, tensor: torch.Tensor) -> tuple[np.ndarray, str]:
    tensor = tensor.detach().to("cpu").contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16), _BFLOAT16
    try:
        array = tensor.numpy()
    except TypeError as error:
        raise UnsupportedTensorTypeError(
            f"tensor '{name}' has dtype {tensor.dtype}, which has no MindSpore tensor_type here; "
            f"supported: {', '.join(SUPPORTED_TENSOR_TYPES)}"
        ) from error
    return array, _numpy_tensor_type(name, array.dtype)


def _numpy_tensor_type(name: str, dtype: np.dtype) -> str:
    if dtype.kind == "U":
        return _STRING
    tensor_type = _TENSOR_TYPES_BY_KIND.get((dtype.kind, dtype.itemsize))
    if tensor_type is None:
        raise UnsupportedTensorTypeError(
            f"tensor '{name}' has dtype {dtype}, which has no MindSpore tensor_type here; "
            f"supported: {', '.join(SUPPORTED_TENSOR_TYPES)}"
        )
    return tensor_type


def _write_tensor(file: BinaryIO, tensor: _PreparedTensor, *, max_slice_bytes: int) -> None:
    """Write one tensor as one or more top-level ``Checkpoint.value`` entries."""
    name_field = encode_length_delimited_field(_VALUE_TAG, tensor.name.encode("utf-8"))
    dims_fields = b"".join(encode_varint_field(_TENSOR_DIMS, dim) for dim in tensor.dims)
    type_field = encode_length_delimited_field(_TENSOR_TYPE, tensor.tensor_type.encode("utf-8"))
    slice_bytes = max(tensor.itemsize, max_slice_bytes // tensor.itemsize * tensor.itemsize)
    total = len(tensor.content)
    for start in range(0, max(total, 1), slice_bytes):
        piece = tensor.content[start : start + slice_bytes]
        tensor_header = dims_fields + type_field + encode_length_delimited_header(_TENSOR_CONTENT, len(piece))
        tensor_length = len(tensor_header) + len(piece)
        value_header = name_field + encode_length_delimited_header(_VALUE_TENSOR, tensor_length)
        value_length = len(value_header) + tensor_length
        file.write(encode_length_delimited_header(_CHECKPOINT_VALUE, value_length))
        file.write(value_header)
        file.write(tensor_header)
        file.write(piece)
