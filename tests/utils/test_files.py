"""The atomic writers of visiontune.utils.files: content replaced whole, old file kept on failure, one-line errors."""

import errno
import json
import os
import re

import numpy as np
import pytest

from visiontune.utils import files
from visiontune.utils.files import (
    TEMP_FILE_PATTERN,
    FileWriteError,
    atomic_path,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    open_temp_file,
    temp_files_of,
    temp_name,
)


class ToolError(Exception):
    """The error family of a caller (as the engine's ``CheckpointError``)."""


class ToolWriteError(ToolError, FileWriteError):
    """A caller's failed write: both its own error and a :class:`FileWriteError`."""


def names(folder):
    return sorted(path.name for path in folder.iterdir())


def test_atomic_write_text_replaces_the_content(tmp_path):
    path = tmp_path / "notes.txt"
    assert atomic_write_text("first version, rather long\n", path) == path
    assert atomic_write_text("second\n", path) == path
    assert path.read_text(encoding="utf-8") == "second\n"
    assert names(tmp_path) == ["notes.txt"]


def test_missing_folders_are_created(tmp_path):
    path = atomic_write_bytes(b"\x00\x01", tmp_path / "a" / "b" / "data.bin")
    assert path.read_bytes() == b"\x00\x01"


def test_failing_writer_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = atomic_write_text("old\n", tmp_path / "state.txt")

    def half_then_bug(stream):
        stream.write(b"new, half writ")
        raise KeyError("a bug in the writer")

    with pytest.raises(KeyError, match="a bug in the writer"):  # not a write failure: propagates unchanged
        atomic_write(path, half_then_bug)
    assert path.read_text(encoding="utf-8") == "old\n"
    assert names(tmp_path) == ["state.txt"]


def test_interrupted_writer_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = atomic_write_text("old\n", tmp_path / "state.txt")

    def interrupted(stream):
        stream.write(b"new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert path.read_text(encoding="utf-8") == "old\n"
    assert names(tmp_path) == ["state.txt"]


def disk_full(stream):
    stream.write(b"partial")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_is_one_line_naming_the_file(tmp_path):
    path = atomic_write_text("old\n", tmp_path / "results.json")
    with pytest.raises(FileWriteError) as raised:
        atomic_write(path, disk_full)
    message = str(raised.value)
    assert message == f"no space left on device while writing {path}"
    assert "\n" not in message
    assert isinstance(raised.value, ValueError)  # the command line prints it as one line
    assert isinstance(raised.value.__cause__, OSError) and raised.value.__cause__.errno == errno.ENOSPC
    assert path.read_text(encoding="utf-8") == "old\n"
    assert names(tmp_path) == ["results.json"]


@pytest.mark.parametrize(("error", "expected"), [
    (OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), "disk quota exceeded while writing {path}"),
    (OSError(errno.EROFS, os.strerror(errno.EROFS)), "cannot write to {path}: Read-only file system"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4480 vs 4374"),
     "no space left on device while writing {path}"),
])
def test_other_write_failures_are_one_line(tmp_path, error, expected):
    path = tmp_path / "model.onnx"

    def failing(stream):
        raise error

    with pytest.raises(FileWriteError) as raised:
        atomic_write(path, failing)
    assert str(raised.value) == expected.format(path=path)
    assert names(tmp_path) == []


def test_unwritable_folder_is_one_line(tmp_path, monkeypatch):
    real_open = os.open

    def refuse_new_files(name, flags, mode=0o777, **kwargs):  # the tests run as root: chmod would not stop them
        if flags & os.O_CREAT:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(name))
        return real_open(name, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", refuse_new_files)
    path = tmp_path / "config.yaml"
    with pytest.raises(FileWriteError, match=f"^cannot write to {re.escape(str(path))}: Permission denied$"):
        atomic_write_text("a: 1\n", path)
    monkeypatch.undo()
    assert names(tmp_path) == []


def test_error_type_is_honoured(tmp_path):
    path = tmp_path / "last.pt"
    with pytest.raises(ToolWriteError) as raised:
        atomic_write(path, disk_full, error_type=ToolWriteError)
    assert isinstance(raised.value, ToolError) and isinstance(raised.value, FileWriteError)
    assert str(raised.value) == f"no space left on device while writing {path}"


@pytest.mark.parametrize(("write", "content"), [(atomic_write_bytes, b"x"), (atomic_write_text, "x"),
                                                 (atomic_write_json, {"a": 1})])
def test_error_type_is_honoured_by_every_writer(tmp_path, write, content):
    (tmp_path / "taken").write_text("a file, not a folder")
    path = tmp_path / "taken" / "x"
    with pytest.raises(ToolWriteError, match=f"^cannot write to {re.escape(str(path))}: "):
        write(content, path, error_type=ToolWriteError)
    assert names(tmp_path) == ["taken"]


def test_atomic_write_json_round_trip(tmp_path):
    value = {"name": "ü", "boxes": [[1.5, 2, 3, 4]], "nested": {"none": None, "flag": True}}
    path = atomic_write_json(value, tmp_path / "value.json")
    text = path.read_text(encoding="utf-8")
    assert json.loads(text) == value
    assert text.endswith("}\n") and text.startswith('{\n  "name"')
    compact = atomic_write_json(value, tmp_path / "compact.json", indent=None).read_text(encoding="utf-8")
    assert compact.count("\n") == 1 and json.loads(compact) == value


def test_unserializable_json_writes_nothing(tmp_path):
    path = atomic_write_json({"a": 1}, tmp_path / "value.json")
    with pytest.raises(TypeError):
        atomic_write_json({"a": object()}, path)
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": 1}
    assert names(tmp_path) == ["value.json"]


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_mode_follows_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        written = [atomic_write_text("x", tmp_path / "a.txt"), atomic_write_bytes(b"x", tmp_path / "b.bin"),
                   atomic_write_json([], tmp_path / "c.json")]
        with atomic_path(tmp_path / "d.npy") as temporary, temporary.open("wb") as stream:
            np.save(stream, np.zeros(2))
        written.append(tmp_path / "d.npy")
    finally:
        os.umask(previous)
    for path in written:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path.name


def test_temporary_names(tmp_path):
    path = tmp_path / "train.npy"
    first, second = temp_name(path), temp_name(path)
    assert first != second and first.parent == tmp_path
    assert re.fullmatch(r"\.train\.npy\.[0-9a-f]{8}\.tmp", first.name)
    assert TEMP_FILE_PATTERN.match(first.name)["name"] == "train.npy"
    handle, temp = open_temp_file(path)
    os.close(handle)
    (tmp_path / ".train.npy.notmine.tmp").write_bytes(b"")  # 7 characters: not one of ours
    (tmp_path / ".val.npy.0a1b2c3d.tmp").write_bytes(b"")  # another file's
    assert temp_files_of(path) == [temp]
    assert temp_files_of(tmp_path / "absent" / "x") == []


def test_atomic_path_renames_on_success(tmp_path):
    path = tmp_path / "cache" / "train.npy"
    with atomic_path(path) as temporary:
        assert temporary.parent == path.parent and temporary.is_file() and not path.exists()
        array = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=(3, 2))
        array[:] = 7
        array.flush()
        del array
    assert np.load(path).tolist() == [[7, 7]] * 3
    assert names(path.parent) == ["train.npy"]


def test_atomic_path_removes_the_temporary_file_when_interrupted(tmp_path):
    path = atomic_write_bytes(b"old", tmp_path / "train.npy")
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as temporary:
        temporary.write_bytes(b"half")
        raise KeyboardInterrupt
    assert path.read_bytes() == b"old"
    assert names(tmp_path) == ["train.npy"]


def test_atomic_path_errors_of_the_block_propagate_unchanged(tmp_path):
    with pytest.raises(OSError, match="image file is truncated"), atomic_path(tmp_path / "x.npy"):
        raise OSError("image file is truncated")  # not a failure to write x.npy
    assert names(tmp_path) == []


def test_atomic_path_failed_rename_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "x.npy"

    def refuse(source, target):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(FileWriteError, match=f"^cannot write to {re.escape(str(path))}: "), atomic_path(path) as temp:
        temp.write_bytes(b"data")
    monkeypatch.undo()
    assert names(tmp_path) == []
