"""Run directories: ``<project>/<task>/<name>``, then ``<name>-2``, ``<name>-3``... never overwriting a run."""

from __future__ import annotations

import re
from pathlib import Path


def _numbered(base: Path, name: str) -> list[tuple[int, Path]]:
    pattern = re.compile(rf"^{re.escape(name)}(?:-(\d+))?$")
    runs = []
    if base.is_dir():
        for child in base.iterdir():
            match = pattern.match(child.name)
            if match and child.is_dir():
                runs.append((int(match.group(1) or 1), child))
    return sorted(runs)


def new_run_dir(base: str | Path, name: str) -> Path:
    """Create and return a fresh run directory ``base/name`` or ``base/name-N`` (N = highest + 1)."""
    base = Path(base)
    runs = _numbered(base, name)
    number = runs[-1][0] + 1 if runs else 1
    while True:
        path = base / (name if number == 1 else f"{name}-{number}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:  # a concurrent run took it
            number += 1


def newest_run_dir(base: str | Path, name: str) -> Path | None:
    """The highest-numbered existing run ``base/name[-N]``, or ``None``."""
    runs = _numbered(Path(base), name)
    return runs[-1][1] if runs else None
