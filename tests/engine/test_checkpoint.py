"""Checkpoints: the torch serializer's write failures (the atomic writer itself: tests/utils/test_files.py), safe
loading, RNG state round trip, checksums."""

import errno
import os
import random
import re

import numpy as np
import pytest
import torch

from visiontune.engine.checkpoint import (
    CheckpointError,
    atomic_save,
    capture_rng_state,
    find_valid_checkpoint,
    load_checkpoint,
    remove_stale_temp_files,
    restore_rng_state,
)
from visiontune.utils.files import open_temp_file


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*broken.pt"):
        load_checkpoint(broken)
    plain = tmp_path / "plain.pt"
    torch.save({"conv.weight": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointError, match=r"plain.pt is not a visiontune checkpoint.*model.checkpoint"):
        load_checkpoint(plain)


class Arbitrary:
    """A class that a weights_only load must refuse to instantiate."""


def test_weights_only_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "x": Arbitrary()}, path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(path)


def test_rng_state_roundtrip_through_checkpoint(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    state = capture_rng_state()
    atomic_save({"model": {}, "config": {}, "rng": state}, tmp_path / "c.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def test_find_valid_skips_corrupt_newest(tmp_path, caplog):
    good = tmp_path / "step_1.pt"
    atomic_save({"model": {}, "config": {}}, good)
    bad = tmp_path / "step_2.pt"
    bad.write_bytes(b"\x00" * 10)
    import os
    os.utime(good, (1, 1))
    assert find_valid_checkpoint([good, bad]) == good
    assert "skipping unusable checkpoint" in caplog.text


def test_newer_checkpoint_format_is_refused_naming_file_and_versions(tmp_path):
    from visiontune.engine.checkpoint import CHECKPOINT_FORMAT_VERSION

    newer = CHECKPOINT_FORMAT_VERSION + 1
    older = atomic_save({"model": {}, "config": {}, "format_version": CHECKPOINT_FORMAT_VERSION}, tmp_path / "old.pt")
    path = atomic_save({"model": {}, "config": {}, "format_version": newer}, tmp_path / "future.pt")
    os.utime(older, ns=(1_000_000_000, 1_000_000_000))  # future.pt is the newer file
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(path)
    message = str(raised.value)
    assert str(path) in message
    assert f"format version {newer}" in message and f"supports version {CHECKPOINT_FORMAT_VERSION}" in message
    # a newer checkpoint is unusable for auto-resume too: the older one is taken
    assert find_valid_checkpoint([older, path]) == older


def test_checkpoint_without_format_version_reads_as_version_1(tmp_path):
    path = atomic_save({"model": {"w": torch.ones(1)}, "config": {}}, tmp_path / "old.pt")
    assert "format_version" not in load_checkpoint(path)  # loads: a missing field is version 1
    with pytest.raises(CheckpointError, match="format_version 'x' is not a version number"):
        load_checkpoint(atomic_save({"model": {}, "config": {}, "format_version": "x"}, tmp_path / "odd.pt"))


# ------------------------------------------------------------------ checksums (corrupt files are refused)


def flip_bytes_of(path, tensor: torch.Tensor, count: int = 2000) -> None:
    """Invert ``count`` bytes inside the stored bytes of ``tensor`` in the checkpoint file ``path`` (bit rot, a bad
    copy): the zip container stays readable, only the values change."""
    data = bytearray(path.read_bytes())
    stored = tensor.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    start = data.find(stored)
    assert start >= 0 and data.find(stored, start + 1) < 0, "the tensor's bytes must occur once in the file"
    count = min(count, len(stored))
    for offset in range(start, start + count):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def real_checkpoint(tmp_path):
    """A checkpoint of a real model (conv, batch norm, linear) as the trainer writes it."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.Flatten(),
                                torch.nn.Linear(16 * 30 * 30, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    checkpoint = {"version": "x", "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "config": {"task": "classification", "optim": {"lr": 0.1}}, "epoch": 1, "history": [{"a": 0.5}]}
    return atomic_save(checkpoint, tmp_path / "best.pt"), model.state_dict()


def test_checkpoint_stores_sha256_of_every_tensor_and_loads_clean(tmp_path):
    path, state = real_checkpoint(tmp_path)
    raw = torch.load(path, weights_only=True)
    assert raw["checksums"]["algorithm"] == "sha256"
    assert {f"model/{name}" for name in state} <= set(raw["checksums"]["tensors"])
    assert "optimizer/state/0/momentum_buffer" in raw["checksums"]["tensors"]
    loaded = load_checkpoint(path)
    assert "checksums" not in loaded  # verified, then dropped
    assert all(torch.equal(loaded["model"][name], tensor) for name, tensor in state.items())


def test_flipped_bytes_in_a_tensor_name_file_and_tensor(tmp_path):
    path, state = real_checkpoint(tmp_path)
    flip_bytes_of(path, state["3.weight"])
    torch.load(path, weights_only=True)  # torch itself reads it without complaint: that is the silent wrong result
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(path)
    assert str(raised.value) == (
        f"{path} is corrupt: tensor model/3.weight does not match the SHA-256 checksum stored when the file was "
        "written; use another copy or an earlier checkpoint")
    assert find_valid_checkpoint([path]) is None  # auto-resume skips it


def test_changed_non_tensor_entry_is_refused(tmp_path):
    path = atomic_save({"model": {"w": torch.ones(2)}, "config": {"lr": 0.125}}, tmp_path / "c.pt")
    data = path.read_bytes()
    packed = np.float64(0.125).byteswap().tobytes()  # pickle stores floats big-endian
    assert data.count(packed) == 1
    path.write_bytes(data.replace(packed, np.float64(0.25).byteswap().tobytes()))
    with pytest.raises(CheckpointError, match=r"c.pt is corrupt: entry 'config' does not match the SHA-256"):
        load_checkpoint(path)


def test_checkpoint_without_checksums_loads_unchecked(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"model": {"w": torch.ones(3)}, "config": {}}, path)  # as written before checksums existed
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))


# ------------------------------------------------------------------ write failures: one line, old file kept


def assert_only(folder, names):
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)  # no temporary file left behind


class FailingStream:
    """A file whose writes fail, after ``allowed`` bytes, with the ``OSError`` of a full disk."""

    def __init__(self, raw, allowed: int) -> None:
        self.raw, self.allowed = raw, allowed

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if size > self.allowed:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.allowed -= size
        return self.raw.write(data)

    def __getattr__(self, name):
        return getattr(self.raw, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.raw.close()


def test_disk_full_during_torch_save_is_one_line_and_keeps_old_file(tmp_path, monkeypatch):
    path = atomic_save({"model": {"w": torch.ones(2)}, "config": {}}, tmp_path / "last.pt")
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FailingStream(real_fdopen(fd, mode), 600))
    with pytest.raises(CheckpointError) as raised:
        atomic_save({"model": {"w": torch.zeros(100_000)}, "config": {}}, path)
    assert str(raised.value) == f"no space left on device while writing {path}"
    assert isinstance(raised.value.__cause__, OSError) and raised.value.__cause__.errno == errno.ENOSPC
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert_only(tmp_path, ["last.pt"])


def test_disk_full_reported_by_torch_serializer_is_one_line(tmp_path, monkeypatch):
    path = atomic_save({"model": {"w": torch.ones(2)}, "config": {}}, tmp_path / "best.pt")

    def full_disk(obj, stream):  # what torch.save says when its C++ writer hits a full disk
        stream.write(b"PK\x03\x04partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4480 vs 4374")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=f"^no space left on device while writing {re.escape(str(path))}$"):
        atomic_save({"model": {"w": torch.zeros(2)}, "config": {}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert_only(tmp_path, ["best.pt"])


def test_remove_stale_temp_files_only_those_of_atomic_writes(tmp_path):
    handle, _temp = open_temp_file(tmp_path / "step_4.pt")  # a write that was killed
    os.write(handle, b"x" * 1500)
    os.close(handle)
    (tmp_path / ".last.pt.k2j_h4g5.tmp").write_bytes(b"y" * 500)  # named by mkstemp, before this version
    (tmp_path / ".metrics.csv.0a1b2c3d.tmp").write_bytes(b"z" * 7)
    kept = [".notes.tmp", "last.pt.tmp", ".last.pt.short.tmp", "best.pt"]
    for name in kept:
        (tmp_path / name).write_bytes(b"keep")
    assert remove_stale_temp_files(tmp_path) == (3, 2007)
    assert_only(tmp_path, kept)
    assert remove_stale_temp_files(tmp_path / "absent") == (0, 0)
