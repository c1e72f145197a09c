"""What ``import-config`` and ``convert`` print: the note on MindFace's ``val_model`` says what ``eval`` does with a
MindSpore .ckpt; ``convert`` names what it read, then the file it wrote."""

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


def test_convert_says_what_it_read_before_what_it_wrote(tmp_path: Path, capsys):
    import timm
    import torch

    weights = tmp_path / "weights.pth"
    torch.save(timm.create_model("mobilenetv2_100", pretrained=False, num_classes=2).state_dict(), weights)
    output = tmp_path / "out.ckpt"
    assert main(["convert", str(weights), "--arch", "mobilenet_v2_100", "-o", str(output)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == f"read {weights} (plain weights (a state dict))"
    assert lines[-1] == f"wrote {output}" and "weights weights" not in captured.out
    assert "wrote" not in captured.err  # the one "wrote" line comes last, after what was read
