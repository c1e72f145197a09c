"""Exact and near duplicate images within and across splits: hashes, the threshold, grouping, the cache, check-data
and the training warning."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiontune.cli import main
from visiontune.data import duplicates as duplicates_module
from visiontune.data.duplicates import (
    NEAR_DUPLICATE_BITS,
    HashCache,
    find_duplicates,
    hamming_distances,
    hash_image,
    hash_images,
)
from visiontune.data.synthetic import SHAPES, render_shape_image


def _photo(index: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A generated photo-like image: a shape on a textured gradient background."""
    rng = np.random.default_rng(index)
    return render_shape_image(list(SHAPES)[index % len(SHAPES)], image_size=size[1], rng=rng).resize(size)


def _count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every file :func:`hash_image` hashes."""
    hashed: list[Path] = []
    original = duplicates_module.hash_image

    def counting(path: str | Path) -> tuple[str, int | None]:
        hashed.append(Path(path))
        return original(path)

    monkeypatch.setattr(duplicates_module, "hash_image", counting)
    return hashed


def test_hamming_distances_count_differing_bits() -> None:
    rows = np.array([0, 0xFFFF_FFFF_FFFF_FFFF], dtype=np.uint64)
    columns = np.array([0, 1, 0x8000_0000_0000_0001], dtype=np.uint64)
    assert hamming_distances(rows, columns).tolist() == [[0, 1, 2], [64, 63, 62]]


def test_threshold_keeps_resized_jpeg_copies_and_separates_different_images(tmp_path: Path) -> None:
    originals, copies = [], []
    for index in range(24):
        image = _photo(index)
        image.save(tmp_path / f"{index}.png")
        image.resize((160, 120)).save(tmp_path / f"{index}_copy.jpg", quality=70)  # 0.5x, JPEG quality 70
        originals.append(hash_image(tmp_path / f"{index}.png")[1])
        copies.append(hash_image(tmp_path / f"{index}_copy.jpg")[1])
    distances = hamming_distances(np.array(originals, dtype=np.uint64), np.array(copies, dtype=np.uint64))
    assert np.diag(distances).max() <= NEAR_DUPLICATE_BITS  # every copy is found
    different = distances[~np.eye(len(originals), dtype=bool)]
    assert different.min() > NEAR_DUPLICATE_BITS  # no two different images are


def test_find_duplicates_groups_exact_and_near_copies_within_and_across_splits(tmp_path: Path) -> None:
    for index in range(4):
        _photo(index).save(tmp_path / f"train_{index}.png")
    shutil.copy(tmp_path / "train_0.png", tmp_path / "train_0_again.png")  # exact, within train
    shutil.copy(tmp_path / "train_1.png", tmp_path / "val_1.png")  # exact, across
    _photo(2).resize((160, 120)).save(tmp_path / "val_2.jpg", quality=70)  # near, across
    _photo(10).save(tmp_path / "val_10.png")  # unique
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    train = [tmp_path / f"train_{index}.png" for index in range(4)] + [tmp_path / "train_0_again.png"]
    val = [tmp_path / "val_1.png", tmp_path / "val_2.jpg", tmp_path / "val_10.png", tmp_path / "broken.jpg"]

    groups = find_duplicates({"train": train, "val": val}, num_workers=2)

    described = [(group.kind, [path.name for path in group.files], list(group.splits)) for group in groups]
    assert described == [("exact", ["train_0.png", "train_0_again.png"], ["train", "train"]),
                         ("exact", ["train_1.png", "val_1.png"], ["train", "val"]),
                         ("near", ["train_2.png", "val_2.jpg"], ["train", "val"])]
    assert groups[0].distance == groups[1].distance == 0 and 0 <= groups[2].distance <= NEAR_DUPLICATE_BITS
    assert groups[1].to_json(tmp_path) == {"kind": "exact", "files": ["train_1.png", "val_1.png"],
                                           "splits": ["train", "val"], "distance": 0}


def test_the_cache_hashes_each_file_once_until_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = []
    for index in range(3):
        paths.append(tmp_path / f"{index}.png")
        _photo(index, (64, 48)).save(paths[-1])
    hashed = _count_hashes(monkeypatch)
    cache_file = tmp_path / "project" / ".cache" / "image_hashes.json"

    first = hash_images(paths, cache=HashCache(cache_file))
    assert len(hashed) == 3 and cache_file.is_file()
    cache = HashCache(cache_file)
    assert hash_images(paths, cache=cache) == first and len(hashed) == 3 and cache.computed == 0  # all cached

    _photo(7, (64, 48)).save(paths[0])  # new content, new size and mtime
    os.utime(paths[0], ns=(1, 1))
    changed = hash_images(paths, cache=HashCache(cache_file))
    assert hashed[3:] == [paths[0]] and changed[paths[0]] != first[paths[0]]


def test_an_unreadable_cache_file_is_one_warning_and_hashed_again(tmp_path: Path, caplog) -> None:
    _photo(0, (64, 48)).save(tmp_path / "a.png")
    cache_file = tmp_path / "image_hashes.json"
    cache_file.write_text("{not json")
    cache = HashCache(cache_file)
    assert len(hash_images([tmp_path / "a.png"], cache=cache)) == 1 and cache.computed == 1
    assert f"image hash cache {cache_file} is unreadable" in caplog.text
    assert json.loads(cache_file.read_text())["version"] == 1  # rewritten


@pytest.fixture
def leaky_shapes(tiny_shapes: Path, tmp_path: Path) -> Path:
    """The tiny shapes dataset with one training image copied into val and another resized + JPEG re-encoded."""
    root = tmp_path / "data"
    shutil.copytree(tiny_shapes, root)
    train = sorted((root / "train").glob("*/*.png"))
    shutil.copy(train[0], root / "val" / train[0].parent.name / "copy.png")
    with Image.open(train[1]) as image:
        image.resize((64, 64)).save(root / "val" / train[1].parent.name / "resized.jpg", quality=70)
    return root


def test_check_data_report_lists_the_leak_and_writes_data_check_json(leaky_shapes: Path, tmp_path: Path,
                                                                     capsys) -> None:
    project = tmp_path / "runs"
    code = main(["check-data", "task=classification", f"data.root={leaky_shapes}", f"project={project}",
                 "train.progress=false", "--report"])
    out = capsys.readouterr().out
    assert code == 0  # a leak is a warning
    assert ("2 'val' image(s) duplicate 'train' images (1 exact, 1 near only): val metrics are optimistic; see them "
            "with visiontune check-data") in out
    assert "duplicate images: 1 exact group(s) (2 files, same SHA-1), 1 near group(s) (2 files, pHash within 8" in out
    folder = project / "classification" / "check-data"
    report = json.loads((folder / "data_check.json").read_text())
    assert [(group["kind"], group["splits"]) for group in report["duplicates"]] == [("exact", ["train", "val"]),
                                                                                   ("near", ["train", "val"])]
    assert report["duplicates"][0]["files"][1].startswith("val/") and report["duplicates"][0]["files"][1].endswith(
        "/copy.png")  # relative to data.root
    html = (folder / "data_report.html").read_text()
    assert "Duplicates" in html and "resized.jpg" in html and "(across splits)" in html
    assert (project / ".cache" / "image_hashes.json").is_file() and not list(leaky_shapes.rglob("image_hashes.json"))


def test_check_data_without_duplicates_says_none_and_can_be_turned_off(tiny_shapes: Path, tmp_path: Path,
                                                                       capsys) -> None:
    common = ["check-data", "task=classification", f"data.root={tiny_shapes}", f"project={tmp_path}",
              "train.progress=false"]
    assert main(common) == 0
    out = capsys.readouterr().out
    assert "duplicate images: 0 exact group(s) (0 files, same SHA-1), 0 near group(s)" in out and "leak" not in out
    assert main([*common, "data.duplicates=false"]) == 0
    assert "duplicate images" not in capsys.readouterr().out


def test_train_warns_once_before_the_first_step_and_reuses_the_hashes(leaky_shapes: Path, tmp_path: Path, capsys,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = _count_hashes(monkeypatch)
    command = ["train", "task=classification", "device=cpu", f"data.root={leaky_shapes}", f"project={tmp_path}",
               "model.name=test_resnet", "data.image_size=32", "data.crop_pct=1.0", "data.batch_size=6",
               "data.num_workers=0", "train.progress=false", "train.epochs=1", "train.report=false"]
    assert main(command) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    warning = "2 'val' image(s) duplicate 'train' images (1 exact, 1 near only)"
    assert text.count(warning) == 1 and "visiontune check-data" in text
    assert out.err.index(warning) < out.err.index("epoch 1: step=")  # logged before the first step
    first = len(hashed)
    assert first == 29  # 18 training and 11 validation images
    assert main(command) == 0
    assert len(hashed) == first  # the second run found every hash in <project>/.cache
    assert (tmp_path / ".cache" / "image_hashes.json").is_file()


def test_face_detection_check_data_finds_a_validation_copy_of_a_training_image(tmp_path: Path) -> None:
    from visiontune.config import load_config
    from visiontune.tasks import create_task

    face = "2 2 20 20"
    for index in range(3):
        (tmp_path / "images" / "train").mkdir(parents=True, exist_ok=True)
        _photo(index, (64, 48)).save(tmp_path / "images" / "train" / f"{index}.jpg", quality=95)
    (tmp_path / "images" / "val").mkdir()
    shutil.copy(tmp_path / "images" / "train" / "1.jpg", tmp_path / "images" / "val" / "v.jpg")
    (tmp_path / "train.txt").write_text("".join(f"# train/{index}.jpg\n{face}\n" for index in range(3)))
    (tmp_path / "val.txt").write_text(f"# val/v.jpg\n{face}\n")
    config = load_config(None, ["task=face_detection", "data.format=retinaface", f"data.root={tmp_path}",
                                "data.train_split=train.txt", "data.val_split=val.txt", f"project={tmp_path / 'runs'}",
                                "data.num_workers=0", "train.progress=false"])
    check = create_task(config).check_data()
    assert "duplicate images: 1 exact group(s) (2 files, same SHA-1), 0 near group(s)" in check.text
    assert "  warning: 1 'val.txt' image(s) duplicate 'train.txt' images (1 exact, 0 near only)" in check.text
    assert check.duplicates == [{"kind": "exact", "files": ["images/train/1.jpg", "images/val/v.jpg"],
                                 "splits": ["train.txt", "val.txt"], "distance": 0}]


def test_instance_segmentation_check_data_finds_a_validation_copy_of_a_training_image(tmp_path: Path) -> None:
    from visiontune.config import load_config
    from visiontune.data.synthetic_coco import make_synthetic_coco
    from visiontune.tasks import create_task

    make_synthetic_coco(tmp_path, num_images=3, split="train", seed=0)
    make_synthetic_coco(tmp_path, num_images=2, split="val", seed=1)
    train_image, val_image = sorted((tmp_path / "train").iterdir())[0], sorted((tmp_path / "val").iterdir())[0]
    shutil.copy(train_image, val_image)  # same size: the annotation file still fits it
    config = load_config(None, ["task=instance_segmentation", "data.format=coco", f"data.root={tmp_path}",
                                "data.train_split=annotations/instances_train.json",
                                "data.val_split=annotations/instances_val.json", "data.images_dir=train",
                                "data.val_images_dir=val", f"project={tmp_path / 'runs'}", "data.num_workers=0",
                                "train.progress=false"])
    check = create_task(config).check_data()
    assert ("1 'annotations/instances_val.json' image(s) duplicate 'annotations/instances_train.json' images"
            in check.text)
    assert [(group["kind"], group["files"]) for group in check.duplicates] == [
        ("exact", [f"train/{train_image.name}", f"val/{val_image.name}"])]
