"""Tests for visiontune.data.synthetic: the demo shapes dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiontune.data.classification import scan_image_folder
from visiontune.data.synthetic import SHAPES, make_shapes_dataset, render_shape_image

SMALL = {"num_classes": 3, "train_per_class": 4, "val_per_class": 2, "image_size": 32}


def pixels(root: Path) -> dict[str, np.ndarray]:
    return {
        path.relative_to(root).as_posix(): np.asarray(Image.open(path)) for path in sorted(root.rglob("*.png"))
    }


def test_counts_classes_and_layout(tmp_path: Path) -> None:
    out = make_shapes_dataset(tmp_path / "shapes", seed=3, **SMALL)
    assert out == tmp_path / "shapes"
    train = scan_image_folder(out / "train")
    val = scan_image_folder(out / "val", classes=train.classes)
    assert train.classes == ["circle", "square", "triangle"]
    assert train.class_counts() == {"circle": 4, "square": 4, "triangle": 4}
    assert val.class_counts() == {"circle": 2, "square": 2, "triangle": 2}
    with Image.open(out / "train" / "square" / "square_0003.png") as image:
        assert image.mode == "RGB" and image.size == (32, 32)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["parameters"] == {**SMALL, "seed": 3}
    assert manifest["classes"] == ["circle", "square", "triangle"]
    assert "Classes (3): circle, square, triangle." in (out / "README.txt").read_text()


def test_deterministic_given_seed(tmp_path: Path) -> None:
    first = pixels(make_shapes_dataset(tmp_path / "a", seed=7, **SMALL))
    second = pixels(make_shapes_dataset(tmp_path / "b", seed=7, **SMALL))
    other = pixels(make_shapes_dataset(tmp_path / "c", seed=8, **SMALL))
    assert first.keys() == second.keys() == other.keys() and len(first) == 18
    assert all(np.array_equal(first[name], second[name]) for name in first)
    assert not any(np.array_equal(first[name], other[name]) for name in first)
    # images within a dataset differ from each other as well
    assert len({array.tobytes() for array in first.values()}) == 18


def test_reuses_complete_dataset_and_regenerates_on_change(tmp_path: Path) -> None:
    out = make_shapes_dataset(tmp_path / "shapes", **SMALL)
    probe = out / "train" / "circle" / "circle_0000.png"
    probe.write_bytes(b"marker")  # a reuse must not rewrite files
    assert make_shapes_dataset(out, **SMALL) == out
    assert probe.read_bytes() == b"marker"

    changed = {**SMALL, "train_per_class": 2}
    make_shapes_dataset(out, **changed)
    assert scan_image_folder(out / "train").class_counts() == {"circle": 2, "square": 2, "triangle": 2}
    assert probe.read_bytes() != b"marker"

    (out / "val" / "circle" / "circle_0001.png").unlink()  # incomplete: regenerated
    make_shapes_dataset(out, **changed)
    assert (out / "val" / "circle" / "circle_0001.png").is_file()


def test_refuses_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(ValueError, match=r"is not empty and holds no shapes dataset \(manifest.json missing\)"):
        make_shapes_dataset(tmp_path, **SMALL)
    assert (tmp_path / "mine.txt").read_text() == "user data"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_classes": 1}, r"num_classes must be between 2 and 8 \(circle, square, .*\), got 1"),
        ({"num_classes": 9}, "num_classes must be between 2 and 8"),
        ({"train_per_class": 0}, "train_per_class must be >= 1, got 0"),
        ({"val_per_class": -1}, "val_per_class must be >= 1, got -1"),
        ({"image_size": 8}, "image_size must be >= 16 pixels, got 8"),
    ],
)
def test_rejects_bad_parameters(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_shapes_dataset(tmp_path, **{**SMALL, **overrides})


def test_every_shape_renders_a_distinct_silhouette() -> None:
    # Same random stream for every shape: only the drawn silhouette differs, so images must differ.
    images = {
        name: np.asarray(render_shape_image(name, image_size=48, rng=np.random.default_rng(0)), dtype=np.int16)
        for name in SHAPES
    }
    names = list(images)
    for index, first in enumerate(names):
        for second in names[index + 1 :]:
            assert np.abs(images[first] - images[second]).max() > 40, (first, second)
    with pytest.raises(ValueError, match="unknown shape 'blob'; valid: circle, square"):
        render_shape_image("blob", image_size=32, rng=np.random.default_rng(0))
