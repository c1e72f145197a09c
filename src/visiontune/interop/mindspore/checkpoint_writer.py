"""Write MindSpore ``.ckpt`` checkpoints without MindSpore.

The file layout is described in :mod:`~visiontune.interop.mindspore.checkpoint_format`.

Every tensor is validated before anything is written, and the file is replaced atomically.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from visiontune.interop.mindspore.checkpoint_format import (
    BFLOAT16,
    CHECKPOINT_VALUE_FIELD,
    MINDSPORE_SLICE_BYTES,
    STRING_TYPE,
    SUPPORTED_TENSOR_TYPES,
    TENSOR_CONTENT_FIELD,
    TENSOR_DIMS_FIELD,
    TENSOR_TYPE_FIELD,
    TENSOR_TYPES_BY_KIND,
    VALUE_TAG_FIELD,
    VALUE_TENSOR_FIELD,
)
from visiontune.interop.mindspore.errors import UnsupportedTensorTypeError
from visiontune.interop.mindspore.protobuf_wire import (
    encode_length_delimited_field,
    encode_length_delimited_header,
    encode_varint_field,
)
from visiontune.utils.files import atomic_write

__all__ = ["save_mindspore_checkpoint"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
TensorLike = np.ndarray | torch.Tensor


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
    if tensor_type == STRING_TYPE:
        if array.ndim != 0:
            raise UnsupportedTensorTypeError(
                f"tensor '{name}': only scalar (0-d) strings can be stored, got shape {list(array.shape)}"
            )
        encoded = str(array.item()).encode("utf-32-le")
        return _PreparedTensor(name, (0,), STRING_TYPE, 4, memoryview(encoded))
    dims = tuple(array.shape) if array.ndim else (0,)  # MindSpore writes a scalar as dims [0]
    little_endian = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))  # note: 0-d becomes 1-d
    content = memoryview(little_endian.reshape(-1).view(np.uint8))  # type: ignore[arg-type]  # ndarray is a buffer
    return _PreparedTensor(name, dims, tensor_type, little_endian.dtype.itemsize, content)


def _torch_to_numpy(name: str, tensor: torch.Tensor) -> tuple[np.ndarray, str]:
    tensor = tensor.detach().to("cpu").contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16), BFLOAT16
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
        return STRING_TYPE
    tensor_type = TENSOR_TYPES_BY_KIND.get((dtype.kind, dtype.itemsize))
    if tensor_type is None:
        raise UnsupportedTensorTypeError(
            f"tensor '{name}' has dtype {dtype}, which has no MindSpore tensor_type here; "
            f"supported: {', '.join(SUPPORTED_TENSOR_TYPES)}"
        )
    return tensor_type


def _write_tensor(file: BinaryIO, tensor: _PreparedTensor, *, max_slice_bytes: int) -> None:
    """Write one tensor as one or more top-level ``Checkpoint.value`` entries."""
    name_field = encode_length_delimited_field(VALUE_TAG_FIELD, tensor.name.encode("utf-8"))
    dims_fields = b"".join(encode_varint_field(TENSOR_DIMS_FIELD, dim) for dim in tensor.dims)
    type_field = encode_length_delimited_field(TENSOR_TYPE_FIELD, tensor.tensor_type.encode("utf-8"))
    slice_bytes = max(tensor.itemsize, max_slice_bytes // tensor.itemsize * tensor.itemsize)
    total = len(tensor.content)
    for start in range(0, max(total, 1), slice_bytes):
        piece = tensor.content[start : start + slice_bytes]
        tensor_header = dims_fields + type_field + encode_length_delimited_header(TENSOR_CONTENT_FIELD, len(piece))
        tensor_length = len(tensor_header) + len(piece)
        value_header = name_field + encode_length_delimited_header(VALUE_TENSOR_FIELD, tensor_length)
        value_length = len(value_header) + tensor_length
        file.write(encode_length_delimited_header(CHECKPOINT_VALUE_FIELD, value_length))
        file.write(value_header)
        file.write(tensor_header)
        file.write(piece)
