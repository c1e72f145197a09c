"""Errors raised by the MindSpore interop package (all are ``ValueError`` subclasses)."""

from __future__ import annotations


class MindSporeCheckpointError(ValueError):
    """Base class for problems with a MindSpore ``.ckpt`` file."""


class NotAMindSporeCheckpointError(MindSporeCheckpointError):
    """The file is not a MindSpore checkpoint (empty, a zip/.pth archive, a pickle, random bytes, ...)."""


class CorruptCheckpointError(MindSporeCheckpointError):
    """The file starts like a MindSpore checkpoint but is truncated or corrupted.

    Attributes:
        offset: byte offset in the file where the problem was found.
    """

    def __init__(self, message: str, *, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class UnsupportedTensorTypeError(MindSporeCheckpointError):
    """A tensor uses a ``tensor_type`` (or value kind) this reader/writer does not handle."""


class UnknownArchitectureError(ValueError):
    """The architecture name is not one of the supported MindSpore conversions."""


class ArchitectureMismatchError(ValueError):
    """The checkpoint's parameter names do not fit the requested architecture."""
