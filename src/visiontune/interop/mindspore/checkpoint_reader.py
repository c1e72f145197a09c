"""Read MindSpore ``.ckpt`` checkpoints without MindSpore.

The file layout is described in :mod:`~visiontune.interop.mindspore.checkpoint_format`.

The reader memory-maps the file, indexes the entries by byte offset and copies each tensor's bytes
exactly once into its own NumPy array.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from visiontune.interop.mindspore.checkpoint_format import (
    BFLOAT16,
    CHECKPOINT_VALUE_FIELD,
    RANDOM_STATE_TYPE,
    STORED_DTYPES,
    STRING_TYPE,
    SUPPORTED_TENSOR_TYPES,
    TENSOR_CONTENT_FIELD,
    TENSOR_DIMS_FIELD,
    TENSOR_TYPE_FIELD,
    VALUE_MAP_TENSOR_FIELD,
    VALUE_TAG_FIELD,
    VALUE_TENSOR_FIELD,
    CheckpointTensorInfo,
    describe_file_format,
)
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
    iter_fields,
    read_field,
    to_signed_int64,
)

__all__ = ["list_mindspore_checkpoint", "read_mindspore_checkpoint"]

PathLike = str | os.PathLike[str]


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
    expected_tag = (CHECKPOINT_VALUE_FIELD << 3) | WIRE_TYPE_LENGTH_DELIMITED
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
    if name_field.number != VALUE_TAG_FIELD or name_field.wire_type != WIRE_TYPE_LENGTH_DELIMITED:
        raise NotAMindSporeCheckpointError(not_checkpoint)
    try:
        bytes(buffer[name_field.payload_start : name_field.payload_end]).decode("utf-8")
    except UnicodeDecodeError as error:
        raise NotAMindSporeCheckpointError(f"{not_checkpoint} (the first name is not UTF-8)") from error


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
        if field.number != CHECKPOINT_VALUE_FIELD or field.wire_type != WIRE_TYPE_LENGTH_DELIMITED:
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
        if name_field.number != VALUE_TAG_FIELD or name_field.wire_type != WIRE_TYPE_LENGTH_DELIMITED:
            return None
        return bytes(buffer[name_field.payload_start : name_field.payload_end]).decode("utf-8")
    except (WireFormatError, UnicodeDecodeError):
        return None


def _parse_value(buffer: memoryview, value: WireField, *, source: str) -> _ValueEntry:
    name: str | None = None
    tensor_field = None
    for field in iter_fields(buffer, value.payload_start, value.payload_end):
        if field.number == VALUE_TAG_FIELD and field.wire_type == WIRE_TYPE_LENGTH_DELIMITED:
            raw_name = bytes(buffer[field.payload_start : field.payload_end])
            try:
                name = raw_name.decode("utf-8")
            except UnicodeDecodeError as error:
                raise CorruptCheckpointError(
                    f"{source} is corrupted: the name of the entry at byte offset {value.offset} is not UTF-8",
                    offset=field.offset,
                ) from error
        elif field.number == VALUE_TENSOR_FIELD and field.wire_type == WIRE_TYPE_LENGTH_DELIMITED:
            tensor_field = field
        elif field.number == VALUE_MAP_TENSOR_FIELD:
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
        if field.number == TENSOR_DIMS_FIELD and field.wire_type == WIRE_TYPE_VARINT:
            dims.append(to_signed_int64(field.value))
        elif field.number == TENSOR_DIMS_FIELD and field.wire_type == WIRE_TYPE_LENGTH_DELIMITED:
            packed = decode_packed_varints(buffer, field.payload_start, field.payload_end)
            dims.extend(to_signed_int64(dim) for dim in packed)
        elif field.number == TENSOR_TYPE_FIELD and field.wire_type == WIRE_TYPE_LENGTH_DELIMITED:
            tensor_type = bytes(buffer[field.payload_start : field.payload_end]).decode("utf-8", errors="replace")
        elif field.number == TENSOR_CONTENT_FIELD and field.wire_type == WIRE_TYPE_LENGTH_DELIMITED:
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
    if info.tensor_type == STRING_TYPE:
        return _read_string(buffer, tensor, source=source)
    if info.tensor_type == RANDOM_STATE_TYPE:
        return np.concatenate(
            [np.frombuffer(buffer, dtype=np.uint8, count=end - start, offset=start) for start, end in tensor.slices]
        )
    stored_dtype = STORED_DTYPES.get(info.tensor_type)
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
    if info.tensor_type == BFLOAT16:
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


