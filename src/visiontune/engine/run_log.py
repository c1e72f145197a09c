"""``<run>/train.log``: the resolved config, the environment, then every log line of the run (rank 0 only).

The file handler sits on the ``visiontune`` logger only while a run sets up or trains (:meth:`RunLog.attached`),
so many runs in one process (tests, notebooks) each write their own file. While attached, the ``visiontune``
logger lets INFO records through for the file, and forwards to the parent handlers only what they saw before:
the console output stays as it was.

The run folder is created only once the run can start (data and model built), so a ``RunLog`` may begin without a
path (``RunLog(None)``): until :meth:`RunLog.open` names the file, the header and the log records wait in memory,
then go to the file in order.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def _versions() -> dict[str, str]:
    return {"visiontune": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": _version_of("torchvision"), "timm": _version_of("timm")}


def _amp_name(autocast_dtype: torch.dtype | None) -> str:
    return str(autocast_dtype).replace("torch.", "") if autocast_dtype is not None else "off"


def environment_lines(*, device: torch.device, world_size: int, autocast_dtype: torch.dtype | None,
                      loss_scaling: bool) -> list[str]:
    """What the run ran on: package versions, device, number of processes, mixed precision."""
    cuda = f", CUDA {torch.version.cuda} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    return [
        ", ".join(f"{name} {version}" for name, version in _versions().items()),
        f"device {device}{cuda}, world size {world_size}, AMP {_amp_name(autocast_dtype)} "
        f"(loss scaling {'on' if loss_scaling else 'off'})",
    ]


RUN_INFO_FILE = "run_info.json"
"""Written by rank 0 when a run (or a resumed run) starts: what :func:`run_info` returns, read by the report."""


def run_info(*, device: torch.device, world_size: int, autocast_dtype: torch.dtype | None, loss_scaling: bool,
             channels_last: bool, compiled: bool, meta: dict[str, Any]) -> dict[str, Any]:
    """The facts of one invocation that a report shows (JSON-ready): versions, device, processes, precision and
    the load reports of the initial weights (``meta["load_report"]`` / ``meta["backbone_load_report"]``: source,
    tensor counts, the names re-initialised / missing / unexpected; absent when training starts from random
    weights)."""
    weights = {role: meta[key] for role, key in (("backbone", "backbone_load_report"), ("model", "load_report"))
               if isinstance(meta.get(key), dict)}
    return {
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "versions": _versions(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or None,
        "world_size": world_size,
        "amp": _amp_name(autocast_dtype),
        "loss_scaling": loss_scaling,
        "channels_last": channels_last,
        "compile": compiled,
        "weights": weights,
    }


class _ForwardToParent(logging.Handler):
    """Hands records at or above ``level`` to the handlers above the ``visiontune`` logger, as propagation
    would; with none anywhere, Python's last-resort handler (stderr, warnings and up) takes them, as before."""

    def __init__(self, logger: logging.Logger, level: int) -> None:
        super().__init__(level)
        self.parent = logger.parent

    def emit(self, record: logging.LogRecord) -> None:
        if self.parent is not None:
            self.parent.callHandlers(record)


class _Pending(logging.Handler):
    """Keeps the records of a :class:`RunLog` that has no file yet."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class RunLog:
    """The ``train.log`` of one run; ``enabled=False`` (ranks other than 0) makes every method a no-op.

    ``path=None``: the file is named later (:meth:`open`); until then header and records are kept in memory.
    """

    def __init__(self, path: Path | None, *, enabled: bool = True) -> None:
        self.path = Path(path) if path is not None else None
        self.enabled = enabled
        self._saved: tuple[int, bool] | None = None
        self._handlers: list[logging.Handler] = []
        self._pending_header: str | None = None
        self._pending = _Pending()

    def write_header(self, config: Config, environment: list[str]) -> None:
        """Start a section (a resumed run appends one) with the time, the environment and the resolved config."""
        if not self.enabled:
            return
        started = datetime.datetime.now().isoformat(timespec="seconds")
        text = yaml.safe_dump(config_to_dict(config), sort_keys=False).rstrip()
        lines = [f"=== visiontune run started {started}", "environment:", *(f"  {line}" for line in environment),
                 "config:", *(f"  {line}" for line in text.splitlines()), "log:"]
        if self.path is None:
            self._pending_header = "\n".join(lines) + "\n"
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write("\n".join(lines) + "\n")

    def open(self, path: Path) -> None:
        """Name the file of a ``RunLog(None)``: write the kept header and records to it, then log straight to it."""
        self.path = Path(path)
        if not self.enabled:
            return
        if self._pending_header is not None:
            with self.path.open("a", encoding="utf-8") as stream:
                stream.write(self._pending_header)
            self._pending_header = None
        if self._saved is None:
            self._pending.records.clear()
            return
        logger = logging.getLogger(PACKAGE_LOGGER)
        file_handler = self._file_handler()
        for record in self._pending.records:
            file_handler.handle(record)
        self._pending.records.clear()
        logger.removeHandler(self._pending)
        logger.addHandler(file_handler)
        self._handlers = [file_handler if handler is self._pending else handler for handler in self._handlers]

    def _file_handler(self) -> logging.Handler:
        assert self.path is not None
        file_handler = logging.FileHandler(self.path, mode="a", encoding="utf-8")
        file_handler.setLevel(logging.INFO)
        file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        return file_handler

    def attach(self) -> None:
        """Send the ``visiontune`` log records (INFO and up) to the file; idempotent."""
        if not self.enabled or self._saved is not None:
            return
        logger = logging.getLogger(PACKAGE_LOGGER)
        self._saved = (logger.level, logger.propagate)
        threshold = logger.getEffectiveLevel()
        self._handlers = [self._file_handler() if self.path is not None else self._pending]
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
            if handler is not self._pending:
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
