"""MindCV weights compute what MindSpore computes, through both README routes, built as ``eval`` / ``predict`` build.

Routes: ``model.checkpoint: x.ckpt``, and ``visiontune convert x.ckpt x.safetensors`` then
``model.checkpoint: x.safetensors``. The model is built by the classification task from a config and the weights
(``api.resolve_weights`` + ``api.build_model_for_weights``, the code of ``eval`` / ``predict`` for plain weights),
and its logits on the fixture input are compared with MindSpore's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from visiontune.api import build_model_for_weights, resolve_weights
from visiontune.cli import main
from visiontune.config import load_config
from visiontune.models.loading import safetensors_metadata
from visiontune.tasks import create_task

FIXTURES = [("mobilenet_v3_small_100", "mobilenetv3_small_100", True),
            ("mobilenet_v2_100", "mobilenetv2_100", False)]
"""(MindCV name, timm name, whether MindSpore's padding differs from timm's)."""

TOLERANCE = 1e-4
"""max |logits - MindSpore's| / max |MindSpore's|; timm's own padding gives 1.1e-3 for MobileNetV3-small."""


def _weights(fixtures_dir: Path, tmp_path: Path, arch: str, route: str) -> Path:
    ckpt = fixtures_dir / "mindspore" / f"{arch}.ckpt"
    if route == "ckpt":
        return ckpt
    output = tmp_path / f"{arch}.safetensors"
    assert main(["convert", str(ckpt), str(output), f"arch={arch}"]) == 0
    return output


def _build(weights: Path, timm_name: str, *overrides: str):
    config = load_config(None, ["task=classification", f"model.name={timm_name}", *overrides])
    resolved = resolve_weights(config, weights)
    assert resolved.checkpoint is None  # plain weights
    task = create_task(resolved.config)
    return task, build_model_for_weights(task, resolved).eval()


def _relative_error(model: torch.nn.Module, fixtures_dir: Path, arch: str) -> float:
    inputs = torch.from_numpy(np.load(fixtures_dir / "mindspore" / f"{arch}.input.npy"))
    expected = np.load(fixtures_dir / "mindspore" / f"{arch}.logits.npy")
    with torch.no_grad():
        logits = torch.stack([output["logits"] for output in model(inputs)]).numpy()
    return float(np.abs(logits - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("route", ["ckpt", "safetensors"])
@pytest.mark.parametrize("arch, timm_name, padded", FIXTURES)
def test_mindcv_weights_give_mindspore_logits(fixtures_dir: Path, tmp_path: Path, arch: str, timm_name: str,
                                              padded: bool, route: str):
    weights = _weights(fixtures_dir, tmp_path, arch, route)
    task, model = _build(weights, timm_name)
    error = _relative_error(model, fixtures_dir, arch)
    print(f"\n{arch} via {route}: max|diff|/scale = {error:.3e}")
    assert error < TOLERANCE
    # recorded for the checkpoints of a run fine-tuned from these weights
    assert task.meta.get("mindspore_padding") == (arch if padded else None)
    assert task.meta["load_report"].get("mindspore_padding") == (arch if padded else None)


def test_converted_file_records_the_architecture(fixtures_dir: Path, tmp_path: Path, capsys):
    weights = _weights(fixtures_dir, tmp_path, "mobilenet_v3_small_100", "safetensors")
    assert safetensors_metadata(weights)["mindspore_arch"] == "mobilenet_v3_small_100"
    assert "metadata mindspore_arch=mobilenet_v3_small_100" in capsys.readouterr().out


@pytest.mark.parametrize("route", ["ckpt", "safetensors"])
def test_padding_can_be_turned_off(fixtures_dir: Path, tmp_path: Path, route: str):
    weights = _weights(fixtures_dir, tmp_path, "mobilenet_v3_small_100", route)
    task, model = _build(weights, "mobilenetv3_small_100", "model.mindspore_padding=false")
    assert _relative_error(model, fixtures_dir, "mobilenet_v3_small_100") > 5e-4  # timm's symmetric padding
    assert "mindspore_padding" not in task.meta


def test_checkpoint_meta_rebuilds_the_padding(fixtures_dir: Path):
    """eval / predict / resume / export build the model from the checkpoint's meta without loading the weights:
    the padding comes back from ``meta``, and the state dict (names unchanged) loads strictly."""
    arch = "mobilenet_v3_small_100"
    task, model = _build(fixtures_dir / "mindspore" / f"{arch}.ckpt", "mobilenetv3_small_100")
    stored = {"model": model.state_dict(), "meta": task.state_for_checkpoint()}

    rebuilt_task = create_task(load_config(None, ["task=classification", "model.name=mobilenetv3_small_100",
                                                  "model.num_classes=1000"]))
    rebuilt_task.load_meta(stored["meta"])
    rebuilt = rebuilt_task.build_model(load_weights=False)
    rebuilt.load_state_dict(stored["model"])
    assert _relative_error(rebuilt.eval(), fixtures_dir, arch) < TOLERANCE

    plain_task = create_task(load_config(None, ["task=classification", "model.name=mobilenetv3_small_100",
                                                "model.num_classes=1000"]))
    plain = plain_task.build_model(load_weights=False)
    plain.load_state_dict(stored["model"])
    assert _relative_error(plain.eval(), fixtures_dir, arch) > 5e-4  # without the meta: timm's padding
