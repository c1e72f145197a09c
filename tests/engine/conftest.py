"""A tiny classification dataset and config for engine tests (CPU, seconds)."""


import pytest

from visiontune.config import load_config


@pytest.fixture
def tiny_config(tiny_shapes, tmp_path):
    def make(*overrides):
        return load_config(None, [
            "task=classification", "device=cpu", f"data.root={tiny_shapes}", f"project={tmp_path / 'runs'}", "name=t",
            "model.name=test_resnet", "data.image_size=32", "data.crop_pct=1.0", "data.batch_size=4",
            "data.num_workers=0", "data.color_jitter=0.1", "optim.name=sgd", "optim.lr=0.05",
            "train.epochs=2", "train.progress=false", "train.plots=false", "seed=7", *overrides,
        ])

    return make
