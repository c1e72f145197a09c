"""``visiontune --help`` / ``--version`` answer without importing torch, and every command's help has examples."""

from __future__ import annotations

import subprocess
import sys

import pytest

from visiontune import __version__
from visiontune.cli import COMMANDS, build_parser

ALL_COMMANDS = ("demo", "train", "eval", "predict", "check-data", "tune", "report", "compare", "export", "convert",
                "import-config", "config")
HEAVY = ("torch", "timm", "torchvision", "onnx", "onnxruntime")


def run_cli_in_a_fresh_interpreter(*argv: str) -> tuple[str, list[str]]:
    """stdout of ``visiontune.cli.main(argv)`` and which of :data:`HEAVY` it imported."""
    code = (
        "import sys\n"
        "from visiontune.cli import main\n"
        "try:\n"
        f"    main({list(argv)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('IMPORTED', [name for name in {HEAVY!r} if name in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    out, _, imported = result.stdout.rpartition("IMPORTED ")
    return out, eval(imported)  # a list literal printed above


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["export", "--help"], ["config", "keys", "--help"],
                                  ["predict", "-h"]])
def test_help_and_version_import_no_heavy_module(argv):
    out, imported = run_cli_in_a_fresh_interpreter(*argv)
    assert imported == [], f"visiontune {' '.join(argv)} imported {imported}"
    assert out.strip()
    if argv == ["--version"]:
        assert out.strip() == f"visiontune {__version__}"


def test_config_keys_imports_no_heavy_module():
    out, imported = run_cli_in_a_fresh_interpreter("config", "keys", "optim")
    assert imported == [] and "optim.lr: float (> 0) = 0.01" in out


def test_top_level_help_lists_every_command():
    assert tuple(COMMANDS) == ALL_COMMANDS
    text = build_parser().format_help()
    for name in ALL_COMMANDS:
        assert f"\n    {name}" in text, name
    assert "examples:" in text


@pytest.mark.parametrize("argv", [[name] for name in ALL_COMMANDS] + [["config", "show"], ["config", "keys"]],
                         ids=" ".join)
def test_every_command_help_has_examples(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*argv, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and f"visiontune {' '.join(argv)}" in text, argv


def test_console_script_starts_fast():
    """``python -m visiontune --version`` end to end (generous bound: shared CI machines; ~0.2 s when idle)."""
    import time

    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "visiontune", "--version"], capture_output=True, text=True,
                            timeout=120, check=True)
    seconds = time.perf_counter() - start
    assert result.stdout.strip() == f"visiontune {__version__}"
    assert seconds < 2.0, f"visiontune --version took {seconds:.2f} s"
