"""Re-make the README's report screenshots (``docs/report_demo.png``, ``docs/report_face_detection.png``).

* the demo: ``visiontune demo`` in a temporary folder (about a minute on 2 CPU cores);
* face detection: the released RetinaFace MobileNet-0.25 weights fine-tuned for 3 epochs on the 7 WIDER FACE val
  photos of ``../shared/fixtures/retinaface`` (train = val, official easy / medium / hard AP from
  ``../shared/fixtures/widerface_gt``), then its report.

Each report is rendered by headless Chromium, 1280 pixels wide (2000 high; 3400 for the face report, down to its
example images with the landmarks). Needs ``../shared`` and ``chromium``.

    python docs/make_screenshots.py [--only demo|face]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "fixtures"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                  "--run-all-compositor-stages-before-draw", "--virtual-time-budget=3000"]


def screenshot(page: Path, target: Path, work: Path, *, height: int = 2000) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("chromium is not installed")
    command = [browser, *CHROMIUM_FLAGS, f"--window-size=1280,{height}", f"--user-data-dir={work / 'profile'}",
               f"--screenshot={target}", page.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 or not any("written to file" in line for line in done.stderr.splitlines()):
        raise SystemExit(f"chromium did not write {target}:\n{done.stderr[-2000:]}")
    with Image.open(target) as shot:  # a 256-colour palette: a third of the bytes, no visible change for a page
        small = shot.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(target, optimize=True)
    print(f"wrote {target} ({target.stat().st_size / 1e3:.0f} KB) from {page}")


def demo(work: Path) -> Path:
    from visiontune.demo import run_demo

    config, _result, _seconds = run_demo([f"project={work / 'runs'}"])
    return Path(config.project) / "classification" / config.name / "report.html"


def face_data(root: Path) -> None:
    """``root/{images,label.txt}``: the fixture photos and their official boxes in the RetinaFace layout."""
    from visiontune.data.widerface_annotations import read_annotations

    fixtures = SHARED / "retinaface"
    lines = []
    for record in read_annotations(fixtures / "wider_face_val_bbx_gt_subset.txt", "official").records:
        image = root / "images" / record.relative_path
        image.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fixtures / "images" / Path(record.relative_path).name, image)
        lines.append(f"# {record.relative_path}")
        lines.extend(f"{x1:g} {y1:g} {x2 - x1:g} {y2 - y1:g}" for x1, y1, x2, y2 in record.boxes.tolist())
    (root / "label.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def face(work: Path) -> Path:
    from visiontune.api import train
    from visiontune.config import load_config

    face_data(work / "faces")
    preset = REPO / "configs" / "face_detection" / "retinaface_mobilenet025_finetune.yaml"
    config = load_config(preset, [
        f"data.root={work / 'faces'}", "data.train_split=label.txt", "data.val_split=label.txt",
        "data.images_dir=images", "data.val_images_dir=images", "data.batch_size=4", "data.num_workers=0",
        f"model.checkpoint={SHARED / 'retinaface' / 'mobilenet0.25_Final.pth'}",
        f"face.gt_dir={SHARED / 'widerface_gt'}", "train.epochs=3", "sched.warmup_epochs=0", "device=cpu",
        f"project={work / 'runs'}", "name=fixture_photos",
    ])
    return train(config).run_dir / "report.html"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("demo", "face"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        if args.only in (None, "demo"):
            screenshot(demo(work), REPO / "docs" / "report_demo.png", work)
        if args.only in (None, "face"):
            screenshot(face(work), REPO / "docs" / "report_face_detection.png", work, height=3400)


if __name__ == "__main__":
    main()
