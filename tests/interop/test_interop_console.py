"""The note ``import-config`` writes for MindFace's ``val_model`` says what ``eval`` does with a MindSpore .ckpt."""

from __future__ import annotations

from pathlib import Path

from visiontune.api import WEIGHTS_RULE
from visiontune.cli import main

MINDFACE_RESNET = Path(__file__).parent / "data" / "RetinaFace_resnet50.yaml"


def test_val_model_note_says_eval_reads_a_mindspore_checkpoint(tmp_path: Path, capsys):
    assert main(["import-config", str(MINDFACE_RESNET), "-o", str(tmp_path / "config.yaml")]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "val_model" in line)
    assert "visiontune eval reads a MindSpore .ckpt directly" in line and "checkpoint=<model.ckpt>" in line
    assert "convert a MindSpore .ckpt" not in out
    assert "MindSpore .ckpt" in WEIGHTS_RULE  # what eval's own help says about the same weights
