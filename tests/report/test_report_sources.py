"""What the report pages read: an official WIDER FACE validation split's labelled faces, images decoded as training
decodes them (16-bit PNG), the face category's name."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from tests.report.conftest import make_face_run
from tests.report.test_report import decoded_images
from visiontune.api import check_data
from visiontune.config import load_config
from visiontune.report import write_data_report, write_run_report
from visiontune.utils.image import open_rgb


def test_face_examples_draw_the_labels_of_an_official_validation_split(tmp_path: Path):
    run_dir = make_face_run(tmp_path)
    faces = tmp_path / "faces"
    official = ["event/img_0.jpg", "1", "40 60 50 60 0 0 0 0 0 0",
                "event/img_1.jpg", "2", "40 60 50 60 0 0 0 0 0 0", "130 60 50 60 0 0 0 0 0 0",
                "event/img_2.jpg", "3", "40 60 50 60 0 0 0 0 0 0", "130 60 50 60 0 0 0 0 0 0",
                "220 60 50 60 0 0 0 0 0 0"]
    (faces / "wider_face_val_bbx_gt.txt").write_text("\n".join(official) + "\n")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["data"].update(format="official", val_split="wider_face_val_bbx_gt.txt")
    config["face"]["gt_dir"] = str(tmp_path / "ground_truth")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    html = write_run_report(run_dir).read_text()
    labelled = [int(n) for n in re.findall(r"<figcaption>[^<]* (\d+) labelled \(green\)", html)]
    assert labelled == [1, 2, 3]
    assert "validation faces by size" in html


def sixteen_bit_png(path: Path) -> Path:
    values = np.full((64, 64), 32768, dtype=np.uint16)  # mid grey in 16 bit: 128 after /257
    values[:8] = 65535
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    return path


def test_the_data_report_shows_a_16_bit_png_as_training_sees_it(tmp_path: Path):
    path = sixteen_bit_png(tmp_path / "grey.png")
    trained = float(np.asarray(open_rgb(path)).mean())
    html = write_data_report(tmp_path / "report", {"val": [{"path": path, "label": 0}]}, task="classification",
                             class_names=["grey"]).read_text()
    thumbnails = [image for image in decoded_images(html) if image.size == (64, 64)]
    assert thumbnails, "the sample thumbnail"
    shown = np.asarray(thumbnails[0].convert("RGB"))[20:, :].mean()  # below the caption band
    assert abs(shown - 128) < 2 and trained < 160  # not PIL's clipped near-white (255)


def test_the_data_report_names_the_face_category(tmp_path: Path):
    make_face_run(tmp_path)
    config = load_config(None, ["task=face_detection", f"data.root={tmp_path / 'faces'}", "data.format=retinaface",
                                "data.train_split=label.txt", "data.val_split=label.txt", "data.num_workers=0",
                                f"project={tmp_path / 'runs'}", "train.progress=false"])
    _text, _errors, page = check_data(config, report=True)
    assert page is not None
    counts = page.read_text().split("Boxes per category")[1].split("</table>")[0]
    assert "<td>face</td>" in counts and "<td>1</td><td" not in counts
