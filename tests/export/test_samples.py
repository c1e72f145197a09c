"""The export's sample images: regular files only, a named pipe is never opened."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest
from PIL import Image

from visiontune.export.samples import collect_sample_images


class StillBlocked(BaseException):
    """A named pipe was opened and blocked (a ``BaseException``: no ``except OSError`` swallows it)."""


@pytest.fixture
def no_hang():
    """Fail instead of hanging when something opens a named pipe."""
    def timeout(signum, frame):
        raise StillBlocked("blocked: a named pipe was opened")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_a_named_pipe_among_the_samples_is_skipped_and_named(tmp_path: Path, caplog, no_hang):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    os.mkfifo(tmp_path / "f.jpg")
    with caplog.at_level(logging.WARNING):
        assert collect_sample_images(tmp_path) == [tmp_path / "a.jpg"]
    assert f"skipped 1 file(s) that are a named pipe, not regular files, e.g. {tmp_path / 'f.jpg'}" in caplog.text


def test_a_named_pipe_given_as_the_sample_is_refused(tmp_path: Path, no_hang):
    os.mkfifo(tmp_path / "f.jpg")
    with pytest.raises(ValueError, match=r"sample: .*f\.jpg is a named pipe, not a regular file \(give an image"):
        collect_sample_images(tmp_path / "f.jpg")
