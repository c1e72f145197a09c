"""``<run>/train.log``: the resolved config, the environment, then every log line of the run (rank 0 only).

The file handler sits on the ``visiontune`` logger only while a run sets up or trains (:meth:`RunLog.attached`),
so many runs in one process (tests, notebooks) each write their own file. While attached, the ``visiontune``
logger lets INFO records through for the file, and forwards to the parent handlers only what they saw before:
the console output stays as it was.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import platform
from collections.abc import Iterator
from pathlib import Path

import torch
import yaml

from visiontune import __version__
from visiontune.config import Config, config_to_dict

PACKAGE_LOGGER = "visiontune"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _version_of(module_name: str) -> str:
    try:
        module = __import__(module_name)
    except ImportError:
        return "not installed"
    return str(getattr(module, "__version__", "unknown"))


def environment_lines(*, device: torch.device, world_size: int, autocast_dtype: torch.dtype | None,
                      loss_scaling: bool) -> list[str]:
    """What the run ran on: package versions, device, number of processes, mixed precision."""
    amp = str(autocast_dtype).replace("torch.", "") if autocast_dtype is not None else "off"
    cuda = f", CUDA {torch.version.cuda} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    return [
        f"visiontune {__version__}, python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {_version_of('torchvision')}, timm {_version_of('timm')}",
        f"device {device}{cuda}, world size {world_size}, AMP {amp} (loss scaling {'on' if loss_scaling else 'off'})",
    ]


class _ForwardToParent(logging.Handler):
    """Hands records at or above ``level`` to the handlers above the ``visiontune`` logger, as propagation
    would; with none anywhere, Python's last-resort handler (stderr, warnings and up) takes them, as before."""

    def __init__(self, logger: logging.Logger, level: int) -> None:
        super().__init__(level)
        self.parent = logger.parent

    def emit(self, record: logging.LogRecord) -> None:
        if self.parent is not None:
            self.parent.callHandlers(record)


class RunLog:
    """The ``train.log`` of one run; ``enabled=False`` (ranks other than 0) makes every method a no-op."""

    def __init__(self, path: Path, *, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._saved: tuple[int, bool] | None = None
        self._handlers: list[logging.Handler] = []

    def write_header(self, config: Config, environment: list[str]) -> None:
        """Start a section (a resumed run appends one) with the time, the environment and the resolved config."""
        if not self.enabled:
            return
        started = datetime.datetime.now().isoformat(timespec="seconds")
        text = yaml.safe_dump(config_to_dict(config), sort_keys=False).rstrip()
        lines = [f"=== visiontune run started {started}", "environment:", *(f"  {line}" for line in environment),
                 "config:", *(f"  {line}" for line in text.splitlines()), "log:"]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write("\n".join(lines) + "\n")

    def attach(self) -> None:
        """Send the ``visiontune`` log records (INFO and up) to the file; idempotent."""
        if not self.enabled or self._saved is not None:
            return
        logger = logging.getLogger(PACKAGE_LOGGER)
        self._saved = (logger.level, logger.propagate)
        threshold = logger.getEffectiveLevel()
        file_handler = logging.FileHandler(self.path, mode="a", encoding="utf-8")
        file_handler.setLevel(logging.INFO)
        file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self._handlers = [file_handler]
        if logger.propagate:
            self._handlers.append(_ForwardToParent(logger, threshold))
            logger.propagate = False
        logger.setLevel(min(threshold, logging.INFO))
        for handler in self._handlers:
            logger.addHandler(handler)

    def detach(self) -> None:
        """Undo :meth:`attach`: close the file, restore the logger's level and propagation."""
        if self._saved is None:
            return
        logger = logging.getLogger(PACKAGE_LOGGER)
        for handler in self._handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(self._saved[0])
        logger.propagate = self._saved[1]
        self._saved, self._handlers = None, []

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        """:meth:`attach` for the ``with`` block, detached however it ends."""
        was_attached = self._saved is not None
        self.attach()
        try:
            yield
        finally:
            if not was_attached:
                self.detach()
