"""The one error of every WIDER FACE file reader.

WIDER FACE files are read in two packages of one layer: the data package reads the annotation files
(:mod:`visiontune.data.widerface_annotations`: RetinaFace ``label.txt``, the official ``*_bbx_gt.txt``, image lists);
the evaluation package reads the official ground-truth ``.mat`` files
(:mod:`visiontune.evaluation.widerface_ground_truth`) and the prediction files of the submission layout
(:mod:`visiontune.evaluation.widerface_predictions`). Those packages must not import each other, so their common
error lives here, below both.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["WiderFaceFormatError"]


class WiderFaceFormatError(ValueError):
    """A WIDER FACE file does not follow its layout.

    The message starts with ``file:line:``, or with ``file:`` where the problem is not on one line (the structure
    of a ``.mat`` file, an entry of a prediction folder). A ``ValueError``: the command line prints it as one line.

    Args:
        path: the file (or folder entry) at fault.
        line_number: 1-based line of the problem, or None.
        message: what is wrong and what was expected.

    Attributes:
        path: the file, as a :class:`~pathlib.Path`.
        line_number: the line, or None.
    """

    def __init__(self, path: str | os.PathLike[str], line_number: int | None, message: str) -> None:
        location = f"{path}:{line_number}" if line_number is not None else f"{path}"
        super().__init__(f"{location}: {message}")
        self.path = Path(path)
        self.line_number = line_number
