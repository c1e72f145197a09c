"""``visiontune report <run>`` and ``visiontune compare <run> <run> ...``: look at runs instead of reading them."""

from __future__ import annotations

import argparse
from pathlib import Path

from visiontune.cli._common import Command, add_verbose

RUN_FILES = ("config.yaml", "metrics.csv")
"""Files of which a run folder holds at least one (a folder with neither is not a visiontune run)."""


def _run_folder(path: str) -> Path:
    """``path`` as a run folder; a checkpoint inside one stands for its folder."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder not found: {path}")
    if not any((folder / name).is_file() for name in RUN_FILES):
        raise ValueError(f"{folder} is not a visiontune run folder (it holds neither {' nor '.join(RUN_FILES)})")
    return folder


def run_report(args: argparse.Namespace) -> int:
    """Write ``report.html`` into each run folder and print its path (never into a run folder that holds the given
    folder: a folder inside another run is refused)."""
    from visiontune.engine.run_dir import check_output_path
    from visiontune.report import write_run_report

    for path in args.runs:
        folder = _run_folder(path)
        check_output_path(folder / "report.html", command="report", writes="file", key="", own_run=folder)
        print(write_run_report(folder))
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """Print the comparison table and write the HTML page (``--output``, or a new ``<project>/compare`` folder)."""
    from visiontune.engine.run_dir import check_output_path, new_run_dir
    from visiontune.report import write_comparison

    folders = [_run_folder(path) for path in args.runs]
    if len(folders) < 2:
        raise ValueError("compare needs at least two run folders")
    if args.output:  # not a file of the compared runs, nor in any run's folder
        check_output_path(args.output, command="compare", writes="file", key="-o",
                          inputs={f"compared run {index}": folder for index, folder in enumerate(folders, start=1)})
    else:
        check_output_path(args.project, command="compare", writes="folder", key="--project")
    output = Path(args.output) if args.output else new_run_dir(Path(args.project) / "compare", "compare") / (
        "compare.html")
    path, console = write_comparison(folders, output)
    print(console)
    print(f"\ncomparison page: {path}")
    return 0


def _configure_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or a checkpoint inside one)")
    add_verbose(parser)
    parser.set_defaults(handler=run_report)


def _configure_compare(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="two or more run folders")
    parser.add_argument("-o", "--output", metavar="PAGE.html", help="where to write the HTML page")
    parser.add_argument("--project", default="runs", help="project folder for the default output (default: runs)")
    add_verbose(parser)
    parser.set_defaults(handler=run_compare)


COMMANDS = (
    Command(
        "report", "write a run's self-contained report.html (curves, metrics, task views, config), also mid-run",
        "  visiontune report runs/classification/mobilenetv2_100\n"
        "  visiontune report runs/face_detection/retinaface/best.pt",
        _configure_report,
    ),
    Command(
        "compare", "compare runs: main metrics, speed and config differences, in the console and as HTML",
        "  visiontune compare runs/classification/freeze runs/classification/full\n"
        "  visiontune compare runs/classification/lr-* -o comparison.html",
        _configure_compare,
    ),
)
