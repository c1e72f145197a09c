"""The feature cache's files: built through the atomic writers, stale temporary files of a killed build removed, an
interrupted build leaves the cache invalid (no key), never half written."""

import json

import numpy as np
import pytest
import torch

from visiontune.data.feature_cache import CACHE_FORMAT, _build_file


def names(folder):
    return sorted(path.name for path in folder.iterdir())


def test_feature_cache_build_is_atomic_and_cleans_its_temporary_files(tmp_path):
    dataset = [(torch.full((3,), float(index)), index % 2) for index in range(6)]
    options = {"batch_size": 2, "num_workers": 0, "progress": False, "name": "train"}
    npy, meta = tmp_path / "train.npy", tmp_path / "train.json"
    (tmp_path / ".train.npy.0a1b2c3d.tmp").write_bytes(b"x" * 100)  # left by a killed build
    (tmp_path / "train.npy.tmp.npy").write_bytes(b"x" * 100)  # the temporary name of older versions
    _build_file(lambda images: images[:, :2], dataset, npy, meta, "key-1", **options)
    assert names(tmp_path) == ["train.json", "train.npy"]
    assert np.load(npy).tolist() == [[index, index] for index in range(6)]
    assert json.loads(meta.read_text(encoding="utf-8")) == {"key": "key-1", "rows": 6, "dim": 2, "skipped": [],
                                                             "format": CACHE_FORMAT}
    calls = []

    def interrupted(images):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return images[:, :2] + 100

    with pytest.raises(KeyboardInterrupt):
        _build_file(interrupted, dataset, npy, meta, "key-2", **options)
    assert names(tmp_path) == ["train.npy"]  # no temporary file; no key: the cache is invalid, not half written
    assert np.load(npy).tolist() == [[index, index] for index in range(6)]
