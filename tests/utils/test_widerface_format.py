"""The one WIDER FACE format error: the data package's annotation readers and the evaluation package's ground-truth
and prediction readers all raise it, naming the file and, where there is one, the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from visiontune.data.widerface_annotations import read_annotations
from visiontune.evaluation.widerface_ground_truth import (
    DIFFICULTY_FILES,
    GROUND_TRUTH_FILE,
    load_widerface_ground_truth,
)
from visiontune.evaluation.widerface_predictions import read_prediction_file, read_widerface_predictions
from visiontune.utils.widerface_format import WiderFaceFormatError


def test_message_starts_with_the_file_and_the_line(tmp_path: Path) -> None:
    error = WiderFaceFormatError(tmp_path / "label.txt", 3, "expected an image path, got '1 2 3 4'")
    assert str(error) == f"{tmp_path / 'label.txt'}:3: expected an image path, got '1 2 3 4'"
    assert isinstance(error, ValueError)
    assert (error.path, error.line_number) == (tmp_path / "label.txt", 3)
    without_line = WiderFaceFormatError(str(tmp_path / "wider_easy_val.mat"), None, "missing key 'gt_list'")
    assert str(without_line) == f"{tmp_path / 'wider_easy_val.mat'}: missing key 'gt_list'"
    assert (without_line.path, without_line.line_number) == (tmp_path / "wider_easy_val.mat", None)


def test_annotation_reader_raises_it_with_the_line(tmp_path: Path) -> None:
    label = tmp_path / "label.txt"
    label.write_text("# a/b.jpg\n1 2 3 x4\n", encoding="utf-8")
    with pytest.raises(WiderFaceFormatError) as raised:
        read_annotations(label, "retinaface")
    assert str(raised.value) == f"{label}:2: could not parse 'x4' as a number in a face line"
    assert (raised.value.path, raised.value.line_number) == (label, 2)


def test_prediction_readers_raise_it(tmp_path: Path) -> None:
    prediction = tmp_path / "0--Parade" / "b.txt"
    prediction.parent.mkdir()
    prediction.write_text("b\n1\n1 2 3 4\n", encoding="utf-8")
    with pytest.raises(WiderFaceFormatError) as raised:
        read_prediction_file(prediction)
    assert str(raised.value) == f"{prediction}:3: expected 5 numbers 'x y w h score', got 4 field(s): '1 2 3 4'"
    assert (raised.value.path, raised.value.line_number) == (prediction, 3)
    folder = tmp_path / "predictions"
    folder.mkdir()
    (folder / "stray.txt").write_text("", encoding="utf-8")
    with pytest.raises(WiderFaceFormatError) as raised:
        read_widerface_predictions(folder)
    assert str(raised.value) == (f"{folder / 'stray.txt'}: unexpected file in the prediction folder; expected one "
                                 "folder per event holding <image>.txt files")
    assert raised.value.line_number is None


def test_ground_truth_reader_raises_it_without_a_line(tmp_path: Path) -> None:
    for name in (GROUND_TRUTH_FILE, *DIFFICULTY_FILES.values()):
        (tmp_path / name).write_bytes(b"not a MATLAB file")
    with pytest.raises(WiderFaceFormatError) as raised:
        load_widerface_ground_truth(tmp_path)
    assert str(raised.value).startswith(f"{tmp_path / GROUND_TRUTH_FILE}: not a readable MATLAB .mat file (")
    assert (raised.value.path, raised.value.line_number) == (tmp_path / GROUND_TRUTH_FILE, None)
