"""``visiontune eval`` / ``predict`` with any weights ``train`` accepts, with the real released files.

One rule for ``checkpoint=`` and ``model.checkpoint=``: a visiontune checkpoint carries its config; plain weights
(reference ``.pth``, ``.safetensors``, MindSpore ``.ckpt``) need ``-c`` or ``task=`` / ``model.name=`` and load as
training loads ``model.checkpoint``. Errors never send the user to the other key.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO_ROOT
from tests.helpers import evaluate_one_by_one
from visiontune.cli import main

PRESET = REPO_ROOT / "configs" / "face_detection" / "retinaface_mobilenet025_finetune.yaml"


def _photos(folder: Path, fixtures_dir: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("selfie.jpg", "mindface_0000.jpg"):
        (folder / name).write_bytes((fixtures_dir / "retinaface" / "images" / name).read_bytes())
    return folder


def _wider_val(root: Path, fixtures_dir: Path) -> list:
    """``root`` laid out as the fine-tuning preset expects (``val/label.txt``, ``val/images/<event>/<file>``) with
    the 7 fixture WIDER val photos; the label file derived from ``wider_face_val_bbx_gt_subset.txt`` (x y w h)."""
    from visiontune.data.widerface_annotations import read_annotations

    retinaface = fixtures_dir / "retinaface"
    records = read_annotations(retinaface / "wider_face_val_bbx_gt_subset.txt", "official").records
    lines = []
    for record in records:
        image = root / "val" / "images" / record.relative_path
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes((retinaface / "images" / Path(record.relative_path).name).read_bytes())
        lines.append(f"# {record.relative_path}")
        lines.extend(f"{x1:g} {y1:g} {x2 - x1:g} {y2 - y1:g}" for x1, y1, x2, y2 in record.boxes.tolist())
    (root / "val" / "label.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return records


def _printed_metrics(text: str) -> dict[str, float]:
    return {name: float(value) for name, value in re.findall(r"^(val_\w+)\s+(-?[0-9.]+)(?: \[[^]]*\])?$", text,
                                                             re.MULTILINE)}  # the value, then its interval


def test_eval_released_weights_gives_the_reference_wider_ap(fixtures_dir: Path, tmp_path: Path, capsys):
    """The baseline of the preset: ``eval -c preset checkpoint=mobilenet0.25_Final.pth`` prints easy / medium / hard
    AP equal to the task-level evaluation of the same weights, and to the reference's AP (within the 1e-3 of
    ``test_released_weights_give_the_reference_wider_ap``); results go to a new folder under ``<project>/<task>``."""
    from tests.tasks.test_face_detection_task import _reference_line
    from visiontune.config import load_config
    from visiontune.evaluation.widerface import evaluate_widerface
    from visiontune.evaluation.widerface_ground_truth import DIFFICULTIES, load_widerface_ground_truth
    from visiontune.tasks import create_task

    weights = fixtures_dir / "retinaface" / "mobilenet0.25_Final.pth"
    data = tmp_path / "faces"
    records = _wider_val(data, fixtures_dir)
    project = tmp_path / "runs"
    settings = [f"data.root={data}", f"face.gt_dir={fixtures_dir / 'widerface_gt'}", "data.num_workers=0",
                "train.progress=false", f"project={project}"]
    assert main(["eval", "-c", str(PRESET), f"checkpoint={weights}", *settings]) == 0
    out = capsys.readouterr().out
    printed = _printed_metrics(out)
    assert {f"val_ap_{difficulty}" for difficulty in DIFFICULTIES} <= set(printed)
    folder = Path(re.search(r"^results: (.+)$", out, re.MULTILINE).group(1))
    assert folder.parent == project / "face_detection" and folder.is_dir()
    stored = json.loads((folder / "metrics.json").read_text())
    assert not list(weights.parent.glob("eval-*"))  # never next to the weights file

    # the task-level evaluation of the same weights on the same photos
    task = create_task(load_config(str(PRESET), [*settings, f"model.checkpoint={weights}"]))
    dataset = task.build_dataset(task.config.data.val_split, train=False)
    task_level = evaluate_one_by_one(task, dataset, task.build_model().eval())

    # the reference's own detections, scored as test_released_weights_give_the_reference_wider_ap scores them
    ground_truth = load_widerface_ground_truth(fixtures_dir / "widerface_gt")
    subset = ground_truth.subset({record.image_id for record in records})
    reference = json.loads((fixtures_dir / "retinaface" / "expected_detections_mobilenet0.25.json").read_text())
    expected = evaluate_widerface({record.image_id: np.array(
        [_reference_line(row) for row in reference[Path(record.relative_path).name]], dtype=np.float64).reshape(-1, 5)
        for record in records}, subset).ap

    print("\nWIDER AP (easy / medium / hard): CLI " + " / ".join(f"{stored[f'val_ap_{d}']:.5f}" for d in DIFFICULTIES)
          + "; task " + " / ".join(f"{task_level[f'ap_{d}']:.5f}" for d in DIFFICULTIES)
          + "; reference " + " / ".join(f"{expected[d]:.5f}" for d in DIFFICULTIES))
    for difficulty in DIFFICULTIES:
        assert stored[f"val_ap_{difficulty}"] == task_level[f"ap_{difficulty}"], difficulty
        assert printed[f"val_ap_{difficulty}"] == pytest.approx(task_level[f"ap_{difficulty}"], abs=5e-5)
        assert stored[f"val_ap_{difficulty}"] == pytest.approx(expected[difficulty], abs=1e-3), difficulty


@pytest.mark.parametrize("key, file", [("checkpoint", "retinaface/mobilenet0.25_Final.pth"),
                                       ("model.checkpoint", "retinaface/mobilenet0.25_Final.pth"),
                                       ("checkpoint", "mindspore/retinaface_mobilenet025.ckpt")])
def test_predict_faces_with_released_and_mindspore_weights(fixtures_dir: Path, tmp_path: Path, capsys, key: str,
                                                           file: str):
    photos = _photos(tmp_path / "photos", fixtures_dir)
    output = tmp_path / "predictions"
    assert main(["predict", "-c", str(PRESET), f"{key}={fixtures_dir / file}", f"source={photos}",
                 f"output={output}", "train.progress=false"]) == 0
    written = [Path(line) for line in capsys.readouterr().out.splitlines() if line.endswith(".json")]
    assert sorted(path.name for path in written) == ["mindface_0000.json", "selfie.json"]
    selfie = json.loads((output / "selfie.json").read_text())
    assert selfie["faces"] and all(face["score"] >= 0.5 for face in selfie["faces"])
    if file.endswith(".pth"):  # the trained weights find the faces of the selfie
        assert len(selfie["faces"]) >= 5


def test_predict_mindcv_classifier(fixtures_dir: Path, tmp_path: Path, capsys):
    """MindCV MobileNetV3 weights without data: 1000 classes named "0" .. "999"."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for index in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(photos / f"image{index}.jpg")
    output = tmp_path / "predictions"
    assert main(["predict", "task=classification", "model.name=mobilenetv3_small_100",
                 f"checkpoint={fixtures_dir / 'mindspore' / 'mobilenet_v3_small_100.ckpt'}", f"source={photos}",
                 f"output={output}", "train.progress=false"]) == 0
    rows = (output / "predictions.csv").read_text().splitlines()
    assert len(rows) == 3
    labels = [int(label) for row in rows[1:] for label in row.split(",")[1::2]]
    assert all(0 <= label < 1000 for label in labels)


@pytest.mark.parametrize("command", ["eval", "predict"])
@pytest.mark.parametrize("key", ["checkpoint", "model.checkpoint"])
def test_plain_weights_without_a_model_say_what_to_add(fixtures_dir: Path, tmp_path: Path, capsys, command: str,
                                                      key: str):
    weights = fixtures_dir / "retinaface" / "mobilenet0.25_Final.pth"
    assert main([command, f"{key}={weights}", f"source={tmp_path}"]) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert f"{key}={weights} holds plain weights, not a visiontune checkpoint" in error
    assert "-c CFG.yaml or task=... model.name=..." in error
    other = "checkpoint=" if key == "model.checkpoint" else "model.checkpoint="
    assert f"use {other}" not in error and "give the checkpoint as" not in error


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_help_states_the_weights_rule(command: str, capsys):
    with pytest.raises(SystemExit):
        main([command, "-h"])
    text = " ".join(capsys.readouterr().out.split())
    assert "checkpoint= takes a visiontune checkpoint" in text
    assert "plain weights need -c CFG.yaml or task=/model.name=" in text
    assert "model.checkpoint= is the same for plain weights" in text


def test_missing_weights_file_names_the_key(tmp_path: Path, capsys):
    assert main(["eval", "task=face_detection", f"model.checkpoint={tmp_path / 'none.pth'}"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"model.checkpoint not found: {tmp_path / 'none.pth'}")
