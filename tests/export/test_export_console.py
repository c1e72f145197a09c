"""``visiontune export`` prints its parity table once."""

from __future__ import annotations

from visiontune.cli import main


def test_the_parity_table_is_printed_once(classification_checkpoint, tmp_path, capsys):
    output = tmp_path / "once.onnx"
    assert main(["export", f"checkpoint={classification_checkpoint}", f"output={output}"]) == 0
    captured = capsys.readouterr()
    both = captured.out + captured.err
    assert both.count("max abs diff") == 1 and "max abs diff" in captured.out
    assert both.count("1x3x32x32") >= 1 and f"to {output}" in captured.out
