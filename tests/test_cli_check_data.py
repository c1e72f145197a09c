"""``visiontune check-data --report``: the data report page, written into a new folder of the project."""

from __future__ import annotations

import shutil
from pathlib import Path

from visiontune.cli import main


def test_check_data_report_flags_the_broken_image_and_draws_samples(tiny_shapes: Path, tmp_path: Path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_shapes, data)
    broken = sorted((data / "train").glob("*/*.png"))[0]
    broken.write_bytes(b"not a png")
    project = tmp_path / "runs"
    code = main(["check-data", "task=classification", f"data.root={data}", f"project={project}", "--report"])
    out = capsys.readouterr().out
    assert code == 1  # the broken image is an error
    page = project / "classification" / "check-data" / "data_report.html"
    assert f"data report: {page}" in out and page.is_file()
    html = page.read_text()
    assert broken.name in html and "data:image/" in html  # the flagged file is listed; thumbnails are inline
    assert not list(data.rglob("*.html"))  # nothing is written into the dataset


def test_check_data_without_report_writes_only_the_hash_cache(tiny_shapes: Path, tmp_path: Path, capsys):
    assert main(["check-data", "task=classification", f"data.root={tiny_shapes}", f"project={tmp_path}"]) == 0
    assert "data report" not in capsys.readouterr().out
    assert [path.name for path in tmp_path.iterdir()] == [".cache"]  # the image hashes of the duplicate check
