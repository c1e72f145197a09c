"""Cached frozen-backbone features (``finetune.cache_features``) and head-only checkpoints
(``train.save_head_only``)."""

import json
import logging
from pathlib import Path

import pytest
import torch

from tests.helpers import train
from visiontune.api import evaluate
from visiontune.config import load_config
from visiontune.data.feature_cache import FeatureDataset
from visiontune.data.synthetic import make_shapes_dataset
from visiontune.engine.checkpoint import load_checkpoint
from visiontune.engine.hooks import HookBase
from visiontune.engine.trainer import Trainer
from visiontune.tasks.classification import ClassificationTask

DETERMINISTIC = ("data.scale=[1,1]", "data.ratio=[1,1]", "data.hflip=0", "data.color_jitter=0")
PROBE = ("finetune.freeze=backbone", *DETERMINISTIC)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    make_shapes_dataset(root, num_classes=3, train_per_class=6, val_per_class=3, image_size=40, seed=0)
    return root


@pytest.fixture
def config(shapes, tmp_path):
    def make(*overrides):
        return load_config(None, [
            "task=classification", "device=cpu", f"data.root={shapes}", f"project={tmp_path / 'runs'}", "name=t",
            "model.name=test_resnet", "model.drop_rate=0.3", "data.image_size=32", "data.batch_size=4",
            "data.num_workers=0", "optim.name=sgd", "optim.lr=0.05", "data.label_smoothing=0.1", "train.epochs=2",
            "train.progress=false", "train.plots=false", "train.report=false", "seed=7", *overrides,
        ])

    return make


class Crash(HookBase):
    def after_epoch(self, trainer, row):
        if row["epoch"] == 1:
            raise RuntimeError("simulated crash")


def assert_close_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for key in a:
        if atol:
            assert torch.allclose(a[key].float(), b[key].float(), atol=atol, rtol=0), key
        else:
            assert torch.equal(a[key], b[key]), key


def test_auto_caches_a_frozen_backbone_with_a_deterministic_transform(config):
    trainer = Trainer(config(*PROBE))
    trainer.setup()
    assert isinstance(trainer.train_dataset, FeatureDataset) and isinstance(trainer.val_dataset, FeatureDataset)
    assert len(trainer.train_dataset) == 18
    assert trainer.train_dataset.features.shape[1] == trainer.model.net.num_features
    images, labels = next(iter(trainer.train_loader))
    assert images.ndim == 2 and labels.dtype == torch.int64


def test_auto_says_why_it_stays_off(config, caplog):
    with caplog.at_level(logging.INFO):
        trainer = Trainer(config("finetune.freeze=backbone"))
        trainer.setup()
    assert not isinstance(trainer.train_dataset, FeatureDataset)
    assert "cache_features=auto: training on images" in caplog.text and "data.hflip=0" in caplog.text


def test_true_with_a_random_transform_names_the_keys(config):
    with pytest.raises(ValueError, match=r"cache_features=true.*data\.scale=\[1,1\].*data\.hflip=0.*color_jitter=0"):
        Trainer(config("finetune.freeze=backbone", "finetune.cache_features=true")).setup()
    with pytest.raises(ValueError, match="not backbone"):
        Trainer(config(*DETERMINISTIC, "finetune.cache_features=true")).setup()
    with pytest.raises(ValueError, match="drop_path_rate"):
        Trainer(config(*PROBE, "model.name=resnet10t", "model.drop_path_rate=0.1",
                       "finetune.cache_features=true")).setup()


def test_cached_and_uncached_training_give_the_same_head(config):
    options = (*PROBE, "train.epochs=1", "train.eval_before=false")
    cached = train(config(*options, "finetune.cache_features=true", "name=cached"))
    plain = train(config(*options, "finetune.cache_features=false", "name=plain"))
    assert_close_weights(load_checkpoint(cached.run_dir / "last.pt")["model"],
                         load_checkpoint(plain.run_dir / "last.pt")["model"], atol=1e-5)
    assert cached.history[-1]["train_loss_cls"] == pytest.approx(plain.history[-1]["train_loss_cls"], abs=1e-5)
    assert cached.history[-1]["val_top1"] == pytest.approx(plain.history[-1]["val_top1"])


def test_validation_equals_evaluate_of_best_checkpoint(config):
    result = train(config(*PROBE, "train.epochs=3", "train.ema=true", "train.ema_decay=0.5"))
    best = load_checkpoint(result.run_dir / "best.pt")
    row = next(row for row in result.history if row["epoch"] == best["epoch"])
    measured = evaluate(config(), checkpoint=result.run_dir / "best.pt").metrics
    for key in ("val_top1", "val_macro_f1", "val_ema_top1"):
        assert measured[key] == pytest.approx(row[key], abs=1e-9), key


def test_resume_reuses_the_cache_file_and_is_exact(config, caplog):
    options = (*PROBE, "train.epochs=3", "train.eval_before=false", "finetune.cache_memory_limit_mb=0",
               "train.ema=true", "train.ema_decay=0.9")
    straight = train(config(*options, "name=straight"))
    crashed = Trainer(config(*options, "name=split"), hooks=[Crash()])
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit()
    cache = crashed.run_dir / "feature_cache"
    assert {p.name for p in cache.iterdir()} == {"train.npy", "train.json", "val.npy", "val.json"}
    with caplog.at_level(logging.INFO):
        resumed = train(config(*options, f"resume={crashed.run_dir / 'last.pt'}"))
    assert "reusing it" in caplog.text and "stale" not in caplog.text
    final, expected = load_checkpoint(resumed.run_dir / "last.pt"), load_checkpoint(straight.run_dir / "last.pt")
    assert_close_weights(final["model"], expected["model"])
    assert_close_weights(final["ema"], expected["ema"])
    assert [row["val_top1"] for row in resumed.history] == [row["val_top1"] for row in straight.history]


def test_a_stale_cache_file_is_rebuilt(config, caplog):
    options = (*PROBE, "train.epochs=2", "train.eval_before=false", "finetune.cache_memory_limit_mb=0")
    straight = train(config(*options, "name=straight"))
    crashed = Trainer(config(*options, "name=split"), hooks=[Crash()])
    with pytest.raises(RuntimeError):
        crashed.fit()
    cache = crashed.run_dir / "feature_cache"
    meta = json.loads((cache / "train.json").read_text())
    (cache / "train.json").write_text(json.dumps({**meta, "key": "another backbone"}))
    rows = torch.from_numpy(__import__("numpy").load(cache / "train.npy"))
    __import__("numpy").save(cache / "train.npy", (rows * 0).numpy())  # garbage that must not be used
    with caplog.at_level(logging.INFO):
        resumed = train(config(*options, f"resume={crashed.run_dir / 'last.pt'}"))
    assert "train.npy is stale" in caplog.text
    assert_close_weights(load_checkpoint(resumed.run_dir / "last.pt")["model"],
                         load_checkpoint(straight.run_dir / "last.pt")["model"])
    assert json.loads((cache / "train.json").read_text())["key"] == meta["key"]


def test_head_only_checkpoints_load_with_the_backbone(config, tmp_path):
    task = ClassificationTask(config("model.num_classes=3"))
    backbone = tmp_path / "backbone.pth"
    torch.save(task.build_model(load_weights=False).net.state_dict(), backbone)
    result = train(config(*PROBE, f"model.checkpoint={backbone}", "train.save_head_only=true"))
    head_file = result.run_dir / "best_head.pt"
    assert head_file.stat().st_size < 20_000 and (result.run_dir / "last_head.pt").is_file()
    assert set(torch.load(head_file, weights_only=True)["model"]) == {"net.fc.weight", "net.fc.bias"}
    expected = load_checkpoint(result.run_dir / "best.pt")["model"]
    for extra in ((), (f"model.backbone_checkpoint={backbone}",)):  # recorded backbone source, or given
        model = ClassificationTask(config("model.num_classes=3", f"model.checkpoint={head_file}", *extra)).build_model()
        assert_close_weights(model.state_dict(), expected)
    backbone.unlink()
    with pytest.raises(Exception, match="backbone"):
        ClassificationTask(config("model.num_classes=3", f"model.checkpoint={head_file}")).build_model()
