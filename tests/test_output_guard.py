"""No command writes over a file it reads, into the folder it reads, or into another run's folder.

Every command with an output is fed an output that would destroy an input (or land in another run's folder) and
must refuse with one line naming both paths, exit status 2, and leave the input's bytes as they were.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from visiontune.cli import main
from visiontune.config import load_config


@pytest.fixture(scope="module")
def runs(tiny_shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<project>/classification/a`` (one training step of a tiny model) and ``b``, a second run folder."""
    from tests.helpers import train

    project = tmp_path_factory.mktemp("guard") / "runs"
    config = load_config(None, [
        "task=classification", "device=cpu", f"data.root={tiny_shapes}", f"project={project}", "name=a",
        "model.name=test_resnet", "data.image_size=32", "data.crop_pct=1.0", "data.batch_size=6",
        "data.num_workers=0", "train.epochs=1", "train.max_steps=1", "train.eval_before=false",
        "train.progress=false", "train.plots=false", "train.report=false"])
    run = train(config).run_dir
    shutil.copytree(run, run.parent / "b")
    return run.parent


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``visiontune argv``, assert exit status 2 and one error line; return the line."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"visiontune {argv[0]}: error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


@pytest.fixture
def photos(tiny_shapes: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for image in sorted((tiny_shapes / "val").rglob("*.png"))[:3]:
        shutil.copy(image, folder / image.name)
    return folder


# ------------------------------------------------------------------ export


def test_export_refuses_to_write_over_its_checkpoint(runs: Path, capsys):
    checkpoint = runs / "a" / "best.pt"
    before = checkpoint.read_bytes()
    line = refused(["export", f"checkpoint={checkpoint}", f"output={checkpoint}"], capsys)
    assert line == (f"visiontune export: error: output={checkpoint} is the checkpoint file {checkpoint}: export would "
                    "write over the file it reads; choose another output")
    assert checkpoint.read_bytes() == before


def test_export_refuses_its_config_file_and_another_runs_folder(runs: Path, tmp_path: Path, capsys):
    config = tmp_path / "export.yaml"
    config.write_text("export:\n  opset: 17\n")
    line = refused(["export", "-c", str(config), f"checkpoint={runs / 'a' / 'best.pt'}", f"output={config}"], capsys)
    assert f"output={config} is the config file {config}: export would write over the file it reads" in line
    assert config.read_text() == "export:\n  opset: 17\n"
    before = snapshot(runs / "b")
    line = refused(["export", f"checkpoint={runs / 'a' / 'best.pt'}", f"output={runs / 'b' / 'model.onnx'}"], capsys)
    assert (f"output={runs / 'b' / 'model.onnx'} is inside the run folder {(runs / 'b').resolve()} of another run "
            f"than {(runs / 'a').resolve()}: export does not write into other runs' folders"
            in line)
    assert snapshot(runs / "b") == before


# ------------------------------------------------------------------ predict


def test_predict_refuses_the_source_folder_as_output(runs: Path, photos: Path, capsys):
    before = snapshot(photos)
    line = refused(["predict", f"checkpoint={runs / 'a' / 'best.pt'}", f"source={photos}", f"output={photos}"], capsys)
    assert line == (f"visiontune predict: error: output={photos} is the source folder {photos}: predict would write "
                    "into the folder it reads; choose another output")
    inside = photos / "preds"
    line = refused(["predict", f"checkpoint={runs / 'a' / 'best.pt'}", f"source={photos}", f"output={inside}"], capsys)
    assert f"output={inside} is inside the source folder {photos}: predict would write into the folder it reads" in line
    assert snapshot(photos) == before and not inside.exists()


def test_predict_refuses_an_output_that_holds_the_source(runs: Path, photos: Path, capsys):
    image = next(photos.iterdir())
    before = snapshot(photos)
    line = refused(["predict", f"checkpoint={runs / 'a' / 'best.pt'}", f"source={image}", f"output={photos}"], capsys)
    assert (f"output={photos} holds the source file {image}: the files predict writes there could replace it; choose "
            "an output that does not contain it") in line
    parent = photos.parent
    line = refused(["predict", f"checkpoint={runs / 'a' / 'best.pt'}", f"source={photos}", f"output={parent}"], capsys)
    assert f"output={parent} holds the source folder {photos}" in line
    assert snapshot(photos) == before


def test_predict_onnx_refuses_the_source_folder_before_reading_the_model(photos: Path, tmp_path: Path, capsys):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read: the output is refused first")
    before = snapshot(photos)
    line = refused(["predict", f"checkpoint={model}", f"source={photos}", f"output={photos}"], capsys)
    assert f"output={photos} is the source folder {photos}" in line
    assert snapshot(photos) == before


def test_predict_output_that_is_a_file_is_one_line(runs: Path, photos: Path, capsys):
    config = runs / "a" / "config.yaml"
    before = config.read_bytes()
    line = refused(["predict", f"checkpoint={runs / 'a' / 'best.pt'}", f"source={photos}", f"output={config}"],
                   capsys)
    assert line == (f"visiontune predict: error: output={config} is a file: predict writes its files into a folder; "
                    "give a folder (it is created when missing)")
    assert config.read_bytes() == before


def test_a_project_name_over_the_file_system_limit_is_one_line(runs: Path, photos: Path, tiny_shapes: Path,
                                                               tmp_path: Path, capsys):
    project = tmp_path / ("p" * 256)
    line = refused(["predict", f"checkpoint={runs / 'a' / 'best.pt'}", f"source={photos}", f"project={project}"],
                   capsys)
    assert line == (f"visiontune predict: error: project={project}: the name pppppppppppppppppppppppp... is 256 "
                    "bytes; the file system allows at most 255 per file or folder")
    line = refused(["train", "task=classification", f"data.root={tiny_shapes}", f"project={project}", "name=long",
                    "resume=true"], capsys)
    assert line == (f"visiontune train: error: the run folder {project / 'classification' / 'long'}: the name "
                    "pppppppppppppppppppppppp... is 256 bytes; the file system allows at most 255 per file or folder")


def test_predict_into_its_own_run_folder_is_allowed(runs: Path, photos: Path, capsys):
    output = runs / "a" / "predictions"
    assert main(["predict", f"checkpoint={runs / 'a' / 'best.pt'}", f"source={photos}", f"output={output}"]) == 0
    assert (output / "predictions.csv").is_file()
    shutil.rmtree(output)


# ------------------------------------------------------------------ eval


def test_eval_refuses_another_runs_folder(runs: Path, capsys):
    before = snapshot(runs / "b")
    line = refused(["eval", f"checkpoint={runs / 'a' / 'best.pt'}", f"output={runs / 'b'}"], capsys)
    assert line == (f"visiontune eval: error: output={runs / 'b'} is inside the run folder {(runs / 'b').resolve()} "
                    f"of another run than {(runs / 'a').resolve()}: eval does not write into "
                    "other runs' folders; choose an output outside them")
    refused(["eval", f"checkpoint={runs / 'a' / 'best.pt'}", f"output={runs / 'b' / 'eval-val'}"], capsys)
    assert snapshot(runs / "b") == before


def test_eval_refuses_the_dataset_folder(runs: Path, tiny_shapes: Path, capsys):
    before = snapshot(tiny_shapes)
    output = tiny_shapes / "val" / "eval"
    line = refused(["eval", f"checkpoint={runs / 'a' / 'best.pt'}", f"output={output}"], capsys)
    assert f"output={output} is inside the data.root folder {tiny_shapes}: eval would write into the folder" in line
    assert snapshot(tiny_shapes) == before


def test_eval_writes_beside_its_own_checkpoint(runs: Path, capsys):
    output = runs / "a" / "eval-again"
    assert main(["eval", f"checkpoint={runs / 'a' / 'best.pt'}", f"output={output}", "train.progress=false"]) == 0
    assert (output / "metrics.json").is_file()
    shutil.rmtree(output)


# ------------------------------------------------------------------ convert, import-config


def test_convert_refuses_another_runs_folder(runs: Path, capsys):
    before = snapshot(runs / "b")
    output = runs / "b" / "model.ckpt"
    line = refused(["convert", str(runs / "a" / "best.pt"), str(output)], capsys)
    assert f"-o {output} is inside the run folder {(runs / 'b').resolve()} of another run" in line
    assert snapshot(runs / "b") == before


def test_convert_refuses_its_input(tmp_path: Path, capsys):
    source = tmp_path / "weights.ckpt"
    source.write_bytes(b"mindspore checkpoint bytes")
    line = refused(["convert", str(source), str(source), "to=mindspore"], capsys)
    assert f"-o {source} is the input file {source}: convert would write over the file it reads" in line
    assert source.read_bytes() == b"mindspore checkpoint bytes"


def test_import_config_refuses_its_input_and_run_folders(runs: Path, tmp_path: Path, capsys):
    source = tmp_path / "RetinaFace_mobilenet025.yaml"
    source.write_text("backbone: mobilenet025\n")
    line = refused(["import-config", str(source), str(source)], capsys)
    assert line == (f"visiontune import-config: error: -o {source} is the input file {source}: import-config would "
                    "write over the file it reads; choose another output")
    assert source.read_text() == "backbone: mobilenet025\n"
    line = refused(["import-config", str(source), "-o", str(runs / "b" / "config.yaml")], capsys)
    assert f"-o {runs / 'b' / 'config.yaml'} is inside the run folder {(runs / 'b').resolve()} of another run" in line


# ------------------------------------------------------------------ report, compare, check-data


def test_compare_refuses_a_page_inside_a_compared_run(runs: Path, capsys):
    before = snapshot(runs / "a")
    page = runs / "a" / "metrics.csv"
    line = refused(["compare", str(runs / "a"), str(runs / "b"), "-o", str(page)], capsys)
    assert f"-o {page} is inside the compared run 1 folder {runs / 'a'}: compare would write into the folder" in line
    assert snapshot(runs / "a") == before


def test_report_refuses_a_folder_inside_another_run(runs: Path, capsys):
    nested = runs / "b" / "copied"
    nested.mkdir()
    (nested / "config.yaml").write_bytes((runs / "b" / "config.yaml").read_bytes())
    line = refused(["report", str(nested)], capsys)
    assert line.startswith(f"visiontune report: error: {nested / 'report.html'} is inside the run folder "
                           f"{(runs / 'b').resolve()} of another run than {nested.resolve()}: report does not write")
    assert not (nested / "report.html").exists()
    shutil.rmtree(nested)


def test_check_data_report_refuses_a_project_inside_a_run(runs: Path, tiny_shapes: Path, capsys):
    before = snapshot(runs / "b")
    line = refused(["check-data", "task=classification", f"data.root={tiny_shapes}", f"project={runs / 'b'}",
                    "--report"], capsys)
    assert line.startswith(f"visiontune check-data: error: project={runs / 'b'} is inside the run folder "
                           f"{(runs / 'b').resolve()} of another run: check-data does not write into other runs' "
                           "folders")
    assert snapshot(runs / "b") == before
