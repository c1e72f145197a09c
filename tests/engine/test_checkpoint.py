"""Atomic checkpoint writes, safe loading, RNG state round trip."""

import os
import random

import numpy as np
import pytest
import torch

from visiontune.engine.checkpoint import (
    CheckpointError,
    atomic_save,
    capture_rng_state,
    find_valid_checkpoint,
    load_checkpoint,
    restore_rng_state,
)


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"model": {"w": torch.ones(2)}, "config": {}}, path)

    def broken_save(obj, stream):
        stream.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"model": {"w": torch.zeros(2)}, "config": {}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


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
