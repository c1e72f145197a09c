"""``visiontune demo``: an offline fine-tuning run on a generated shapes dataset (no network needed)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from visiontune.config import Config, load_config

logger = logging.getLogger(__name__)

DEMO_OVERRIDES = (
    "task=classification",
    "name=demo",
    "model.name=resnet10t",
    "data.format=folder",
    "data.image_size=64",
    "data.crop_pct=1.0",
    "data.scale=[0.6,1.0]",
    "data.color_jitter=0.2",
    "data.mean=[0.5,0.5,0.5]",
    "data.std=[0.25,0.25,0.25]",
    "data.batch_size=32",
    "data.num_workers=2",
    "optim.name=adamw",
    "optim.lr=0.003",
    "optim.weight_decay=0.05",
    "sched.name=cosine",
    "sched.warmup_epochs=1",
    "train.epochs=20",
)
"""The demo's settings; any of them can be overridden on the command line."""


def demo_config(overrides: tuple[str, ...] | list[str] = (), *, data_dir: str | Path | None = None) -> Config:
    """The demo config (generated data under ``<project>/demo-data`` unless ``data.root`` is given)."""
    config = load_config(None, [*DEMO_OVERRIDES, *overrides])
    if config.data.root is None:
        config.data.root = str(Path(data_dir) if data_dir else Path(config.project) / "demo-data" / "shapes")
    return config


def run_demo(overrides: tuple[str, ...] | list[str] = ()) -> tuple[Config, object, float]:
    """Generate the dataset (once), fine-tune, and return ``(config, TrainResult, seconds)``."""
    from visiontune.api import train  # with the report hook
    from visiontune.data.synthetic import make_shapes_dataset

    started = time.perf_counter()
    config = demo_config(overrides)
    assert config.data.root is not None  # demo_config sets it
    make_shapes_dataset(config.data.root, seed=config.seed)
    result = train(config)
    return config, result, time.perf_counter() - started
