"""Checkpoints for the export tests: a tiny classifier and the reference RetinaFace-MobileNet0.25."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import shapes
from visiontune import __version__
from visiontune.config import config_to_dict, load_config
from visiontune.tasks import create_task

PARITY_SIZE = (240, 320)
"""Example input ``(height, width)`` of the RetinaFace exports (small, to keep the PyTorch side of the check fast)."""


def save_checkpoint(task, model, path: Path) -> Path:
    """A visiontune checkpoint dict (the keys ``load_checkpoint`` and ``export_checkpoint`` read)."""
    torch.save({"model": model.state_dict(), "config": config_to_dict(task.config), "meta": task.state_for_checkpoint(),
                "version": __version__}, path)
    return path


def randomize_batch_norm_statistics(model: torch.nn.Module, *, seed: int) -> None:
    """Non-trivial BatchNorm statistics, so that an export that mishandles them fails the comparisons."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.2)
            module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(channels, generator=generator) * 0.1)


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-class shapes ImageFolder (32x32 images)."""
    root = tmp_path_factory.mktemp("export_shapes")
    shapes(root, train_per_class=2, seed=3)
    return root


@pytest.fixture(scope="session")
def classification_checkpoint(shapes_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``test_resnet`` classifier for the shapes classes with random weights and BN statistics."""
    config = load_config(None, ["task=classification", "model.name=test_resnet", f"data.root={shapes_dir}",
                                "data.image_size=32", "data.crop_pct=1.0", "data.num_workers=0", "data.batch_size=4",
                                "train.progress=false"])
    task = create_task(config)
    task.build_dataset(config.data.train_split, train=True)  # sets meta["class_names"]
    torch.manual_seed(0)
    model = task.build_model(load_weights=False)
    randomize_batch_norm_statistics(model, seed=1)
    return save_checkpoint(task, model.eval(), tmp_path_factory.mktemp("classification_ckpt") / "best.pt")


@pytest.fixture(scope="session")
def retinaface_weights(fixtures_dir: Path) -> Path:
    """The reference ``mobilenet0.25_Final.pth`` (skips when absent)."""
    path = fixtures_dir / "retinaface" / "mobilenet0.25_Final.pth"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="session")
def face_images(retinaface_weights: Path) -> Path:
    """The folder of real photos next to the reference weights."""
    return retinaface_weights.parent / "images"


@pytest.fixture(scope="session")
def face_checkpoint(retinaface_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A visiontune face-detection checkpoint holding the trained reference RetinaFace-MobileNet0.25."""
    config = load_config(None, ["task=face_detection", "model.name=retinaface_mobilenet0.25",
                                f"model.checkpoint={retinaface_weights}", "train.progress=false"])
    task = create_task(config)
    model = task.build_model(load_weights=True)
    return save_checkpoint(task, model.eval(), tmp_path_factory.mktemp("face_ckpt") / "best.pt")


@pytest.fixture(scope="session")
def classification_onnx(classification_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny classifier exported with the defaults (dynamic batch, logits)."""
    from visiontune.export import export_checkpoint

    return export_checkpoint(classification_checkpoint, output=tmp_path_factory.mktemp("cls_onnx") / "model.onnx")


@pytest.fixture(scope="session")
def classification_static_onnx(classification_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny classifier exported with a fixed 1x3x32x32 input and softmax probabilities."""
    from visiontune.export import ExportOptions, export_checkpoint

    return export_checkpoint(classification_checkpoint, output=tmp_path_factory.mktemp("cls_static") / "static.onnx",
                             options=ExportOptions(dynamic=False, softmax=True))


@pytest.fixture(scope="session")
def face_raw_onnx(face_checkpoint: Path, face_images: Path, tmp_path_factory: pytest.TempPathFactory):
    """The reference RetinaFace exported with raw outputs, parity-checked on the real photos."""
    from visiontune.export import ExportOptions, export_checkpoint

    return export_checkpoint(face_checkpoint, output=tmp_path_factory.mktemp("face_raw") / "raw.onnx",
                             options=ExportOptions(sample=str(face_images), input_size=PARITY_SIZE))


@pytest.fixture(scope="session")
def face_decoded_onnx(face_checkpoint: Path, face_images: Path, tmp_path_factory: pytest.TempPathFactory):
    """The reference RetinaFace exported with prior decoding in the graph."""
    from visiontune.export import ExportOptions, export_checkpoint

    return export_checkpoint(face_checkpoint, output=tmp_path_factory.mktemp("face_decoded") / "decoded.onnx",
                             options=ExportOptions(decode=True, sample=str(face_images),
                                                         input_size=PARITY_SIZE))
