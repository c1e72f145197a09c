"""``visiontune report`` and ``visiontune compare`` on run folders."""

from __future__ import annotations

from pathlib import Path

from tests.report.conftest import make_classification_run
from visiontune.cli import main


def test_report_command_writes_the_page_into_the_run(tmp_path: Path, shapes_dir: Path, capsys):
    run = make_classification_run(tmp_path, shapes_dir)
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    assert "<h2" in (run / "report.html").read_text()
    assert main(["report", str(run / "config.yaml")]) == 0  # a file inside the run stands for the run


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path: Path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a visiontune run folder (it holds neither config.yaml nor metrics.csv)" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "run folder not found" in capsys.readouterr().err


def test_compare_command_prints_the_table_and_writes_the_page(tmp_path: Path, shapes_dir: Path, capsys):
    first = make_classification_run(tmp_path / "a", shapes_dir, name="freeze")
    second = make_classification_run(tmp_path / "b", shapes_dir, name="full", lr=0.001)
    assert main(["compare", str(first), str(second), "--project", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "freeze" in out and "full" in out and "optim.lr" in out
    page = tmp_path / "runs" / "compare" / "compare" / "compare.html"
    assert f"comparison page: {page}" in out and page.is_file()
    assert main(["compare", str(first)]) == 2
    assert "compare needs at least two run folders" in capsys.readouterr().err


def test_the_report_of_a_finished_run_shows_its_evaluation_and_summary(tiny_shapes: Path, tmp_path: Path):
    """The report hook runs after the built-in ones: the final page has eval/ and summary.json in it."""
    from visiontune import load_config, train

    config = load_config(None, ["task=classification", "model.name=resnet10t", f"data.root={tiny_shapes}",
                                f"project={tmp_path}", "data.image_size=32", "data.batch_size=6", "device=cpu",
                                "data.num_workers=0", "train.epochs=1", "train.progress=false"])
    result = train(config)
    html = (result.run_dir / "report.html").read_text()
    assert (result.run_dir / "eval" / "confusion_matrix.csv").is_file() and (result.run_dir / "summary.json").is_file()
    assert "Per class (best checkpoint)" in html and "per_class.csv is missing" not in html  # after eval/ exists


def test_the_report_shows_what_the_command_line_changed_from_the_preset(tiny_shapes: Path, tmp_path: Path):
    from visiontune import load_config, train

    preset = tmp_path / "preset.yaml"
    preset.write_text("task: classification\nmodel:\n  name: resnet10t\noptim:\n  lr: 0.01\ntrain:\n  epochs: 1\n")
    config = load_config(preset, [f"data.root={tiny_shapes}", f"project={tmp_path}", "data.image_size=32",
                                  "data.batch_size=6", "device=cpu", "data.num_workers=0", "train.progress=false",
                                  "optim.lr=0.02"])
    run = train(config).run_dir
    assert (run / "preset.yaml").read_text() == preset.read_text()  # a copy: the page does not need the original
    html = (run / "report.html").read_text()
    changed = html.split("Changed from the preset (preset.yaml)")[1].split("</table>")[0]
    assert "optim.lr" in changed and "0.01" in changed and "0.02" in changed and "model.name" not in changed
