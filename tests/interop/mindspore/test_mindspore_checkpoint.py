"""Reading and writing MindSpore ``.ckpt`` files: real MindSpore files, round trips and bad input."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from visiontune.interop.mindspore import (
    CorruptCheckpointError,
    NotAMindSporeCheckpointError,
    UnsupportedTensorTypeError,
    checkpoint_writer,
    list_mindspore_checkpoint,
    read_mindspore_checkpoint,
    save_mindspore_checkpoint,
)
from visiontune.interop.mindspore.protobuf_wire import (
    WIRE_TYPE_LENGTH_DELIMITED,
    encode_length_delimited_field,
    encode_varint,
    encode_varint_field,
    iter_fields,
)
from visiontune.utils.files import FileWriteError

REAL_CHECKPOINTS = ("retinaface_mobilenet025", "mobilenet_v2_100", "mobilenet_v3_small_100")


def encode_entry(
    name: str, dims: Sequence[int], tensor_type: str, content: bytes, *, packed_dims: bool = False
) -> bytes:
    """One top-level ``Checkpoint.value`` entry, encoded by hand from checkpoint.proto's field numbers."""
    if packed_dims:
        dims_bytes = encode_length_delimited_field(1, b"".join(encode_varint(dim) for dim in dims))
    else:
        dims_bytes = b"".join(encode_varint_field(1, dim) for dim in dims)
    tensor_type_field = encode_length_delimited_field(2, tensor_type.encode())
    tensor = dims_bytes + tensor_type_field + encode_length_delimited_field(3, content)
    value = encode_length_delimited_field(1, name.encode()) + encode_length_delimited_field(2, tensor)
    return encode_length_delimited_field(1, value)


def write_bytes(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------------
# Real MindSpore files
# ---------------------------------------------------------------------------------------------------


def test_field_numbers_match_a_real_mindspore_file(mindspore_dir: Path) -> None:
    """Decode the first entry of a real file by hand: Checkpoint.value=1, tag=1, tensor=2, dims=1, type=2, content=3."""
    data = (mindspore_dir / "retinaface_mobilenet025.ckpt").read_bytes()
    (value, *_) = iter_fields(data, 0, len(data))
    assert (value.number, value.wire_type, value.offset) == (1, WIRE_TYPE_LENGTH_DELIMITED, 0)
    tag, tensor = iter_fields(data, value.payload_start, value.payload_end)
    assert tag.number == 1 and data[tag.payload_start : tag.payload_end] == b"base.stage1.0.0.weight"
    assert tensor.number == 2 and tensor.payload_end == value.payload_end
    fields = list(iter_fields(data, tensor.payload_start, tensor.payload_end))
    assert [(field.number, field.value) for field in fields[:4]] == [(1, 8), (1, 3), (1, 3), (1, 3)]  # unpacked dims
    assert fields[4].number == 2 and data[fields[4].payload_start : fields[4].payload_end] == b"Float32"
    assert fields[5].number == 3 and fields[5].value == 8 * 3 * 3 * 3 * 4
    # header bytes: value tag+len (3), name tag+len+22 chars (24), tensor tag+len (3), 4 dims (8), type (9), content (3)
    assert fields[5].payload_start == 3 + 24 + 3 + 8 + 9 + 3


@pytest.mark.parametrize("name", REAL_CHECKPOINTS)
def test_real_checkpoints_match_their_parameter_lists(
    mindspore_dir: Path, read_params_txt: Callable[[str], dict[str, tuple[int, ...]]], name: str
) -> None:
    tensors = read_mindspore_checkpoint(mindspore_dir / f"{name}.ckpt")
    assert [(key, array.shape) for key, array in tensors.items()] == list(read_params_txt(name).items())
    for array in tensors.values():
        assert array.dtype == np.float32 and array.flags.writeable and array.flags.c_contiguous
    variances = [array for key, array in tensors.items() if key.endswith("moving_variance")]
    assert variances and all((array > 0).all() for array in variances)


def test_real_checkpoint_values_are_the_file_bytes(mindspore_dir: Path) -> None:
    path = mindspore_dir / "retinaface_mobilenet025.ckpt"
    data = path.read_bytes()
    infos = {info.name: info for info in list_mindspore_checkpoint(path)}
    tensors = read_mindspore_checkpoint(path)
    first = infos["base.stage1.0.0.weight"]
    assert (first.offset, first.shape, first.tensor_type, first.num_bytes, first.num_slices) == (
        0, (8, 3, 3, 3), "Float32", 864, 1
    )
    expected = np.frombuffer(data, dtype="<f4", count=216, offset=50).reshape(8, 3, 3, 3)
    np.testing.assert_array_equal(tensors["base.stage1.0.0.weight"], expected)
    last = list(infos.values())[-1]
    assert last.name == "landmarkhead.2.conv1x1.bias"
    np.testing.assert_array_equal(tensors[last.name], np.frombuffer(data[-80:], dtype="<f4"))


@pytest.mark.parametrize("name", REAL_CHECKPOINTS)
def test_writer_reproduces_mindspore_files_byte_for_byte(mindspore_dir: Path, tmp_path: Path, name: str) -> None:
    tensors = read_mindspore_checkpoint(mindspore_dir / f"{name}.ckpt")
    save_mindspore_checkpoint(tmp_path / "copy.ckpt", tensors)
    assert (tmp_path / "copy.ckpt").read_bytes() == (mindspore_dir / f"{name}.ckpt").read_bytes()


# ---------------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------------


def test_round_trip_of_every_supported_dtype_and_shape(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = {
        "float32": rng.standard_normal((2, 3, 4)).astype(np.float32),
        "float16": rng.standard_normal(5).astype(np.float16),
        "float64": rng.standard_normal((3, 1)),
        "int8": np.array([-128, 0, 127], dtype=np.int8),
        "uint8": np.array([0, 255], dtype=np.uint8),
        "int16": np.array([-32768, 32767], dtype=np.int16),
        "uint16": np.array([65535], dtype=np.uint16),
        "int32": np.array([[-(2**31), 2**31 - 1]], dtype=np.int32),
        "uint32": np.array([2**32 - 1], dtype=np.uint32),
        "int64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
        "uint64": np.array([2**64 - 1], dtype=np.uint64),
        "bool": np.array([True, False, True]),
        "scalar_float": np.array(1.5, dtype=np.float32),
        "scalar_int": np.int64(42),
        "empty_vector": np.zeros(0, dtype=np.float32),
        "empty_matrix": np.zeros((2, 0, 3), dtype=np.int32),
        "one_element": np.array([7.0], dtype=np.float32),
        "name with spaces/ünïcode": np.arange(3, dtype=np.int64),
    }
    path = tmp_path / "all.ckpt"
    save_mindspore_checkpoint(path, tensors)
    loaded = read_mindspore_checkpoint(path)
    assert list(loaded) == list(tensors)
    for name, expected in tensors.items():
        expected = np.asarray(expected)
        assert loaded[name].dtype == expected.dtype, name
        assert loaded[name].shape == expected.shape, name
        np.testing.assert_array_equal(loaded[name], expected, err_msg=name)
    types = {info.name: info.tensor_type for info in list_mindspore_checkpoint(path)}
    assert types["uint16"] == "UInt16" and types["bool"] == "Bool" and types["float16"] == "Float16"


def test_scalars_are_stored_as_dims_zero_like_mindspore(tmp_path: Path) -> None:
    save_mindspore_checkpoint(tmp_path / "s.ckpt", {"global_step": np.array(5, dtype=np.int32)})
    expected = encode_entry("global_step", [0], "Int32", np.int32(5).tobytes())
    assert (tmp_path / "s.ckpt").read_bytes() == expected


def test_round_trip_of_torch_tensors(tmp_path: Path) -> None:
    weight = torch.arange(12, dtype=torch.float32, requires_grad=True).reshape(3, 4)
    tensors = {
        "weight_transposed": weight.t(),  # non-contiguous, requires grad
        "half": torch.tensor([0.5, -2.0], dtype=torch.float16),
        "bfloat16": torch.tensor([1.0, -3.5, 2.0**-10], dtype=torch.bfloat16),
        "steps": torch.tensor(3, dtype=torch.int64),
    }
    save_mindspore_checkpoint(tmp_path / "t.ckpt", tensors)
    loaded = read_mindspore_checkpoint(tmp_path / "t.ckpt")
    np.testing.assert_array_equal(loaded["weight_transposed"], weight.detach().t().numpy())
    assert loaded["half"].dtype == np.float16
    assert loaded["bfloat16"].dtype == np.float32  # BFloat16 is decoded exactly to float32
    np.testing.assert_array_equal(loaded["bfloat16"], np.array([1.0, -3.5, 2.0**-10], dtype=np.float32))
    assert loaded["steps"].shape == () and loaded["steps"] == 3
    assert list_mindspore_checkpoint(tmp_path / "t.ckpt")[2].tensor_type == "BFloat16"


def test_big_endian_and_non_contiguous_arrays_are_written_little_endian(tmp_path: Path) -> None:
    big_endian = np.arange(6, dtype=">i4").reshape(2, 3)
    strided = np.arange(20, dtype=np.float64)[::4]
    save_mindspore_checkpoint(tmp_path / "e.ckpt", {"big": big_endian, "strided": strided})
    loaded = read_mindspore_checkpoint(tmp_path / "e.ckpt")
    np.testing.assert_array_equal(loaded["big"], big_endian)
    assert loaded["big"].dtype == np.dtype("<i4")
    np.testing.assert_array_equal(loaded["strided"], [0.0, 4.0, 8.0, 12.0, 16.0])
    expected_file = encode_entry("big", [2, 3], "Int32", np.arange(6, dtype="<i4").tobytes()) + encode_entry(
        "strided", [5], "Float64", np.arange(0, 20, 4, dtype="<f8").tobytes()
    )
    assert (tmp_path / "e.ckpt").read_bytes() == expected_file


def test_string_scalar_round_trip(tmp_path: Path) -> None:
    save_mindspore_checkpoint(tmp_path / "s.ckpt", {"optimizer": np.array("Momentum")})
    loaded = read_mindspore_checkpoint(tmp_path / "s.ckpt")
    assert loaded["optimizer"].shape == () and str(loaded["optimizer"]) == "Momentum"
    with pytest.raises(UnsupportedTensorTypeError, match="'names': only scalar \\(0-d\\) strings"):
        save_mindspore_checkpoint(tmp_path / "s.ckpt", {"names": np.array(["a", "b"])})


def test_large_tensors_are_split_into_slices_and_joined_on_read(tmp_path: Path) -> None:
    array = np.arange(7, dtype=np.float32)
    path = tmp_path / "sliced.ckpt"
    save_mindspore_checkpoint(path, {"big": array, "after": np.ones(1, dtype=np.int64)}, max_slice_bytes=10)
    data = path.read_bytes()
    entries = list(iter_fields(data, 0, len(data)))
    assert len(entries) == 5  # 10-byte budget -> 8-byte (2-float) slices: 2 + 2 + 2 + 1 floats, then "after"
    infos = list_mindspore_checkpoint(path)
    assert [(info.name, info.num_slices, info.num_bytes, info.shape) for info in infos] == [
        ("big", 4, 28, (7,)),
        ("after", 1, 8, (1,)),
    ]
    np.testing.assert_array_equal(read_mindspore_checkpoint(path)["big"], array)


def test_packed_dims_are_accepted(tmp_path: Path) -> None:
    content = np.arange(6, dtype="<i8").tobytes()
    path = write_bytes(tmp_path, "packed.ckpt", encode_entry("x", [2, 3], "Int64", content, packed_dims=True))
    np.testing.assert_array_equal(read_mindspore_checkpoint(path)["x"], np.arange(6).reshape(2, 3))


# ---------------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------------


def test_the_writer_goes_through_the_atomic_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Old file kept and no temporary file on a failed write: tested once, on ``visiontune.utils.files.atomic_write``
    (tests/utils/test_files.py); here only that the writer uses it, and that its failure reaches the caller."""
    path = tmp_path / "model.ckpt"
    calls = []
    real_atomic_write = checkpoint_writer.atomic_write

    def recording(target, write, **kwargs):
        calls.append(Path(target))
        return real_atomic_write(target, write, **kwargs)

    monkeypatch.setattr(checkpoint_writer, "atomic_write", recording)
    save_mindspore_checkpoint(path, {"a": np.ones(3, dtype=np.float32)})
    assert calls == [path] and os.listdir(tmp_path) == ["model.ckpt"]

    def disk_full(target, write, **kwargs):
        raise FileWriteError(f"no space left on device while writing {target}")

    monkeypatch.setattr(checkpoint_writer, "atomic_write", disk_full)
    with pytest.raises(FileWriteError, match=f"^no space left on device while writing {re.escape(str(path))}$"):
        save_mindspore_checkpoint(path, {"b": np.zeros(2, dtype=np.float32)})
    monkeypatch.undo()
    np.testing.assert_array_equal(read_mindspore_checkpoint(path)["a"], np.ones(3, dtype=np.float32))


def test_invalid_tensors_are_rejected_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    with pytest.raises(UnsupportedTensorTypeError, match="tensor 'phase' has dtype complex64"):
        save_mindspore_checkpoint(path, {"ok": np.ones(2), "phase": np.ones(2, dtype=np.complex64)})
    assert not path.exists() and os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (torch.ones(2, dtype=torch.complex64), "tensor 'x' has dtype complex64"),
        (np.ones(2, dtype=np.longdouble), "tensor 'x' has dtype float128"),
        (np.array([b"ab"]), "tensor 'x' has dtype \\|S2"),
        ([1.0, 2.0], "tensor 'x': expected a numpy.ndarray or torch.Tensor, got list"),
    ],
)
def test_writer_names_the_tensor_with_an_unsupported_dtype(tmp_path: Path, value: object, error: str) -> None:
    with pytest.raises(UnsupportedTensorTypeError, match=error):
        save_mindspore_checkpoint(tmp_path / "x.ckpt", {"x": value})  # type: ignore[dict-item]


def test_writer_rejects_empty_names_and_bad_slice_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tensor names must be non-empty strings, got ''"):
        save_mindspore_checkpoint(tmp_path / "x.ckpt", {"": np.ones(1)})
    with pytest.raises(ValueError, match="max_slice_bytes must be >= 1, got 0"):
        save_mindspore_checkpoint(tmp_path / "x.ckpt", {"a": np.ones(1)}, max_slice_bytes=0)


# ---------------------------------------------------------------------------------------------------
# Bad input files
# ---------------------------------------------------------------------------------------------------


def test_truncated_file_names_the_entry_and_its_byte_offset(mindspore_dir: Path, tmp_path: Path) -> None:
    source = mindspore_dir / "mobilenet_v2_100.ckpt"
    fifth = list_mindspore_checkpoint(source)[4]
    assert fifth.name == "features.1.beta"
    path = write_bytes(tmp_path, "cut.ckpt", source.read_bytes()[: fifth.offset + 40])
    # 40 bytes kept = tag (1) + 2-byte length (162) + 37 payload bytes
    message = (
        f"cut.ckpt is truncated: entry #4 \\('features.1.beta'\\) starting at byte offset {fifth.offset} is cut off "
        f"\\(field 1 declares 162 bytes but only 37 remain at byte offset {fifth.offset}\\); the file has "
        f"{fifth.offset + 40} bytes"
    )
    with pytest.raises(CorruptCheckpointError, match=message) as excinfo:
        read_mindspore_checkpoint(path)
    assert excinfo.value.offset == fifth.offset


def test_file_cut_inside_an_entry_header(mindspore_dir: Path, tmp_path: Path) -> None:
    source = mindspore_dir / "mobilenet_v2_100.ckpt"
    second = list_mindspore_checkpoint(source)[1]
    path = write_bytes(tmp_path, "cut.ckpt", source.read_bytes()[: second.offset + 2])
    with pytest.raises(CorruptCheckpointError, match=f"truncated: entry #1 starting at byte offset {second.offset}"):
        read_mindspore_checkpoint(path)


def test_file_cut_inside_the_first_tensor(mindspore_dir: Path, tmp_path: Path) -> None:
    data = (mindspore_dir / "mobilenet_v2_100.ckpt").read_bytes()
    path = write_bytes(tmp_path, "cut.ckpt", data[:100])
    with pytest.raises(CorruptCheckpointError, match="entry #0 \\('features.0.weight'\\) starting at byte offset 0"):
        read_mindspore_checkpoint(path)


def test_corrupted_entry_tag_is_reported_with_its_offset(mindspore_dir: Path, tmp_path: Path) -> None:
    source = mindspore_dir / "retinaface_mobilenet025.ckpt"
    third = list_mindspore_checkpoint(source)[3]
    data = bytearray(source.read_bytes())
    assert data[third.offset] == 0x0A
    data[third.offset] = 0x08  # field 1, but wire type 0 (varint) instead of length-delimited
    path = write_bytes(tmp_path, "bad.ckpt", bytes(data))
    message = f"expected Checkpoint.value entry #3 \\(field 1, length-delimited\\) at byte offset {third.offset}"
    with pytest.raises(CorruptCheckpointError, match=message):
        read_mindspore_checkpoint(path)


def test_content_size_that_contradicts_the_shape(tmp_path: Path) -> None:
    entries = encode_entry("ok", [1], "Int8", b"\x01") + encode_entry("w", [2, 2], "Float32", bytes(12))
    path = write_bytes(tmp_path, "bad.ckpt", entries)
    offset = len(encode_entry("ok", [1], "Int8", b"\x01"))
    message = f"tensor 'w' at byte offset {offset} declares shape \\[2, 2\\] of Float32 \\(16 bytes\\) but holds 12"
    with pytest.raises(CorruptCheckpointError, match=message):
        read_mindspore_checkpoint(path)


def test_duplicate_names_are_not_merged_silently(tmp_path: Path) -> None:
    one = encode_entry("a", [1], "Int8", b"\x01")
    path = write_bytes(tmp_path, "dup.ckpt", one + encode_entry("b", [1], "Int8", b"\x02") + one)
    with pytest.raises(CorruptCheckpointError, match=f"duplicate tensor name 'a' at byte offsets 0 and {2 * len(one)}"):
        read_mindspore_checkpoint(path)


def test_unsupported_tensor_type_names_the_tensor(tmp_path: Path) -> None:
    real = encode_entry("real", [2], "Float32", bytes(8))
    path = write_bytes(tmp_path, "complex.ckpt", real + encode_entry("phase", [2], "Complex64", bytes(16)))
    message = (
        f"complex.ckpt: tensor 'phase' \\(byte offset {len(real)}\\) has tensor_type 'Complex64', which is not "
        "supported; supported types: BFloat16, Bool, Float16, Float32, Float64, Int16, Int32, Int64, Int8, UInt16, "
        "UInt32, UInt64, UInt8, random_op, str"
    )
    with pytest.raises(UnsupportedTensorTypeError, match=message):
        read_mindspore_checkpoint(path)
    # listing does not need to decode the data, so it shows the type instead of failing
    assert [(info.name, info.tensor_type) for info in list_mindspore_checkpoint(path)] == [
        ("real", "Float32"),
        ("phase", "Complex64"),
    ]


def test_random_generator_state_is_returned_as_raw_bytes(tmp_path: Path) -> None:
    entries = encode_entry("w", [1], "Float32", bytes(4)) + encode_entry("random_op", [], "random_op", b"\x01\x02\x03")
    path = write_bytes(tmp_path, "rng.ckpt", entries)
    loaded = read_mindspore_checkpoint(path)
    assert loaded["random_op"].dtype == np.uint8
    np.testing.assert_array_equal(loaded["random_op"], [1, 2, 3])


def test_map_tensor_entries_are_unsupported(tmp_path: Path) -> None:
    value = encode_length_delimited_field(1, b"embedding") + encode_length_delimited_field(3, b"")
    path = write_bytes(tmp_path, "map.ckpt", encode_length_delimited_field(1, value))
    with pytest.raises(UnsupportedTensorTypeError, match="tensor 'embedding' is a MindSpore MapTensor"):
        read_mindspore_checkpoint(path)


def test_empty_file(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "empty.ckpt", b"")
    message = "empty.ckpt is empty \\(0 bytes\\), not a MindSpore checkpoint"
    with pytest.raises(NotAMindSporeCheckpointError, match=message):
        read_mindspore_checkpoint(path)


def test_pytorch_zip_file_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    torch.save({"weight": torch.ones(2)}, path)
    with pytest.raises(NotAMindSporeCheckpointError, match="model.pth is a zip archive \\(PyTorch .pt/.pth"):
        read_mindspore_checkpoint(path)


def test_legacy_pickle_file_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pth"
    torch.save({"weight": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(NotAMindSporeCheckpointError, match="legacy.pth is a Python pickle"):
        read_mindspore_checkpoint(path)


def test_npy_file_is_recognised(tmp_path: Path) -> None:
    np.save(tmp_path / "array.npy", np.ones(3))
    with pytest.raises(NotAMindSporeCheckpointError, match="array.npy is a NumPy .npy file"):
        read_mindspore_checkpoint(tmp_path / "array.npy")


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"hello world, this is text", "byte 0 is 0x68, expected 0x0a"),
        (b"\x0a\x05\x12\x03abc", ""),  # a length-delimited field 1 that does not start with a name
        (b"\x0a\x04\x0a\x02\xff\xfe", "the first name is not UTF-8"),
        (b"\x0a", ""),
    ],
)
def test_other_bytes_are_not_a_checkpoint(tmp_path: Path, data: bytes, detail: str) -> None:
    path = write_bytes(tmp_path, "other.bin", data)
    with pytest.raises(NotAMindSporeCheckpointError, match=f"other.bin is not a MindSpore checkpoint.*{detail}"):
        read_mindspore_checkpoint(path)


def test_random_bytes_are_not_a_checkpoint(tmp_path: Path) -> None:
    data = np.random.default_rng(1).bytes(4096)
    for name, payload in (("random.bin", data), ("random_0a.bin", b"\x0a" + data)):
        path = write_bytes(tmp_path, name, payload)
        with pytest.raises(NotAMindSporeCheckpointError, match=f"{name} is not a MindSpore checkpoint"):
            read_mindspore_checkpoint(path)
