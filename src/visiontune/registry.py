"""A tiny name -> factory registry with did-you-mean errors (one registry per component kind)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def suggest(name: str, choices: list[str] | tuple[str, ...] | set[str], *, limit: int = 3) -> str:
    """Return a ``" (did you mean 'x'?)"`` suffix for ``name`` among ``choices``, or an empty string."""
    close = difflib.get_close_matches(name, sorted(choices), n=limit, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


class UnknownNameError(KeyError):
    """Raised when a registry lookup fails. ``str()`` gives the full message (KeyError would quote it)."""

    def __str__(self) -> str:  # KeyError wraps its message in quotes; keep it readable
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Maps names to factories of one component kind (tasks, datasets, ...).

    Args:
        kind: What is registered, used in error messages (e.g. ``"task"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a duplicate name is an error."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Return the entry for ``name``; an unknown name lists the valid ones and the closest match."""
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{suggest(name, list(self._entries))}; valid: {valid}"
            ) from None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
