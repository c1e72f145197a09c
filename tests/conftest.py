"""Shared pytest fixtures.

``shared_dir`` locates the read-only reference data (``../shared`` beside the repository, or
``$VISIONTUNE_SHARED``) and skips the test with a clear reason when it is absent.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def find_shared_dir() -> Path | None:
    """Return the shared reference-data folder, or None when it is not available."""
    env = os.environ.get("VISIONTUNE_SHARED")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared")
    for candidate in candidates:
        if (candidate / "fixtures").is_dir():
            return candidate
    return None


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A local MLflow store (SQLite, artifacts in ``tmp_path``) with the experiment ``classification``; its client."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    client = mlflow.MlflowClient()
    client.create_experiment("classification", artifact_location=(tmp_path / "artifacts").as_uri())
    return client


@pytest.fixture(autouse=True)
def run_in_a_temporary_folder(tmp_path_factory, monkeypatch):
    """Run every test in a folder of its own: what a command writes under its defaults (``project=runs``, the image
    hash cache ``runs/.cache``) lands there, never in the repository. Tests name repository files by absolute paths
    (:data:`REPO_ROOT`)."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(autouse=True)
def restore_root_logging():
    """Give every test the root logger it found: the CLI's ``logging.basicConfig(force=True)`` replaces its handlers
    and level, which would leak from an in-process ``main([...])`` test into the next tests."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory) -> Path:
    """The tiny generated shapes dataset most training tests use (:func:`tests.helpers.shapes` defaults)."""
    from tests.helpers import shapes

    return shapes(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Path to ``shared/`` (skips the test when the reference data is absent)."""
    path = find_shared_dir()
    if path is None:
        pytest.skip("reference data ../shared (or $VISIONTUNE_SHARED) is absent")
    return path


@pytest.fixture(scope="session")
def fixtures_dir(shared_dir: Path) -> Path:
    """Path to ``shared/fixtures``."""
    return shared_dir / "fixtures"
