"""Fixtures for the RetinaFace tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from visiontune.models.retinaface import RetinaFace, create_retinaface


@pytest.fixture(scope="session")
def retinaface_dir(fixtures_dir: Path) -> Path:
    """``shared/fixtures/retinaface`` (skips when absent)."""
    path = fixtures_dir / "retinaface"
    if not (path / "mobilenet0.25_Final.pth").is_file():
        pytest.skip(f"{path}/mobilenet0.25_Final.pth is absent")
    return path


@pytest.fixture(scope="session")
def reference_state_dict(retinaface_dir: Path) -> dict[str, torch.Tensor]:
    """The reference ``mobilenet0.25_Final.pth`` state dict."""
    return torch.load(retinaface_dir / "mobilenet0.25_Final.pth", map_location="cpu", weights_only=True)


@pytest.fixture()
def tiny_model() -> RetinaFace:
    """A randomly initialised RetinaFace-MobileNet0.25 (seeded)."""
    torch.manual_seed(0)
    return create_retinaface("mobilenet0.25")
